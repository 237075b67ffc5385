//! The main thread once the daemon is up: it owns the signals, the worker threads and the
//! configuration in force. Signals become [`Command`]s sent to every worker; a reload (HUP)
//! validates the file, binds the listeners it adds, and sends each worker its part; a live
//! upgrade (USR2) checks the new binary, freezes the workers into a state and re-executes the
//! binary with it (see [`crate::upgrade`]); the control socket's requests are answered here
//! too. The supervisor waits until all workers have stopped. With one worker this costs one
//! sleeping thread, and keeps signal handling, reloads and upgrades out of the loops that move
//! bytes.
//!
//! One job per file: this one runs the loop and the signals; [`reload`], [`upgrade`],
//! [`answer`] (the control socket's requests), [`info`] (`show info`, `show config`),
//! [`listing`] (`show conns` as the workers build it), [`threads`] (the worker threads),
//! [`watchdog`] (systemd's) and [`vitals`] (what `/healthz` and `/readyz` ask) do the rest.

mod answer;
mod info;
mod listing;
mod reload;
mod threads;
mod upgrade;
mod vitals;
mod watchdog;

use std::io;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{error, warn, Level};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::config::Config;
use crate::control;
use crate::logging::{self, LogHandle};
use crate::metrics::http::{self, Endpoint};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::signals::{self, Signal, Signals};
use crate::upgrade::{Source, Thawed};
use crate::upstream::{Upstreams, Watched};
use crate::worker::{Command, Remote, Worker};
use threads::Threads;
use watchdog::Watchdog;

const SIGNALS: Token = Token(0);
/// The workers' waker: a worker's end, or a batch of `show conns` rows.
const WORKERS: Token = Token(1);
/// The metrics endpoint takes this token and the ones after it.
const METRICS: Token = Token(2);
/// The control socket takes this token and the ones after it.
const CONTROL: Token = Token(METRICS.0 + http::MAX_CLIENTS + 1);

/// What the process was started with, which a reload does not change and an upgrade carries.
pub struct Runtime {
    /// `--pidfile` was given: the file's `daemon.pidfile` does not count.
    pub pidfile_overridden: bool,
    pub foreground: bool,
    /// The path the daemon was started as, symlinks kept: what USR2 executes, resolved then
    /// (`None`: unknown, and an upgrade is refused).
    pub started_as: Option<PathBuf>,
    /// The locked pidfile's descriptor, kept open across an upgrade's exec.
    pub pidfile_fd: std::os::fd::RawFd,
    /// The arguments it was started with (without a `--handover`), passed again on an upgrade.
    pub args: Vec<std::ffi::OsString>,
}

/// The new image of a live upgrade (or its guardian, carrying on after the new image failed),
/// before its first turn: what to say, and whether a stop was asked for meanwhile.
pub struct Upgraded {
    pub from: String,
    /// `CLOCK_MONOTONIC` when the old image froze its workers: the pause runs from here.
    pub frozen_at: u64,
    pub connections: usize,
    pub listeners: usize,
    pub stop: bool,
    /// The control client that asked for the upgrade, to be told how it went.
    pub reply: Option<std::os::fd::RawFd>,
    /// What to close once the loops run (see `handover::State::retired`).
    pub retired: Vec<std::os::fd::RawFd>,
    /// The path the daemon was started as, and the file that runs now.
    pub binary: Option<(PathBuf, PathBuf)>,
    /// Set in the upgrade's guardian, which carries on because the new image did not take over.
    pub failed: Option<crate::handover::guardian::Failure>,
}

/// The sockets the supervisor serves besides the signals: `GET /metrics` and the control
/// socket, each if configured.
#[derive(Default)]
pub struct Services {
    pub endpoint: Option<Endpoint>,
    pub control: Option<control::Server>,
}

/// Signals, workers and the configuration in force, ready to run.
pub struct Supervisor {
    poll: Poll,
    signals: Signals,
    /// Woken by a worker that ends, or that sends rows (see [`WORKERS`]).
    done: Arc<Waker>,
    workers: Vec<(Worker, Remote)>,
    config: Config,
    runtime: Runtime,
    /// The workers' listener index of each listener of `config`.
    listener_indices: Vec<usize>,
    /// Where each listener of the workers' table is configured (by index).
    sources: Vec<Source>,
    /// The index the next added listener gets (indices only grow).
    next_index: usize,
    stopping: bool,
    metrics: Metrics,
    /// `GET /metrics`, if configured.
    endpoint: Option<Endpoint>,
    /// The control socket, if configured.
    control: Option<control::Server>,
    /// The `show conns` being answered, and the number of the last one asked.
    listings: Vec<listing::Listing>,
    next_listing: u64,
    /// An upgrade runs (the control socket's waiting requests are taken in before the freeze).
    upgrading: bool,
    /// Each listener's upstreams (`None` for a sink), and those the resolver thread refreshes.
    upstreams: Vec<Option<Arc<Upstreams>>>,
    watched: Watched,
    /// `NOTIFY_SOCKET`, if systemd gave one.
    notifier: Notifier,
    /// What the last reload or upgrade did (for `STATUS=`).
    last_change: String,
    /// When the configuration was loaded, and how the last reload and upgrade ended.
    history: info::History,
    /// Set in the new image of an upgrade until its first turn.
    upgraded: Option<Upgraded>,
}

impl Supervisor {
    /// Installs the signal handlers (from here on TERM no longer kills the process outright).
    /// `workers` were built from `config`, its listeners at indices `0..n` in order.
    pub fn new(
        config: Config,
        runtime: Runtime,
        workers: Vec<(Worker, Remote)>,
        metrics: Metrics,
        services: Services,
        upstreams: Vec<Option<Arc<Upstreams>>>,
    ) -> io::Result<Supervisor> {
        let indices: Vec<usize> = (0..config.listeners.len()).collect();
        let sources =
            indices.iter().map(|&position| Source { text: Arc::clone(&config.text), position }).collect();
        let thawed =
            Thawed { config, sources, in_force: indices, workers, upstreams, connections: 0, listeners: 0 };
        Supervisor::with(thawed, runtime, metrics, services, None)
    }

    /// The supervisor of the new image of a live upgrade, over the daemon rebuilt from the
    /// state; `upgraded` is said and acted on when it runs.
    pub fn resumed(
        thawed: Thawed,
        runtime: Runtime,
        metrics: Metrics,
        services: Services,
        upgraded: Upgraded,
    ) -> io::Result<Supervisor> {
        Supervisor::with(thawed, runtime, metrics, services, Some(upgraded))
    }

    fn with(
        thawed: Thawed,
        runtime: Runtime,
        metrics: Metrics,
        Services { mut endpoint, mut control }: Services,
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
        if let Some(control) = control.as_mut() {
            control.register(poll.registry(), CONTROL)?;
        }
        let mut signals = Signals::new()?;
        poll.registry().register(signals.source(), SIGNALS, Interest::READABLE)?;
        let done = Arc::new(Waker::new(poll.registry(), WORKERS)?);
        let next_index = sources.len();
        Ok(Supervisor {
            poll,
            signals,
            done,
            workers,
            config,
            runtime,
            listener_indices: in_force,
            sources,
            next_index,
            stopping: false,
            metrics,
            endpoint,
            control,
            listings: Vec::new(),
            next_listing: 0,
            upgrading: false,
            upstreams,
            watched,
            notifier: Notifier::from_env(),
            last_change: "started".to_owned(),
            history: info::History::new(),
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
            Some(upgraded) => self.upgrade_done(upgraded, &threads.remotes, &log)?,
            // Every worker is running, every listener bound, privileges dropped.
            None => self.notifier.send(&format!("READY=1\nSTATUS={}", self.status())),
        }
        // Signals sent during an upgrade were held for this image: they arrive now.
        signals::unblock();
        let mut watchdog = self.notifier.watchdog_interval().map(|every| Watchdog::new(every, &self.metrics));
        while threads.running > 0 {
            let timeout = self.poll_timeout(watchdog.as_ref());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                error!("supervisor: {e}; stopping");
                stop_now(&threads.remotes);
                result = Err(e);
                break;
            }
            self.serve_metrics(&events, &threads);
            self.serve_control(&events, &threads.remotes, &log);
            if let Some(w) = watchdog.as_mut().filter(|w| Instant::now() >= w.next) {
                self.tend_watchdog(w, &threads.remotes);
            }
            let upgrade_signalled = self.take_signals(&threads.remotes, &log);
            let mut turn =
                Turn { threads: &mut threads, finished: &finished, finished_tx: &finished_tx, log: &log };
            if let Err(e) = self.upgrade_if_asked(upgrade_signalled, &mut turn) {
                // The workers could not be rebuilt after a failed exec: nothing runs.
                error!("upgrade: cannot carry on: {e}");
                result = Err(e);
            }
            threads.reap(&finished, &mut result);
        }
        for thread in threads.handles {
            let _ = thread.join();
        }
        result
    }

    /// Until the next deadline of the metrics endpoint, the control socket or the watchdog.
    fn poll_timeout(&self, watchdog: Option<&Watchdog>) -> Option<Duration> {
        [
            self.endpoint.as_ref().and_then(Endpoint::next_deadline),
            self.control.as_ref().and_then(control::Server::next_deadline),
            watchdog.map(|w| w.next),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|t| t.saturating_duration_since(Instant::now()))
    }

    /// The metrics endpoint's events of the batch, and its deadlines.
    fn serve_metrics(&mut self, events: &Events, threads: &Threads) {
        let Some(endpoint) = self.endpoint.as_mut() else { return };
        let vitals = vitals::Probed { stopping: self.stopping, threads };
        for event in events.iter() {
            if endpoint.owns(event.token()) {
                endpoint.handle(event, &self.metrics, &vitals);
            }
        }
        endpoint.expire(Instant::now(), &self.metrics, &vitals);
    }

    /// WATCHDOG=1 only if every worker's loop turned since the last ping; then ping them again
    /// (a turn of an idle loop needs a wake-up).
    fn tend_watchdog(&self, watchdog: &mut Watchdog, remotes: &[Remote]) {
        if watchdog.all_turned(&self.metrics) {
            self.notifier.send(&format!("WATCHDOG=1\nSTATUS={}", self.status()));
        }
        broadcast(remotes, || Command::Ping);
    }

    /// Acts on the signals that arrived; true if one asks for an upgrade. An upgrade execs: it
    /// is taken last, so that the rest of the batch is not lost with this image. A TERM with it
    /// stops first, and the upgrade is not done.
    fn take_signals(&mut self, remotes: &[Remote], log: &LogHandle) -> bool {
        let mut upgrade_signalled = false;
        for signal in self.signals.pending().collect::<Vec<Signal>>() {
            match signal {
                Signal::Stop => self.stop(remotes),
                Signal::Reload if self.stopping => warn!("SIGHUP while stopping: ignored"),
                Signal::Reload => drop(self.reload(remotes, log)),
                Signal::Stats => {
                    log.reopen();
                    logging::log_fields(Level::Info, "stats", &self.metrics.stats());
                }
                Signal::Upgrade => upgrade_signalled = true,
            }
        }
        upgrade_signalled
    }

    /// A stop (TERM or INT): the workers drain; a second one closes everything.
    fn stop(&mut self, remotes: &[Remote]) {
        if !self.stopping {
            self.notifier.send("STOPPING=1");
        }
        self.stopping = true;
        broadcast(remotes, || Command::Stop);
    }

    /// The `STATUS=` line for the service manager: open connections, and the last reload.
    fn status(&self) -> String {
        format!("connections={}; {}", self.metrics.open_connections(), self.last_change)
    }
}

/// What an upgrade may need of the loop: the worker threads (to stop and, after a failed exec,
/// start again), where they report their end, and the log.
struct Turn<'a> {
    threads: &'a mut Threads,
    finished: &'a Receiver<io::Result<()>>,
    finished_tx: &'a Sender<io::Result<()>>,
    log: &'a LogHandle,
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
