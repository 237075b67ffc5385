//! Wall time ↔ wheel ticks. The wheel counts integer ticks; this is the one place that converts,
//! and it always rounds so that a timer can never fire early: "now" rounds down (a tick has
//! elapsed only once all of it has), deadlines round up.
//!
//! Every clock's ticks are the multiples of its tick length on `CLOCK_MONOTONIC` (tick 0 is the
//! one in progress when the clock is made): two clocks with the same tick length, in one image
//! of the process or in the next one after a live upgrade, share every tick boundary. So a
//! deadline carried across an upgrade as the instant its tick begins ([`Clock::start_ns`])
//! lands on the same boundary in the new image ([`Clock::tick_at_or_after`]) instead of being
//! rounded up once more.

use std::time::{Duration, Instant};

/// The event loop's clock: where tick 0 begins, as an [`Instant`] and on `CLOCK_MONOTONIC`, and
/// a tick length.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    /// `CLOCK_MONOTONIC` nanoseconds at which tick 0 begins: a multiple of `tick_ns`.
    origin_ns: u64,
    tick_ns: u64,
}

impl Clock {
    /// A clock whose tick 0 is the tick (a multiple of `tick` on `CLOCK_MONOTONIC`) in progress
    /// now. `tick` must be at least 1 ns (config enforces ≥ 1 ms).
    pub fn new(tick: Duration) -> Clock {
        Clock::aligned(monotonic_ns(), tick)
    }

    /// A clock whose tick 0 is the one in progress at `CLOCK_MONOTONIC` reading `now_ns`.
    fn aligned(now_ns: u64, tick: Duration) -> Clock {
        let tick_ns = nanos(tick).max(1);
        let origin_ns = now_ns - now_ns % tick_ns;
        // `instant_of` errs late, by the time between its two clock reads (tens of
        // nanoseconds): ticks then begin that much later as `Instant`s, never earlier.
        Clock { start: instant_of(origin_ns), origin_ns, tick_ns }
    }

    /// A clock whose tick 0 begins at `start`, the instant at which `CLOCK_MONOTONIC` read
    /// `origin_ns` (a multiple of `tick`): for tests, which need both exactly.
    #[cfg(test)]
    pub fn anchored(start: Instant, origin_ns: u64, tick: Duration) -> Clock {
        let tick_ns = nanos(tick).max(1);
        assert_eq!(origin_ns % tick_ns, 0, "a clock's origin is a multiple of its tick");
        Clock { start, origin_ns, tick_ns }
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

    /// The `CLOCK_MONOTONIC` reading at which tick `tick` begins: exact, and the same in every
    /// clock of this tick length.
    pub fn start_ns(&self, tick: u64) -> u64 {
        self.origin_ns.saturating_add(tick.saturating_mul(self.tick_ns))
    }

    /// The first tick that begins at or after `CLOCK_MONOTONIC` reading `ns` (rounded up, so
    /// never early; exact for the start of a tick of any clock of this tick length). Tick 0
    /// for a reading before this clock's tick 0.
    pub fn tick_at_or_after(&self, ns: u64) -> u64 {
        ns.saturating_sub(self.origin_ns).div_ceil(self.tick_ns)
    }

    /// The tick in progress at `CLOCK_MONOTONIC` reading `ns` (rounded down: it has begun).
    pub fn tick_of(&self, ns: u64) -> u64 {
        ns.saturating_sub(self.origin_ns) / self.tick_ns
    }

    /// The [`Instant`] of `CLOCK_MONOTONIC` reading `ns`, as this clock places its ticks.
    pub fn instant_at(&self, ns: u64) -> Instant {
        match ns.checked_sub(self.origin_ns) {
            Some(after) => self.start + Duration::from_nanos(after),
            None => {
                let before = Duration::from_nanos(self.origin_ns - ns);
                self.start.checked_sub(before).unwrap_or(self.start)
            }
        }
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock behind [`Instant`], and the same in every image
/// of the process (a live upgrade carries times across the exec with it).
pub fn monotonic_ns() -> u64 {
    let Ok(now) = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) else { return 0 };
    (now.tv_sec() as u64).saturating_mul(1_000_000_000).saturating_add(now.tv_nsec() as u64)
}

/// The [`Instant`] at which [`monotonic_ns`] read `ns`, a reading not in the future (now, if it
/// is out of range): late by the time between this function's two clock reads, never early.
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
    const SECOND_NS: u64 = 1_000_000_000;

    #[test]
    fn now_rounds_down_and_deadlines_round_up() {
        let t0 = Instant::now();
        let clock = Clock::anchored(t0, 0, MS);
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
        let clock = Clock::anchored(t0, 0, MS);
        let now = t0 + Duration::from_micros(1500);
        assert_eq!(clock.until(now, 3), Duration::from_micros(1500));
        assert_eq!(clock.until(now, 1), Duration::ZERO);
    }

    #[test]
    fn times_before_the_start_are_tick_zero() {
        let t0 = Instant::now();
        let clock = Clock::anchored(t0 + Duration::from_secs(1), 0, MS);
        assert_eq!(clock.ticks_at(t0), 0);
        assert_eq!(clock.tick_at_or_after(0), 0);
    }

    #[test]
    fn a_new_clock_begins_its_tick_zero_on_a_multiple_of_its_tick() {
        for tick in [MS, Duration::from_millis(250), Duration::from_millis(7), Duration::from_secs(1)] {
            let before = monotonic_ns();
            let clock = Clock::new(tick);
            let after = monotonic_ns();
            let tick_ns = nanos(tick);
            assert_eq!(clock.start_ns(0) % tick_ns, 0, "{tick:?}");
            // The tick in progress when it was made: it began by then, and had not ended before.
            assert!(clock.start_ns(0) <= after && before < clock.start_ns(1), "{tick:?}");
            // Its tick 0 begins, as an Instant, no earlier than CLOCK_MONOTONIC says.
            let now = Instant::now();
            let real = monotonic_ns();
            assert!(clock.ticks_at(now) <= clock.tick_of(real), "{tick:?}");
            assert_eq!(clock.instant_at(clock.start_ns(0)), clock.start);
        }
    }

    #[test]
    fn clocks_of_one_tick_share_every_tick_boundary() {
        let tick = Duration::from_millis(250);
        let t0 = Instant::now();
        let first = Clock::anchored(t0, 1000 * SECOND_NS, tick);
        // The next image's clock, 7.25 s later.
        let second =
            Clock::anchored(t0 + Duration::from_millis(7250), 1000 * SECOND_NS + 7_250_000_000, tick);
        for k in [0, 1, 29, 30, 31, 1000, 123_457] {
            let at = first.start_ns(k);
            let there = second.tick_at_or_after(at);
            assert_eq!(second.start_ns(there), at.max(second.start_ns(0)), "tick {k}");
            assert_eq!(second.instant_at(at), first.instant_at(at), "tick {k}");
        }
        // A reading inside a tick rounds up to the next boundary, never down.
        assert_eq!(second.tick_at_or_after(second.start_ns(4) + 1), 5);
        assert_eq!(second.tick_of(second.start_ns(4) + 1), 4);
    }

    #[test]
    fn a_clock_of_another_tick_rounds_up_once_and_never_early() {
        let t0 = Instant::now();
        let old = Clock::anchored(t0, 600 * SECOND_NS, Duration::from_millis(250));
        let new = Clock::anchored(t0, 600 * SECOND_NS, Duration::from_millis(100));
        for k in 0..40 {
            let at = old.start_ns(k);
            let there = new.start_ns(new.tick_at_or_after(at));
            assert!(there >= at && there - at < 100_000_000, "tick {k}: {at} → {there}");
        }
    }
}
