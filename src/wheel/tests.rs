//! Unit tests of the timing wheel: firing times at slot and level
//! boundaries, time jumps and time standing still, reset, postpone, cancel,
//! clamping, and polls that stop on their budget.

use super::*;

/// Polls at every `next_deadline` up to `until` with an unlimited budget,
/// checking invariants; returns `(tick, value)` for every value fired.
fn run_by_next_deadline<T>(wheel: &mut Wheel<T>, until: u64) -> Vec<(u64, T)> {
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
fn boundaries() -> Vec<u64> {
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
    assert_eq!(wheel.entries[key.0].place, Place::slot(0, 10));
    assert_eq!(run_by_next_deadline(&mut wheel, u64::MAX), [(10, 1)]);
    // Earlier, but not before the entry's slot comes up (level 2, slot 2,
    // at 8192): it stays put and fires at the new deadline.
    let key = wheel.insert(4100 + 4096, 2);
    let place = wheel.entries[key.0].place;
    assert_eq!(place, Place::slot(2, 2));
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
        assert!(places.iter().any(|p| p.level_slot().is_some_and(|(l, _)| l == level)));
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

#[test]
fn budget_of_one_loses_nothing() {
    let mut wheel = Wheel::new();
    for i in 0..500u32 {
        wheel.insert(500, i); // one slot, reached through levels 1 and 0
        wheel.insert(4096 + u64::from(i % 7), 1000 + i); // cascades from level 2
    }
    let mut out = Vec::new();
    let mut calls = 0;
    while wheel.poll(10_000, 1, &mut out) {
        calls += 1;
        assert!(out.len() <= calls, "more than one per call");
        wheel.check_invariants();
    }
    assert!(!wheel.poll(10_000, 1, &mut out), "false once done, and stays false");
    out.sort_unstable();
    assert_eq!(out, (0..500).chain(1000..1500).collect::<Vec<_>>());
    assert_eq!(wheel.elapsed(), 10_000);
    // Budget 0: reports work without doing any.
    wheel.insert(10, 1);
    assert!(wheel.poll(10_000, 0, &mut out));
    assert!(!wheel.poll(10_000, 1, &mut out));
}

#[test]
fn operations_during_a_paused_poll() {
    let mut wheel = Wheel::new();
    let keys: Vec<TimerKey> = (0..10u32).map(|i| wheel.insert(4096, i)).collect();
    let mut out = Vec::new();
    assert!(wheel.poll(4096, 3, &mut out));
    assert_eq!(wheel.elapsed(), 4096);
    assert_eq!(wheel.next_deadline(), Some(4096));
    let left: Vec<TimerKey> = keys.into_iter().filter(|k| wheel.entries.contains(k.0)).collect();
    assert_eq!(left.len(), 7);
    // Cancel one in the slot being processed, postpone and reset others.
    wheel.cancel(left[0]);
    wheel.postpone(left[1], 9000);
    wheel.reset(left[2], 10);
    wheel.reset(left[3], 4097);
    let pending = wheel.insert(3, 100);
    let later = wheel.insert(4200, 101);
    wheel.check_invariants();
    assert_eq!(wheel.entries[pending.0].place, Place::PENDING);
    while wheel.poll(5000, 2, &mut out) {
        wheel.check_invariants();
    }
    assert!(!wheel.entries.contains(later.0));
    assert_eq!(wheel.deadline(left[1]), 9000);
    assert_eq!(out.len(), 3 + 5 + 2);
    assert!(!out.contains(&(left[0].0)) && wheel.len() == 1);
    // A pending entry can be cancelled too.
    let pending = wheel.insert(1, 5);
    assert_eq!(wheel.cancel(pending), 5);
    assert_eq!(run_by_next_deadline(&mut wheel, u64::MAX).len(), 1);
}

#[test]
fn next_deadline_bounds() {
    let mut wheel = Wheel::new();
    assert_eq!(wheel.next_deadline(), None);
    let a = wheel.insert(70_000, ());
    let nd = wheel.next_deadline().unwrap();
    assert!(nd <= 70_000 && nd > 0);
    wheel.insert(300, ());
    assert!(wheel.next_deadline().unwrap() <= 300);
    wheel.cancel(a);
    assert!(wheel.next_deadline().unwrap() <= 300);
    wheel.poll(300, usize::MAX, &mut Vec::new());
    assert_eq!(wheel.next_deadline(), None);
}

#[test]
#[should_panic(expected = "not a live timer")]
fn stale_key_panics() {
    let mut wheel = Wheel::new();
    let key = wheel.insert(5, ());
    wheel.cancel(key);
    wheel.cancel(key);
}

/// Timers in one slot far ahead (level 3) with connections that come and go:
/// cancelled elements are compacted away, so the lists hold about twice the
/// live timers at most, however many came and went.
#[test]
fn churn_keeps_lists_bounded() {
    // 15 connections per tick, each with a 600_000-tick idle timer, closed
    // (timer cancelled) 2000 ticks later: 30_000 live, 900_000 over the run.
    let mut wheel = Wheel::new();
    let mut out = Vec::new();
    let mut live: std::collections::VecDeque<TimerKey> = std::collections::VecDeque::new();
    let mut worst: f64 = 0.0;
    for now in 0..60_000u64 {
        for i in 0..15 {
            live.push_back(wheel.insert(now + 600_000, i));
        }
        while live.len() > 30_000 {
            wheel.cancel(live.pop_front().unwrap());
        }
        assert!(!wheel.poll(now, usize::MAX, &mut out));
        assert!(out.is_empty());
        if now % 1000 == 999 {
            let (elements, capacity) = wheel.list_elements();
            let occupied: u32 = wheel.levels.iter().map(|l| l.occupied().count_ones()).sum();
            assert!(
                elements <= 2 * wheel.len() + 32 * occupied as usize,
                "{elements} elements for {} timers in {occupied} slots",
                wheel.len()
            );
            assert!(capacity <= 4 * wheel.len() + 4096, "capacity {capacity} for {} timers", wheel.len());
            worst = worst.max(elements as f64 / wheel.len() as f64);
        }
    }
    wheel.check_invariants();
    assert_eq!(wheel.len(), 30_000);
    assert!(worst <= 2.1, "worst {worst:.2} elements per live timer");
    // They all still fire, once.
    assert!(!wheel.poll(u64::MAX, usize::MAX, &mut out));
    assert_eq!(out.len(), 30_000);
    assert_eq!(wheel.list_elements().0, 0);
}

#[test]
fn reused_index_in_the_same_slot_fires_once() {
    let mut wheel = Wheel::new();
    wheel.insert(5001, "other"); // keeps the slot non-empty
    let old = wheel.insert(5000, "old");
    let place = wheel.entries[old.0].place;
    assert_eq!(wheel.cancel(old), "old");
    let new = wheel.insert(5000, "new");
    assert_eq!(new, old, "the slab reuses the index");
    assert_eq!(wheel.entries[new.0].place, place, "filed in the same slot");
    assert_eq!(wheel.slot_list(2, 1).len(), 3);
    assert_eq!(wheel.slot_list(2, 1).dead(), 1);
    wheel.check_invariants();
    // Reset into the same slot: the old element dies, a new one is pushed.
    wheel.reset(new, 5002);
    assert_eq!(wheel.entries[new.0].place, place);
    assert_eq!(wheel.slot_list(2, 1).dead(), 2);
    wheel.check_invariants();
    let fired = run_by_next_deadline(&mut wheel, u64::MAX);
    assert_eq!(fired, [(5001, "other"), (5002, "new")]);
    assert_eq!(wheel.list_elements().0, 0);
}

/// A reset into the same slot that triggers the compaction of that slot (the
/// entry's old element, a tombstone by then, goes with the others), and an
/// index reused while its tombstone is still in the slot.
#[test]
fn reset_into_a_slot_being_compacted() {
    let mut wheel = Wheel::new();
    let keys: Vec<TimerKey> = (0..100u32).map(|i| wheel.insert(5000 + u64::from(i % 50), i)).collect();
    for &key in &keys[..60] {
        wheel.cancel(key);
    }
    assert!(wheel.slot_list(2, 1).wants_compaction());
    wheel.reset(keys[99], 5001);
    wheel.check_invariants();
    assert_eq!((wheel.slot_list(2, 1).len(), wheel.slot_list(2, 1).dead()), (40, 0));
    // Again, with a reused index: a new timer reuses the index of a cancelled
    // one whose dead element is still in the slot.
    for &key in &keys[60..95] {
        wheel.cancel(key);
    }
    let reused = wheel.insert(5010, 1000);
    assert_eq!(reused, keys[94]);
    wheel.check_invariants();
    let mut fired = run_by_next_deadline(&mut wheel, u64::MAX);
    fired.sort_unstable();
    let mut expected: Vec<(u64, u32)> = (95..99).map(|i| (5000 + u64::from(i % 50), i)).collect();
    expected.extend([(5001, 99), (5010, 1000)]);
    expected.sort_unstable();
    assert_eq!(fired, expected);
}

/// A poll stops on its budget in the middle of a slot; timers of that slot
/// are cancelled, reset and replaced between polls, their indices reused.
#[test]
fn budget_stop_mid_slot_with_cancels() {
    let mut wheel = Wheel::new();
    let mut live: Vec<(TimerKey, u32)> =
        (0..200u32).map(|i| (wheel.insert(4096 + u64::from(i % 3), i), i)).collect();
    let mut out = Vec::new();
    let mut next = 1000u32;
    let mut rng = 12345u64;
    let mut rand = |n: usize| {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (rng >> 33) as usize % n
    };
    let mut cancelled = Vec::new();
    while wheel.poll(5000, 7, &mut out) {
        wheel.check_invariants();
        live.retain(|&(key, v)| wheel.entries.get(key.0).is_some_and(|e| e.value == v));
        for _ in 0..3 {
            if live.is_empty() {
                break;
            }
            let (key, v) = live.swap_remove(rand(live.len()));
            match rand(3) {
                0 => {
                    assert_eq!(wheel.cancel(key), v);
                    cancelled.push(v);
                }
                1 => {
                    wheel.reset(key, 4096 + rand(900) as u64);
                    live.push((key, v));
                }
                _ => {
                    assert_eq!(wheel.cancel(key), v);
                    cancelled.push(v);
                    // Most likely the same index, filed in the pending list or a slot.
                    let new = wheel.insert(4000 + rand(200) as u64, next);
                    live.push((new, next));
                    next += 1;
                }
            }
        }
        wheel.check_invariants();
    }
    assert!(wheel.is_empty());
    let total = 200 + (next - 1000) as usize;
    assert_eq!(out.len() + cancelled.len(), total);
    out.extend(&cancelled);
    out.sort_unstable();
    out.dedup();
    assert_eq!(out.len(), total, "a timer fired twice or fired after its cancel");
}

/// Cancelled elements count against the budget: a slot of cancelled timers
/// is walked a budget at a time, not in one go.
#[test]
fn budget_counts_cancelled_elements() {
    let mut wheel = Wheel::new();
    let keys: Vec<TimerKey> = (0..1000u32).map(|i| wheel.insert(100, i)).collect();
    // All but the first die: the slot keeps 999 dead elements (no push
    // since, so no compaction) and one live one at its start.
    for &key in &keys[1..] {
        wheel.cancel(key);
    }
    assert_eq!(wheel.list_elements().0, 1000);
    let mut out = Vec::new();
    assert!(wheel.poll(100, 10, &mut out));
    assert!(out.is_empty());
    assert_eq!(wheel.list_elements().0, 990);
    assert!(!wheel.poll(100, usize::MAX, &mut out));
    assert_eq!(out, [0]);
    assert_eq!(wheel.list_elements().0, 0);
}
