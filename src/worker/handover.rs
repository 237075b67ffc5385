//! A live upgrade, the worker's side: [`Core::freeze`] gives up every listener handle and every
//! connection — sockets open, bytes held, deadlines as time left — and stops the loop;
//! [`Worker::adopt`] takes them over in a new loop (in the new image, or in this one when the
//! `execve` failed), the deadlines at the same instants as before.
//!
//! A deadline is a wheel tick, whose start is an exact `CLOCK_MONOTONIC` reading on a grid every
//! clock of that tick length shares ([`crate::clock`]). It crosses as the nanoseconds from the
//! freeze to that start ([`time_left`]) and comes back as the same tick boundary in the new
//! clock ([`tick_of_left`]): however many upgrades a connection lives through, its deadlines
//! are where they were, not rounded up once more per upgrade.

use std::io;
use std::time::Duration;

use log::error;

use super::attempts::Attempts;
use super::deadlines::Deadlines;
use super::{Core, Phase, Slot, Worker};
use crate::clock::Clock;
use crate::conn::Conn;
use crate::handover::state::{ConnState, WorkerState};
use crate::os::stream::Peer;

/// What a frozen worker hands the supervisor.
pub struct Frozen {
    /// Which worker it was.
    pub worker: usize,
    pub state: WorkerState,
    /// Each listener's `/metrics` counters (shared by the workers: any worker's will do).
    pub counters: Vec<Vec<u64>>,
    /// Each listener's Unix socket file, if it is still to be removed on close.
    pub unix_paths: Vec<Option<String>>,
    /// A second descriptor of the loop's epoll instance, so that the loop's end does not tear
    /// it down (with every socket still registered) during the upgrade's pause: the new image
    /// closes it once it runs.
    pub retired: Option<std::os::fd::RawFd>,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What a deadline filed under `tick` carries across the exec: the nanoseconds from `at` (a
/// `CLOCK_MONOTONIC` reading) to the start of the tick; 0 if it has begun (due already).
fn time_left(clock: &Clock, at: u64, tick: u64) -> u64 {
    clock.start_ns(tick).saturating_sub(at)
}

/// The tick of a deadline carried as `left` nanoseconds after `at` ([`time_left`]): the same
/// tick boundary on a clock of the same tick length, the next boundary on another (rounded up
/// once, never early). One due already is due at once: the tick in progress at `at`, which
/// has begun by the time the new loop looks.
fn tick_of_left(clock: &Clock, at: u64, left: u64) -> u64 {
    match left {
        0 => clock.tick_of(at),
        left => clock.tick_at_or_after(at.saturating_add(left)),
    }
}

impl Core {
    /// Gives up everything for a live upgrade, with times relative to `at` (a
    /// `CLOCK_MONOTONIC` reading), and stops the loop. Nothing is closed but the upstream
    /// sockets of connections already closed.
    pub(super) fn freeze(&mut self, at: u64) -> Frozen {
        self.closing_upstreams.clear();
        let clock = self.clock;
        let frozen = clock.instant_at(at);
        let left = |tick: u64| time_left(&clock, at, tick);
        let mut conns = Vec::with_capacity(self.slots.len());
        for slot in self.slots.drain() {
            let Slot {
                id,
                conn,
                listener,
                peer,
                accepted,
                deadlines,
                wire_seen,
                per_ip_counted,
                attempts,
                ..
            } = slot;
            conns.push(ConnState {
                id,
                listener,
                peer: match peer {
                    Peer::Ip(addr) => Some(addr.to_string()),
                    Peer::Unix => None,
                },
                age: nanos(frozen.saturating_duration_since(accepted)),
                activity: left(deadlines.activity),
                lifetime: deadlines.lifetime.map(left),
                half_close: deadlines.half_close.map(left),
                wire_seen,
                per_ip_counted,
                attempts: attempts.map(|a| a.freeze()),
                relay: conn.freeze(&mut self.pool, &mut self.pipes),
            });
        }
        // Connections of the last upgrade not taken over yet go on as they are, their times
        // moved from that upgrade's instant to this one's (exactly: both are readings of one
        // clock).
        let since = at.saturating_sub(self.adopt_since);
        for (c, _) in self.adopting.drain(..) {
            conns.push(shifted(c, since));
        }
        self.wheel = crate::wheel::Wheel::new();
        let counters = self.listeners.iter().map(|l| l.metrics.counters()).collect();
        let (listeners, unix_paths) = self.listeners.iter_mut().map(|l| l.freeze()).unzip();
        self.phase = Phase::Stopped;
        let retired = nix::unistd::dup(&self.registry).ok().map(std::os::fd::IntoRawFd::into_raw_fd);
        Frozen {
            retired,
            worker: self.worker,
            state: WorkerState { listeners, conns, next_id: self.next_id },
            counters,
            unix_paths,
        }
    }

    /// Takes over up to `budget` of the connections waiting to be (most recently active
    /// first): their descriptors adopted, registered, timers armed. One that cannot be (a bug:
    /// the state was checked before the upgrade) is logged and uncounted.
    pub(super) fn adopt_some(&mut self, budget: usize) {
        for _ in 0..budget {
            let Some((c, peer)) = self.adopting.pop_front() else { return };
            if let Err(e) = self.thaw(&c, peer) {
                error!("upgrade: connection id={} client={peer} could not be taken over: {e}", c.id);
                let listener = &self.listeners[c.listener];
                listener.release(peer.ip(), c.per_ip_counted);
                listener.metrics.active_add(-1);
            }
        }
    }

    /// Takes over one connection: registered, its timer armed for the same instant as before
    /// (it was admitted again when it was queued).
    fn thaw(&mut self, c: &ConnState, peer: Peer) -> io::Result<()> {
        let (clock, at) = (self.clock, self.adopt_since);
        let attempts = c.attempts.as_ref().map(Attempts::thaw).transpose()?;
        let conn = Conn::thaw(&c.relay, &mut self.pool, &mut self.pipes)?;
        let tick = |left: u64| tick_of_left(&clock, at, left);
        let deadlines = Deadlines {
            activity: tick(c.activity),
            lifetime: c.lifetime.map(tick),
            half_close: c.half_close.map(tick),
        };
        let frozen = clock.instant_at(at);
        self.install(Slot {
            id: c.id,
            conn,
            listener: c.listener,
            peer,
            accepted: frozen.checked_sub(Duration::from_nanos(c.age)).unwrap_or(frozen),
            gen: 0,
            timer: None,
            deadlines,
            wire_seen: c.wire_seen,
            per_ip_counted: c.per_ip_counted,
            attempts,
        });
        Ok(())
    }
}

impl Worker {
    /// Takes over the connections of a frozen worker (`frozen_at`: the `CLOCK_MONOTONIC`
    /// reading their times are relative to): each is admitted again at once (listener and
    /// per-address counts), and queued to be registered by the loop,
    /// [`ADOPTS_PER_ITERATION`](super::ADOPTS_PER_ITERATION) per turn, most recently active
    /// first — so that a busy connection moves again within a turn of the upgrade, however many
    /// idle ones there are. Returns how many were queued; one
    /// that names no listener or client (a bug) is logged, and its descriptors closed.
    pub fn adopt(&mut self, state: &WorkerState, frozen_at: u64) -> usize {
        let core = &mut self.core;
        core.next_id = core.next_id.max(state.next_id);
        core.adopt_since = frozen_at;
        let mut queued: Vec<(ConnState, Peer)> = Vec::with_capacity(state.conns.len());
        for c in &state.conns {
            let peer = match (&c.peer, core.listeners.get(c.listener)) {
                (_, None) => Err(format!("listener {} is not known", c.listener)),
                (None, Some(_)) => Ok(Peer::Unix),
                (Some(addr), Some(_)) => {
                    addr.parse().map(Peer::Ip).map_err(|e| format!("client {addr}: {e}"))
                }
            };
            match peer {
                Ok(peer) => {
                    let listener = &core.listeners[c.listener];
                    listener.readmit(peer.ip(), c.per_ip_counted);
                    listener.metrics.active_add(1);
                    queued.push((c.clone(), peer));
                }
                Err(e) => {
                    error!("upgrade: connection id={} cannot be taken over: {e}", c.id);
                    discard(c);
                }
            }
        }
        // The more time left before the idle deadline, the more recently it was active.
        queued.sort_by_key(|(c, _)| std::cmp::Reverse(c.activity));
        core.adopting.extend(queued);
        core.adopting.len()
    }
}

/// A connection still waiting to be taken over, its times moved `since` nanoseconds on (from
/// one freeze to the next): the same instants, counted from the later freeze.
fn shifted(mut c: ConnState, since: u64) -> ConnState {
    c.age = c.age.saturating_add(since);
    c.activity = c.activity.saturating_sub(since);
    c.lifetime = c.lifetime.map(|t| t.saturating_sub(since));
    c.half_close = c.half_close.map(|t| t.saturating_sub(since));
    c
}

/// Closes the descriptors a connection's state names (one that cannot be taken over).
fn discard(c: &ConnState) {
    let r = &c.relay;
    let sockets = std::iter::once(r.client.fd).chain(r.upstream.as_ref().map(|s| s.fd));
    let pipes = [&r.to_upstream, &r.to_client].into_iter().flat_map(|h| h.pipe.map(|p| [p.0, p.1])).flatten();
    for fd in sockets.chain(pipes) {
        drop(crate::os::sys::adopt(fd));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const SECOND: u64 = 1_000_000_000;

    /// The clock of an image that started `at` ns into CLOCK_MONOTONIC (its tick 0 is the tick
    /// in progress then), with `t0` the Instant of reading 0.
    fn image(t0: Instant, at: u64, tick_ms: u64) -> Clock {
        let tick = tick_ms * 1_000_000;
        let origin = at - at % tick;
        Clock::anchored(t0 + Duration::from_nanos(origin), origin, Duration::from_millis(tick_ms))
    }

    #[test]
    fn a_deadline_keeps_its_instant_through_any_number_of_upgrades() {
        let t0 = Instant::now();
        for tick_ms in [1, 100, 250, 1000] {
            let mut clock = image(t0, 50 * SECOND + 123_456, tick_ms);
            // Idle for 10 s from an activity 3.3 ms into the clock's life, rounded up once.
            let activity = clock.deadline(clock.instant_at(50 * SECOND + 3_300_000), Duration::from_secs(10));
            let deadline = clock.start_ns(activity);
            let mut tick = activity;
            // Forty upgrades 180.7 ms apart, each new image starting 3.1 ms after its freeze.
            let mut at = 50 * SECOND + 7_000_000;
            for n in 0..40 {
                let left = time_left(&clock, at, tick);
                clock = image(t0, at + 3_100_000, tick_ms);
                tick = tick_of_left(&clock, at, left);
                assert_eq!(clock.start_ns(tick), deadline, "tick {tick_ms} ms, after upgrade {n}");
                at += 180_700_000;
            }
        }
    }

    #[test]
    fn a_changed_tick_rounds_a_deadline_up_once_never_early() {
        let t0 = Instant::now();
        let old = image(t0, 7 * SECOND, 250);
        let tick = old.deadline(old.instant_at(7 * SECOND + 1), Duration::from_secs(3));
        let deadline = old.start_ns(tick);
        let at = 8 * SECOND + 17;
        let left = time_left(&old, at, tick);
        for tick_ms in [1, 3, 7, 100, 1000] {
            let new = image(t0, at + 2_000_000, tick_ms);
            let moved = new.start_ns(tick_of_left(&new, at, left));
            assert!(moved >= deadline, "{tick_ms} ms: early");
            assert!(moved - deadline < tick_ms * 1_000_000, "{tick_ms} ms: more than a tick late");
        }
    }

    #[test]
    fn a_deadline_due_at_the_freeze_is_due_at_once_in_the_new_image() {
        let t0 = Instant::now();
        let old = image(t0, 10 * SECOND, 250);
        let tick = old.tick_of(12 * SECOND + 5); // began 5 ns before the freeze
        let at = 12 * SECOND + 5;
        assert_eq!(time_left(&old, at, tick), 0);
        let new = image(t0, at + 1_000_000, 250);
        let due = tick_of_left(&new, at, 0);
        // Due on the new loop's first look (it looks after its start), not before its instant.
        assert!(new.start_ns(due) <= at + 1_000_000);
        assert!(new.start_ns(due) >= old.start_ns(tick));
    }

    #[test]
    fn a_connection_not_yet_taken_over_keeps_its_instants_into_the_next_upgrade() {
        let t0 = Instant::now();
        let first = 21 * SECOND + 40_000;
        let c = ConnState {
            age: 5 * SECOND,
            activity: 900_000_000,
            lifetime: Some(3 * SECOND),
            half_close: Some(100_000_000),
            ..ConnState::default()
        };
        // The next freeze, 250 ms later, with the connection still queued.
        let second = first + 250_000_000;
        let moved = shifted(c.clone(), second - first);
        assert_eq!(moved.age, c.age + 250_000_000);
        let next = image(t0, second + 2_000_000, 100);
        let instant = |at: u64, left: u64| next.start_ns(tick_of_left(&next, at, left));
        assert_eq!(instant(second, moved.activity), instant(first, c.activity));
        assert_eq!(instant(second, moved.lifetime.unwrap()), instant(first, c.lifetime.unwrap()));
        // Its half-close deadline passed between the two freezes: due at once, not lost.
        assert_eq!(moved.half_close, Some(0));
        assert!(next.start_ns(tick_of_left(&next, second, 0)) <= second + 2_000_000);
    }
}
