//! One client connection and, for a relay, its upstream: a small state machine that the event
//! loop drives on readiness. It knows nothing of the wheel or the clock; each call to
//! [`Conn::drive`] reports whether bytes moved (so the loop can push the idle deadline forward)
//! and what should happen next, including why the connection must close.
//!
//! Readiness contract (mio, edge-triggered): an event only says that a socket *may* be ready. We
//! remember readiness per socket and clear it only when a call returns `WouldBlock`; every read
//! and write loop runs until then, or until the per-call budget is spent, in which case the loop
//! must call [`Conn::drive`] again without waiting for a new event. Spurious events (including
//! ones meant for a connection that previously used the same slab key) are harmless: the calls
//! they lead to return `WouldBlock`.

use std::fmt;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;

use crate::buffer::Pool;
use crate::pipe::PipePool;
use crate::relay::{pump, Half, Io, Socket};

/// Which socket of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
}

impl Side {
    /// The other socket of the pair.
    pub fn other(self) -> Side {
        match self {
            Side::Client => Side::Upstream,
            Side::Upstream => Side::Client,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Upstream => "upstream",
        }
    }
}

/// Why a connection was closed. The names are part of the log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// No byte moved in either direction for `idle_timeout`.
    Idle,
    /// The client finished (FIN), and everything it sent was delivered.
    ClientClosed,
    /// The upstream finished (FIN) first, and everything it sent was delivered.
    UpstreamClosed,
    /// The upstream connection failed.
    UpstreamRefused,
    /// The upstream did not answer within `connect_timeout`.
    ConnectTimeout,
    /// An I/O error on either socket.
    Error,
    /// The daemon stopped before the connection ended.
    Shutdown,
    /// `max_lifetime` after accept, whatever the traffic.
    MaxLifetime,
    /// One side sent FIN and the other did not finish within `half_close_timeout`.
    HalfCloseTimeout,
    /// Refused at accept: the listener was at `max_connections`.
    Limit,
    /// Refused at accept: the client's address was at `max_connections_per_ip`.
    PerIpLimit,
    /// Refused at accept by `allow` / `deny`.
    Denied,
}

impl CloseReason {
    /// The name used in log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Idle => "idle",
            CloseReason::ClientClosed => "client_closed",
            CloseReason::UpstreamClosed => "upstream_closed",
            CloseReason::UpstreamRefused => "upstream_refused",
            CloseReason::ConnectTimeout => "connect_timeout",
            CloseReason::Error => "error",
            CloseReason::Shutdown => "shutdown",
            CloseReason::MaxLifetime => "max_lifetime",
            CloseReason::HalfCloseTimeout => "half_close_timeout",
            CloseReason::Limit => "limit",
            CloseReason::PerIpLimit => "per_ip_limit",
            CloseReason::Denied => "denied",
        }
    }

    fn closed_by(side: Side) -> CloseReason {
        match side {
            Side::Client => CloseReason::ClientClosed,
            Side::Upstream => CloseReason::UpstreamClosed,
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An I/O failure, with the socket and operation it happened on, for the close log line.
#[derive(Debug)]
pub struct IoFailure {
    pub side: Side,
    pub op: &'static str,
    pub error: io::Error,
}

impl fmt::Display for IoFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.side.name(), self.op, self.error)
    }
}

/// What the event loop should do after [`Conn::drive`].
#[derive(Debug)]
pub enum Next {
    /// Wait for readiness events.
    Wait,
    /// The work budget ran out with sockets still ready: drive again soon, without an event.
    Again,
    /// Close both sockets.
    Close(CloseReason, Option<IoFailure>),
}

/// The result of one [`Conn::drive`].
#[derive(Debug)]
pub struct Progress {
    /// Whether any byte moved, or the upstream connection completed: both count as activity.
    pub active: bool,
    /// This drive saw the first FIN of the connection (its half-close timer starts now).
    pub half_closed: bool,
    pub next: Next,
}

/// The deadlines a connection is subject to, in wheel ticks. Its one timer is armed for the
/// earliest; the wheel entry is moved only when that one moves earlier (see `Wheel::postpone`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// `connect_timeout` while the upstream connect is in progress, then the idle deadline.
    pub activity: u64,
    /// `max_lifetime` after accept, if limited.
    pub lifetime: Option<u64>,
    /// `half_close_timeout` after the first FIN, if any.
    pub half_close: Option<u64>,
}

impl Deadlines {
    /// The deadline the connection's timer is armed for.
    pub fn earliest(&self) -> u64 {
        [Some(self.activity), self.lifetime, self.half_close].into_iter().flatten().min().unwrap_or(u64::MAX)
    }

    /// Why a connection whose timer fired is closed: the deadline that passed first.
    pub fn reason(&self, connecting: bool) -> CloseReason {
        let activity = if connecting { CloseReason::ConnectTimeout } else { CloseReason::Idle };
        let candidates = [
            (Some(self.activity), activity),
            (self.lifetime, CloseReason::MaxLifetime),
            (self.half_close, CloseReason::HalfCloseTimeout),
        ];
        let due = candidates.iter().filter_map(|(d, r)| d.map(|d| (d, *r)));
        due.min_by_key(|(d, _)| *d).map_or(activity, |(_, r)| r)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Relay: waiting for the upstream connect to complete. The client is not read meanwhile.
    Connecting,
    /// Relay: moving bytes both ways.
    Relaying,
    /// Sink: reading and discarding.
    Sink,
}

/// A client connection and, for a relay listener, its upstream.
#[derive(Debug)]
pub struct Conn {
    /// Index of the listener that accepted it.
    pub listener: usize,
    /// The client's address.
    pub peer: SocketAddr,
    pub accepted: Instant,
    /// The connection's one entry in the timing wheel, if armed.
    pub timer: Option<crate::wheel::TimerKey>,
    /// What the timer is armed for.
    pub deadlines: Deadlines,
    /// Counted in the listener's per-address table (to be uncounted at close).
    pub per_ip_counted: bool,
    /// Set by the event loop: events carrying another generation are not this connection's.
    pub gen: usize,
    client: Socket,
    upstream: Option<Socket>,
    state: State,
    to_upstream: Half,
    to_client: Half,
    /// Which side sent FIN first, for the close reason.
    first_fin: Option<Side>,
    /// Bytes to send the upstream before the client's (a PROXY protocol header).
    preamble: Option<Box<[u8]>>,
}

impl Conn {
    /// A sink connection: the client's bytes are read and discarded.
    pub fn sink(listener: usize, peer: SocketAddr, client: TcpStream, now: Instant) -> Conn {
        Conn::new(listener, peer, client, None, State::Sink, now)
    }

    /// A relay connection whose upstream connect (non-blocking) is in progress; `preamble` is
    /// sent to the upstream once connected, before any byte from the client.
    pub fn relay(
        listener: usize,
        peer: SocketAddr,
        client: TcpStream,
        upstream: TcpStream,
        preamble: Option<Box<[u8]>>,
        now: Instant,
    ) -> Conn {
        let mut conn = Conn::new(listener, peer, client, Some(upstream), State::Connecting, now);
        conn.preamble = preamble;
        conn
    }

    fn new(
        listener: usize,
        peer: SocketAddr,
        client: TcpStream,
        upstream: Option<TcpStream>,
        state: State,
        now: Instant,
    ) -> Conn {
        Conn {
            listener,
            peer,
            accepted: now,
            timer: None,
            deadlines: Deadlines { activity: u64::MAX, lifetime: None, half_close: None },
            per_ip_counted: false,
            gen: 0,
            client: Socket::new(client),
            upstream: upstream.map(Socket::new),
            state,
            to_upstream: Half::default(),
            to_client: Half::default(),
            first_fin: None,
            preamble: None,
        }
    }

    /// True while the upstream connect is in progress (the timer is then `connect_timeout`).
    pub fn is_connecting(&self) -> bool {
        self.state == State::Connecting
    }

    /// Bytes read from the client.
    pub fn bytes_from_client(&self) -> u64 {
        self.to_upstream.bytes
    }

    /// Bytes read from the upstream.
    pub fn bytes_from_upstream(&self) -> u64 {
        self.to_client.bytes
    }

    /// The client socket (to register it with the poll).
    pub fn client_mut(&mut self) -> &mut TcpStream {
        &mut self.client.stream
    }

    /// The upstream socket, for a relay.
    pub fn upstream_mut(&mut self) -> Option<&mut TcpStream> {
        self.upstream.as_mut().map(|s| &mut s.stream)
    }

    /// Takes the upstream socket out of a connection being closed, so that its `close` can come
    /// after the client's (see `Core::expire`).
    pub fn take_upstream(&mut self) -> Option<TcpStream> {
        self.upstream.take().map(|s| s.stream)
    }

    /// Records a readiness event for one side. Errors and hang-ups count as both readable and
    /// writable: the next call on the socket reports them.
    pub fn ready(&mut self, side: Side, event: &mio::event::Event) {
        let socket = match side {
            Side::Client => &mut self.client,
            Side::Upstream => match self.upstream.as_mut() {
                Some(s) => s,
                None => return,
            },
        };
        let broken = event.is_error();
        socket.readable |= event.is_readable() || event.is_read_closed() || broken;
        socket.writable |= event.is_writable() || event.is_write_closed() || broken;
        socket.closing |= event.is_read_closed() || broken;
    }

    /// Moves whatever bytes can move now, and says what to do next.
    pub fn drive(&mut self, io: &mut Io<'_>) -> Progress {
        match self.state {
            State::Sink => self.drive_sink(io),
            State::Connecting => match self.finish_connect() {
                Ok(false) => Progress { active: false, half_closed: false, next: Next::Wait },
                Ok(true) => {
                    self.state = State::Relaying;
                    if let Some(preamble) = self.preamble.take() {
                        self.to_upstream.queue(&preamble, io.pool);
                    }
                    let mut progress = self.drive_relay(io);
                    progress.active = true;
                    progress
                }
                Err(error) => Progress {
                    active: false,
                    half_closed: false,
                    next: Next::Close(
                        CloseReason::UpstreamRefused,
                        Some(IoFailure { side: Side::Upstream, op: "connect", error }),
                    ),
                },
            },
            State::Relaying => self.drive_relay(io),
        }
    }

    /// Returns every buffer and pipe this connection holds (call before dropping it).
    pub fn release(&mut self, pool: &mut Pool, pipes: &mut PipePool) {
        self.to_upstream.release(pool, pipes);
        self.to_client.release(pool, pipes);
    }

    /// Whether the connection holds bytes in flight (in a buffer or a pipe).
    pub fn holds_bytes(&self) -> bool {
        self.to_upstream.holds_bytes() || self.to_client.holds_bytes()
    }

    /// Checks a non-blocking connect: `Ok(true)` once connected, `Ok(false)` while in progress.
    ///
    /// A connecting socket reports no readiness until its connect has completed or failed, and
    /// only this connection's own events reach it (the event loop checks their generation), so
    /// a writable upstream is connected, unless an error or hang-up came with it: then
    /// `SO_ERROR` says whether the connect failed. No `getpeername` to confirm.
    fn finish_connect(&mut self) -> io::Result<bool> {
        let upstream = self.upstream.as_mut().expect("a connecting relay has an upstream");
        if !upstream.writable {
            return Ok(false);
        }
        if upstream.closing {
            if let Some(error) = upstream.stream.take_error()? {
                return Err(error);
            }
        }
        Ok(true)
    }

    fn drive_sink(&mut self, io: &mut Io<'_>) -> Progress {
        let client = &mut self.client;
        let half = &mut self.to_upstream;
        let mut active = false;
        for _ in 0..io.reads_per_drive {
            if !client.readable {
                return Progress { active, half_closed: false, next: Next::Wait };
            }
            match client.stream.read(io.scratch) {
                Ok(0) => {
                    half.read_eof = true;
                    let next = Next::Close(CloseReason::ClientClosed, None);
                    return Progress { active, half_closed: false, next };
                }
                Ok(n) => {
                    half.bytes += n as u64;
                    active = true;
                    client.drained_by(n, io.scratch.len());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => client.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    let failure = IoFailure { side: Side::Client, op: "read", error };
                    return Progress {
                        active,
                        half_closed: false,
                        next: Next::Close(CloseReason::Error, Some(failure)),
                    };
                }
            }
        }
        let next = if client.readable { Next::Again } else { Next::Wait };
        Progress { active, half_closed: false, next }
    }

    fn drive_relay(&mut self, io: &mut Io<'_>) -> Progress {
        let upstream = self.upstream.as_mut().expect("a relay has an upstream");
        let up = pump(&mut self.to_upstream, &mut self.client, upstream, Side::Client, io);
        let down = pump(&mut self.to_client, upstream, &mut self.client, Side::Upstream, io);
        let active = up.moved || down.moved;
        let had_fin = self.first_fin.is_some();
        for (half, side) in [(&self.to_upstream, Side::Client), (&self.to_client, Side::Upstream)] {
            if half.read_eof && self.first_fin.is_none() {
                self.first_fin = Some(side);
            }
        }
        let half_closed = !had_fin && self.first_fin.is_some();
        if let Some(failure) = up.failure.or(down.failure) {
            // A peer that already sent FIN and then resets our writes has simply gone away.
            let peer_finished = match failure.side {
                Side::Client => self.to_upstream.read_eof,
                Side::Upstream => self.to_client.read_eof,
            };
            let reason = if peer_finished && failure.op == "write" {
                CloseReason::closed_by(failure.side)
            } else {
                CloseReason::Error
            };
            return Progress { active, half_closed, next: Next::Close(reason, Some(failure)) };
        }
        if self.to_upstream.done() && self.to_client.done() {
            let side = self.first_fin.unwrap_or(Side::Client);
            return Progress { active, half_closed, next: Next::Close(CloseReason::closed_by(side), None) };
        }
        let next = if up.budget_spent || down.budget_spent { Next::Again } else { Next::Wait };
        Progress { active, half_closed, next }
    }
}
