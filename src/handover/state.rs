//! What crosses the `execve` of a live upgrade, as plain data: the state the old image writes and
//! the new one reads (its byte format is [`super::codec`]'s). Descriptors are carried by number
//! (inherited across the exec, their close-on-exec flag cleared); everything else is in the
//! bytes. Times are relative to `frozen_at`, a `CLOCK_MONOTONIC` reading, which both images
//! share.

use std::io;
use std::os::fd::RawFd;

/// Everything the new image needs to carry on where the old one stopped.
#[derive(Debug, Default, PartialEq)]
pub struct State {
    /// The old binary's version (for the `upgraded from=` line).
    pub from: String,
    /// `CLOCK_MONOTONIC`, nanoseconds, when the workers stopped: deadlines count from here.
    pub frozen_at: u64,
    /// A stop was asked for during the upgrade: the new image stops once it is up.
    pub stop: bool,
    pub foreground: bool,
    pub config_path: String,
    /// The pidfile in use, and whether `--pidfile` named it.
    pub pidfile: String,
    pub pidfile_overridden: bool,
    pub pidfile_fd: RawFd,
    /// The metrics endpoint's listening socket.
    pub endpoint_fd: Option<RawFd>,
    /// The control socket's listening socket.
    pub control_fd: Option<RawFd>,
    /// The control client that asked for the upgrade: the new image answers it.
    pub reply_fd: Option<RawFd>,
    /// Descriptors to close once the new image runs: the old loops' epoll instances (closing
    /// one with every socket still registered takes milliseconds per thousand sockets, which
    /// the pause need not include).
    pub retired: Vec<RawFd>,
    /// Configuration texts the listeners come from; `texts[0]` is the one in force.
    pub texts: Vec<String>,
    /// The workers' listener table, by index (closed ones too: their connections may be open).
    pub listeners: Vec<ListenerState>,
    /// The index in `listeners` of each listener of `texts[0]`, in its order.
    pub in_force: Vec<usize>,
    pub counters: Counters,
    pub workers: Vec<WorkerState>,
    /// The path the daemon was started as, symlinks not resolved: what every upgrade executes,
    /// resolved when it happens. `None` in a state of format 1.
    pub started_as: Option<String>,
    /// The log file's descriptor: a new image that cannot open the file again (a directory it
    /// may no longer write to, the file rotated away) writes on to this one.
    pub log_fd: Option<RawFd>,
    /// The upgrade's guardian (`handover::guardian`): the write end of its pipe, on which the
    /// new image says whether it took over, and its pid, to wait for its exit.
    pub guardian: Option<(RawFd, u32)>,
    /// The control socket's clients, in the middle of a request or an answer, or waiting for
    /// this upgrade's result (format version 2; none in a version 1 state).
    pub control_clients: Vec<ControlClientState>,
}

/// A control client an upgrade hands over: the new image reads on, writes on, or tells it how
/// the upgrade went.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ControlClientState {
    pub fd: RawFd,
    /// 0 reading its request, 1 waiting for the upgrade's result, 2 being answered.
    pub phase: u8,
    /// The request so far (reading), or the answer not yet sent, its end included (answered).
    pub bytes: Vec<u8>,
    /// Nanoseconds from `frozen_at` to the client's deadline (0: due already).
    pub deadline: u64,
}

/// The process-wide counters of `/metrics`.
#[derive(Debug, Default, PartialEq)]
pub struct Counters {
    /// Process start, seconds since the Unix epoch (as nanoseconds).
    pub started: u64,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub upgrades_ok: u64,
    pub upgrades_refused: u64,
    pub upgrades_failed: u64,
}

/// One entry of the workers' listener table.
#[derive(Debug, Default, PartialEq)]
pub struct ListenerState {
    /// Which text of [`State::texts`] configures it, and its position among that text's
    /// listeners.
    pub text: usize,
    pub position: usize,
    /// Its `/metrics` counters, in [`crate::metrics::ListenerMetrics`]'s order.
    pub counters: Vec<u64>,
    /// A Unix listener's socket file, still to be removed when the listener closes.
    pub unix_path: Option<String>,
    /// What each upstream entry resolved to last (a listener in force; else empty): the new
    /// image starts from these, without a lookup during the pause.
    pub targets: Vec<Vec<String>>,
}

/// One worker's part: its handle on each listener (by index; `None` once closed) and its
/// connections.
#[derive(Debug, Default, PartialEq)]
pub struct WorkerState {
    pub listeners: Vec<Option<RawFd>>,
    pub conns: Vec<ConnState>,
    /// The sequence number of the worker's next connection id.
    pub next_id: u64,
}

/// A connection and the loop's bookkeeping for it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ConnState {
    /// Unique for the daemon's lifetime (the close line's `id=`).
    pub id: u64,
    pub listener: usize,
    /// The client's address; `None` for a Unix client.
    pub peer: Option<String>,
    /// Nanoseconds from accept to `frozen_at`.
    pub age: u64,
    /// Nanoseconds from `frozen_at` to each deadline: to the start of its tick, a boundary of
    /// every clock of that tick length (0: due already).
    pub activity: u64,
    pub lifetime: Option<u64>,
    pub half_close: Option<u64>,
    pub wire_seen: Option<u64>,
    pub per_ip_counted: bool,
    /// While connecting: the upstream addresses, where this connection started, how many tried.
    pub attempts: Option<(Vec<String>, usize, usize)>,
    pub relay: RelayState,
}

/// The relay state machine ([`crate::conn::Conn`]).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RelayState {
    /// 0 connecting, 1 relaying, 2 sink.
    pub phase: u8,
    pub client: SocketState,
    pub upstream: Option<SocketState>,
    pub to_upstream: HalfState,
    pub to_client: HalfState,
    /// 0 client, 1 upstream.
    pub first_fin: Option<u8>,
    pub preamble: Option<Vec<u8>>,
    /// A protocol listener's observer, as `observe::Observer::to_bytes` writes it (format
    /// version 2; a connection of version 1 has none).
    pub observer: Option<Vec<u8>>,
}

/// A connected socket and the readiness the relay believed it had.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SocketState {
    pub fd: RawFd,
    pub unix: bool,
    /// Bits: readable, writable, closing, error, urgent, reset.
    pub flags: u8,
}

/// One direction of a relay, with the bytes it holds.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct HalfState {
    pub pending: Option<Vec<u8>>,
    /// A splice pipe: read end, write end, bytes in it, capacity.
    pub pipe: Option<(RawFd, RawFd, usize, usize)>,
    pub bulk: bool,
    pub urgent: Option<u8>,
    pub read_eof: bool,
    pub write_shut: bool,
    pub bytes: u64,
}

impl State {
    /// Every descriptor the state names (to clear close-on-exec, or to close), but the
    /// guardian's pipe, which the guardian must not inherit.
    pub fn descriptors(&self) -> Vec<RawFd> {
        let mut fds = vec![self.pidfile_fd];
        fds.extend(self.log_fd);
        fds.extend(self.endpoint_fd);
        fds.extend(self.control_fd);
        fds.extend(self.reply_fd);
        fds.extend(self.control_clients.iter().map(|c| c.fd));
        fds.extend(&self.retired);
        for worker in &self.workers {
            fds.extend(worker.listeners.iter().flatten());
            for conn in &worker.conns {
                let r = &conn.relay;
                fds.push(r.client.fd);
                fds.extend(r.upstream.as_ref().map(|s| s.fd));
                for half in [&r.to_upstream, &r.to_client] {
                    fds.extend(half.pipe.iter().flat_map(|p| [p.0, p.1]));
                }
            }
        }
        fds
    }

    pub fn connections(&self) -> usize {
        self.workers.iter().map(|w| w.conns.len()).sum()
    }

    /// The references inside the state point where they must.
    pub(super) fn check(&self) -> io::Result<()> {
        let bad = |m: &str| Err(io::Error::new(io::ErrorKind::InvalidData, format!("handover state: {m}")));
        if self.texts.is_empty() || self.workers.is_empty() {
            return bad("no configuration or no worker");
        }
        if self.listeners.iter().any(|l| l.text >= self.texts.len()) {
            return bad("a listener refers to a missing configuration text");
        }
        if self.in_force.iter().any(|&i| i >= self.listeners.len()) {
            return bad("a listener in force is missing");
        }
        if self.control_clients.iter().any(|c| c.phase > 2) {
            return bad("a control client in an unknown phase");
        }
        for worker in &self.workers {
            if worker.listeners.len() != self.listeners.len() {
                return bad("a worker's listener table differs from the others'");
            }
            if worker.conns.iter().any(|c| c.listener >= self.listeners.len() || c.relay.phase > 2) {
                return bad("a connection refers to a missing listener or an unknown phase");
            }
        }
        Ok(())
    }
}
