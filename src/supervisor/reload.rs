//! Reloading the configuration (SIGHUP, `idlereaperctl reload`, and the first turn of an
//! upgraded image): validate the file, keep the listeners whose address stays, bind the added
//! ones, and send each worker its part; settings a running daemon cannot change keep their
//! running values, with a warning.

use std::sync::Arc;

use log::{error, info, warn};

use super::{watch_list, Supervisor};
use crate::config::Config;
use crate::error;
use crate::listener;
use crate::logging::LogHandle;
use crate::metrics::ListenerMetrics;
use crate::upgrade::Source;
use crate::worker::{Command, ListenerChange, Reload, Remote};

impl Supervisor {
    /// Re-reads and validates the configuration file and applies it; on any error the running
    /// configuration stays, untouched. Returns what changed (`listeners=N kept=K …`) or why
    /// nothing did, for a control client.
    pub(super) fn reload(&mut self, remotes: &[Remote], log: &LogHandle) -> Result<String, String> {
        self.notifier.reloading();
        let result = self.apply_reload(remotes, log);
        self.last_change = match &result {
            Ok(changes) => {
                info!("reloaded {}: {changes}", self.config.path.display());
                self.metrics.reload(true);
                format!("reloaded {}: {changes}", self.config.path.display())
            }
            Err(e) => {
                error!("reload failed, keeping the running configuration: {e}");
                self.metrics.reload(false);
                format!("reload failed: {e}")
            }
        };
        self.notifier.send(&format!("READY=1\nSTATUS={}", self.status()));
        result
    }

    /// The reload itself: the new configuration in force, or why not (nothing changed then).
    /// Returns what changed.
    pub(super) fn apply_reload(&mut self, remotes: &[Remote], log: &LogHandle) -> Result<String, String> {
        let pidfile = self.runtime.pidfile_overridden.then_some(self.config.daemon.pidfile.as_path());
        let mut new = Config::load(&self.config.path, pidfile).map_err(|e| e.to_string())?;
        // Said only once the reload has succeeded: a failed one changes nothing.
        let restart = self.keep_restart_only_settings(&mut new);
        // Every listener of the new configuration: kept by address, or bound now. A bind
        // failure abandons the reload (dropping `parts` closes what was bound for it).
        let mut parts: Vec<Vec<ListenerChange>> = remotes.iter().map(|_| Vec::new()).collect();
        let (mut slots, mut next_index, mut kept) = (Vec::new(), self.next_index, 0);
        // A kept listener keeps its counters (under its first name, should it be renamed).
        let mut counters = Vec::new();
        let mut upstreams = Vec::new();
        let mut sources = self.sources.clone();
        for (i, lc) in new.listeners.iter().enumerate() {
            let source = Source { text: Arc::clone(&new.text), position: i };
            let resolved = listener::resolve_upstreams(&new, i).map_err(|e| e.to_string())?;
            upstreams.push(resolved.clone());
            match self.config.listeners.iter().position(|old| old.listen == lc.listen) {
                Some(j) => {
                    counters.push(self.metrics.listener(&self.config.listeners[j].name));
                    let index = self.slots[j];
                    parts.iter_mut().for_each(|p| {
                        let (config, upstreams) = (lc.clone(), resolved.clone());
                        p.push(ListenerChange::Keep { index, config, upstreams })
                    });
                    slots.push(index);
                    sources[index] = source;
                    kept += 1;
                }
                // Bound after privileges were dropped: a Unix socket file is the daemon's own.
                None => match listener::bind_one(
                    lc,
                    remotes.len(),
                    ListenerMetrics::new(&lc.name),
                    resolved,
                    None,
                ) {
                    Ok(sockets) => {
                        counters.push(Arc::clone(&sockets[0].metrics));
                        for (part, listener) in parts.iter_mut().zip(sockets) {
                            part.push(ListenerChange::Add(listener));
                        }
                        slots.push(next_index);
                        sources.push(source);
                        next_index += 1;
                    }
                    Err(e) => {
                        // The file, line and key of the address, as for the errors of the file.
                        let message = match e {
                            error::Error::Io { source, .. } => {
                                format!("cannot listen on {} (listener {:?}): {source}", lc.listen, lc.name)
                            }
                            e => e.to_string(),
                        };
                        let e = new.error_at(&format!("listener[{i}].listen"), Some(lc.listen_at), message);
                        return Err(e.to_string());
                    }
                },
            }
        }
        for (remote, listeners) in remotes.iter().zip(parts) {
            let shutdown_timeout = new.daemon.shutdown_timeout;
            remote.send(Command::Reload(Reload { listeners, shutdown_timeout }));
        }
        if !restart.is_empty() {
            warn!(
                "reload: {} changed; restart idlereaper to apply (the running values stay)",
                restart.join(", ")
            );
        }
        log.set_level(new.daemon.log_level);
        log.set_format(new.daemon.log_format);
        self.metrics.set_listeners(counters);
        let (added, removed) = (new.listeners.len() - kept, self.config.listeners.len() - kept);
        let summary =
            format!("listeners={} kept={kept} added={added} removed={removed}", new.listeners.len());
        self.watched.set(watch_list(&new, &upstreams));
        self.upstreams = upstreams;
        self.config = new;
        self.slots = slots;
        self.sources = sources;
        self.next_index = next_index;
        Ok(summary)
    }

    /// Settings a running daemon cannot change: `new` gets the running values back, and the
    /// keys that differed are returned.
    fn keep_restart_only_settings(&self, new: &mut Config) -> Vec<&'static str> {
        let (old, d) = (&self.config.daemon, &mut new.daemon);
        let mut changed = Vec::new();
        if d.pidfile != old.pidfile && !self.runtime.pidfile_overridden {
            changed.push("daemon.pidfile");
        }
        if d.user != old.user || d.group != old.group {
            changed.push("daemon.user/group");
        }
        if d.workers != old.workers {
            changed.push("daemon.workers");
        }
        if d.tick != old.tick {
            changed.push("daemon.tick");
        }
        if d.log != old.log {
            changed.push("daemon.log");
        }
        if new.metrics != self.config.metrics {
            changed.push("metrics");
        }
        if new.control != self.config.control {
            changed.push("control");
        }
        if d.resolve_interval != old.resolve_interval {
            changed.push("daemon.resolve_interval");
        }
        d.pidfile.clone_from(&old.pidfile);
        d.user.clone_from(&old.user);
        d.group.clone_from(&old.group);
        d.workers = old.workers;
        d.tick = old.tick;
        d.resolve_interval = old.resolve_interval;
        d.log.clone_from(&old.log);
        new.metrics.clone_from(&self.config.metrics);
        new.control.clone_from(&self.config.control);
        changed
    }
}
