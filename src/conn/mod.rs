//! One client connection and, for a relay, its upstream: a small state machine that the event
//! loop drives on readiness. It knows nothing of the wheel, the clock, the listener or the
//! deadlines (the worker keeps those in its slot for the connection); each call to
//! [`Conn::drive`] reports whether bytes moved (so the loop can push the idle deadline forward)
//! and what should happen next, including why the connection must close.
//!
//! Readiness contract (mio, edge-triggered): an event only says that a socket *may* be ready. We
//! remember readiness per socket and clear it only when a call returns `WouldBlock`; every read
//! and write loop runs until then, or until the per-call budget is spent, in which case the loop
//! must call [`Conn::drive`] again without waiting for a new event. Spurious events (including
//! ones meant for a connection that previously used the same slab key) are harmless: the calls
//! they lead to return `WouldBlock`.
//!
//! A live upgrade gives a connection up and takes it over again in [`handover`]; what an
//! observed connection says as the daemon closes it is [`farewell`]'s.

mod farewell;
mod handover;

use std::io::{self, Read};

use crate::os::stream::Stream;

use crate::buffer::Pool;
use crate::close_reason::CloseReason;
use crate::observe::Observer;
use crate::os::pipe::PipePool;
use crate::os::sys::{tcp_progress, TcpProgress};
use crate::relay::{pump, Half, Io, Pumped, Socket, Way};
use crate::side::{is_reset, IoFailure, Side};

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
    client: Socket,
    upstream: Option<Socket>,
    state: State,
    to_upstream: Half,
    to_client: Half,
    /// Which side sent FIN first, for the close reason.
    first_fin: Option<Side>,
    /// Bytes to send the upstream before the client's (a PROXY protocol header).
    preamble: Option<Box<[u8]>>,
    /// What the service makes of the bytes, on a protocol listener.
    observer: Option<Observer>,
}

/// Closing after an I/O failure, with the reason it implies.
fn close_after(failure: IoFailure) -> Next {
    Next::Close(CloseReason::of_failure(&failure), Some(failure))
}

/// `SO_ERROR` of a socket whose event reported an error, once: the error it holds, if any.
fn take_error(socket: &mut Socket, side: Side) -> Option<IoFailure> {
    if !std::mem::take(&mut socket.error) {
        return None;
    }
    match socket.stream.take_error() {
        Ok(None) => None,
        Ok(Some(error)) | Err(error) => Some(IoFailure { side, op: "read", error }),
    }
}

impl Conn {
    /// A sink connection: the client's bytes are read and discarded.
    pub fn sink(client: Stream) -> Conn {
        Conn::new(client, None, State::Sink)
    }

    /// A relay connection whose upstream connect (non-blocking) is in progress; `preamble` is
    /// sent to the upstream once connected, before any byte from the client; `observer`, on a
    /// protocol listener, is shown every byte relayed.
    pub fn relay(
        client: Stream,
        upstream: Stream,
        preamble: Option<Box<[u8]>>,
        observer: Option<Observer>,
    ) -> Conn {
        let mut conn = Conn::new(client, Some(upstream), State::Connecting);
        conn.preamble = preamble;
        conn.observer = observer;
        conn
    }

    fn new(client: Stream, upstream: Option<Stream>, state: State) -> Conn {
        Conn {
            client: Socket::new(client),
            upstream: upstream.map(Socket::new),
            state,
            to_upstream: Half::default(),
            to_client: Half::default(),
            first_fin: None,
            preamble: None,
            observer: None,
        }
    }

    /// The protocol observer, on a protocol listener.
    pub fn observed(&self) -> Option<&Observer> {
        self.observer.as_ref()
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
    pub fn client_mut(&mut self) -> &mut Stream {
        &mut self.client.stream
    }

    /// The upstream socket, for a relay.
    pub fn upstream(&self) -> Option<&Stream> {
        self.upstream.as_ref().map(|s| &s.stream)
    }

    /// The upstream socket, for a relay.
    pub fn upstream_mut(&mut self) -> Option<&mut Stream> {
        self.upstream.as_mut().map(|s| &mut s.stream)
    }

    /// Takes the upstream socket out of a connection being closed, so that its `close` can come
    /// after the client's (see `Core::expire`).
    pub fn take_upstream(&mut self) -> Option<Stream> {
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
        socket.error |= broken;
        socket.urgent |= event.is_priority();
    }

    /// Moves whatever bytes can move now, and says what to do next.
    pub fn drive(&mut self, io: &mut Io<'_>) -> Progress {
        match self.state {
            State::Sink => self.drive_sink(io),
            State::Connecting => match self.finish_connect() {
                // A client that resets while the upstream connect is in progress ends it now.
                Ok(false) => match take_error(&mut self.client, Side::Client) {
                    Some(failure) => {
                        Progress { active: false, half_closed: false, next: close_after(failure) }
                    }
                    None => Progress { active: false, half_closed: false, next: Next::Wait },
                },
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

    /// Both peers have sent FIN (and the daemon has read it).
    pub fn both_finished(&self) -> bool {
        self.to_upstream.read_eof && self.to_client.read_eof
    }

    /// The side whose FIN the half-close timer waits for: the other one of the first FIN.
    pub fn awaited_fin(&self) -> Option<Side> {
        self.first_fin.filter(|_| !self.both_finished()).map(Side::other)
    }

    /// What the kernel did on both sockets of a relaying connection (`[client, upstream]`), for
    /// deciding whether it is really idle; `None` for a sink or a connect in progress, or if the
    /// kernel answers for neither. A Unix socket has no `TCP_INFO`: it counts as quiet (what
    /// moves through it is what the daemon itself reads and writes).
    pub fn kernel_progress(&self) -> Option<[TcpProgress; 2]> {
        let upstream = self.upstream.as_ref().filter(|_| self.state == State::Relaying)?;
        let (client, upstream) =
            (tcp_progress(&self.client.stream).ok(), tcp_progress(&upstream.stream).ok());
        if client.is_none() && upstream.is_none() {
            return None;
        }
        Some([client.unwrap_or_else(TcpProgress::quiet), upstream.unwrap_or_else(TcpProgress::quiet)])
    }

    /// Writes `bytes` to the client if its socket takes them at once (an idle notice before the
    /// close); never waits, and drops what does not fit.
    pub fn notify_client(&mut self, bytes: &[u8]) {
        let _ = std::io::Write::write(&mut self.client.stream, bytes);
    }

    /// Starts over with another upstream socket whose connect is in progress (the previous
    /// address failed): the client's bytes and the preamble are still waiting.
    pub fn retarget(&mut self, upstream: Stream) {
        debug_assert_eq!(self.state, State::Connecting, "retarget after connecting");
        self.upstream = Some(Socket::new(upstream));
    }

    /// Whether bytes for `side`'s peer are undelivered: held by the daemon, or (per `kernel`,
    /// `[client, upstream]`) still unacknowledged in its socket.
    pub fn undelivered_toward(&self, side: Side, kernel: Option<&[TcpProgress; 2]>) -> bool {
        let half = match side {
            Side::Client => &self.to_client,
            Side::Upstream => &self.to_upstream,
        };
        half.holds_bytes() || kernel.is_some_and(|k| k[side.index()].unacknowledged)
    }

    /// Makes the close of `side`'s socket a reset (`SO_LINGER` 0): its peer sees ECONNRESET
    /// instead of a FIN, and unsent bytes are discarded.
    pub fn abort(&self, side: Side) {
        let stream = match side {
            Side::Client => &self.client.stream,
            Side::Upstream => match self.upstream.as_ref() {
                Some(s) => &s.stream,
                None => return,
            },
        };
        let _ = socket2::SockRef::from(stream).set_linger(Some(std::time::Duration::ZERO));
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
            match upstream.stream.take_error()? {
                // Connected, and reset at once (perhaps after sending): relay what it sent,
                // then pass the reset on.
                Some(e) if is_reset(&e) => {
                    upstream.reset = true;
                }
                Some(error) => return Err(error),
                None => {}
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
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    client.readable = false;
                    client.urgent = false; // a sink reads past urgent marks and drops their bytes
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    let failure = IoFailure { side: Side::Client, op: "read", error };
                    return Progress { active, half_closed: false, next: close_after(failure) };
                }
            }
        }
        let next = if client.readable { Next::Again } else { Next::Wait };
        Progress { active, half_closed: false, next }
    }

    fn drive_relay(&mut self, io: &mut Io<'_>) -> Progress {
        let upstream = self.upstream.as_mut().expect("a relay has an upstream");
        let observer = &mut self.observer;
        io.other_done = self.to_client.done();
        let way = Way { src: &mut self.client, dst: upstream, src_side: Side::Client, observer };
        let up = pump(&mut self.to_upstream, way, io);
        // After a failure the other direction is not pumped: the kernel reports a socket's error
        // once, to the first call that meets it, and a read of that socket afterwards sees an end
        // of stream, which passed on would give the peer a FIN ahead of its reset.
        let down = match up.failure {
            Some(_) => Pumped { moved: false, budget_spent: false, failure: None },
            None => {
                io.other_done = self.to_upstream.done();
                let way = Way { src: upstream, dst: &mut self.client, src_side: Side::Upstream, observer };
                pump(&mut self.to_client, way, io)
            }
        };
        let active = up.moved || down.moved;
        let had_fin = self.first_fin.is_some();
        for (half, side) in [(&self.to_upstream, Side::Client), (&self.to_client, Side::Upstream)] {
            if half.read_eof && self.first_fin.is_none() {
                self.first_fin = Some(side);
            }
        }
        let half_closed = !had_fin && self.first_fin.is_some();
        // A reset is acted on when it happens, even on a socket that backpressure keeps us from
        // reading (its error event is the only sign of it).
        let failure =
            up.failure.or(down.failure).or_else(|| take_error(&mut self.client, Side::Client)).or_else(
                || take_error(self.upstream.as_mut().expect("a relay has an upstream"), Side::Upstream),
            );
        if let Some(failure) = failure {
            return Progress { active, half_closed, next: close_after(failure) };
        }
        if self.to_upstream.done() && self.to_client.done() {
            let side = self.first_fin.unwrap_or(Side::Client);
            return Progress { active, half_closed, next: Next::Close(CloseReason::closed_by(side), None) };
        }
        let next = if up.budget_spent || down.budget_spent { Next::Again } else { Next::Wait };
        Progress { active, half_closed, next }
    }
}
