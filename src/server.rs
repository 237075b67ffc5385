//! The event loop of one worker: one `mio::Poll` that owns the worker's listeners, a `Slab` of
//! connections, the timing wheel, and a control channel from the supervisor (stop, statistics).
//! No globals: everything an iteration touches hangs off [`Server`].
//!
//! One iteration: compute the poll timeout from the wheel's next deadline (none: block until I/O),
//! poll, handle the events (accept until `WouldBlock`, drive the connections they name), drive the
//! connections that spent their budget last time, then expire due timers within a budget. The only
//! blocking call is `Poll::poll`; accepts, reads per connection and expiries are bounded per
//! iteration, and leftover work makes the next poll non-blocking instead of starving I/O.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use socket2::{SockRef, TcpKeepalive};

use crate::alarm::Alarm;
use crate::buffer::Pool;
use crate::clock::Clock;
use crate::config::{Config, ListenerConfig};
use crate::conn::{CloseReason, Conn, Deadlines, IoFailure, Next, Side};
use crate::listener::{is_out_of_descriptors, Listener, ACCEPT_PAUSE};
use crate::liveness::{self, Due, Verdict};
use crate::metrics::Metrics;
use crate::pipe::PipePool;
use crate::proxy_protocol;
use crate::relay::Io;
use crate::sys::{TcpProgress, JIFFY_SLACK_MS};
use crate::wheel::Wheel;

/// Relay buffer size: one read, and the most a direction holds while its reader is stalled.
const BUFFER_SIZE: usize = 64 * 1024;
/// Free buffers the pool keeps for reuse (4 MiB).
const POOL_KEEP: usize = 64;
/// Pipes for splicing bulk transfers (two descriptors each), per worker.
const MAX_PIPES: usize = 64;
/// Reads per direction per drive: 16 × 64 KiB = 1 MiB before another connection gets a turn.
const READS_PER_DRIVE: usize = 16;
/// Accepts per listener per iteration.
const ACCEPTS_PER_ITERATION: usize = 64;
/// Timer expiries per iteration.
const EXPIRIES_PER_ITERATION: usize = 1024;
/// Upstream sockets of expired connections that may wait for slack in the loop to be closed
/// (see `Core::expire`); beyond it, the oldest are closed at once.
const MAX_CLOSING_UPSTREAMS: usize = 4096;
const EVENTS_CAPACITY: usize = 1024;
/// What a connection's sockets are registered for: urgent data (`EPOLLPRI`) too, because the
/// kernel stops reads at its mark and only this event says why (see `relay`).
const CONN_INTEREST: Interest = Interest::READABLE.add(Interest::WRITABLE).add(Interest::PRIORITY);

/// Poll tokens: the low two bits say what the rest indexes. A connection's token also carries the
/// generation of the connection (bits above [`KEY_BITS`]), so that an event meant for a closed
/// connection whose slab key was reused within the same batch of events is recognised and dropped:
/// a connection only ever sees events of its own sockets. That is what lets an upstream's first
/// writable event be trusted to mean "connected" (or failed) without a `getpeername` to confirm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Conn(usize, Side, usize),
    Listener(usize),
    Control,
    Alarm,
}

/// Bits of a connection token that hold its slab key: 2^24 connections per worker, far beyond
/// what the descriptor limit allows (two descriptors each).
const KEY_BITS: u32 = 24;
/// Bits of a connection token that hold its generation: 38 on a 64-bit target (6 on 32-bit, where
/// a reused key could in principle go unrecognised after 64 admissions in one batch).
const GEN_BITS: u32 = usize::BITS - 2 - KEY_BITS;
const KEY_MASK: usize = (1 << KEY_BITS) - 1;
const GEN_MASK: usize = (1 << GEN_BITS) - 1;

impl Target {
    fn token(self) -> Token {
        Token(match self {
            Target::Conn(key, side, gen) => {
                debug_assert!(key <= KEY_MASK, "connection key {key} does not fit a token");
                let tag = match side {
                    Side::Client => 0,
                    Side::Upstream => 1,
                };
                ((gen & GEN_MASK) << (KEY_BITS + 2)) | (key << 2) | tag
            }
            Target::Listener(i) => (i << 2) | 2,
            Target::Control => 3,
            Target::Alarm => (1 << 2) | 3,
        })
    }

    fn from_token(token: Token) -> Target {
        let index = token.0 >> 2;
        let (key, gen) = (index & KEY_MASK, index >> KEY_BITS);
        match token.0 & 3 {
            0 => Target::Conn(key, Side::Client, gen),
            1 => Target::Conn(key, Side::Upstream, gen),
            2 => Target::Listener(index),
            _ if index == 0 => Target::Control,
            _ => Target::Alarm,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Stop requested: listeners closed, open connections run until the deadline.
    Draining {
        until: Instant,
    },
    Stopped,
}

/// Counters for the statistics line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub accepted: u64,
    pub closed: u64,
    pub refused: u64,
}

/// The event loop and everything it owns.
pub struct Server {
    poll: Poll,
    events: Events,
    core: Core,
}

/// Everything but the poll's event buffer, so that events can be iterated while handling them.
struct Core {
    registry: mio::Registry,
    listeners: Vec<Listener>,
    conns: Slab<Conn>,
    /// Connection keys by deadline (`u32`: 24-byte entries; a slab key never reaches 2^32).
    wheel: Wheel<u32>,
    clock: Clock,
    pool: Pool,
    pipes: PipePool,
    scratch: Box<[u8]>,
    worker: usize,
    metrics: Metrics,
    commands: Receiver<Command>,
    /// Wakes the loop at the wheel's next deadline, with sub-millisecond precision.
    alarm: Alarm,
    phase: Phase,
    shutdown_timeout: Duration,
    /// Connections whose budget ran out with sockets still ready.
    again: Vec<usize>,
    /// A descriptor kept in reserve for when accept fails with EMFILE (see `accept_all`).
    spare_fd: Option<std::fs::File>,
    expired: Vec<u32>,
    /// Upstream sockets of expired connections whose clients are closed, oldest first, to be
    /// closed when the loop has slack (see `expire`).
    closing_upstreams: VecDeque<TcpStream>,
    /// The last expiry pass stopped at its budget with timers still due.
    expiry_backlog: bool,
    /// Accepting ran out of descriptors, and no accept has succeeded since.
    starved: Option<Starved>,
    /// The generation of the last connection admitted (see [`Target`]).
    generation: usize,
    stats: Stats,
}

/// An episode of descriptor exhaustion: one warning when it begins, and an info line with its
/// length and the count of clients refused when an accept succeeds again.
struct Starved {
    since: Instant,
    refused: u64,
}

impl Starved {
    fn began(listener: &str, error: &io::Error) -> Starved {
        warn!(
            "out of descriptors: listener={listener} accept failed: {error}; refusing new clients \
             until a descriptor is freed"
        );
        Starved { since: Instant::now(), refused: 0 }
    }

    fn ended(self) {
        let millis = self.since.elapsed().as_millis();
        info!("descriptors available again: starved_ms={millis} refused={}", self.refused);
    }
}

/// What the supervisor asks of a worker.
pub enum Command {
    /// Stop accepting and drain; a second `Stop` closes everything at once.
    Stop,
    /// Log a statistics line.
    Stats,
    /// Apply a new configuration (SIGHUP).
    Reload(Reload),
}

/// A worker's part of a reload: the listeners of the new configuration, in order, and the
/// settings that apply at once. Listener indices only grow, so every worker assigns the same
/// index to the same listener, and open connections keep pointing at theirs.
pub struct Reload {
    pub listeners: Vec<ListenerChange>,
    pub shutdown_timeout: Duration,
}

/// One listener of a new configuration.
pub enum ListenerChange {
    /// The socket at `index` stays (same address): no client is refused during the reload. Its
    /// new settings apply to new connections, and to open ones from their next activity on.
    Keep { index: usize, config: ListenerConfig },
    /// A socket bound for the reload; it takes the next index.
    Add(Listener),
}

/// The supervisor's handle on a worker's loop.
#[derive(Clone)]
pub struct Remote {
    commands: Sender<Command>,
    waker: Arc<Waker>,
}

impl Remote {
    /// Sends a command and wakes the loop. A worker that has already stopped ignores it.
    pub fn send(&self, command: Command) {
        if self.commands.send(command).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

impl Server {
    /// Registers worker `worker`'s listeners with a new poll. Returns the loop and the handle
    /// through which the supervisor controls it.
    pub fn new(
        config: &Config,
        worker: usize,
        mut listeners: Vec<Listener>,
        metrics: Metrics,
    ) -> io::Result<(Server, Remote)> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        for (i, listener) in listeners.iter_mut().enumerate() {
            if let Some(socket) = listener.socket.as_mut() {
                registry.register(socket, Target::Listener(i).token(), Interest::READABLE)?;
            }
        }
        let waker = Arc::new(Waker::new(&registry, Target::Control.token())?);
        let (sender, commands) = mpsc::channel();
        let alarm = Alarm::new()?;
        alarm.register(&registry, Target::Alarm.token())?;
        let server = Server {
            poll,
            events: Events::with_capacity(EVENTS_CAPACITY),
            core: Core {
                registry,
                listeners,
                conns: Slab::new(),
                wheel: Wheel::new(),
                clock: Clock::new(config.daemon.tick),
                pool: Pool::new(BUFFER_SIZE, POOL_KEEP),
                pipes: PipePool::new(MAX_PIPES),
                scratch: vec![0; BUFFER_SIZE].into_boxed_slice(),
                worker,
                metrics,
                commands,
                alarm,
                phase: Phase::Running,
                shutdown_timeout: config.daemon.shutdown_timeout,
                again: Vec::new(),
                spare_fd: open_spare(),
                expired: Vec::new(),
                closing_upstreams: VecDeque::new(),
                expiry_backlog: false,
                starved: None,
                generation: 0,
                stats: Stats::default(),
            },
        };
        Ok((server, Remote { commands: sender, waker }))
    }

    /// The listeners, in configuration order.
    pub fn listeners(&self) -> &[Listener] {
        &self.core.listeners
    }

    /// Runs until a stop signal has been handled and the connections are drained or closed.
    pub fn run(&mut self) -> io::Result<()> {
        while self.core.phase != Phase::Stopped {
            let timeout = self.core.poll_timeout(Instant::now());
            match self.poll.poll(&mut self.events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            for event in self.events.iter() {
                self.core.handle(event);
            }
            self.core.after_events();
            self.core.metrics.set_timers(self.core.worker, self.core.wheel.len());
        }
        Ok(())
    }
}

impl Core {
    /// How long the next poll may block: zero when work is left over; otherwise until a paused
    /// listener resumes or the drain deadline (whole milliseconds are precise enough for those),
    /// with the alarm armed for the wheel's next deadline; forever when nothing is due.
    fn poll_timeout(&mut self, now: Instant) -> Option<Duration> {
        if self.expiry_backlog
            || !self.again.is_empty()
            || !self.closing_upstreams.is_empty()
            || self.listeners.iter().any(|l| l.resumable(now) || l.can_accept())
        {
            return Some(Duration::ZERO);
        }
        let mut at = None;
        if let Some(tick) = self.wheel.next_deadline() {
            let wait = self.clock.until(now, tick);
            if wait.is_zero() {
                return Some(Duration::ZERO);
            }
            if let Err(e) = self.alarm.arm(tick, wait) {
                // Fall back to the poll timeout (rounded up to a millisecond by mio).
                warn!("cannot arm the timer: {e}");
                at = Some(wait);
            }
        }
        let mut consider = |other: Option<Instant>| {
            if let Some(t) = other {
                let d = t.saturating_duration_since(now);
                at = Some(at.map_or(d, |a: Duration| a.min(d)));
            }
        };
        for listener in &self.listeners {
            consider(listener.paused_until);
        }
        if let Phase::Draining { until } = self.phase {
            consider(Some(until));
        }
        at
    }

    fn handle(&mut self, event: &mio::event::Event) {
        match Target::from_token(event.token()) {
            Target::Control => self.handle_commands(),
            Target::Alarm => self.alarm.fired(), // expiry runs after every batch of events
            Target::Listener(i) => {
                if let Some(listener) = self.listeners.get_mut(i) {
                    listener.backlog_ready = true;
                }
                self.accept_all(i);
            }
            Target::Conn(key, side, gen) => {
                if let Some(conn) = self.conns.get_mut(key).filter(|conn| conn.gen == gen) {
                    conn.ready(side, event);
                    self.drive(key);
                }
            }
        }
    }

    fn after_events(&mut self) {
        let now = Instant::now();
        for i in 0..self.listeners.len() {
            let listener = &mut self.listeners[i];
            if listener.resumable(now) {
                listener.paused_until = None;
            }
            if listener.can_accept() {
                self.accept_all(i);
            }
        }
        for key in std::mem::take(&mut self.again) {
            if self.conns.contains(key) {
                self.drive(key);
            }
        }
        self.expire(Instant::now());
        self.close_upstreams(Instant::now());
        if let Phase::Draining { until } = self.phase {
            if self.conns.is_empty() {
                self.phase = Phase::Stopped;
            } else if Instant::now() >= until {
                self.close_all(CloseReason::Shutdown);
                self.phase = Phase::Stopped;
            }
        }
    }

    /// Accepts until `WouldBlock`, the per-iteration budget, or descriptor exhaustion.
    fn accept_all(&mut self, i: usize) {
        for _ in 0..ACCEPTS_PER_ITERATION {
            let listener = &mut self.listeners[i];
            let Some(socket) = listener.socket.as_ref() else {
                return;
            };
            if listener.paused_until.is_some() {
                return;
            }
            match socket.accept() {
                Ok((stream, peer)) => {
                    if let Some(starved) = self.starved.take() {
                        starved.ended();
                        self.spare_fd = self.spare_fd.take().or_else(open_spare);
                    }
                    self.admit(i, stream, peer)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    listener.backlog_ready = false;
                    return;
                }
                Err(e) if reclaim_descriptors(&mut self.closing_upstreams, &e) => {} // try again
                Err(e) if is_out_of_descriptors(&e) => {
                    let starved =
                        self.starved.get_or_insert_with(|| Starved::began(&listener.config.name, &e));
                    // Free the reserve descriptor, take the waiting client off the backlog and
                    // close it (it learns at once, and the backlog does not stay readable), and
                    // take the reserve back. `accept` fails with EMFILE even when nobody waits:
                    // then it says WouldBlock here, and nothing is retried until a new client's
                    // event (no periodic wake-up).
                    if self.spare_fd.take().is_some() {
                        let refused = socket.accept().map(drop);
                        self.spare_fd = open_spare();
                        match refused {
                            Ok(()) => {
                                starved.refused += 1;
                                self.stats.refused += 1;
                                listener.metrics.refused(CloseReason::OutOfDescriptors);
                                continue;
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                listener.backlog_ready = false;
                                return;
                            }
                            Err(_) => {}
                        }
                    }
                    // No reserve to refuse with: retry when a connection of this worker closes,
                    // or after a pause (another worker may free one).
                    listener.backlog_ready = true;
                    listener.paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                    return;
                }
                // ECONNABORTED, EPERM (firewall), EINTR, ...: that client only.
                Err(e) => debug!("listener={} accept: {e}", listener.config.name),
            }
        }
    }

    /// Sets up an accepted client: refuse it (ACL, per-address limit, listener limit), or
    /// connect to the upstream and arm its timer.
    fn admit(&mut self, i: usize, client: TcpStream, peer: SocketAddr) {
        let now = Instant::now();
        let listener = &mut self.listeners[i];
        // A key must fit its token: a limit only a descriptor limit above 2^25 could reach.
        let admitted = match self.conns.vacant_key() > KEY_MASK {
            true => Err(CloseReason::Limit),
            false => listener.try_admit(peer.ip().to_canonical()),
        };
        let per_ip_counted = match admitted {
            Ok(counted) => counted,
            Err(reason) => {
                // Accepted and closed at once: the client learns immediately instead of waiting
                // in a backlog, and the backlog keeps moving for when a slot frees up. A flood of
                // refusals is logged at most once a second per reason.
                self.stats.refused += 1;
                listener.metrics.refused(reason);
                let slot = match reason {
                    CloseReason::Denied => 0,
                    CloseReason::PerIpLimit => 1,
                    _ => 2,
                };
                if let Some(held_back) = listener.refusals[slot].admit(now) {
                    let name = &listener.config.name;
                    let more =
                        if held_back > 0 { format!(" refused_unlogged={held_back}") } else { String::new() };
                    info!("conn refused listener={name} client={peer} reason={reason}{more}");
                }
                return;
            }
        };
        let config = &listener.config;
        let keepalive = config.tcp_keepalive;
        tune_keepalive(&client, keepalive);
        let (conn, timeout) = match config.upstream {
            None => (Conn::sink(i, peer, client, now), config.idle_timeout),
            Some(addr) => match TcpStream::connect(addr).or_else(|e| {
                match reclaim_descriptors(&mut self.closing_upstreams, &e) {
                    true => TcpStream::connect(addr),
                    false => Err(e),
                }
            }) {
                Ok(upstream) => {
                    tune_upstream(&upstream, keepalive);
                    let preamble = config.proxy_protocol.map(|version| {
                        let destination = client.local_addr().unwrap_or(config.listen);
                        proxy_protocol::header(version, peer, destination).into_boxed_slice()
                    });
                    (Conn::relay(i, peer, client, upstream, preamble, now), config.connect_timeout)
                }
                Err(error) => {
                    // Out of descriptors is our problem, not the upstream's.
                    let reason = match is_out_of_descriptors(&error) {
                        true => CloseReason::Error,
                        false => CloseReason::UpstreamRefused,
                    };
                    let failure = IoFailure { side: Side::Upstream, op: "connect", error };
                    listener.release(peer.ip().to_canonical(), per_ip_counted);
                    self.stats.accepted += 1;
                    self.stats.closed += 1;
                    listener.metrics.accepted();
                    listener.metrics.upstream_connect_error();
                    listener.metrics.closed(reason, Duration::ZERO);
                    log_close(&config.name, peer, Duration::ZERO, (0, 0), reason, Some(&failure));
                    return;
                }
            },
        };
        let deadlines = Deadlines {
            activity: self.clock.deadline(now, timeout),
            lifetime: config.max_lifetime.map(|d| self.clock.deadline(now, d)),
            half_close: None,
        };
        self.stats.accepted += 1;
        listener.metrics.accepted();
        listener.metrics.active_add(1);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let conn = entry.insert(conn);
        self.generation = self.generation.wrapping_add(1) & GEN_MASK;
        let gen = self.generation;
        conn.gen = gen;
        let registered = self
            .registry
            .register(conn.client_mut(), Target::Conn(key, Side::Client, gen).token(), CONN_INTEREST)
            .and_then(|()| match conn.upstream_mut() {
                Some(up) => {
                    self.registry.register(up, Target::Conn(key, Side::Upstream, gen).token(), CONN_INTEREST)
                }
                None => Ok(()),
            });
        conn.deadlines = deadlines;
        conn.per_ip_counted = per_ip_counted;
        let wheel_key = u32::try_from(key).expect("fewer than 2^32 connections");
        conn.timer = Some(self.wheel.insert(deadlines.earliest(), wheel_key));
        if let Err(error) = registered {
            let failure = IoFailure { side: Side::Client, op: "register", error };
            self.close(key, CloseReason::Error, Some(failure));
        }
    }

    /// Drives one connection and acts on the outcome.
    fn drive(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let mut io = Io {
            scratch: &mut self.scratch,
            pool: &mut self.pool,
            pipes: &mut self.pipes,
            reads_per_drive: READS_PER_DRIVE,
        };
        let before = (conn.bytes_from_client(), conn.bytes_from_upstream());
        let was_connecting = conn.is_connecting();
        let progress = conn.drive(&mut io);
        if progress.active {
            let metrics = &self.listeners[conn.listener].metrics;
            metrics.bytes(conn.bytes_from_client() - before.0, conn.bytes_from_upstream() - before.1);
        }
        if progress.active || progress.half_closed {
            // The clock is read after the bytes moved, so no deadline is early.
            let now = Instant::now();
            let config = &self.listeners[conn.listener].config;
            let mut deadlines = conn.deadlines;
            if progress.active {
                deadlines.activity = self.clock.deadline(now, config.idle_timeout);
            }
            // While one peer has sent FIN, half_close_timeout is the inactivity timer that
            // bounds the wait for the other's: it starts at the FIN and moves with the bytes.
            if progress.half_closed || (progress.active && conn.awaited_fin().is_some()) {
                deadlines.half_close = config.half_close_timeout.map(|d| self.clock.deadline(now, d));
            }
            if conn.both_finished() {
                // Both FINs are in: the half-close wait is over; only delivery is left, which
                // the idle rule governs.
                deadlines.half_close = None;
            }
            // The activity path is this store into the connection, which is in cache anyway: a
            // later deadline leaves the wheel alone, and when the timer fires early `expire`
            // re-arms it (lazy re-arm). The entry moves only for a deadline that moves earlier
            // (half-closed), and once when the upstream connect completes, so that it leaves the
            // connect_timeout slot instead of firing there to be re-armed (a wake-up per tick
            // after a burst of connections).
            let connected = was_connecting && !conn.is_connecting();
            let (old, new) = (conn.deadlines.earliest(), deadlines.earliest());
            if let Some(timer) = conn.timer.filter(|_| new < old || (connected && new != old)) {
                self.wheel.reset(timer, new);
            }
            conn.deadlines = deadlines;
        }
        match progress.next {
            Next::Wait => {}
            Next::Again => self.again.push(key),
            Next::Close(reason, failure) => self.close(key, reason, failure),
        }
    }

    /// Closes both sockets of a connection, logs it once, and frees its slot and timer.
    fn close(&mut self, key: usize, reason: CloseReason, failure: Option<IoFailure>) {
        drop(self.close_client(key, reason, failure, None));
    }

    /// [`close`](Self::close), except that the upstream socket is handed back still open, for
    /// the caller to drop: the client's socket is closed at once. Nothing of the connection is
    /// left behind: its key may be reused as soon as this returns.
    ///
    /// The close is a reset where the relay contract requires one (see [`abort_sides`]); `kernel`
    /// is what the kernel said of the sockets just before, if the caller asked.
    fn close_client(
        &mut self,
        key: usize,
        reason: CloseReason,
        failure: Option<IoFailure>,
        kernel: Option<[TcpProgress; 2]>,
    ) -> Option<TcpStream> {
        let mut conn = self.conns.remove(key);
        if self.starved.is_some() {
            // A descriptor is about to be freed: listeners paused for want of one may try again.
            for listener in &mut self.listeners {
                listener.paused_until = None;
            }
        }
        for (side, abort) in
            [Side::Client, Side::Upstream].into_iter().zip(abort_sides(&conn, reason, kernel))
        {
            if abort {
                conn.abort(side);
            }
        }
        if let Some(timer) = conn.timer.take() {
            self.wheel.cancel(timer);
        }
        conn.release(&mut self.pool, &mut self.pipes);
        let listener = &self.listeners[conn.listener];
        listener.release(conn.peer.ip().to_canonical(), conn.per_ip_counted);
        self.stats.closed += 1;
        let lifetime = conn.accepted.elapsed();
        listener.metrics.active_add(-1);
        listener.metrics.closed(reason, lifetime);
        if matches!(reason, CloseReason::UpstreamRefused | CloseReason::ConnectTimeout) {
            listener.metrics.upstream_connect_error();
        }
        let bytes = (conn.bytes_from_client(), conn.bytes_from_upstream());
        log_close(&listener.config.name, conn.peer, lifetime, bytes, reason, failure.as_ref());
        // Dropping `conn` closes the client's descriptor, and dropping the upstream closes the
        // other; closing also removes them from the epoll set (they are never duplicated), so no
        // `deregister` calls: two system calls fewer per close. An event already collected for
        // them carries the old generation and is ignored.
        conn.take_upstream()
    }

    fn close_all(&mut self, reason: CloseReason) {
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.close(key, reason, None);
        }
    }

    /// Closes the connections whose deadline has passed, at most a budget's worth: each client's
    /// socket at once, in deadline order; their upstreams' sockets wait for slack in the loop
    /// (`close_upstreams`). A `close` is the costliest call of a connection's life (it sends the
    /// FIN, and on loopback the peer's handling of it runs inline): when many deadlines fall
    /// together, closing both sockets of each would make every client wait for the closes of
    /// both sockets of every connection due before it. Upstreams are closed between ticks
    /// instead, at most [`MAX_CLOSING_UPSTREAMS`] behind.
    fn expire(&mut self, now: Instant) {
        let tick = self.clock.ticks_at(now);
        let mut expired = std::mem::take(&mut self.expired);
        // More may be due once the budget is spent: the next poll then does not block.
        self.expiry_backlog = self.wheel.poll(tick, EXPIRIES_PER_ITERATION, &mut expired);
        for key in expired.drain(..).map(|k| k as usize) {
            let Some(conn) = self.conns.get_mut(key) else {
                debug_assert!(false, "timer fired for vacant connection {key}");
                continue;
            };
            conn.timer = None;
            let due = conn.deadlines.earliest();
            if due > tick {
                // Activity since the timer was armed: re-arm it for the deadline now in force.
                conn.timer = Some(self.wheel.insert(due, key as u32));
                continue;
            }
            let mut reason = conn.deadlines.reason(conn.is_connecting());
            // Idle or waiting for a FIN as far as the daemon's own calls go: ask the kernel.
            let kernel = match reason {
                CloseReason::Idle | CloseReason::HalfCloseTimeout => conn.kernel_progress(),
                _ => None,
            };
            if let Some(kernel) = kernel {
                let config = &self.listeners[conn.listener].config;
                let clock = &self.clock;
                let review = Due {
                    deadlines: conn.deadlines,
                    reason,
                    tick,
                    kernel,
                    awaited_fin: conn.awaited_fin(),
                    holds_bytes: conn.holds_bytes(),
                    wire_seen: conn.wire_seen,
                    idle_ticks: clock.ticks_in(config.idle_timeout),
                    half_close_ticks: config.half_close_timeout.map_or(0, |d| clock.ticks_in(d)),
                    slack_ticks: clock.ticks_in(Duration::from_millis(JIFFY_SLACK_MS.into())),
                };
                let moved_at = |ms_ago: u32| {
                    let ago = Duration::from_millis(ms_ago.into());
                    clock.deadline(now.checked_sub(ago).unwrap_or(now), Duration::ZERO)
                };
                match liveness::review(review, moved_at) {
                    Verdict::Postpone { deadlines, wire } => {
                        conn.deadlines = deadlines;
                        conn.wire_seen = wire;
                        conn.timer = Some(self.wheel.insert(deadlines.earliest(), key as u32));
                        continue;
                    }
                    Verdict::Close(why) => reason = why,
                }
            }
            if let Some(upstream) = self.close_client(key, reason, None, kernel) {
                if self.closing_upstreams.len() >= MAX_CLOSING_UPSTREAMS {
                    self.closing_upstreams.pop_front();
                }
                self.closing_upstreams.push_back(upstream);
            }
        }
        self.expired = expired;
    }

    /// Closes waiting upstream sockets of expired connections, oldest first, until the wheel's
    /// next deadline (at least one per call, so that they always drain), or all of them when
    /// no timer is due.
    fn close_upstreams(&mut self, now: Instant) {
        if self.closing_upstreams.is_empty() || self.expiry_backlog {
            return;
        }
        let until = self.wheel.next_deadline().map(|tick| now + self.clock.until(now, tick));
        while let Some(upstream) = self.closing_upstreams.pop_front() {
            drop(upstream);
            if until.is_some_and(|until| Instant::now() >= until) {
                return;
            }
        }
    }

    fn handle_commands(&mut self) {
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Stop => self.stop(),
                Command::Stats => self.log_stats(),
                Command::Reload(reload) => self.reload(reload),
            }
        }
    }

    /// Switches to the listeners of a reloaded configuration: kept ones get their new settings,
    /// added ones are registered, the others are closed (their connections run on).
    fn reload(&mut self, reload: Reload) {
        if self.phase != Phase::Running {
            return; // stopping: the listeners are closed already
        }
        let mut wanted = vec![false; self.listeners.len()];
        for change in reload.listeners {
            match change {
                ListenerChange::Keep { index, config } => {
                    wanted[index] = true;
                    self.listeners[index].config = config;
                }
                ListenerChange::Add(mut listener) => {
                    let index = self.listeners.len();
                    if let Some(socket) = listener.socket.as_mut() {
                        let token = Target::Listener(index).token();
                        if let Err(e) = self.registry.register(socket, token, Interest::READABLE) {
                            error!("reload: listener={} cannot be registered: {e}", listener.config.name);
                            listener.socket = None;
                        }
                    }
                    self.listeners.push(listener);
                    wanted.push(true);
                }
            }
        }
        for (listener, wanted) in self.listeners.iter_mut().zip(wanted) {
            if !wanted {
                if let Some(mut socket) = listener.socket.take() {
                    let _ = self.registry.deregister(&mut socket);
                }
            }
        }
        self.shutdown_timeout = reload.shutdown_timeout;
    }

    /// First stop: close the listeners and drain; second: close everything now.
    fn stop(&mut self) {
        match self.phase {
            Phase::Running => {
                let until = Instant::now() + self.shutdown_timeout;
                info!(
                    "stopping worker={}: listeners closed, draining connections={} for up to {:?}",
                    self.worker,
                    self.conns.len(),
                    self.shutdown_timeout
                );
                for listener in &mut self.listeners {
                    if let Some(mut socket) = listener.socket.take() {
                        let _ = self.registry.deregister(&mut socket);
                    }
                }
                self.phase = Phase::Draining { until };
            }
            Phase::Draining { .. } => {
                info!("second stop: worker={} closing connections={} now", self.worker, self.conns.len());
                self.close_all(CloseReason::Shutdown);
                self.phase = Phase::Stopped;
            }
            Phase::Stopped => {}
        }
    }

    fn log_stats(&self) {
        let s = self.stats;
        info!(
            "stats worker={} connections={} accepted={} closed={} refused={} timers={} buffers_in_use={}",
            self.worker,
            self.conns.len(),
            s.accepted,
            s.closed,
            s.refused,
            self.wheel.len(),
            self.pool.outstanding()
        );
    }
}

/// Which of a closing connection's sockets (`[client, upstream]`) are reset rather than closed
/// with FIN: a reset is passed on as a reset; an error resets both; a close the daemon decides
/// on resets a peer whose bytes are undelivered (held by the daemon or unacknowledged in its
/// socket; `kernel` says which, or is asked now). An orderly end closes both with FIN.
fn abort_sides(conn: &Conn, reason: CloseReason, kernel: Option<[TcpProgress; 2]>) -> [bool; 2] {
    match reason {
        CloseReason::ClientReset => [false, true],
        CloseReason::UpstreamReset => [true, false],
        CloseReason::Error => [true, true],
        r if r.is_forced() => {
            let kernel = kernel.or_else(|| conn.kernel_progress());
            [Side::Client, Side::Upstream].map(|side| conn.undelivered_toward(side, kernel.as_ref()))
        }
        _ => [false, false],
    }
}

/// The one log line per closed connection (`key=value` fields; the format is documented).
fn log_close(
    listener: &str,
    peer: SocketAddr,
    lifetime: Duration,
    (from_client, from_upstream): (u64, u64),
    reason: CloseReason,
    failure: Option<&IoFailure>,
) {
    let lifetime = lifetime.as_millis();
    let error = failure.map(|f| format!(" error=\"{f}\"")).unwrap_or_default();
    info!(
        "conn closed listener={listener} client={peer} reason={reason} lifetime_ms={lifetime} \
         bytes_from_client={from_client} bytes_from_upstream={from_upstream}{error}"
    );
}

/// No Nagle delay on an upstream socket (the relay forwards what it has at once; client sockets
/// inherit `TCP_NODELAY` from their listener, see `net::listen`), then [`keepalive`].
fn tune_upstream(stream: &TcpStream, keepalive: Option<Duration>) {
    let _ = stream.set_nodelay(true);
    tune_keepalive(stream, keepalive);
}

/// Keepalive probes after `keepalive` idle, every quarter of it, four times, if set.
fn tune_keepalive(stream: &TcpStream, keepalive: Option<Duration>) {
    if let Some(idle) = keepalive {
        let interval = (idle / 4).max(Duration::from_secs(1));
        let params = TcpKeepalive::new().with_time(idle).with_interval(interval).with_retries(4);
        if let Err(e) = SockRef::from(stream).set_tcp_keepalive(&params) {
            debug!("tcp_keepalive: {e}");
        }
    }
}

/// On descriptor exhaustion, closes the upstream sockets of expired connections still waiting
/// (see `Core::expire`: they are held only to be closed). True if it freed any, so that the call
/// that failed is worth making again.
fn reclaim_descriptors(closing_upstreams: &mut VecDeque<TcpStream>, error: &io::Error) -> bool {
    if closing_upstreams.is_empty() || !is_out_of_descriptors(error) {
        return false;
    }
    closing_upstreams.clear();
    true
}

/// Opens the reserve descriptor; `None` if even that fails (we then only pause).
fn open_spare() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").map_err(|e| error!("cannot open reserve descriptor: {e}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_with_their_generation() {
        let targets = [
            Target::Conn(0, Side::Client, 0),
            Target::Conn(7, Side::Upstream, 1),
            Target::Conn(KEY_MASK, Side::Client, GEN_MASK),
            Target::Conn(12_345, Side::Upstream, GEN_MASK - 1),
            Target::Listener(0),
            Target::Listener(41),
            Target::Control,
            Target::Alarm,
        ];
        for target in targets {
            assert_eq!(Target::from_token(target.token()), target, "{target:?}");
        }
        // Same key and side, another generation: another token, so a stale event is told apart.
        let (old, new) = (Target::Conn(5, Side::Upstream, 9), Target::Conn(5, Side::Upstream, 10));
        assert_ne!(old.token(), new.token());
        // The generation wraps within its bits instead of spilling into the key.
        assert_eq!(
            Target::from_token(Target::Conn(3, Side::Client, GEN_MASK + 1).token()),
            Target::Conn(3, Side::Client, 0)
        );
    }
}
