//! Which timeout applies to a connection when, in one place. A connection has one timer, armed
//! for the earliest of these deadlines (wheel ticks):
//! - **activity**: `connect_timeout` from accept while the upstream connect is in progress (from
//!   each new attempt when an address fails), then
//!   `idle_timeout` from the last byte moved (by the daemon, or — checked when it passes, see
//!   [`super::liveness`] — by the kernel); on a protocol listener, the timer its observer's
//!   state runs ([`inactivity`]: `idle_timeout`, `idle_in_transaction_timeout`,
//!   `subscriber_idle_timeout`, or none, which is a deadline [`NEVER`] away);
//! - **lifetime**: `max_lifetime` from accept, whatever the traffic;
//! - **half-close**: after the first FIN, `half_close_timeout` from the last movement, until the
//!   other FIN; none once both FINs are in (only delivery is left, which the idle rule governs).
//!
//! Every deadline is computed from the clock read *after* the bytes moved, rounded up to a tick,
//! so none is early.

use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::close_reason::CloseReason;
use crate::config::ListenerConfig;
use crate::conn::{Conn, Progress};
use crate::observe::Timer;

/// How far away the deadline of a connection that runs no inactivity timer is (a busy
/// PostgreSQL session, a monitoring Redis client): beyond any timeout the configuration allows
/// (30 days), so that it keeps one deadline like every connection, which never comes, and its
/// idle time still reads as `NEVER` less the time to that deadline.
pub const NEVER: Duration = Duration::from_secs(50 * 365 * 24 * 3600);

/// The inactivity timer `conn` runs now and its length: `idle_timeout`, or on a protocol
/// listener the timer its observer's state calls for ([`Timer::Never`] and [`NEVER`] for none).
pub fn inactivity(config: &ListenerConfig, conn: &Conn) -> (Timer, Duration) {
    let timer = conn.observed().map_or(Timer::Idle, |o| o.state().timer());
    match timer {
        Timer::Idle => (timer, config.idle_timeout),
        Timer::IdleInTransaction => (timer, config.idle_in_transaction_timeout),
        Timer::SubscriberIdle => match config.subscriber_idle_timeout {
            Some(timeout) => (timer, timeout),
            None => (Timer::Never, NEVER),
        },
        Timer::Never => (timer, NEVER),
    }
}

/// The close reason of an inactivity timer that ran out.
pub fn reason_of(timer: Timer) -> CloseReason {
    match timer {
        Timer::IdleInTransaction => CloseReason::IdleInTransaction,
        Timer::SubscriberIdle => CloseReason::SubscriberIdle,
        Timer::Idle | Timer::Never => CloseReason::Idle,
    }
}

/// The deadlines a connection is subject to, in wheel ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// `connect_timeout` while the upstream connect is in progress, then the idle deadline.
    pub activity: u64,
    /// `max_lifetime` after accept, if limited.
    pub lifetime: Option<u64>,
    /// `half_close_timeout` after the last movement since the first FIN, until the second.
    pub half_close: Option<u64>,
}

impl Deadlines {
    /// A connection accepted at `now`: connecting (a relay) or idle-timed from now (a sink).
    pub fn at_accept(config: &ListenerConfig, connecting: bool, clock: &Clock, now: Instant) -> Deadlines {
        let first = if connecting { config.connect_timeout } else { config.idle_timeout };
        Deadlines {
            activity: clock.deadline(now, first),
            lifetime: config.max_lifetime.map(|d| clock.deadline(now, d)),
            half_close: None,
        }
    }

    /// The previous upstream address failed and the next one is being tried from `now`: it has
    /// a `connect_timeout` of its own.
    pub fn connecting_again(&mut self, config: &ListenerConfig, clock: &Clock, now: Instant) {
        self.activity = clock.deadline(now, config.connect_timeout);
    }

    /// After a drive of `conn`: bytes that moved push the idle deadline (and, while one peer has
    /// sent FIN, the half-close one); the first FIN starts the half-close timer, the second
    /// ends it. Returns the earliest deadline before and after.
    pub fn after(
        &mut self,
        progress: &Progress,
        conn: &Conn,
        config: &ListenerConfig,
        clock: &Clock,
    ) -> (u64, u64) {
        let old = self.earliest();
        let both_finished = conn.both_finished();
        if progress.active || progress.half_closed || (both_finished && self.half_close.is_some()) {
            // The clock is read after the bytes moved, so no deadline is early.
            let now = Instant::now();
            if progress.active {
                self.activity = clock.deadline(now, inactivity(config, conn).1);
            }
            if progress.half_closed || (progress.active && conn.awaited_fin().is_some()) {
                self.half_close = config.half_close_timeout.map(|d| clock.deadline(now, d));
            }
            if both_finished {
                self.half_close = None;
            }
        }
        (old, self.earliest())
    }

    /// The deadline the connection's timer is armed for.
    pub fn earliest(&self) -> u64 {
        [Some(self.activity), self.lifetime, self.half_close].into_iter().flatten().min().unwrap_or(u64::MAX)
    }

    /// Why a connection whose timer fired is closed: the deadline that passed first (the
    /// activity deadline says `Idle`; which inactivity timer it was is [`inactivity`]'s).
    pub fn reason(&self, connecting: bool) -> CloseReason {
        let activity = if connecting { CloseReason::ConnectTimeout } else { CloseReason::Idle };
        let candidates = [
            (Some(self.activity), activity),
            (self.lifetime, CloseReason::MaxLifetime),
            (self.half_close, CloseReason::HalfCloseTimeout),
        ];
        let due = candidates.iter().filter_map(|(d, r)| d.map(|d| (d, *r)));
        due.min_by_key(|(d, _)| *d).map_or(activity, |(_, r)| r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earliest_deadline_arms_the_timer_and_names_the_reason() {
        let d = Deadlines { activity: 500, lifetime: Some(300), half_close: None };
        assert_eq!((d.earliest(), d.reason(false)), (300, CloseReason::MaxLifetime));
        let d = Deadlines { activity: 200, lifetime: Some(300), half_close: Some(250) };
        assert_eq!((d.earliest(), d.reason(false)), (200, CloseReason::Idle));
        assert_eq!(d.reason(true), CloseReason::ConnectTimeout);
        let d = Deadlines { activity: 400, lifetime: None, half_close: Some(250) };
        assert_eq!((d.earliest(), d.reason(false)), (250, CloseReason::HalfCloseTimeout));
    }
}
