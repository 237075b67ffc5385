//! Unit tests of the timing wheel's bucket lists and budgets: polls that stop on
//! their budget (mid-bucket, with cancels, counting tombstones), operations
//! during a paused poll, compaction under churn, reused indices.

use super::tests::run_by_next_deadline;
use super::*;

#[test]
fn budget_of_one_loses_nothing() {
    let mut wheel = Wheel::new();
    for i in 0..500u32 {
        wheel.insert(500, i); // one bucket, reached through levels 1 and 0
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
    // Cancel one in the bucket being processed, postpone and reset others.
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

/// Timers in one bucket far ahead (level 3) with connections that come and go:
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
                "{elements} elements for {} timers in {occupied} buckets",
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
fn reused_index_in_the_same_bucket_fires_once() {
    let mut wheel = Wheel::new();
    wheel.insert(5001, "other"); // keeps the bucket non-empty
    let old = wheel.insert(5000, "old");
    let place = wheel.entries[old.0].place;
    assert_eq!(wheel.cancel(old), "old");
    let new = wheel.insert(5000, "new");
    assert_eq!(new, old, "the slab reuses the index");
    assert_eq!(wheel.entries[new.0].place, place, "filed in the same bucket");
    assert_eq!(wheel.bucket_list(2, 1).len(), 3);
    assert_eq!(wheel.bucket_list(2, 1).dead(), 1);
    wheel.check_invariants();
    // Reset into the same bucket: the old element dies, a new one is pushed.
    wheel.reset(new, 5002);
    assert_eq!(wheel.entries[new.0].place, place);
    assert_eq!(wheel.bucket_list(2, 1).dead(), 2);
    wheel.check_invariants();
    let fired = run_by_next_deadline(&mut wheel, u64::MAX);
    assert_eq!(fired, [(5001, "other"), (5002, "new")]);
    assert_eq!(wheel.list_elements().0, 0);
}

/// A reset into the same bucket that triggers the compaction of that bucket (the
/// entry's old element, a tombstone by then, goes with the others), and an
/// index reused while its tombstone is still in the bucket.
#[test]
fn reset_into_a_bucket_being_compacted() {
    let mut wheel = Wheel::new();
    let keys: Vec<TimerKey> = (0..100u32).map(|i| wheel.insert(5000 + u64::from(i % 50), i)).collect();
    for &key in &keys[..60] {
        wheel.cancel(key);
    }
    assert!(wheel.bucket_list(2, 1).wants_compaction());
    wheel.reset(keys[99], 5001);
    wheel.check_invariants();
    assert_eq!((wheel.bucket_list(2, 1).len(), wheel.bucket_list(2, 1).dead()), (40, 0));
    // Again, with a reused index: a new timer reuses the index of a cancelled
    // one whose dead element is still in the bucket.
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

/// A poll stops on its budget in the middle of a bucket; timers of that bucket
/// are cancelled, reset and replaced between polls, their indices reused.
#[test]
fn budget_stop_mid_bucket_with_cancels() {
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
                    // Most likely the same index, filed in the pending list or a bucket.
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

/// Cancelled elements count against the budget: a bucket of cancelled timers
/// is walked a budget at a time, not in one go.
#[test]
fn budget_counts_cancelled_elements() {
    let mut wheel = Wheel::new();
    let keys: Vec<TimerKey> = (0..1000u32).map(|i| wheel.insert(100, i)).collect();
    // All but the first die: the bucket keeps 999 dead elements (no push
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
