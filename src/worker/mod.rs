//! One worker: an event loop with one `mio::Poll` that owns the worker's listeners, a `Slab` of
//! connection slots, the timing wheel, and a command channel from the supervisor. No globals:
//! everything an iteration touches hangs off [`Worker`].
//!
//! One iteration: compute the poll timeout from the wheel's next deadline (none: block until I/O),
//! poll, handle the events (accept until `WouldBlock`, drive the connections they name), drive the
//! connections that spent their budget last time, then expire due timers within a budget. The only
//! blocking call is `Poll::poll`; accepts, reads per connection and expiries are bounded per
//! iteration, and leftover work makes the next poll non-blocking instead of starving I/O.
//!
//! The jobs, one file each: [`slot`] (a connection as the loop keeps it: installed, registered,
//! its timer armed), [`token`] (what an event is for), [`accept`] (accept and admission),
//! [`connect`] (the upstream addresses tried in turn, [`attempts`] the record of them),
//! [`deadlines`] (which timeout applies when), [`liveness`] (is a due relay really idle),
//! [`expiry`] (the wheel's side: expire, re-arm, close upstreams between ticks), [`close`]
//! (closing, resets, the close log line, the ledger), [`commands`] (the supervisor's commands),
//! [`handover`] (a live upgrade: freezing every connection, and taking them over), [`inspect`]
//! (the control socket's questions: a row per connection, and closing chosen ones).

mod accept;
mod attempts;
mod close;
mod commands;
mod connect;
mod deadlines;
mod expiry;
mod handover;
mod inspect;
pub(crate) mod liveness;
mod slot;
mod token;

use std::collections::VecDeque;
use std::io;
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::os::stream::{Peer, Stream};
use log::{debug, warn};
use mio::{Events, Interest, Poll, Waker};
use slab::Slab;

use crate::alarm::Alarm;
use crate::buffer::Pool;
use crate::cancel::Canceller;
use crate::clock::Clock;
use crate::close_reason::CloseReason;
use crate::config::Config;
use crate::conn::Next;
use crate::listener::Listener;
use crate::metrics::Metrics;
use crate::observe::State;
use crate::os::net::open_spare;
use crate::os::pipe::PipePool;
use crate::relay::Io;
use crate::wheel::Wheel;

use accept::Starved;
pub use commands::{Command, ListenerChange, Reload, Remote};
pub use handover::Frozen;
pub use inspect::{ClientMatch, Query, Rows, Selector};
use slot::Slot;
use token::Target;

/// Relay buffer size: one read, and the most a direction holds while its reader is stalled.
const BUFFER_SIZE: usize = 64 * 1024;
/// Free buffers the pool keeps for reuse (4 MiB).
const POOL_KEEP: usize = 64;
/// Pipes for splicing bulk transfers (two descriptors each), per worker.
const MAX_PIPES: usize = 64;
/// Reads per direction per drive: 16 × 64 KiB = 1 MiB before another connection gets a turn.
const READS_PER_DRIVE: usize = 16;
const EVENTS_CAPACITY: usize = 1024;
/// Connections handed over by a live upgrade that a turn of the loop takes over (registers).
const ADOPTS_PER_ITERATION: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Stop requested: listeners closed, open connections run until the deadline.
    Draining {
        until: Instant,
    },
    Stopped,
}

/// The event loop and everything it owns.
pub struct Worker {
    poll: Poll,
    events: Events,
    core: Core,
}

/// Everything but the poll's event buffer, so that events can be iterated while handling them.
struct Core {
    registry: mio::Registry,
    listeners: Vec<Listener>,
    slots: Slab<Slot>,
    /// Connection keys by deadline (`u32`: a slab key never reaches 2^32).
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
    /// A descriptor kept in reserve for when accept fails with EMFILE (see `accept`).
    spare_fd: Option<std::fs::File>,
    expired: Vec<u32>,
    /// Upstream sockets of expired connections whose clients are closed, oldest first, to be
    /// closed when the loop has slack (see `expiry`).
    closing_upstreams: VecDeque<Stream>,
    /// The last expiry pass stopped at its budget with timers still due.
    expiry_backlog: bool,
    /// Accepting ran out of descriptors, and no accept has succeeded since.
    starved: Option<Starved>,
    /// The generation of the last connection admitted (see [`Target`]).
    generation: usize,
    /// Workers in the process, and the sequence number of this one's next connection id.
    workers: usize,
    next_id: u64,
    /// Connections a live upgrade handed over, admitted but not yet registered (see
    /// [`Worker::adopt`]), and the instant their times are relative to (`CLOCK_MONOTONIC`).
    adopting: VecDeque<(crate::handover::state::ConnState, Peer)>,
    adopt_since: u64,
    /// CancelRequests for the queries of busy PostgreSQL sessions it closes (off the loop).
    cancels: Canceller,
    /// The `show conns` being answered, a batch of rows per turn (see [`inspect`]).
    inspections: Vec<inspect::Inspection>,
}

impl Worker {
    /// Registers worker `worker`'s listeners with a new poll. Returns the loop and the handle
    /// through which the supervisor controls it.
    pub fn new(
        config: &Config,
        worker: usize,
        mut listeners: Vec<Listener>,
        metrics: Metrics,
    ) -> io::Result<(Worker, Remote)> {
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
        let worker = Worker {
            poll,
            events: Events::with_capacity(EVENTS_CAPACITY),
            core: Core {
                registry,
                listeners,
                slots: Slab::new(),
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
                workers: config.daemon.workers.max(1),
                next_id: 1,
                adopting: VecDeque::new(),
                adopt_since: crate::clock::monotonic_ns(),
                cancels: Canceller::new(worker),
                inspections: Vec::new(),
            },
        };
        Ok((worker, Remote::new(sender, waker)))
    }

    /// Runs until a stop signal has been handled and the connections are drained or closed.
    pub fn run(&mut self) -> io::Result<()> {
        while self.core.phase != Phase::Stopped {
            if !self.core.adopting.is_empty() {
                self.core.adopt_some(ADOPTS_PER_ITERATION);
            }
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
            let core = &self.core;
            core.metrics.set_worker(core.worker, core.wheel.len(), core.pool.outstanding());
        }
        Ok(())
    }
}

impl Core {
    /// A connection id no other connection of the daemon has had: this worker's sequence
    /// number interleaved with the other workers'.
    fn new_id(&mut self) -> u64 {
        let id = self.next_id * self.workers as u64 + self.worker as u64;
        self.next_id += 1;
        id
    }

    /// How long the next poll may block: zero when work is left over; otherwise until a paused
    /// listener resumes or the drain deadline (whole milliseconds are precise enough for those),
    /// with the alarm armed for the wheel's next deadline; forever when nothing is due.
    fn poll_timeout(&mut self, now: Instant) -> Option<Duration> {
        if self.expiry_backlog
            || !self.adopting.is_empty()
            || self.rows_wanted()
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
                if let Some(slot) = self.slots.get_mut(key).filter(|slot| slot.gen == gen) {
                    slot.conn.ready(side, event);
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
            if self.slots.contains(key) {
                self.drive(key);
            }
        }
        self.expire(Instant::now());
        self.close_upstreams(Instant::now());
        if self.rows_wanted() {
            self.inspect_some();
        }
        if let Phase::Draining { until } = self.phase {
            if self.slots.is_empty() && self.adopting.is_empty() {
                self.phase = Phase::Stopped;
            } else if Instant::now() >= until {
                self.close_all(CloseReason::Shutdown);
                self.phase = Phase::Stopped;
            }
        }
    }

    /// Drives one connection and acts on the outcome: bytes counted, deadlines moved (see
    /// [`deadlines`]), and a close, or another drive next iteration if its budget ran out.
    fn drive(&mut self, key: usize) {
        let slot = &mut self.slots[key];
        let mut io = Io {
            scratch: &mut self.scratch,
            pool: &mut self.pool,
            pipes: &mut self.pipes,
            reads_per_drive: READS_PER_DRIVE,
            other_done: false,
        };
        let conn = &mut slot.conn;
        let before = (conn.bytes_from_client(), conn.bytes_from_upstream());
        let was_connecting = conn.is_connecting();
        let was_followed = conn.observed().is_some_and(|o| !matches!(o.state(), State::Opaque(_)));
        let progress = conn.drive(&mut io);
        let listener = &self.listeners[slot.listener];
        if progress.active {
            let (client, upstream) =
                (conn.bytes_from_client() - before.0, conn.bytes_from_upstream() - before.1);
            listener.metrics.bytes(client, upstream);
        }
        if let Some(State::Opaque(cause)) = conn.observed().map(|o| o.state()).filter(|_| was_followed) {
            listener.metrics.protocol_opaque(cause);
            let (id, name) = (slot.id, &listener.config.name);
            debug!("conn opaque id={id} listener={name} cause={}: idle by bytes from now on", cause.as_str());
        }
        let connected = was_connecting && !conn.is_connecting();
        // The activity path is a store into the slot, which is in cache anyway: a later deadline
        // leaves the wheel alone, and when the timer fires early `expiry` re-arms it (lazy
        // re-arm). The entry moves only for a deadline that moves earlier, and once when the
        // upstream connect completes, so that it leaves the connect_timeout bucket instead of
        // firing there to be re-armed (a wake-up per tick after a burst of connections).
        let (old, new) = slot.deadlines.after(&progress, conn, &listener.config, &self.clock);
        if let Some(timer) = slot.timer.filter(|_| new < old || (connected && new != old)) {
            self.wheel.reset(timer, new);
        }
        if connected {
            self.upstream_connected(key);
        }
        match progress.next {
            Next::Wait => {}
            Next::Again => self.again.push(key),
            Next::Close(CloseReason::UpstreamRefused, failure) => {
                // The connect failed: the next address, if any is left.
                if let Some((reason, failure)) =
                    self.retry_connect(key, CloseReason::UpstreamRefused, failure)
                {
                    self.close(key, reason, failure);
                }
            }
            Next::Close(reason, failure) => self.close(key, reason, failure),
        }
    }
}
