//! The main thread once the daemon is up: it owns the signals, the worker threads and the
//! configuration in force. Signals become [`Command`]s sent to every worker; a reload (HUP)
//! validates the file, binds the listeners it adds, and sends each worker its part; a live
//! upgrade (USR2) checks the new binary, freezes the workers into a state and re-executes the
//! binary with it (see [`crate::upgrade`]). The supervisor waits until all workers have
//! stopped. With one worker this costs one sleeping thread, and keeps signal handling, reloads
//! and upgrades out of the loops that move bytes.

use std::ffi::OsStr;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use log::{error, info, warn};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::clock::monotonic_ns;
use crate::config::Config;
use crate::error;
use crate::handover::exec;
use crate::listener;
use crate::logging::LogHandle;
use crate::metrics::http::Endpoint;
use crate::metrics::{ListenerMetrics, Metrics};
use crate::notify::Notifier;
use crate::signals::{self, Signal, Signals};
use crate::upgrade::{self, Carried, Source, Thawed};
use crate::upstream::{Upstreams, Watched};
use crate::worker::{Command, Frozen, ListenerChange, Reload, Remote, Worker};

const SIGNALS: Token = Token(0);
const WORKER_DONE: Token = Token(1);
/// The metrics endpoint takes this token and the ones after it.
const METRICS: Token = Token(2);

/// What the process was started with, which a reload does not change and an upgrade carries.
pub struct Runtime {
    /// `--pidfile` was given: the file's `daemon.pidfile` does not count.
    pub pidfile_overridden: bool,
    pub foreground: bool,
    /// The binary to execute on USR2: the one the process was started from (`None`: unknown,
    /// and an upgrade is refused).
    pub exe: Option<PathBuf>,
    /// The locked pidfile's descriptor, kept open across an upgrade's exec.
    pub pidfile_fd: std::os::fd::RawFd,
}

/// The new image of a live upgrade, before its first turn: what to say, and whether a stop
/// was asked for meanwhile.
pub struct Upgraded {
    pub from: String,
    /// `CLOCK_MONOTONIC` when the old image froze its workers: the pause runs from here.
    pub frozen_at: u64,
    pub connections: usize,
    pub listeners: usize,
    pub stop: bool,
}

/// Signals, workers and the configuration in force, ready to run.
pub struct Supervisor {
    poll: Poll,
    signals: Signals,
    done: Arc<Waker>,
    workers: Vec<(Worker, Remote)>,
    config: Config,
    runtime: Runtime,
    /// The workers' listener index of each listener of `config`.
    slots: Vec<usize>,
    /// Where each listener of the workers' table is configured (by index).
    sources: Vec<Source>,
    /// The index the next added listener gets (indices only grow).
    next_index: usize,
    stopping: bool,
    metrics: Metrics,
    /// `GET /metrics`, if configured.
    endpoint: Option<Endpoint>,
    /// Each listener's upstreams (`None` for a sink), and those the resolver thread refreshes.
    upstreams: Vec<Option<Arc<Upstreams>>>,
    watched: Watched,
    /// `NOTIFY_SOCKET`, if systemd gave one.
    notifier: Notifier,
    /// What the last reload or upgrade did (for `STATUS=`).
    last_change: String,
    /// Set in the new image of an upgrade until its first turn.
    upgraded: Option<Upgraded>,
}

/// The worker threads.
struct Threads {
    remotes: Vec<Remote>,
    handles: Vec<JoinHandle<()>>,
    /// Threads not yet finished.
    running: usize,
}

impl Threads {
    /// One thread per worker; each reports its end on `finished` and wakes the supervisor.
    fn spawn(
        workers: Vec<(Worker, Remote)>,
        done: &Arc<Waker>,
        finished: &Sender<io::Result<()>>,
    ) -> io::Result<Threads> {
        let mut threads = Threads { remotes: Vec::new(), handles: Vec::new(), running: 0 };
        for (i, (mut server, remote)) in workers.into_iter().enumerate() {
            let (done, finished) = (Arc::clone(done), finished.clone());
            let thread = std::thread::Builder::new().name(format!("worker-{i}")).spawn(move || {
                signals::block(); // the supervisor's thread alone takes the signals
                let result = panic::catch_unwind(AssertUnwindSafe(|| server.run()))
                    .unwrap_or_else(|_| Err(io::Error::other(format!("worker {i} panicked"))));
                let _ = finished.send(result);
                let _ = done.wake();
            })?;
            threads.remotes.push(remote);
            threads.handles.push(thread);
            threads.running += 1;
        }
        Ok(threads)
    }

    /// Waits for every thread to end (after a stop or a freeze). Their results are dropped:
    /// the caller knows why they ended.
    fn join(&mut self, finished: &Receiver<io::Result<()>>) {
        while self.running > 0 && finished.recv().is_ok() {
            self.running -= 1;
        }
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

impl Supervisor {
    /// Installs the signal handlers (from here on TERM no longer kills the process outright).
    /// `workers` were built from `config`, its listeners at indices `0..n` in order.
    pub fn new(
        config: Config,
        runtime: Runtime,
        workers: Vec<(Worker, Remote)>,
        metrics: Metrics,
        endpoint: Option<Endpoint>,
        upstreams: Vec<Option<Arc<Upstreams>>>,
    ) -> io::Result<Supervisor> {
        let slots: Vec<usize> = (0..config.listeners.len()).collect();
        let sources =
            slots.iter().map(|&position| Source { text: Arc::clone(&config.text), position }).collect();
        let thawed =
            Thawed { config, sources, in_force: slots, workers, upstreams, connections: 0, listeners: 0 };
        Supervisor::with(thawed, runtime, metrics, endpoint, None)
    }

    /// The supervisor of the new image of a live upgrade, over the daemon rebuilt from the
    /// state; `upgraded` is said and acted on when it runs.
    pub fn resumed(
        thawed: Thawed,
        runtime: Runtime,
        metrics: Metrics,
        endpoint: Option<Endpoint>,
        upgraded: Upgraded,
    ) -> io::Result<Supervisor> {
        Supervisor::with(thawed, runtime, metrics, endpoint, Some(upgraded))
    }

    fn with(
        thawed: Thawed,
        runtime: Runtime,
        metrics: Metrics,
        mut endpoint: Option<Endpoint>,
        upgraded: Option<Upgraded>,
    ) -> io::Result<Supervisor> {
        let Thawed { config, sources, in_force, workers, upstreams, .. } = thawed;
        let watched = Watched::default();
        watched.set(watch_list(&config, &upstreams));
        if let Some(interval) = config.daemon.resolve_interval {
            watched.spawn(interval)?;
        }
        let poll = Poll::new()?;
        if let Some(endpoint) = endpoint.as_mut() {
            endpoint.register(poll.registry(), METRICS)?;
        }
        let mut signals = Signals::new()?;
        poll.registry().register(signals.source(), SIGNALS, Interest::READABLE)?;
        let done = Arc::new(Waker::new(poll.registry(), WORKER_DONE)?);
        let next_index = sources.len();
        Ok(Supervisor {
            poll,
            signals,
            done,
            workers,
            config,
            runtime,
            slots: in_force,
            sources,
            next_index,
            stopping: false,
            metrics,
            endpoint,
            upstreams,
            watched,
            notifier: Notifier::from_env(),
            last_change: "started".to_owned(),
            upgraded,
        })
    }

    /// Runs the workers until they have all stopped. The first worker error is returned (the
    /// others are stopped then, so that the daemon does not run on at reduced capacity).
    pub fn run(mut self, log: LogHandle) -> io::Result<()> {
        let (finished_tx, finished) = mpsc::channel::<io::Result<()>>();
        let mut threads = Threads::spawn(std::mem::take(&mut self.workers), &self.done, &finished_tx)?;
        let mut result = Ok(());
        let mut events = Events::with_capacity(16);
        match self.upgraded.take() {
            Some(upgraded) => self.upgrade_done(upgraded, &threads.remotes, &log),
            // Every worker is running, every listener bound, privileges dropped.
            None => self.notifier.send(&format!("READY=1\nSTATUS={}", self.status())),
        }
        // Signals sent during an upgrade were held for this image: they arrive now.
        signals::unblock();
        let mut watchdog = self.notifier.watchdog_interval().map(|every| Watchdog::new(every, &self.metrics));
        while threads.running > 0 {
            let timeout =
                [self.endpoint.as_ref().and_then(Endpoint::next_deadline), watchdog.as_ref().map(|w| w.next)]
                    .into_iter()
                    .flatten()
                    .min()
                    .map(|t| t.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                error!("supervisor: {e}; stopping");
                stop_now(&threads.remotes);
                result = Err(e);
                break;
            }
            if let Some(endpoint) = self.endpoint.as_mut() {
                for event in events.iter() {
                    if endpoint.owns(event.token()) {
                        endpoint.handle(self.poll.registry(), event, &self.metrics);
                    }
                }
                endpoint.expire(Instant::now());
            }
            if let Some(w) = watchdog.as_mut().filter(|w| Instant::now() >= w.next) {
                // WATCHDOG=1 only if every worker's loop turned since the last ping; then ping
                // them again (a turn of an idle loop needs a wake-up).
                if w.all_turned(&self.metrics) {
                    self.notifier.send(&format!("WATCHDOG=1\nSTATUS={}", self.status()));
                }
                broadcast(&threads.remotes, || Command::Ping);
            }
            let signals: Vec<Signal> = self.signals.pending().collect();
            for signal in signals {
                match signal {
                    Signal::Stop => self.stop(&threads.remotes),
                    Signal::Reload if self.stopping => warn!("SIGHUP while stopping: ignored"),
                    Signal::Reload => self.reload(&threads.remotes, &log),
                    Signal::Stats => {
                        log.reopen();
                        info!("stats {}", self.metrics.stats_line());
                    }
                    Signal::Upgrade if self.stopping => warn!("SIGUSR2 while stopping: ignored"),
                    Signal::Upgrade => {
                        if let Err(e) = self.upgrade(&mut threads, &finished, &finished_tx, &log) {
                            // The workers could not be rebuilt after a failed exec: nothing runs.
                            error!("upgrade: cannot carry on: {e}");
                            result = Err(e);
                        }
                        if let Some(w) = watchdog.as_mut() {
                            w.seen = self.metrics.loops();
                        }
                    }
                }
            }
            while let Ok(outcome) = finished.try_recv() {
                threads.running -= 1;
                if let Err(e) = outcome {
                    error!("worker stopped on error: {e}; stopping the others");
                    stop_now(&threads.remotes);
                    if result.is_ok() {
                        result = Err(e);
                    }
                }
            }
        }
        for thread in threads.handles {
            let _ = thread.join();
        }
        result
    }

    /// A stop (TERM or INT): the workers drain; a second one closes everything.
    fn stop(&mut self, remotes: &[Remote]) {
        if !self.stopping {
            self.notifier.send("STOPPING=1");
        }
        self.stopping = true;
        broadcast(remotes, || Command::Stop);
    }

    /// A live upgrade (USR2): check the new binary, freeze the workers, exec it with the state.
    /// Returns only if the upgrade was refused (the running code carries on, with every
    /// connection); `Err` if, after a failed exec, the workers could not be rebuilt.
    fn upgrade(
        &mut self,
        threads: &mut Threads,
        finished: &Receiver<io::Result<()>>,
        finished_tx: &Sender<io::Result<()>>,
        log: &LogHandle,
    ) -> io::Result<()> {
        self.notifier.reloading();
        let Some(exe) = self.runtime.exe.clone() else {
            self.upgrade_refused("the path of the running binary is not known".to_owned());
            return Ok(());
        };
        info!("upgrade: checking {}", exe.display());
        let mut args = vec![OsStr::new("--config"), self.config.path.as_os_str()];
        if self.runtime.pidfile_overridden {
            args.extend([OsStr::new("--pidfile"), self.config.daemon.pidfile.as_os_str()]);
        }
        if let Err(reason) = exec::preflight(&exe, &args) {
            self.upgrade_refused(reason);
            return Ok(());
        }
        // From here on a signal waits for the image that will handle it; those that came
        // before are answered now.
        signals::block();
        let mut stop = false;
        let pending: Vec<Signal> = self.signals.pending().collect();
        for signal in pending {
            match signal {
                Signal::Stop => stop = true,
                Signal::Upgrade => warn!("SIGUSR2 during an upgrade: ignored"),
                Signal::Reload => {
                    warn!("SIGHUP during an upgrade: ignored (the upgrade reads the configuration)")
                }
                Signal::Stats => {
                    log.reopen();
                    info!("stats {}", self.metrics.stats_line());
                }
            }
        }
        let (at, frozen_at) = (Instant::now(), monotonic_ns());
        let (reply, replies) = mpsc::channel::<Frozen>();
        broadcast(&threads.remotes, || Command::Freeze { at, reply: reply.clone() });
        drop(reply);
        let mut frozen: Vec<Frozen> = replies.iter().collect();
        frozen.sort_by_key(|f| f.worker);
        threads.join(finished);
        let endpoint_fd = self.endpoint.take().map(|e| e.freeze(self.poll.registry()));
        let carried = Carried {
            config: &self.config,
            stop,
            foreground: self.runtime.foreground,
            pidfile_override: self.runtime.pidfile_overridden.then_some(self.config.daemon.pidfile.as_path()),
            pidfile_fd: self.runtime.pidfile_fd,
            endpoint_fd,
            sources: &self.sources,
            in_force: &self.slots,
            upstreams: &self.upstreams,
            metrics: &self.metrics,
        };
        let state = upgrade::state_of(carried, frozen_at, frozen);
        let failure =
            match exec::write(&state).and_then(|memfd| exec::inherit(&state, &memfd).map(|()| memfd)) {
                Ok(memfd) => {
                    info!(
                        "upgrade: handing over connections={} listeners={} to {}",
                        state.connections(),
                        state.in_force.len(),
                        exe.display()
                    );
                    log::logger().flush();
                    exec::exec(&exe, &memfd)
                }
                Err(e) => e,
            };
        // Still here: the exec failed. The old code carries on from the state.
        let thawed = upgrade::thaw(&state, &self.metrics).map_err(|e| io::Error::other(e.to_string()))?;
        let (config, sources, upstreams) = (thawed.config, thawed.sources, thawed.upstreams);
        (self.config, self.sources, self.slots) = (config, sources, thawed.in_force);
        self.watched.set(watch_list(&self.config, &upstreams));
        self.upstreams = upstreams;
        *threads = Threads::spawn(thawed.workers, &self.done, finished_tx)?;
        if let Some(fd) = state.endpoint_fd {
            let mut endpoint = Endpoint::adopt(fd)?;
            endpoint.register(self.poll.registry(), METRICS)?;
            self.endpoint = Some(endpoint);
        }
        signals::unblock();
        self.upgrade_refused(format!("cannot execute {}: {failure}", exe.display()));
        if stop {
            self.stop(&threads.remotes);
        }
        Ok(())
    }

    /// An upgrade that did not happen: said, counted, and the service manager told.
    fn upgrade_refused(&mut self, reason: String) {
        error!("upgrade refused: {reason}");
        self.metrics.upgrade(false);
        self.last_change = format!("upgrade refused: {reason}");
        self.notifier.send(&format!("READY=1\nSTATUS={}", self.status()));
    }

    /// The new image's first turn: the configuration file read again (as a reload), the
    /// `upgraded` line, and a stop that was asked for during the upgrade.
    fn upgrade_done(&mut self, upgraded: Upgraded, remotes: &[Remote], log: &LogHandle) {
        let pause_ms = monotonic_ns().saturating_sub(upgraded.frozen_at) as f64 / 1e6;
        let line = format!(
            "upgraded from={} to={} connections={} listeners={} pause_ms={pause_ms:.1}",
            upgraded.from,
            env!("CARGO_PKG_VERSION"),
            upgraded.connections,
            upgraded.listeners
        );
        info!("{line}");
        match self.apply_reload(remotes, log) {
            Ok(summary) => info!("upgrade: {summary}"),
            Err(e) => {
                error!("upgrade: the configuration file was not applied, keeping the one in force: {e}")
            }
        }
        self.metrics.upgrade(true);
        self.last_change = line;
        self.notifier.send(&format!("READY=1\nSTATUS={}", self.status()));
        if upgraded.stop {
            self.stop(remotes);
        }
    }

    /// Re-reads and validates the configuration file and applies it; on any error the running
    /// configuration stays, untouched.
    fn reload(&mut self, remotes: &[Remote], log: &LogHandle) {
        self.notifier.reloading();
        self.last_change = match self.apply_reload(remotes, log) {
            Ok(summary) => {
                info!("{summary}");
                self.metrics.reload(true);
                summary
            }
            Err(e) => {
                error!("reload failed, keeping the running configuration: {e}");
                self.metrics.reload(false);
                format!("reload failed: {e}")
            }
        };
        self.notifier.send(&format!("READY=1\nSTATUS={}", self.status()));
    }

    /// The reload itself: the new configuration in force, or why not (nothing changed then).
    /// Returns the line that says what changed.
    fn apply_reload(&mut self, remotes: &[Remote], log: &LogHandle) -> Result<String, String> {
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
        self.metrics.set_listeners(counters);
        let (added, removed) = (new.listeners.len() - kept, self.config.listeners.len() - kept);
        let summary = format!(
            "reloaded {}: listeners={} kept={kept} added={added} removed={removed}",
            new.path.display(),
            new.listeners.len()
        );
        self.watched.set(watch_list(&new, &upstreams));
        self.upstreams = upstreams;
        self.config = new;
        self.slots = slots;
        self.sources = sources;
        self.next_index = next_index;
        Ok(summary)
    }

    /// The `STATUS=` line for the service manager: open connections, and the last reload.
    fn status(&self) -> String {
        format!("connections={}; {}", self.metrics.open_connections(), self.last_change)
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
        changed
    }
}

fn broadcast(remotes: &[Remote], command: impl Fn() -> Command) {
    remotes.iter().for_each(|r| r.send(command()));
}

/// Two stops: the second closes every connection at once.
fn stop_now(remotes: &[Remote]) {
    broadcast(remotes, || Command::Stop);
    broadcast(remotes, || Command::Stop);
}

/// The listeners whose upstream names the resolver thread refreshes: name and upstreams.
fn watch_list<'a>(
    config: &Config,
    upstreams: &'a [Option<Arc<Upstreams>>],
) -> Vec<(String, &'a Arc<Upstreams>)> {
    let named = config.listeners.iter().zip(upstreams);
    named.filter_map(|(lc, u)| u.as_ref().map(|u| (lc.name.clone(), u))).collect()
}

/// The watchdog: when the next `WATCHDOG=1` is due, and each worker's loop count at the last
/// ping (a wedged loop does not count up, and then systemd restarts the service).
struct Watchdog {
    every: std::time::Duration,
    next: Instant,
    seen: Vec<u64>,
}

impl Watchdog {
    fn new(every: std::time::Duration, metrics: &Metrics) -> Watchdog {
        Watchdog { every, next: Instant::now(), seen: metrics.loops() }
    }

    /// Whether every loop turned since the last call; schedules the next.
    fn all_turned(&mut self, metrics: &Metrics) -> bool {
        let now = metrics.loops();
        let turned = now.iter().zip(&self.seen).all(|(n, s)| n > s);
        self.seen = now;
        self.next = Instant::now() + self.every;
        turned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_vouches_only_for_loops_that_turned() {
        let metrics = Metrics::new(2);
        let mut watchdog = Watchdog::new(std::time::Duration::from_millis(10), &metrics);
        metrics.set_worker(0, 0, 0);
        assert!(!watchdog.all_turned(&metrics), "worker 1 did not turn");
        metrics.set_worker(0, 0, 0);
        metrics.set_worker(1, 0, 0);
        assert!(watchdog.all_turned(&metrics));
        metrics.set_worker(1, 0, 0);
        assert!(!watchdog.all_turned(&metrics), "worker 0 is stuck");
        assert!(watchdog.next > Instant::now());
    }
}
