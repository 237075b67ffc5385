//! Reloading the configuration (SIGHUP, `idlereaperctl reload`, and the first turn of an
//! upgraded image): validate the file, keep the listeners whose address stays, bind the added
//! ones, and send each worker its part; settings a running daemon cannot change keep their
//! running values, with a warning.

use std::sync::Arc;

use log::{error, info, warn};

use super::{watch_list, Supervisor};
use crate::config::{Changes, Config, ListenerConfig};
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
        let table = self.new_table(&new, remotes.len())?;
        for (remote, listeners) in remotes.iter().zip(table.parts) {
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
        self.in_force(&new, table.counters, table.upstreams);
        let kept = table.kept;
        let (added, removed) = (new.listeners.len() - kept, self.config.listeners.len() - kept);
        let summary =
            format!("listeners={} kept={kept} added={added} removed={removed}", new.listeners.len());
        let changes = self.config.changes(&new, restart);
        self.config = new;
        self.listener_indices = table.listener_indices;
        self.sources = table.sources;
        self.next_index = table.next_index;
        Ok(Reloaded { summary, changes })
    }

    /// The workers' listener table for every listener of `new`: kept by address, or bound now.
    /// A bind failure abandons the reload (dropping the table closes what was bound for it).
    fn new_table(&self, new: &Config, workers: usize) -> Result<Table, String> {
        let mut table = Table {
            parts: (0..workers).map(|_| Vec::new()).collect(),
            listener_indices: Vec::new(),
            next_index: self.next_index,
            kept: 0,
            counters: Vec::new(),
            upstreams: Vec::new(),
            sources: self.sources.clone(),
        };
        for (i, lc) in new.listeners.iter().enumerate() {
            let source = Source { text: Arc::clone(&new.text), position: i };
            let same = self.config.listeners.iter().position(|old| old.listen == lc.listen);
            // A kept listener's addresses keep their health (disabled, in backoff).
            let before = same.and_then(|j| self.upstreams[j].as_deref());
            let resolved = listener::resolve_upstreams(new, i, before).map_err(|e| e.to_string())?;
            table.upstreams.push(resolved.clone());
            match same {
                Some(j) => {
                    // A kept listener keeps its counters (under its first name, should it be renamed).
                    let counters = self.metrics.listener(&self.config.listeners[j].name);
                    table.keep(lc, resolved, self.listener_indices[j], source, counters);
                }
                None => table.add(lc, resolved, source).map_err(|e| bind_failed(new, i, e))?,
            }
        }
        Ok(table)
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

/// The workers' listener table a reload builds: what each worker is sent, and what the
/// supervisor keeps of each listener (by the new configuration's order).
struct Table {
    /// Each worker's part.
    parts: Vec<Vec<ListenerChange>>,
    /// The workers' listener index of each listener.
    listener_indices: Vec<usize>,
    next_index: usize,
    kept: usize,
    counters: Vec<Arc<ListenerMetrics>>,
    upstreams: Vec<Option<Arc<Upstreams>>>,
    sources: Vec<Source>,
}

impl Table {
    /// A listener whose address stays: the workers keep its sockets, at `index`.
    fn keep(
        &mut self,
        lc: &ListenerConfig,
        upstreams: Option<Arc<Upstreams>>,
        index: usize,
        source: Source,
        counters: Arc<ListenerMetrics>,
    ) {
        self.counters.push(counters);
        for part in &mut self.parts {
            let (config, upstreams) = (lc.clone(), upstreams.clone());
            part.push(ListenerChange::Keep { index, config, upstreams });
        }
        self.listener_indices.push(index);
        self.sources[index] = source;
        self.kept += 1;
    }

    /// A listener added: bound now, after privileges were dropped (a Unix socket file is the
    /// daemon's own), at the next index.
    fn add(
        &mut self,
        lc: &ListenerConfig,
        upstreams: Option<Arc<Upstreams>>,
        source: Source,
    ) -> Result<(), error::Error> {
        let metrics = ListenerMetrics::new(&lc.name);
        let sockets = listener::bind_one(lc, self.parts.len(), metrics, upstreams, None)?;
        self.counters.push(Arc::clone(&sockets[0].metrics));
        for (part, listener) in self.parts.iter_mut().zip(sockets) {
            part.push(ListenerChange::Add(listener));
        }
        self.listener_indices.push(self.next_index);
        self.sources.push(source);
        self.next_index += 1;
        Ok(())
    }
}

/// Why listener `i` of `new` could not be bound, with the file, line and key of its address,
/// as for the errors of the file.
fn bind_failed(new: &Config, i: usize, e: error::Error) -> String {
    let lc = &new.listeners[i];
    let message = match e {
        error::Error::Io { source, .. } => {
            format!("cannot listen on {} (listener {:?}): {source}", lc.listen, lc.name)
        }
        e => e.to_string(),
    };
    new.error_at(&format!("listener[{i}].listen"), Some(lc.listen_at), message).to_string()
}
