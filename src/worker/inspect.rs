//! What the control socket asks of a worker: a row per open connection (`show conns`: with a
//! protocol listener's state and the timer it runs), and closing chosen connections at once
//! (`kill`, reason `killed`). Both are answered from the
//! slots and the wheel's deadlines, with no system call but one `getpeername` per row's
//! upstream. With a limit, the connections are chosen before any row is built, so a `top`
//! asking for a screenful costs the loop a pass over the slots, not 9,000 rows of text.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::deadlines::{inactivity, NEVER};
use super::{Core, Slot};
use crate::observe::Protocol;
use crate::report::ConnRow;
use crate::stream::Peer;
use crate::vocab::CloseReason;

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
    /// A row for each open connection `query` chooses, as of `now`, in no particular order: the
    /// supervisor merges the workers' rows and sorts them once.
    pub(super) fn inspect(&self, now: Instant, query: &Query) -> Vec<ConnRow> {
        let over = millis(query.idle_over);
        let mut chosen: Vec<(Duration, u64, usize)> = self
            .slots
            .iter()
            .filter(|(_, slot)| {
                let name = &self.listeners[slot.listener].config.name;
                query.listener.as_ref().is_none_or(|wanted| wanted == name)
                    && millis(self.idle(now, slot)) >= over
            })
            .map(|(key, slot)| (self.clock.until(now, slot.deadlines.earliest()), slot.id, key))
            .collect();
        if let Some(limit) = query.limit.filter(|&limit| limit < chosen.len()) {
            chosen.select_nth_unstable(limit);
            chosen.truncate(limit);
        }
        chosen.into_iter().map(|(reap_in, _, key)| self.row(now, &self.slots[key], reap_in)).collect()
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

    fn row(&self, now: Instant, slot: &Slot, reap_in: Duration) -> ConnRow {
        let conn = &slot.conn;
        let config = &self.listeners[slot.listener].config;
        let connecting = conn.is_connecting();
        let (timer, timeout) = inactivity(config, conn);
        let reap_reason = match slot.deadlines.reason(connecting) {
            CloseReason::MaxLifetime => "max_lifetime",
            CloseReason::HalfCloseTimeout => "half_close",
            CloseReason::ConnectTimeout => "connect",
            _ => timer.as_str(),
        };
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
            reap_in_ms: (reap_reason != "none").then(|| millis(reap_in)),
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
