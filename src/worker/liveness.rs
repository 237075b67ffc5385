//! Whether a relay whose timer is due really is idle, or really still waits for a FIN.
//!
//! The daemon's own reads and writes push a connection's idle deadline forward (a store, see
//! the worker's `drive`). But bytes also move while the daemon makes no call at all: the kernel
//! drains a send queue to a slow reader, fills a receive queue that backpressure keeps the
//! daemon from reading, and may have received the FIN that the half-close timer waits for,
//! behind bytes not read yet. So when a relay's idle or half-close deadline passes, the worker
//! asks the kernel (`TCP_INFO` of both sockets, [`crate::os::sys::tcp_progress`]) and this module
//! decides: close now, or postpone to the deadline that the kernel's view implies.
//!
//! The rules, which the README and idlereaper(8) state for users:
//! - **Idle** means no byte moved on the wire in either direction on either socket: the latest
//!   of the daemon's own last read or write, the last data the kernel received
//!   (`tcpi_last_data_recv`), and the last data it sent that the peer has acknowledged — no
//!   later than both the last data segment sent (`tcpi_last_data_sent`) and the last
//!   acknowledgement (`tcpi_last_ack_recv`): [`TcpProgress::since_movement_ms`]. A slow reader
//!   in the zero-window persist state between two window openings moves bytes at every opening,
//!   whatever the probe or backoff state. Keepalive and zero-window probes carry no data, and
//!   their answers acknowledge none: they move neither the data received nor the data sent, so
//!   a reader that stopped, or an idle peer that answers keepalives, is still idle.
//! - Those times are counted in jiffies, so they are taken as late as they can be
//!   ([`JIFFY_SLACK_MS`]): a deadline is never early, and is late by at most that slack (and
//!   one more review) beyond the kernel's own timestamps. With nothing queued anywhere, a
//!   kernel time within that slack of the daemon's own last call is that call (so an idle close
//!   is not delayed by the slack).
//! - The review compares both sockets' byte counters (`tcpi_bytes_acked` and
//!   `tcpi_bytes_received`) with the last review's: if none advanced, nothing moved since then,
//!   and the connection closes. The first review of an idle period has no earlier counters; it
//!   needs none, since the timestamps above move only with bytes.
//! - **Half-close**: `half_close_timeout` bounds the wait for the other peer's FIN. If the
//!   kernel has received that FIN (the daemon has not read it yet because bytes come first),
//!   the wait is over and only the idle rule applies from then on.
//!
//! The connection keeps one timer throughout: a postponement is one re-insertion, and a truly
//! idle connection costs one review (two `getsockopt` calls) when it is closed — two when bytes
//! are queued toward a peer that stopped reading (the first postpones by the slack).

use super::deadlines::Deadlines;
use crate::close_reason::CloseReason;
use crate::os::sys::TcpProgress;
#[cfg(doc)]
use crate::os::sys::JIFFY_SLACK_MS;
use crate::side::Side;

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
    /// The sum of both sockets' byte counters (acknowledged and received) at the last review,
    /// if any.
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
    /// The tick of the daemon's own last call: the idle deadline is `OWN + IDLE`.
    const OWN: u64 = 1000;

    /// A socket whose kernel last received data, sent data, and received an acknowledgement so
    /// many milliseconds ago, with bytes sent and not yet acknowledged or not.
    fn socket(data_ms: u32, sent_ms: u32, ack_ms: u32, unacknowledged: bool) -> TcpProgress {
        let moved = 100;
        TcpProgress {
            moved,
            since_data_ms: data_ms,
            since_sent_ms: sent_ms,
            since_ack_ms: ack_ms,
            unacknowledged,
            peer_finished: false,
        }
    }

    fn quiet() -> TcpProgress {
        socket(5_000, 5_000, 5_000, false)
    }

    /// A relay whose last own activity was at tick 1000, due at 3000, reviewed at 3000.
    fn due(kernel: [TcpProgress; 2]) -> Due {
        Due {
            deadlines: Deadlines { activity: OWN + IDLE, lifetime: None, half_close: None },
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

    /// What a review decides: `None` to close as idle, `Some(t)` to postpone the idle deadline
    /// to tick `t`.
    fn decide(due: Due) -> Option<u64> {
        match review(due, moved) {
            Verdict::Close(CloseReason::Idle) => None,
            Verdict::Postpone { deadlines, wire } => {
                assert_eq!(wire, Some(due.kernel[0].moved.wrapping_add(due.kernel[1].moved)));
                Some(deadlines.activity)
            }
            other => panic!("{other:?}"),
        }
    }

    /// A case of [`what_moved_on_the_wire_and_when`]: what, the kernel's figures for
    /// `[client, upstream]`, whether the daemon holds bytes, and the idle deadline decided
    /// (`None`: idle now).
    type Wire = (&'static str, [TcpProgress; 2], bool, Option<u64>);

    /// What the kernel may have moved since the last call, case by case.
    fn wire_cases() -> [Wire; 12] {
        [
            ("nothing since the last call", [quiet(), quiet()], false, None),
            (
                "the last call's own bytes, sent then and acknowledged 1 ms later",
                [socket(5_000, 2_000, 1_999, false), quiet()],
                false,
                None,
            ),
            (
                "keepalive answers, nothing outstanding",
                [socket(5_000, 5_000, 20, false), quiet()],
                false,
                None,
            ),
            (
                "zero-window probe answers to a reader that stopped before the last call",
                [socket(5_000, 2_500, 20, true), quiet()],
                true,
                None,
            ),
            (
                "a peer that vanished: data sent again and again, never acknowledged",
                [socket(5_000, 30, 2_500, true), quiet()],
                true,
                None,
            ),
            (
                "a slow reader's window opened 400 ms ago; probe answers since",
                [socket(5_000, 400, 20, true), quiet()],
                true,
                Some(moved(400) + SLACK + IDLE),
            ),
            (
                "a slow reader whose data was acknowledged 300 ms after it was sent",
                [socket(5_000, 700, 400, true), quiet()],
                true,
                Some(moved(700) + SLACK + IDLE),
            ),
            (
                "a reader that finished draining 50 ms ago: nothing outstanding now",
                [socket(5_000, 60, 50, false), quiet()],
                false,
                Some(moved(60) + SLACK + IDLE),
            ),
            (
                "bytes arriving from the upstream while backpressure keeps the daemon from reading",
                [quiet(), socket(300, 5_000, 300, false)],
                true,
                Some(moved(300) + SLACK + IDLE),
            ),
            (
                "bytes arriving 5 ms after the last call, within the slack, while held",
                [quiet(), socket(1_995, 5_000, 1_995, false)],
                true,
                Some(moved(1_995) + SLACK + IDLE),
            ),
            (
                "the same with nothing held: the daemon's own last read",
                [quiet(), socket(1_995, 5_000, 1_995, false)],
                false,
                None,
            ),
            (
                "the reader stopped just as the last call filled its window: at most the slack",
                [socket(5_000, 2_000, 20, true), quiet()],
                true,
                Some(moved(2_000) + SLACK + IDLE),
            ),
        ]
    }

    #[test]
    fn what_moved_on_the_wire_and_when() {
        for (what, kernel, holds_bytes, expected) in wire_cases() {
            let mut first = due(kernel);
            first.holds_bytes = holds_bytes;
            assert_eq!(decide(first), expected, "{what}");
            // Reviewed again with the same counters: nothing moved since, whatever the times say.
            let mut again = first;
            again.wire_seen = Some(kernel[0].moved + kernel[1].moved);
            if let Some(activity) = expected {
                again.deadlines.activity = activity;
                again.tick = activity;
            }
            assert_eq!(review(again, moved), Verdict::Close(CloseReason::Idle), "{what}, reviewed again");
        }
    }

    #[test]
    fn counters_that_advanced_since_the_last_review_are_movement_whatever_the_probe_state() {
        // The last review saw 200 bytes; the reader's window has opened since, the last data
        // went out 900 ms ago and probes have been answered since.
        let mut review_again = due([socket(5_000, 900, 15, true), quiet()]);
        review_again.kernel[0].moved = 100 + 65_536;
        review_again.wire_seen = Some(200);
        review_again.holds_bytes = true;
        assert_eq!(decide(review_again), Some(moved(900) + SLACK + IDLE));
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
        moving.kernel[0] = socket(5_000, 100, 99, true);
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
        let mut both = due([socket(5_000, 0, 0, true), quiet()]);
        both.deadlines.lifetime = Some(3000);
        both.deadlines.activity = 2999;
        assert_eq!(review(both, moved), Verdict::Close(CloseReason::MaxLifetime));
    }
}
