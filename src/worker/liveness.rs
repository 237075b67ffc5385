//! Whether a relay whose timer is due really is idle, or really still waits for a FIN.
//!
//! The daemon's own reads and writes push a connection's idle deadline forward (a store, see
//! the worker's `drive`). But bytes also move while the daemon makes no call at all: the kernel
//! drains a send queue to a slow reader, fills a receive queue that backpressure keeps the
//! daemon from reading, and may have received the FIN that the half-close timer waits for,
//! behind bytes not read yet. So when a relay's idle or half-close deadline passes, the worker
//! asks the kernel (`TCP_INFO` of both sockets, [`crate::sys::tcp_progress`]) and this module
//! decides: close now, or postpone to the deadline that the kernel's view implies.
//!
//! The rules, which the README and idlereaper(8) state for users:
//! - **Idle** means no byte moved on the wire in either direction on either socket: the latest
//!   of the daemon's own last read or write, the last data the kernel received, and — while
//!   bytes sent are still unacknowledged — the last acknowledgement. The kernel reports those
//!   times in jiffies, so they are taken as late as they can be ([`JIFFY_SLACK_MS`]): a
//!   deadline is never early. With nothing queued anywhere, a kernel time within that slack of
//!   the daemon's own last call is that call (so an idle close is not delayed by the slack).
//! - If neither socket's byte counters moved since the last review, nothing moved: close.
//! - **Half-close**: `half_close_timeout` bounds the wait for the other peer's FIN. If the
//!   kernel has received that FIN (the daemon has not read it yet because bytes come first),
//!   the wait is over and only the idle rule applies from then on.
//!
//! The connection keeps one timer throughout: a postponement is one re-insertion, and a truly
//! idle connection costs exactly one review (two `getsockopt` calls) when it is closed.

use super::deadlines::Deadlines;
use crate::sys::TcpProgress;
#[cfg(doc)]
use crate::sys::JIFFY_SLACK_MS;
use crate::vocab::{CloseReason, Side};

/// What to do with a relay whose timer is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Close it, for this reason.
    Close(CloseReason),
    /// Not due after all: re-arm for these deadlines, and remember the byte counters.
    Postpone { deadlines: Deadlines, wire: Option<u64> },
}

/// A due relay, as the worker sees it. Times are wheel ticks.
#[derive(Debug, Clone, Copy)]
pub struct Due {
    pub deadlines: Deadlines,
    /// The deadline that passed (see [`Deadlines::reason`]).
    pub reason: CloseReason,
    /// Now.
    pub tick: u64,
    /// `[client, upstream]`.
    pub kernel: [TcpProgress; 2],
    /// The side whose FIN the half-close timer waits for.
    pub awaited_fin: Option<Side>,
    /// The daemon holds bytes in flight (a buffer, a pipe, an urgent byte).
    pub holds_bytes: bool,
    /// The sum of both sockets' byte counters at the last review, if any.
    pub wire_seen: Option<u64>,
    /// `idle_timeout` and `half_close_timeout`, rounded up.
    pub idle_ticks: u64,
    pub half_close_ticks: u64,
    /// [`JIFFY_SLACK_MS`], rounded up.
    pub slack_ticks: u64,
}

/// Decides on a due relay. `reported_tick` gives the tick (rounded up) of a movement the kernel
/// reports some milliseconds ago; the movement may have been up to [`JIFFY_SLACK_MS`] later.
pub fn review(due: Due, reported_tick: impl Fn(u32) -> u64) -> Verdict {
    if !matches!(due.reason, CloseReason::Idle | CloseReason::HalfCloseTimeout) {
        return Verdict::Close(due.reason);
    }
    let mut deadlines = due.deadlines;
    if due.awaited_fin.is_none_or(|side| due.kernel[side.index()].peer_finished) {
        deadlines.half_close = None; // the FIN is in: the wait for it is over
    }
    let wire = due.kernel[0].moved.wrapping_add(due.kernel[1].moved);
    let mut wire_seen = due.wire_seen;
    if wire_seen != Some(wire) {
        // Bytes moved since the last review (or there was none): when, at the latest?
        let queued = due.holds_bytes || due.kernel.iter().any(|k| k.unacknowledged);
        let since = due.kernel.iter().map(TcpProgress::since_movement_ms).min().unwrap_or(u32::MAX);
        let reported = reported_tick(since);
        let at = reported.saturating_add(due.slack_ticks); // as late as it can have been
        let own = deadlines.activity.saturating_sub(due.idle_ticks);
        // With bytes queued the daemon's own last call says nothing of when they moved: any
        // movement that may be later counts. With nothing queued, a kernel time within the
        // slack of that call is that call.
        let later = if queued { at > own } else { reported > own.saturating_add(due.slack_ticks) };
        if later {
            deadlines.activity = deadlines.activity.max(at.saturating_add(due.idle_ticks));
            if let Some(half_close) = deadlines.half_close.as_mut() {
                *half_close = (*half_close).max(at.saturating_add(due.half_close_ticks));
            }
            wire_seen = Some(wire);
        }
    }
    match deadlines.earliest() > due.tick {
        true => Verdict::Postpone { deadlines, wire: wire_seen },
        false => Verdict::Close(deadlines.reason(false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: u64 = 2000; // ticks (1 ms each) of idle timeout
    const HALF_CLOSE: u64 = 500;
    const SLACK: u64 = 10;

    fn quiet() -> TcpProgress {
        TcpProgress { moved: 100, since_data_ms: 5_000, since_ack_ms: 5_000, ..TcpProgress::default() }
    }

    /// A relay whose last own activity was at tick 1000, due at 3000, reviewed at 3000.
    fn due(kernel: [TcpProgress; 2]) -> Due {
        Due {
            deadlines: Deadlines { activity: 3000, lifetime: None, half_close: None },
            reason: CloseReason::Idle,
            tick: 3000,
            kernel,
            awaited_fin: None,
            holds_bytes: false,
            wire_seen: None,
            idle_ticks: IDLE,
            half_close_ticks: HALF_CLOSE,
            slack_ticks: SLACK,
        }
    }

    /// Now is tick 3000: the tick of a movement reported `ms` ago.
    fn moved(ms: u32) -> u64 {
        3000u64.saturating_sub(ms.into())
    }

    #[test]
    fn an_idle_relay_with_nothing_queued_closes_on_time() {
        assert_eq!(review(due([quiet(), quiet()]), moved), Verdict::Close(CloseReason::Idle));
        // Its last acknowledgement came 1 ms after the daemon's last write: still that write.
        let mut k = quiet();
        k.since_ack_ms = 1999;
        k.since_data_ms = 1999;
        assert_eq!(review(due([k, quiet()]), moved), Verdict::Close(CloseReason::Idle));
    }

    #[test]
    fn a_slow_reader_still_acknowledging_postpones_the_idle_close() {
        let mut reader = quiet();
        reader.unacknowledged = true;
        reader.since_ack_ms = 50;
        let verdict = review(due([reader, quiet()]), moved);
        let Verdict::Postpone { deadlines, wire } = verdict else { panic!("{verdict:?}") };
        assert_eq!(deadlines.activity, moved(50) + SLACK + IDLE, "50 ms ago, at the latest 40, plus idle");
        assert_eq!(wire, Some(200));
        // Reviewed again with the same counters: nothing moved since, so it is idle.
        let mut again = due([reader, quiet()]);
        again.wire_seen = wire;
        assert_eq!(review(again, moved), Verdict::Close(CloseReason::Idle));
    }

    #[test]
    fn acknowledgements_of_probes_and_keepalives_are_not_movement() {
        let mut probed = quiet();
        probed.unacknowledged = true;
        probed.backing_off = true;
        probed.since_ack_ms = 20;
        let mut keepalive = quiet();
        keepalive.since_ack_ms = 20;
        assert_eq!(review(due([probed, keepalive]), moved), Verdict::Close(CloseReason::Idle));
    }

    #[test]
    fn bytes_arriving_while_backpressured_postpone_without_slack() {
        let mut sender = quiet();
        sender.since_data_ms = 1995; // 5 ms after the daemon's last call, within the slack
        let mut held = due([quiet(), sender]);
        held.holds_bytes = true;
        let Verdict::Postpone { deadlines, .. } = review(held, moved) else { panic!() };
        assert_eq!(deadlines.activity, moved(1995) + SLACK + IDLE);
        // The same without bytes queued is the daemon's own read.
        assert_eq!(review(due([quiet(), sender]), moved), Verdict::Close(CloseReason::Idle));
    }

    #[test]
    fn half_close_is_an_inactivity_timer_until_the_kernel_has_the_fin() {
        let mut waiting = due([quiet(), quiet()]);
        // The last byte and the client's FIN at 2500.
        waiting.deadlines = Deadlines { activity: 4500, lifetime: None, half_close: Some(3000) };
        waiting.reason = CloseReason::HalfCloseTimeout;
        waiting.awaited_fin = Some(Side::Upstream);
        assert_eq!(review(waiting, moved), Verdict::Close(CloseReason::HalfCloseTimeout));
        // Bytes still moving toward the client: postponed by half_close_timeout from then.
        let mut moving = waiting;
        moving.kernel[0].unacknowledged = true;
        moving.kernel[0].since_ack_ms = 100;
        let Verdict::Postpone { deadlines, .. } = review(moving, moved) else { panic!() };
        assert_eq!(deadlines.half_close, Some(moved(100) + SLACK + HALF_CLOSE));
        // The upstream's FIN has arrived behind bytes not read yet: the wait is over.
        waiting.kernel[1].peer_finished = true;
        let expected = Deadlines { activity: 4500, lifetime: None, half_close: None };
        assert_eq!(review(waiting, moved), Verdict::Postpone { deadlines: expected, wire: None });
    }

    #[test]
    fn other_deadlines_close_at_once() {
        let mut lifetime = due([quiet(), quiet()]);
        lifetime.deadlines.lifetime = Some(2500);
        lifetime.reason = CloseReason::MaxLifetime;
        assert_eq!(review(lifetime, moved), Verdict::Close(CloseReason::MaxLifetime));
        // A postponed idle deadline beyond the lifetime: the lifetime closes it.
        let mut reader = quiet();
        reader.unacknowledged = true;
        reader.since_ack_ms = 0;
        let mut both = due([reader, quiet()]);
        both.deadlines.lifetime = Some(3000);
        both.deadlines.activity = 2999;
        assert_eq!(review(both, moved), Verdict::Close(CloseReason::MaxLifetime));
    }
}
