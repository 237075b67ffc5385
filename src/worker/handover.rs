//! A live upgrade, the worker's side: [`Core::freeze`] gives up every listener handle and every
//! connection — sockets open, bytes held, deadlines as time left — and stops the loop;
//! [`Worker::adopt`] takes them over in a new loop (in the new image, or in this one when the
//! `execve` failed), the deadlines at the same instants as before.

use std::io;
use std::time::{Duration, Instant};

use log::error;

use super::connect::Attempts;
use super::deadlines::Deadlines;
use super::{Core, Phase, Slot, Worker};
use crate::conn::Conn;
use crate::handover::state::{ConnState, WorkerState};
use crate::stream::Peer;

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

impl Core {
    /// Gives up everything for a live upgrade, with times relative to `at`, and stops the loop.
    /// Nothing is closed but the upstream sockets of connections already closed.
    pub(super) fn freeze(&mut self, at: Instant) -> Frozen {
        self.closing_upstreams.clear();
        let remaining = |clock: &crate::clock::Clock, tick: u64| nanos(clock.until(at, tick));
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
                age: nanos(at.saturating_duration_since(accepted)),
                activity: remaining(&self.clock, deadlines.activity),
                lifetime: deadlines.lifetime.map(|t| remaining(&self.clock, t)),
                half_close: deadlines.half_close.map(|t| remaining(&self.clock, t)),
                wire_seen,
                per_ip_counted,
                attempts: attempts.map(|a| a.freeze()),
                relay: conn.freeze(&mut self.pool, &mut self.pipes),
            });
        }
        // Connections of the last upgrade not taken over yet go on as they are, their times
        // moved from that upgrade's instant to this one's.
        let since = nanos(at.saturating_duration_since(self.adopt_since));
        for (mut c, _) in self.adopting.drain(..) {
            c.age = c.age.saturating_add(since);
            c.activity = c.activity.saturating_sub(since);
            c.lifetime = c.lifetime.map(|t| t.saturating_sub(since));
            c.half_close = c.half_close.map(|t| t.saturating_sub(since));
            conns.push(c);
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
        let frozen = self.adopt_since;
        let attempts = c.attempts.as_ref().map(Attempts::thaw).transpose()?.map(Box::new);
        let conn = Conn::thaw(&c.relay, &mut self.pool, &mut self.pipes)?;
        let tick = |ns: u64| self.clock.deadline(frozen + Duration::from_nanos(ns), Duration::ZERO);
        let deadlines = Deadlines {
            activity: tick(c.activity),
            lifetime: c.lifetime.map(tick),
            half_close: c.half_close.map(tick),
        };
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
    /// Takes over the connections of a frozen worker (`frozen`: the instant their times are
    /// relative to): each is admitted again at once (listener and per-address counts), and
    /// queued to be registered by the loop, [`ADOPTS_PER_ITERATION`](super::ADOPTS_PER_ITERATION)
    /// per turn, most recently active first — so that a busy connection moves again within a
    /// turn of the upgrade, however many idle ones there are. Returns how many were queued; one
    /// that names no listener or client (a bug) is logged, and its descriptors closed.
    pub fn adopt(&mut self, state: &WorkerState, frozen: Instant) -> usize {
        let core = &mut self.core;
        core.next_id = core.next_id.max(state.next_id);
        core.adopt_since = frozen;
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

/// Closes the descriptors a connection's state names (one that cannot be taken over).
fn discard(c: &ConnState) {
    let r = &c.relay;
    let sockets = std::iter::once(r.client.fd).chain(r.upstream.as_ref().map(|s| s.fd));
    let pipes = [&r.to_upstream, &r.to_client].into_iter().flat_map(|h| h.pipe.map(|p| [p.0, p.1])).flatten();
    for fd in sockets.chain(pipes) {
        drop(crate::sys::adopt(fd));
    }
}
