//! Unit tests of the timing wheel: firing times at bucket and level
//! boundaries, time jumps and time standing still, reset, postpone, cancel and
//! clamping. Budgets and the bucket lists are in `list_tests.rs`.

use super::*;

/// Polls at every `next_deadline` up to `until` with an unlimited budget,
/// checking invariants; returns `(tick, value)` for every value fired.
pub(super) fn run_by_next_deadline<T>(wheel: &mut Wheel<T>, until: u64) -> Vec<(u64, T)> {
    let mut fired = Vec::new();
    while let Some(at) = wheel.next_deadline().filter(|&at| at <= until) {
        let mut out = Vec::new();
        assert!(!wheel.poll(at, usize::MAX, &mut out));
        wheel.check_invariants();
        fired.extend(out.into_iter().map(|v| (at, v)));
    }
    fired
}

/// Deadlines around every power of 64 up to the top level.
pub(super) fn boundaries() -> Vec<u64> {
    let mut out = vec![1, 2, 62, 63, 64, 65];
    for k in 2..=6u32 {
        let p = 64u64.pow(k);
        out.extend([p - 1, p, p + 1, 63 * (p / 64), 63 * (p / 64) + 1]);
    }
    out
}

#[test]
fn fires_at_deadline_not_before() {
    for deadline in boundaries() {
        let mut wheel = Wheel::new();
        wheel.insert(deadline, deadline);
        let mut out = Vec::new();
        assert!(!wheel.poll(deadline - 1, usize::MAX, &mut out));
        assert!(out.is_empty(), "deadline={deadline} fired at {}", deadline - 1);
        assert!(wheel.next_deadline().unwrap() <= deadline);
        wheel.check_invariants();
        assert!(!wheel.poll(deadline, usize::MAX, &mut out));
        assert_eq!(out, [deadline]);
        assert!(wheel.is_empty() && wheel.next_deadline().is_none());
        // Stepping by next_deadline it fires exactly at its deadline.
        let mut wheel = Wheel::new();
        wheel.insert(deadline, ());
        assert_eq!(run_by_next_deadline(&mut wheel, u64::MAX), [(deadline, ())]);
    }
}

#[test]
fn every_tick_polling_fires_on_time() {
    let mut wheel = Wheel::new();
    for deadline in [1, 63, 64, 65, 127, 128, 4095, 4096, 4097, 9000] {
        wheel.insert(deadline, deadline);
    }
    let mut out = Vec::new();
    for now in 0..=9000 {
        assert!(!wheel.poll(now, usize::MAX, &mut out));
        for v in out.drain(..) {
            assert_eq!(v, now);
        }
    }
    assert!(wheel.is_empty());
}

#[test]
fn level_boundaries_from_nonzero_elapsed() {
    for start in [1, 5, 63, 64 + 5, 4095, 4096 * 3 + 17, (1 << 30) - 1, (1 << 36) - 3, 1 << 40] {
        let mut wheel = Wheel::new();
        wheel.poll(start, usize::MAX, &mut Vec::new());
        assert_eq!(wheel.elapsed(), start);
        let mut expected = Vec::new();
        for delta in boundaries() {
            wheel.insert(start + delta, start + delta);
            expected.push((start + delta, start + delta));
        }
        wheel.check_invariants();
        let mut fired = run_by_next_deadline(&mut wheel, u64::MAX);
        fired.sort_unstable();
        expected.sort_unstable();
        assert_eq!(fired, expected, "start={start}");
    }
}

#[test]
fn deadline_in_the_past_or_now() {
    let mut wheel = Wheel::new();
    let mut out = Vec::new();
    wheel.poll(100, usize::MAX, &mut out);
    wheel.insert(50, "past");
    wheel.insert(100, "now");
    assert_eq!(wheel.next_deadline(), Some(100));
    wheel.check_invariants();
    assert!(!wheel.poll(100, usize::MAX, &mut out));
    out.sort_unstable();
    assert_eq!(out, ["now", "past"]);
    // A `now` before elapsed counts as elapsed.
    wheel.insert(0, "zero");
    assert!(!wheel.poll(3, usize::MAX, &mut out));
    assert_eq!(out.last(), Some(&"zero"));
    assert_eq!(wheel.elapsed(), 100);
}

#[test]
fn time_standing_still() {
    let mut wheel = Wheel::new();
    let mut out = Vec::new();
    wheel.insert(11, 11);
    for _ in 0..5 {
        assert!(!wheel.poll(10, usize::MAX, &mut out));
    }
    assert!(out.is_empty());
    wheel.insert(10, 10);
    assert!(!wheel.poll(10, usize::MAX, &mut out));
    assert!(!wheel.poll(10, usize::MAX, &mut out));
    assert_eq!(out, [10]);
    assert!(!wheel.poll(11, usize::MAX, &mut out));
    assert!(!wheel.poll(11, usize::MAX, &mut out));
    assert_eq!(out, [10, 11]);
}

#[test]
fn huge_jumps_over_a_sparse_wheel() {
    let mut wheel = Wheel::new();
    let mut out = Vec::new();
    for deadline in [1, 5000, 1 << 35, (1 << 36) - 1] {
        wheel.insert(deadline, deadline);
    }
    assert!(!wheel.poll(1 << 40, usize::MAX, &mut out));
    assert_eq!(out, [1, 5000, 1 << 35, (1 << 36) - 1]);
    assert_eq!(wheel.elapsed(), 1 << 40);
    // Many jumps of 2^40 with a timer or two: O(levels) each.
    out.clear();
    for i in 1..=1000u64 {
        let now = (1 << 40) * (i + 1);
        wheel.insert(now - 7, i);
        wheel.insert(now + 5, 0);
        assert!(!wheel.poll(now, usize::MAX, &mut out));
        assert_eq!(out.pop(), Some(i));
        out.clear();
    }
    // Up to the end of u64.
    let mut wheel = Wheel::new();
    wheel.insert(u64::MAX - (1 << 37), 0);
    assert!(!wheel.poll(u64::MAX - (1 << 37), usize::MAX, &mut out));
    assert_eq!(out, [0]);
    out.clear();
    wheel.insert(u64::MAX - 1, 1);
    wheel.insert(u64::MAX, 2);
    wheel.check_invariants();
    assert_eq!(run_by_next_deadline(&mut wheel, u64::MAX), [(u64::MAX - 1, 1), (u64::MAX, 2)]);
    assert_eq!(wheel.elapsed(), u64::MAX);
    wheel.insert(u64::MAX, 3);
    assert!(!wheel.poll(u64::MAX, usize::MAX, &mut out));
    assert_eq!(out, [3]);
}

#[test]
fn reset_earlier_and_later() {
    let mut wheel = Wheel::new();
    let early = wheel.insert(100_000, "early");
    let late = wheel.insert(10, "late");
    wheel.reset(early, 10);
    wheel.reset(late, 5000);
    assert_eq!((wheel.deadline(early), wheel.deadline(late)), (10, 5000));
    wheel.check_invariants();
    assert_eq!(run_by_next_deadline(&mut wheel, u64::MAX), [(10, "early"), (5000, "late")]);
}

#[test]
fn postpone_is_a_store_and_fires_at_the_new_deadline() {
    let mut wheel = Wheel::new();
    let key = wheel.insert(100, 7u32);
    let place = wheel.entries[key.0].place;
    wheel.postpone(key, 5000);
    assert_eq!(wheel.entries[key.0].place, place, "postpone later moved the entry");
    assert_eq!(wheel.deadline(key), 5000);
    assert!(wheel.next_deadline().unwrap() <= 100);
    wheel.check_invariants();
    assert_eq!(run_by_next_deadline(&mut wheel, u64::MAX), [(5000, 7)]);
    // Activity every 10 ticks with a 100-tick idle timeout: it fires only
    // 100 ticks after the last activity.
    let key = wheel.insert(5100, 8);
    let mut out = Vec::new();
    for now in 5000..20_000 {
        if now % 10 == 0 && now < 15_000 {
            wheel.postpone(key, now + 100);
        }
        wheel.poll(now, usize::MAX, &mut out);
        if !out.is_empty() {
            assert_eq!((now, &out[..]), (15_090, &[8][..]));
            out.clear();
        }
    }
    assert!(wheel.is_empty());
}

#[test]
fn postpone_earlier_falls_back_to_reset() {
    let mut wheel = Wheel::new();
    let key = wheel.insert(5000, 1);
    wheel.postpone(key, 10);
    assert_eq!(wheel.entries[key.0].place, Place::bucket(0, 10));
    assert_eq!(run_by_next_deadline(&mut wheel, u64::MAX), [(10, 1)]);
    // Earlier, but not before the entry's bucket comes up (level 2, bucket 2,
    // at 8192): it stays put and fires at the new deadline.
    let key = wheel.insert(4100 + 4096, 2);
    let place = wheel.entries[key.0].place;
    assert_eq!(place, Place::bucket(2, 2));
    wheel.postpone(key, 8192 + 1);
    assert_eq!(wheel.entries[key.0].place, place);
    wheel.postpone(key, 8191);
    assert_ne!(wheel.entries[key.0].place, place);
    assert_eq!(run_by_next_deadline(&mut wheel, u64::MAX), [(8191, 2)]);
}

#[test]
fn cancel_from_every_level_and_pending() {
    let mut wheel = Wheel::new();
    wheel.poll(3, usize::MAX, &mut Vec::new());
    let mut keys = vec![wheel.insert(1, usize::MAX)];
    for level in 0..NUM_LEVELS {
        keys.push(wheel.insert(3 + (1u64 << (6 * level)) + 1, level));
        keys.push(wheel.insert(3 + (1u64 << (6 * level)) + 2, level));
    }
    wheel.insert(u64::MAX, 99);
    let places: Vec<Place> = keys.iter().map(|k| wheel.entries[k.0].place).collect();
    assert_eq!(places[0], Place::PENDING);
    for level in 0..NUM_LEVELS {
        assert!(places.iter().any(|p| p.level_bucket().is_some_and(|(l, _)| l == level)));
    }
    // Cancel heads and tails of lists alike.
    for (i, key) in keys.into_iter().enumerate().rev() {
        let value = wheel.cancel(key);
        assert_eq!(value, if i == 0 { usize::MAX } else { (i - 1) / 2 });
        wheel.check_invariants();
    }
    assert_eq!(wheel.len(), 1);
    let mut out = Vec::new();
    assert!(!wheel.poll(1 << 37, usize::MAX, &mut out));
    assert!(out.is_empty());
}

#[test]
fn out_of_range_deadline_is_clamped_never_wrapped() {
    let mut wheel = Wheel::new();
    let mut out = Vec::new();
    let start = 12345;
    wheel.poll(start, usize::MAX, &mut out);
    let far = start + MAX_DURATION + 1_000_000;
    let key = wheel.insert(far, "far");
    wheel.insert(1 << 36 | 5, "wrap");
    assert_eq!(wheel.deadline(key), far, "the true deadline is kept");
    let first = wheel.next_deadline().unwrap();
    assert!(first > start + 64 && first <= start + MAX_DURATION, "first={first}");
    // Filed at the clamped tick, fired at the true deadline: never early.
    assert_eq!(run_by_next_deadline(&mut wheel, start + MAX_DURATION), [(1 << 36 | 5, "wrap")]);
    assert_eq!(run_by_next_deadline(&mut wheel, u64::MAX), [(far, "far")]);
    // Very far: several round trips through the top level.
    wheel.insert(wheel.elapsed() + 5 * MAX_DURATION, "very far");
    let fired = run_by_next_deadline(&mut wheel, u64::MAX);
    assert_eq!(fired, [(far + 5 * MAX_DURATION, "very far")]);
}
