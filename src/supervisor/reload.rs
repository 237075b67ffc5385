//! Reloading the configuration (SIGHUP, `idlereaperctl reload`, and the first turn of an
//! upgraded image): validate the file, keep the listeners whose address stays, bind the added
//! ones, and send each worker its part; settings a running daemon cannot change keep their
//! running values, with a warning.

use std::sync::Arc;

use log::{error, info, warn};

use super::{watch_list, Supervisor};
use crate::config::{Changes, Config};
use crate::error;
use crate::listener;
use crate::logging::LogHandle;
use crate::metrics::ListenerMetrics;
use crate::upgrade::Source;
use crate::upstream::Upstreams;
use crate::worker::{Command, ListenerChange, Reload, Remote};

/// A reload applied: its one-line summary (`listeners=N kept=K added=A removed=R`) and what
/// changed, per listener and key.
pub(super) struct Reloaded {
    pub(super) summary: String,
    pub(super) changes: Changes,
}

impl Reloaded {
    /// The control client's answer: the summary, then a line per change.
    pub(super) fn answer(&self) -> String {
        let mut text = format!("reloaded: {}\n", self.summary);
        for line in self.changes.lines() {
            text.push_str(&line);
            text.push('\n');
        }
        text
    }
}

impl Supervisor {
    /// Re-reads and validates the configuration file and applies it; on any error the running
    /// configuration stays, untouched. Returns what changed or why nothing did, for a control
    /// client.
    pub(super) fn reload(&mut self, remotes: &[Remote], log: &LogHandle) -> Result<Reloaded, String> {
        self.notifier.reloading();
        let result = self.apply_reload(remotes, log);
        self.last_change = match &result {
            Ok(reloaded) => {
                info!("reloaded {}: {}", self.config.path.display(), reloaded.summary);
                self.metrics.reload(true);
                self.history.reloaded(true, &reloaded.summary);
                format!("reloaded {}: {}", self.config.path.display(), reloaded.summary)
            }
            Err(e) => {
                error!("reload failed, keeping the running configuration: {e}");
                self.metrics.reload(false);
                self.history.reloaded(false, e);
                format!("reload failed: {e}")
            }
        };
        self.notifier.send(&format!("READY=1\nSTATUS={}", self.status()));
        result
    }

    /// The reload itself: the new configuration in force, or why not (nothing changed then).
    /// Returns what changed.
    pub(super) fn apply_reload(&mut self, remotes: &[Remote], log: &LogHandle) -> Result<Reloaded, String> {
        let pidfile = self.runtime.pidfile_overridden.then_some(self.config.daemon.pidfile.as_path());
        let mut new = Config::load(&self.config.path, pidfile).map_err(|e| e.to_string())?;
        // Said only once the reload has succeeded: a failed one changes nothing.
        let restart = new.keep_restart_only(&self.config, self.runtime.pidfile_overridden);
        // Every listener of the new configuration: kept by address, or bound now. A bind
        // failure abandons the reload (dropping `parts` closes what was bound for it).
        let mut parts: Vec<Vec<ListenerChange>> = remotes.iter().map(|_| Vec::new()).collect();
        let (mut indices, mut next_index, mut kept) = (Vec::new(), self.next_index, 0);
        // A kept listener keeps its counters (under its first name, should it be renamed).
        let mut counters = Vec::new();
        let mut upstreams = Vec::new();
        let mut sources = self.sources.clone();
        for (i, lc) in new.listeners.iter().enumerate() {
            let source = Source { text: Arc::clone(&new.text), position: i };
            let same = self.config.listeners.iter().position(|old| old.listen == lc.listen);
            // A kept listener's addresses keep their health (disabled, in backoff).
            let before = same.and_then(|j| self.upstreams[j].as_deref());
            let resolved = listener::resolve_upstreams(&new, i, before).map_err(|e| e.to_string())?;
            upstreams.push(resolved.clone());
            match same {
                Some(j) => {
                    counters.push(self.metrics.listener(&self.config.listeners[j].name));
                    let index = self.listener_indices[j];
                    parts.iter_mut().for_each(|p| {
                        let (config, upstreams) = (lc.clone(), resolved.clone());
                        p.push(ListenerChange::Keep { index, config, upstreams })
                    });
                    indices.push(index);
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
                        indices.push(next_index);
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
        self.in_force(&new, counters, upstreams);
        let (added, removed) = (new.listeners.len() - kept, self.config.listeners.len() - kept);
        let summary =
            format!("listeners={} kept={kept} added={added} removed={removed}", new.listeners.len());
        let changes = self.config.changes(&new, restart);
        self.config = new;
        self.listener_indices = indices;
        self.sources = sources;
        self.next_index = next_index;
        Ok(Reloaded { summary, changes })
    }

    /// The counters and upstreams of the listeners of `new`, in its order, in force from now
    /// on: for a scrape, for the resolver thread; addresses no longer listed lose their health.
    fn in_force(
        &mut self,
        new: &Config,
        counters: Vec<Arc<ListenerMetrics>>,
        upstreams: Vec<Option<Arc<Upstreams>>>,
    ) {
        for (counters, upstreams) in counters.iter().zip(&upstreams) {
            counters.set_upstreams(upstreams.as_ref());
        }
        self.metrics.set_listeners(counters);
        self.watched.set(watch_list(new, &upstreams));
        upstreams.iter().flatten().for_each(|u| u.forget_unlisted());
        self.upstreams = upstreams;
    }
}
