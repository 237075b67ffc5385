//! What the control socket asks of a worker: a row per open connection (`show conns`: with a
//! protocol listener's state and the timer it runs), and closing chosen connections at once
//! (`kill`, reason `killed`). Both are answered from the
//! slots and the wheel's deadlines, with no system call but one `getpeername` per row's
//! upstream.
//!
//! `show conns` costs the loop one pass over the slots to choose and order the connections
//! (with a limit, only that many are kept), then a batch of at most [`ROWS_PER_TURN`] rows in
//! a turn, each sent to the supervisor as it is built ([`Rows`]) when it asks for the next
//! (`Command::Rows`): 9,000 rows are some 35 batches with the connections served between
//! them, not one 15 ms stall, and rows are built as fast as the asker takes the answer.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Waker;

use super::deadlines::{inactivity, NEVER};
use super::{Core, Slot};
use crate::close_reason::CloseReason;
use crate::observe::Protocol;
use crate::os::stream::Peer;
use crate::rows::{reap_order, ConnRow};

/// Rows built per loop turn, over every `show conns` in progress: some 0.8 ms of work in a release
/// build (the pass that chooses 9,000 connections and orders them is some 1 ms).
const ROWS_PER_TURN: usize = 256;

/// A batch of a worker's answer to `show conns`: rows soonest to be reaped first (then by id),
/// following the batch before; `last` when no more will come.
#[derive(Debug)]
pub struct Rows {
    pub rows: Vec<ConnRow>,
    pub last: bool,
}

/// A `show conns` a worker is answering.
pub(super) struct Inspection {
    /// The supervisor's number for it.
    listing: u64,
    /// The supervisor asked for the next batch.
    wanted: bool,
    /// The instant the rows' times are taken at.
    now: Instant,
    /// The connections chosen, in order, not built yet: time to reap (ms; none if no deadline
    /// runs), id, slab key.
    chosen: VecDeque<(Option<u64>, u64, usize)>,
    reply: Sender<Rows>,
    /// Wakes the supervisor for each batch.
    wake: Arc<Waker>,
}

/// Which connections `kill` closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// By connection id.
    Ids(Vec<u64>),
    /// By client: one address and port, or every port of an address.
    Client(ClientMatch),
    /// Every connection of the listener of that name.
    Listener(String),
}

/// Which connections `show conns` lists: those of one listener, idle at least so long, and at
/// most `limit` of them, the soonest to be reaped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub listener: Option<String>,
    /// Compared in whole milliseconds, as the rows show idle time.
    pub idle_over: Duration,
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientMatch {
    Exact(SocketAddr),
    Address(IpAddr),
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Core {
    /// Starts answering `show conns` number `listing`: chooses the connections `query` asks
    /// for, as of now, and orders them; their rows follow, the first batch this turn and each
    /// next one once asked for ([`Core::inspect_some`]).
    pub(super) fn inspect(&mut self, listing: u64, query: &Query, reply: Sender<Rows>, wake: Arc<Waker>) {
        let now = Instant::now();
        let chosen = self.choose(now, query).into();
        self.inspections.push(Inspection { listing, wanted: true, now, chosen, reply, wake });
    }

    /// The supervisor wants the next batch of `show conns` number `listing` (`more`), or none:
    /// the asker is gone.
    pub(super) fn more_rows(&mut self, listing: u64, more: bool) {
        match more {
            true => {
                self.inspections.iter_mut().filter(|i| i.listing == listing).for_each(|i| i.wanted = true)
            }
            false => self.inspections.retain(|i| i.listing != listing),
        }
    }

    /// Whether a batch of rows is to be built this turn.
    pub(super) fn rows_wanted(&self) -> bool {
        self.inspections.iter().any(|i| i.wanted)
    }

    /// The connections `query` chooses, in the order the supervisor merges the workers' rows in
    /// ([`reap_order`]: soonest to be reaped first, those no deadline runs for last, then by
    /// id): time to reap in ms, id, slab key.
    fn choose(&self, now: Instant, query: &Query) -> Vec<(Option<u64>, u64, usize)> {
        let over = millis(query.idle_over);
        let mut chosen: Vec<(Option<u64>, u64, usize)> = self
            .slots
            .iter()
            .filter(|(_, slot)| {
                let name = &self.listeners[slot.listener].config.name;
                query.listener.as_ref().is_none_or(|wanted| wanted == name)
                    && millis(self.idle(now, slot)) >= over
            })
            .map(|(key, slot)| (self.reap_in(now, slot), slot.id, key))
            .collect();
        let order = |&(reap_in, id, _): &(Option<u64>, u64, usize)| reap_order(reap_in, id);
        if let Some(limit) = query.limit.filter(|&limit| limit < chosen.len()) {
            chosen.select_nth_unstable_by_key(limit, order);
            chosen.truncate(limit);
        }
        chosen.sort_unstable_by_key(order);
        chosen
    }

    /// Builds the next batch of each `show conns` whose next batch is wanted, [`ROWS_PER_TURN`]
    /// rows in all, and sends them. A connection closed since it was chosen has no row; a
    /// question whose asker is gone is dropped.
    pub(super) fn inspect_some(&mut self) {
        let mut budget = ROWS_PER_TURN;
        let mut inspections = std::mem::take(&mut self.inspections);
        inspections.retain_mut(|inspection| {
            if budget == 0 || !inspection.wanted {
                return true;
            }
            inspection.wanted = false;
            let take = budget.min(inspection.chosen.len());
            budget -= take;
            let rows = inspection
                .chosen
                .drain(..take)
                .filter_map(|(reap_in_ms, id, key)| {
                    let slot = self.slots.get(key).filter(|slot| slot.id == id)?;
                    Some(self.row(inspection.now, slot, reap_in_ms))
                })
                .collect();
            let last = inspection.chosen.is_empty();
            let sent = inspection.reply.send(Rows { rows, last }).is_ok();
            let _ = inspection.wake.wake();
            sent && !last
        });
        self.inspections = inspections;
    }

    /// How long `slot` has been idle: since its last movement (to the tick), or since it was
    /// accepted while its upstream is still being connected.
    fn idle(&self, now: Instant, slot: &Slot) -> Duration {
        let age = now.saturating_duration_since(slot.accepted);
        match slot.conn.is_connecting() {
            true => age,
            false => {
                let timeout = inactivity(&self.listeners[slot.listener].config, &slot.conn).1;
                // The idle deadline is the last movement plus the timer's length.
                timeout.saturating_sub(self.clock.until(now, slot.deadlines.activity)).min(age)
            }
        }
    }

    /// Which deadline is next for `slot`: `idle` or the protocol timer its state runs, `none`
    /// if that is none, or `max_lifetime`, `half_close`, `connect`.
    fn reap_reason(&self, slot: &Slot) -> &'static str {
        let connecting = slot.conn.is_connecting();
        match slot.deadlines.reason(connecting) {
            CloseReason::MaxLifetime => "max_lifetime",
            CloseReason::HalfCloseTimeout => "half_close",
            CloseReason::ConnectTimeout => "connect",
            _ => inactivity(&self.listeners[slot.listener].config, &slot.conn).0.as_str(),
        }
    }

    /// Milliseconds until `slot` is reaped unless something moves first, as of `now`; none if no
    /// deadline runs (its reason is `none`).
    fn reap_in(&self, now: Instant, slot: &Slot) -> Option<u64> {
        (self.reap_reason(slot) != "none").then(|| millis(self.clock.until(now, slot.deadlines.earliest())))
    }

    fn row(&self, now: Instant, slot: &Slot, reap_in_ms: Option<u64>) -> ConnRow {
        let conn = &slot.conn;
        let config = &self.listeners[slot.listener].config;
        let connecting = conn.is_connecting();
        let (timer, timeout) = inactivity(config, conn);
        let reap_reason = self.reap_reason(slot);
        let observed = conn.observed().map(|o| o.state().as_str());
        let state = match (conn.upstream(), connecting, conn.awaited_fin(), observed) {
            (None, _, _, _) => "sink",
            (Some(_), true, _, _) => "connecting",
            (Some(_), false, Some(_), _) => "half_closed",
            (Some(_), false, None, Some(state)) => state,
            (Some(_), false, None, None) => "relaying",
        };
        let protocol = conn.observed().map_or(Protocol::Tcp, |o| o.protocol());
        let timer = if connecting { "connect" } else { timer.as_str() };
        // While connecting, the address being tried (the kernel has no peer yet).
        let trying = slot.attempts.as_ref().filter(|_| connecting).and_then(|a| a.current());
        let upstream = match (conn.upstream(), trying) {
            (None, _) => "-".to_owned(),
            (Some(_), Some(target)) => target.to_string(),
            (Some(stream), None) => stream.peer_label(),
        };
        ConnRow {
            id: slot.id,
            listener: config.name.clone(),
            client: slot.peer.to_string(),
            upstream,
            protocol: protocol.as_str().to_owned(),
            state: state.to_owned(),
            timer: timer.to_owned(),
            age_ms: millis(now.saturating_duration_since(slot.accepted)),
            idle_ms: millis(self.idle(now, slot)),
            reap_in_ms,
            reap_reason: reap_reason.to_owned(),
            idle_timeout_ms: if timeout == NEVER { 0 } else { millis(timeout) },
            bytes_from_client: conn.bytes_from_client(),
            bytes_from_upstream: conn.bytes_from_upstream(),
        }
    }

    /// Closes the connections `selector` names, at once (reason `killed`); returns how many.
    pub(super) fn kill(&mut self, selector: &Selector) -> usize {
        let chosen: Vec<usize> = self
            .slots
            .iter()
            .filter(|(_, slot)| match selector {
                Selector::Ids(ids) => ids.contains(&slot.id),
                Selector::Client(ClientMatch::Exact(addr)) => slot.peer == Peer::Ip(*addr),
                Selector::Client(ClientMatch::Address(ip)) => slot.peer.ip() == Some(ip.to_canonical()),
                Selector::Listener(name) => self.listeners[slot.listener].config.name == *name,
            })
            .map(|(key, _)| key)
            .collect();
        for &key in &chosen {
            self.close(key, CloseReason::Killed, None);
        }
        chosen.len()
    }
}
