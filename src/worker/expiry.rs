//! The wheel's side of the loop: expire due timers within a budget, re-arm the ones whose
//! deadline moved on (lazy re-arm), ask the kernel about relays that look idle (see
//! [`super::liveness`]), and close the upstream sockets of expired connections between ticks.

use std::io;
use std::time::{Duration, Instant};

use super::deadlines::{inactivity, reason_of};
use super::liveness::{self, Due, Verdict};
use super::Core;
use crate::close_reason::CloseReason;
use crate::os::net::is_out_of_descriptors;
use crate::os::sys::{TcpProgress, JIFFY_SLACK_MS};
use crate::side::{IoFailure, Side};

/// Timer expiries per iteration.
const EXPIRIES_PER_ITERATION: usize = 1024;
/// Upstream sockets of expired connections that may wait for slack in the loop to be closed
/// (see [`Core::expire`]); beyond it, the oldest are closed at once.
const MAX_CLOSING_UPSTREAMS: usize = 4096;

impl Core {
    /// Closes the connections whose deadline has passed, at most a budget's worth: each client's
    /// socket at once, in deadline order; their upstreams' sockets wait for slack in the loop
    /// (`close_upstreams`). A `close` is the costliest call of a connection's life (it sends the
    /// FIN, and on loopback the peer's handling of it runs inline): when many deadlines fall
    /// together, closing both sockets of each would make every client wait for the closes of
    /// both sockets of every connection due before it. Upstreams are closed between ticks
    /// instead, at most [`MAX_CLOSING_UPSTREAMS`] behind.
    pub(super) fn expire(&mut self, now: Instant) {
        let tick = self.clock.ticks_at(now);
        let mut expired = std::mem::take(&mut self.expired);
        // More may be due once the budget is spent: the next poll then does not block.
        self.expiry_backlog = self.wheel.poll(tick, EXPIRIES_PER_ITERATION, &mut expired);
        for key in expired.drain(..).map(|k| k as usize) {
            let Some(slot) = self.slots.get_mut(key) else {
                debug_assert!(false, "timer fired for vacant connection {key}");
                continue;
            };
            slot.timer = None;
            if slot.deadlines.earliest() > tick {
                // Activity since the timer was armed: re-arm it for the deadline now in force.
                slot.arm(&mut self.wheel, key);
                continue;
            }
            let reason = slot.deadlines.reason(slot.conn.is_connecting());
            let timer = inactivity(&self.listeners[slot.listener].config, &slot.conn).0;
            let reason = if reason == CloseReason::Idle { reason_of(timer) } else { reason };
            // Idle or waiting for a FIN as far as the daemon's own calls go: ask the kernel.
            let kernel = match reason {
                r if r.is_idle() || r == CloseReason::HalfCloseTimeout => slot.conn.kernel_progress(),
                _ => None,
            };
            let mut reason = match kernel {
                Some(kernel) => match self.review(key, reason, kernel, tick, now) {
                    Some(reason) => reason,
                    None => continue, // postponed
                },
                None => reason,
            };
            let mut failure = None;
            if reason == CloseReason::ConnectTimeout {
                // This address took too long: the next one, if any is left.
                let error = io::Error::new(io::ErrorKind::TimedOut, "no answer within connect_timeout");
                let timed_out = IoFailure { side: Side::Upstream, op: "connect", error };
                match self.retry_connect(key, reason, Some(timed_out)) {
                    None => continue,
                    Some((why, last)) => (reason, failure) = (why, last),
                }
            }
            let slot = &mut self.slots[key];
            if let (CloseReason::Idle, Some(notice)) =
                (reason, &self.listeners[slot.listener].config.idle_notice)
            {
                slot.conn.notify_client(notice);
            }
            if let Some(upstream) = self.close_client(key, reason, failure, kernel) {
                if self.closing_upstreams.len() >= MAX_CLOSING_UPSTREAMS {
                    self.closing_upstreams.pop_front();
                }
                self.closing_upstreams.push_back(upstream);
            }
        }
        self.expired = expired;
    }

    /// The kernel's word on a due relay: the reason to close it now, or `None` when it was
    /// re-armed for a later deadline. Any inactivity timer is reviewed as idleness, with its own
    /// length.
    fn review(
        &mut self,
        key: usize,
        reason: CloseReason,
        kernel: [TcpProgress; 2],
        tick: u64,
        now: Instant,
    ) -> Option<CloseReason> {
        let slot = &mut self.slots[key];
        let config = &self.listeners[slot.listener].config;
        let clock = &self.clock;
        let due = Due {
            deadlines: slot.deadlines,
            reason: if reason.is_idle() { CloseReason::Idle } else { reason },
            tick,
            kernel,
            awaited_fin: slot.conn.awaited_fin(),
            holds_bytes: slot.conn.holds_bytes(),
            wire_seen: slot.wire_seen,
            idle_ticks: clock.ticks_in(inactivity(config, &slot.conn).1),
            half_close_ticks: config.half_close_timeout.map_or(0, |d| clock.ticks_in(d)),
            slack_ticks: clock.ticks_in(Duration::from_millis(JIFFY_SLACK_MS.into())),
        };
        let reported_tick = |ms_ago: u32| {
            let ago = Duration::from_millis(ms_ago.into());
            clock.deadline(now.checked_sub(ago).unwrap_or(now), Duration::ZERO)
        };
        match liveness::review(due, reported_tick) {
            Verdict::Postpone { deadlines, wire } => {
                slot.deadlines = deadlines;
                slot.wire_seen = wire;
                slot.arm(&mut self.wheel, key);
                None
            }
            Verdict::Close(CloseReason::Idle) if reason.is_idle() => Some(reason),
            Verdict::Close(why) => Some(why),
        }
    }

    /// Closes waiting upstream sockets of expired connections, oldest first, until the wheel's
    /// next deadline (at least one per call, so that they always drain), or all of them when
    /// no timer is due.
    pub(super) fn close_upstreams(&mut self, now: Instant) {
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

    /// On descriptor exhaustion, closes the upstream sockets of expired connections still
    /// waiting (they are held only to be closed). True if it freed any, so that the call that
    /// failed is worth making again.
    pub(super) fn reclaim_descriptors(&mut self, error: &io::Error) -> bool {
        if self.closing_upstreams.is_empty() || !is_out_of_descriptors(error) {
            return false;
        }
        self.closing_upstreams.clear();
        true
    }
}
