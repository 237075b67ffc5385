//! A live upgrade, at the level of the daemon: the state the supervisor writes from the frozen
//! workers ([`state_of`]), and the daemon rebuilt from it ([`thaw`]) — in the new image, or in
//! this one when the `execve` failed. The exec itself and the state's format are in
//! [`crate::handover`]; the workers' side is `worker::handover`.
//!
//! The invariant: nothing is dropped. Every listening socket, connection, held byte and
//! deadline in the state comes back; the pre-flight checks (`handover::exec::preflight`) make a
//! state the new binary cannot read a refusal before anything is frozen.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock;
use crate::config::{Config, Listen};
use crate::error::Error;
use crate::handover::state::{ControlClientState, ListenerState, State, UpstreamHealthState};
use crate::listener;
use crate::metrics::{ListenerMetrics, Metrics};
use crate::os::net::UnixPath;
use crate::upstream::{Health, Target, Upstreams};
use crate::worker::{Frozen, Remote, Worker};

/// Where a listener of the workers' table is configured: a configuration text (the one in
/// force, or the one of a reload since replaced, for a listener whose connections outlive it)
/// and its position among that text's listeners.
#[derive(Debug, Clone)]
pub struct Source {
    pub text: Arc<str>,
    pub position: usize,
}

/// What the supervisor knows that goes into the state besides the workers' part.
pub struct Carried<'a> {
    pub config: &'a Config,
    pub stop: bool,
    pub foreground: bool,
    pub pidfile: &'a Path,
    pub pidfile_overridden: bool,
    pub pidfile_fd: std::os::fd::RawFd,
    pub endpoint_fd: Option<std::os::fd::RawFd>,
    pub control_fd: Option<std::os::fd::RawFd>,
    pub reply_fd: Option<std::os::fd::RawFd>,
    /// The control socket's clients handed over with it.
    pub control_clients: Vec<ControlClientState>,
    pub sources: &'a [Source],
    /// The table index of each listener of `config`.
    pub in_force: &'a [usize],
    /// The upstreams of each listener of `config`.
    pub upstreams: &'a [Option<Arc<Upstreams>>],
    pub metrics: &'a Metrics,
    /// The path the daemon was started as (see `State::started_as`).
    pub started_as: Option<&'a Path>,
    /// The log file's descriptor, if logging to one.
    pub log_fd: Option<std::os::fd::RawFd>,
}

/// The state of the whole daemon, from the frozen workers (in worker order) and the rest.
pub fn state_of(carried: Carried<'_>, frozen_at: u64, frozen: Vec<Frozen>) -> State {
    let mut texts: Vec<Arc<str>> = vec![Arc::clone(&carried.config.text)];
    let mut listeners: Vec<ListenerState> = carried
        .sources
        .iter()
        .map(|source| {
            let text = texts.iter().position(|t| *t == source.text).unwrap_or_else(|| {
                texts.push(Arc::clone(&source.text));
                texts.len() - 1
            });
            ListenerState { text, position: source.position, ..ListenerState::default() }
        })
        .collect();
    let at = clock::instant_of(frozen_at);
    for (&index, upstreams) in carried.in_force.iter().zip(carried.upstreams) {
        if let Some(u) = upstreams {
            listeners[index].targets =
                u.resolved().iter().map(|entry| entry.iter().map(ToString::to_string).collect()).collect();
            listeners[index].upstream_health = health_of(u, at);
        }
    }
    let mut workers = Vec::with_capacity(frozen.len());
    let mut retired = Vec::new();
    for (i, worker) in frozen.into_iter().enumerate() {
        for (index, listener) in listeners.iter_mut().enumerate() {
            if i == 0 {
                listener.counters = worker.counters.get(index).cloned().unwrap_or_default();
            }
            if let Some(Some(path)) = worker.unix_paths.get(index) {
                listener.unix_path = Some(path.clone());
            }
        }
        retired.extend(worker.retired);
        workers.push(worker.state);
    }
    State {
        from: env!("CARGO_PKG_VERSION").to_owned(),
        frozen_at,
        stop: carried.stop,
        foreground: carried.foreground,
        config_path: carried.config.path.display().to_string(),
        pidfile: carried.pidfile.display().to_string(),
        pidfile_overridden: carried.pidfile_overridden,
        pidfile_fd: carried.pidfile_fd,
        endpoint_fd: carried.endpoint_fd,
        control_fd: carried.control_fd,
        reply_fd: carried.reply_fd,
        retired,
        texts: texts.iter().map(|t| t.to_string()).collect(),
        listeners,
        in_force: carried.in_force.to_vec(),
        counters: carried.metrics.carried(),
        workers,
        started_as: carried.started_as.map(|p| p.display().to_string()),
        log_fd: carried.log_fd,
        guardian: None,
        control_clients: carried.control_clients,
    }
}

/// The health of `upstreams`' addresses, times from `at` (the freeze).
fn health_of(upstreams: &Upstreams, at: Instant) -> Vec<UpstreamHealthState> {
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let entries = upstreams.health().entries();
    let carried = entries.into_iter().map(|(target, health)| UpstreamHealthState {
        address: target.to_string(),
        disabled: health.disabled,
        failures: health.failures,
        backoff: health
            .backoff
            .map(|(length, until)| (nanos(length), nanos(until.saturating_duration_since(at)))),
    });
    carried.collect()
}

/// The health a state carries for `upstreams`' addresses, times from `at` (the freeze); an
/// address that does not read is left out (up).
fn restore_health(upstreams: &Upstreams, carried: &[UpstreamHealthState], at: Instant) {
    let entries = carried.iter().filter_map(|h| {
        let target = Target::parse(&h.address).ok()?;
        let backoff =
            h.backoff.map(|(length, left)| (Duration::from_nanos(length), at + Duration::from_nanos(left)));
        Some((target, Health { disabled: h.disabled, failures: h.failures, backoff }))
    });
    upstreams.health().restore(entries);
}

/// Closes what the state retired (see [`State::retired`]), once the new loops run.
pub fn close_retired(state_retired: &[std::os::fd::RawFd]) {
    for &fd in state_retired {
        drop(crate::os::sys::adopt(fd));
    }
}

/// The daemon rebuilt from a state: the configuration in force, the listener table's sources,
/// the workers with every connection, and the upstreams of the listeners in force.
pub struct Thawed {
    pub config: Config,
    pub sources: Vec<Source>,
    pub in_force: Vec<usize>,
    pub workers: Vec<(Worker, Remote)>,
    pub upstreams: Vec<Option<Arc<Upstreams>>>,
    pub connections: usize,
    /// Listening sockets taken over (one per listener in force, whatever the workers).
    pub listeners: usize,
}

/// A state like the one an upgrade will write, to check the new binary with before anything is
/// frozen (`handover::exec::preflight`): everything but descriptors, one connection per worker
/// with every part a connection can have, and a control client.
pub fn sample_of(mut carried: Carried<'_>, workers: usize) -> State {
    use crate::handover::state::{ConnState, HalfState, RelayState, SocketState, WorkerState};
    use crate::observe::{Observer, Protocol};
    let table = carried.sources.len();
    let half = HalfState {
        pending: Some(vec![0]),
        pipe: Some((-1, -1, 1, 65536)),
        urgent: Some(0),
        ..HalfState::default()
    };
    let socket = SocketState { fd: -1, unix: false, flags: 0 };
    let conn = ConnState {
        listener: carried.in_force.first().copied().unwrap_or(0),
        peer: Some("127.0.0.1:1".into()),
        lifetime: Some(0),
        half_close: Some(0),
        wire_seen: Some(0),
        attempts: Some((vec!["127.0.0.1:1".into(), "unix:/x".into()], 0, 1)),
        relay: RelayState {
            phase: 1,
            client: socket.clone(),
            upstream: Some(socket),
            to_upstream: half.clone(),
            to_client: half,
            first_fin: Some(0),
            preamble: Some(vec![0]),
            observer: Observer::new(Protocol::Postgres).map(|o| o.to_bytes()),
        },
        ..ConnState::default()
    };
    carried.control_clients =
        vec![ControlClientState { fd: -1, phase: 2, bytes: vec![b'\n'], ..ControlClientState::default() }];
    let frozen = (0..workers)
        .map(|worker| Frozen {
            worker,
            state: WorkerState { listeners: vec![None; table], conns: vec![conn.clone()], next_id: 1 },
            counters: Vec::new(),
            unix_paths: Vec::new(),
            retired: None,
        })
        .collect();
    let mut state = State { guardian: Some((-1, 0)), ..state_of(carried, 0, frozen) };
    if let Some(&first) = state.in_force.first() {
        let health = UpstreamHealthState {
            address: "127.0.0.1:1".into(),
            disabled: true,
            failures: 1,
            backoff: Some((1, 1)),
        };
        state.listeners[first].upstream_health.push(health);
    }
    state
}

/// What `idlereaper --handover-check FD` does in the new binary: reads the sample state as it
/// would read the real one, configuration texts included.
pub fn check(state: &State) -> Result<(), Error> {
    configs_of(state).map(drop)
}

/// The configurations of the state's texts, each listener of the table found in its text.
fn configs_of(state: &State) -> Result<Vec<Config>, Error> {
    let path = Path::new(&state.config_path);
    let configs = state
        .texts
        .iter()
        .map(|text| Config::parse(text, path))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Message(format!("the configuration handed over: {e}")))?;
    match state.listeners.iter().find(|l| configs[l.text].listeners.len() <= l.position) {
        Some(l) => Err(Error::Message(format!(
            "the state names listener {} of a configuration that has fewer",
            l.position
        ))),
        None => Ok(configs),
    }
}

/// Rebuilds the daemon from `state`, its counters in `metrics` (made by
/// [`Metrics::resumed`]). The guard of each Unix listener's socket file is cloned into
/// `socket_files`: while the caller holds the clones, no failure removes a file.
pub fn thaw(state: &State, metrics: &Metrics, socket_files: &mut Vec<UnixPath>) -> Result<Thawed, Error> {
    let configs = configs_of(state)?;
    // What the process already has stays: its pidfile and its number of workers.
    let mut config = configs[0].clone();
    config.daemon.pidfile = state.pidfile.clone().into();
    config.daemon.workers = state.workers.len();
    let texts: Vec<Arc<str>> = configs.iter().map(|c| Arc::clone(&c.text)).collect();
    let mut tables: Vec<Vec<listener::Listener>> = state.workers.iter().map(|_| Vec::new()).collect();
    let (mut sources, mut counters) = (Vec::new(), Vec::new());
    let mut upstreams = vec![None; config.listeners.len()];
    let frozen = clock::instant_of(state.frozen_at);
    for (index, ls) in state.listeners.iter().enumerate() {
        let lc = &configs[ls.text].listeners[ls.position];
        let listener_metrics = ListenerMetrics::new(&lc.name);
        listener_metrics.restore(&ls.counters);
        let in_force = state.in_force.iter().position(|&i| i == index);
        let resumed = match in_force.filter(|_| !lc.upstream.is_empty()) {
            None => None,
            Some(_) => {
                let per_entry = ls
                    .targets
                    .iter()
                    .map(|entry| entry.iter().map(|t| Target::parse(t)).collect::<std::io::Result<Vec<_>>>())
                    .collect::<std::io::Result<Vec<_>>>()
                    .unwrap_or_default();
                let resolved = Upstreams::resumed(lc, per_entry).map_err(|(e, error)| {
                    Error::Message(format!(
                        "listener {}: cannot resolve {}: {error}",
                        lc.name, lc.upstream[e]
                    ))
                })?;
                restore_health(&resolved, &ls.upstream_health, frozen);
                Some(Arc::new(resolved))
            }
        };
        if let Some(k) = in_force {
            upstreams[k] = resumed.clone();
            counters.push((k, Arc::clone(&listener_metrics)));
        }
        let fds: Vec<_> = state.workers.iter().map(|w| w.listeners[index]).collect();
        let unix_path = match (&lc.listen, &ls.unix_path) {
            (Listen::Unix(_), Some(path)) => Some(UnixPath::adopt(path.into())),
            _ => None,
        };
        socket_files.extend(unix_path.clone());
        for (table, l) in
            tables.iter_mut().zip(listener::adopt(lc, &fds, unix_path, listener_metrics, resumed)?)
        {
            table.push(l);
        }
        let text = Arc::clone(&texts[ls.text]);
        sources.push(Source { text, position: ls.position });
    }
    counters.sort_by_key(|(k, _)| *k);
    metrics.set_listeners(counters.into_iter().map(|(_, m)| m).collect());
    let mut workers = Vec::with_capacity(tables.len());
    let mut connections = 0;
    for (i, (table, part)) in tables.into_iter().zip(&state.workers).enumerate() {
        let (mut worker, remote) =
            Worker::new(&config, i, table, metrics.clone()).map_err(|e| Error::io("event loop", e))?;
        connections += worker.adopt(part, state.frozen_at);
        workers.push((worker, remote));
    }
    let listeners = state.in_force.len();
    Ok(Thawed {
        config,
        sources,
        in_force: state.in_force.clone(),
        workers,
        upstreams,
        connections,
        listeners,
    })
}
