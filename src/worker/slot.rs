//! A connection as the loop keeps it ([`Slot`]): the relay state machine and the loop's
//! bookkeeping for it, which the connection itself knows nothing of. Installing one (a slot of
//! its own generation, its sockets registered for [`CONN_INTEREST`]) and arming its one timer
//! ([`Slot::arm`]) are here, for every path that makes or moves one: accept, the upstream
//! connect's next address, the expiry's re-arm, a live upgrade's takeover.

use std::time::Instant;

use mio::Interest;

use super::attempts::Attempts;
use super::deadlines::Deadlines;
use super::token::{Target, GEN_MASK};
use super::Core;
use crate::close_reason::CloseReason;
use crate::conn::Conn;
use crate::os::stream::Peer;
use crate::side::{IoFailure, Side};
use crate::wheel::{TimerKey, Wheel};

/// What a connection's sockets are registered for: urgent data (`EPOLLPRI`) too, because the
/// kernel stops reads at its mark and only this event says why (see `relay`).
pub(super) const CONN_INTEREST: Interest = Interest::READABLE.add(Interest::WRITABLE).add(Interest::PRIORITY);

/// A connection as the loop keeps it: the relay state machine and the loop's bookkeeping for it
/// (which the connection itself knows nothing of).
pub(super) struct Slot {
    /// Unique for the daemon's lifetime, across upgrades too (see [`Core::new_id`]).
    pub(super) id: u64,
    pub(super) conn: Conn,
    /// Index of the listener that accepted it.
    pub(super) listener: usize,
    /// The client's address (or `unix`).
    pub(super) peer: Peer,
    pub(super) accepted: Instant,
    /// Events carrying another generation are not this connection's (see [`token`](super::token)).
    pub(super) gen: usize,
    /// The connection's one entry in the timing wheel, if armed.
    pub(super) timer: Option<TimerKey>,
    /// What the timer is armed for.
    pub(super) deadlines: Deadlines,
    /// The sum of both sockets' kernel byte counters (acknowledged and received) at the last
    /// idle review (see [`liveness`](super::liveness)).
    pub(super) wire_seen: Option<u64>,
    /// Counted in the listener's per-address table (to be uncounted at close).
    pub(super) per_ip_counted: bool,
    /// A relay's upstream addresses, how many were tried, and the one that connected.
    pub(super) attempts: Option<Attempts>,
}

impl Slot {
    /// Arms the connection's one timer for its earliest deadline: its wheel entry moved there,
    /// or filed anew under `key`, its slab key.
    pub(super) fn arm(&mut self, wheel: &mut Wheel<u32>, key: usize) {
        let due = self.deadlines.earliest();
        match self.timer {
            Some(timer) => wheel.reset(timer, due),
            None => {
                let key = u32::try_from(key).expect("fewer than 2^32 connections");
                self.timer = Some(wheel.insert(due, key));
            }
        }
    }
}

impl Core {
    /// Puts an admitted connection in a slot of its own generation, arms its timer and
    /// registers its sockets (closing it if they cannot be).
    pub(super) fn install(&mut self, mut slot: Slot) {
        self.generation = self.generation.wrapping_add(1) & GEN_MASK;
        let gen = self.generation;
        let entry = self.slots.vacant_entry();
        let key = entry.key();
        debug_assert!(slot.timer.is_none(), "connection {key} installed with a timer");
        slot.gen = gen;
        let slot = entry.insert(slot);
        slot.arm(&mut self.wheel, key);
        let registered = self
            .registry
            .register(slot.conn.client_mut(), Target::Conn(key, Side::Client, gen).token(), CONN_INTEREST)
            .and_then(|()| match slot.conn.upstream_mut() {
                Some(up) => {
                    self.registry.register(up, Target::Conn(key, Side::Upstream, gen).token(), CONN_INTEREST)
                }
                None => Ok(()),
            });
        if let Err(error) = registered {
            let failure = IoFailure { side: Side::Client, op: "register", error };
            self.close(key, CloseReason::Error, Some(failure));
        }
    }
}
