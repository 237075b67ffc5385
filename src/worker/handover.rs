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
        self.wheel = crate::wheel::Wheel::new();
        let counters = self.listeners.iter().map(|l| l.metrics.counters()).collect();
        let (listeners, unix_paths) = self.listeners.iter_mut().map(|l| l.freeze()).unzip();
        self.phase = Phase::Stopped;
        Frozen {
            worker: self.worker,
            state: WorkerState { listeners, conns, next_id: self.next_id },
            counters,
            unix_paths,
        }
    }

    /// Takes over one connection of a frozen worker: admitted again (listener and per-address
    /// counts), registered, its timer armed for the same instant as before.
    fn thaw(&mut self, c: &ConnState, frozen: Instant) -> io::Result<()> {
        let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
        if c.listener >= self.listeners.len() {
            return Err(invalid(format!("listener {} is not known", c.listener)));
        }
        let peer = match &c.peer {
            Some(addr) => Peer::Ip(addr.parse().map_err(|e| invalid(format!("client {addr}: {e}")))?),
            None => Peer::Unix,
        };
        let attempts = c.attempts.as_ref().map(Attempts::thaw).transpose()?.map(Box::new);
        let conn = Conn::thaw(&c.relay, &mut self.pool, &mut self.pipes)?;
        let tick = |ns: u64| self.clock.deadline(frozen + Duration::from_nanos(ns), Duration::ZERO);
        let deadlines = Deadlines {
            activity: tick(c.activity),
            lifetime: c.lifetime.map(tick),
            half_close: c.half_close.map(tick),
        };
        let listener = &self.listeners[c.listener];
        listener.readmit(peer.ip(), c.per_ip_counted);
        listener.metrics.active_add(1);
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
    /// relative to). Returns how many were taken over; one that cannot be (a bug: the state
    /// was checked before the upgrade) is logged and its descriptors closed.
    pub fn adopt(&mut self, state: &WorkerState, frozen: Instant) -> usize {
        self.core.next_id = self.core.next_id.max(state.next_id);
        let mut adopted = 0;
        for conn in &state.conns {
            match self.core.thaw(conn, frozen) {
                Ok(()) => adopted += 1,
                Err(e) => error!(
                    "upgrade: a connection of client={} could not be taken over: {e}",
                    conn.peer.as_deref().unwrap_or("unix")
                ),
            }
        }
        adopted
    }
}
