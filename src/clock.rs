//! Wall time ↔ wheel ticks. The wheel counts integer ticks from the moment the event loop started;
//! this is the one place that converts, and it always rounds so that a timer can never fire early:
//! "now" rounds down (a tick has elapsed only once all of it has), deadlines round up.

use std::time::{Duration, Instant};

/// The event loop's clock: a start instant and a tick length.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    tick_ns: u64,
}

impl Clock {
    /// A clock whose tick 0 starts now. `tick` must be at least 1 ns (config enforces ≥ 1 ms).
    pub fn new(tick: Duration) -> Clock {
        Clock::starting_at(Instant::now(), tick)
    }

    /// A clock whose tick 0 starts at `start`.
    pub fn starting_at(start: Instant, tick: Duration) -> Clock {
        let tick_ns = u64::try_from(tick.as_nanos()).unwrap_or(u64::MAX).max(1);
        Clock { start, tick_ns }
    }

    /// The number of whole ticks elapsed at `t` (rounded down).
    pub fn ticks_at(&self, t: Instant) -> u64 {
        nanos(t.saturating_duration_since(self.start)) / self.tick_ns
    }

    /// The first tick at whose start `t + after` has passed (rounded up), so that a timer filed
    /// under it fires no earlier than `t + after` and less than one tick later.
    pub fn deadline(&self, t: Instant, after: Duration) -> u64 {
        let ns = nanos(t.saturating_duration_since(self.start)).saturating_add(nanos(after));
        ns.div_ceil(self.tick_ns)
    }

    /// How many ticks `d` spans, rounded up.
    pub fn ticks_in(&self, d: Duration) -> u64 {
        nanos(d).div_ceil(self.tick_ns)
    }

    /// How long from `now` until tick `tick` begins (zero if it already has).
    pub fn until(&self, now: Instant, tick: u64) -> Duration {
        let at = Duration::from_nanos(tick.saturating_mul(self.tick_ns));
        at.saturating_sub(now.saturating_duration_since(self.start))
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock behind [`Instant`], and the same in every image
/// of the process (a live upgrade carries times across the exec with it).
pub fn monotonic_ns() -> u64 {
    let Ok(now) = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) else { return 0 };
    (now.tv_sec() as u64).saturating_mul(1_000_000_000).saturating_add(now.tv_nsec() as u64)
}

/// The [`Instant`] at which [`monotonic_ns`] read `ns` (now, if that is out of range).
pub fn instant_of(ns: u64) -> Instant {
    let ago = Duration::from_nanos(monotonic_ns().saturating_sub(ns));
    let now = Instant::now();
    now.checked_sub(ago).unwrap_or(now)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn now_rounds_down_and_deadlines_round_up() {
        let t0 = Instant::now();
        let clock = Clock::starting_at(t0, MS);
        assert_eq!(clock.ticks_at(t0), 0);
        assert_eq!(clock.ticks_at(t0 + Duration::from_micros(999)), 0);
        assert_eq!(clock.ticks_at(t0 + MS), 1);
        // Activity 0.5 ms in, 2 s timeout: due at 2000.5 ms, so tick 2001.
        let t = t0 + Duration::from_micros(500);
        assert_eq!(clock.deadline(t, Duration::from_secs(2)), 2001);
        // Exactly on a boundary stays on it.
        assert_eq!(clock.deadline(t0 + MS, Duration::from_secs(2)), 2001);
    }

    #[test]
    fn until_counts_to_the_start_of_a_tick() {
        let t0 = Instant::now();
        let clock = Clock::starting_at(t0, MS);
        let now = t0 + Duration::from_micros(1500);
        assert_eq!(clock.until(now, 3), Duration::from_micros(1500));
        assert_eq!(clock.until(now, 1), Duration::ZERO);
    }

    #[test]
    fn times_before_the_start_are_tick_zero() {
        let t0 = Instant::now();
        let clock = Clock::starting_at(t0 + Duration::from_secs(1), MS);
        assert_eq!(clock.ticks_at(t0), 0);
    }
}
