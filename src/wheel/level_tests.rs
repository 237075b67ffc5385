//! Unit tests of a level: bucket arithmetic, occupancy bitmaps, and a bucket's list (pushes,
//! tombstones, compaction).

use super::*;

#[test]
fn ranges() {
    assert_eq!(bucket_range(0), 1);
    assert_eq!(level_range(0), 64);
    assert_eq!(bucket_range(1), 64);
    assert_eq!(level_range(1), 4096);
    assert_eq!(bucket_range(5), 1 << 30);
    assert_eq!(level_range(5), 1 << 36);
}

#[test]
fn bucket_for_digits() {
    for pos in 0..64u64 {
        assert_eq!(bucket_for(pos, 0), pos as usize);
    }
    for level in 1..NUM_LEVELS {
        for pos in 0..64u64 {
            let when = pos * bucket_range(level);
            assert_eq!(bucket_for(when, level), pos as usize, "when={when}");
            assert_eq!(bucket_for(when + bucket_range(level) - 1, level), pos as usize);
            // Lower digits do not leak into this level.
            assert_eq!(bucket_for(when, level - 1), 0);
        }
    }
    // 63 and 64 straddle a level-0 wrap; 4095 and 4096 a level-1 wrap.
    assert_eq!((bucket_for(63, 0), bucket_for(64, 0)), (63, 0));
    assert_eq!((bucket_for(63, 1), bucket_for(64, 1)), (0, 1));
    assert_eq!((bucket_for(4095, 1), bucket_for(4096, 1)), (63, 0));
    assert_eq!((bucket_for(4095, 2), bucket_for(4096, 2)), (0, 1));
}

#[test]
fn bucket_time_current_rotation() {
    // Level 0 from elapsed 10: bucket 20 is tick 20; bucket 10 is "now".
    assert_eq!(bucket_time(10, 0, 20), 20);
    assert_eq!(bucket_time(10, 0, 10), 10);
    // Level 1 from elapsed 64*3 + 5: bucket 4 starts at 256.
    assert_eq!(bucket_time(64 * 3 + 5, 1, 4), 256);
    // Non-zero block: elapsed in the second level-2 block.
    let base = 1 << 18;
    assert_eq!(bucket_time(base + 1, 2, 1), base + 4096);
}

#[test]
fn bucket_time_top_level_wraps() {
    let top = NUM_LEVELS - 1;
    let elapsed = (1u64 << 36) * 7 + (3 << 30) + 12345;
    // A top bucket before the current one belongs to the next rotation.
    assert_eq!(bucket_time(elapsed, top, 1), (1u64 << 36) * 8 + (1 << 30));
    // The current bucket, not at its start: next rotation too.
    assert_eq!(bucket_time(elapsed, top, 3), (1u64 << 36) * 8 + (3 << 30));
    // The current bucket exactly at its start is being processed now.
    let at_start = (1u64 << 36) * 7 + (3 << 30);
    assert_eq!(bucket_time(at_start, top, 3), at_start);
    // Near the end of u64 nothing overflows for buckets ahead.
    let high = u64::MAX - (1 << 31);
    assert_eq!(bucket_time(high, top, 63), u64::MAX - ((1 << 30) - 1));
}

#[test]
fn list_counts_its_dead() {
    let mut list = List::default();
    assert_eq!(list.push(7), 0);
    assert_eq!(list.push(8), 1);
    // The first element dies; the last is live and popped: only a dead
    // one is left, so the list empties.
    list.kill(0);
    assert_eq!((list.len(), list.dead(), list.items()), (2, 1, &[TOMBSTONE, 8][..]));
    assert_eq!(list.last(), Some(8));
    list.pop();
    assert!(list.is_empty());
    // The last live element dies: empty at once.
    list.push(9);
    list.kill(0);
    assert!(list.is_empty());
    assert_eq!(list.last(), None);
}

#[test]
fn bitmap() {
    let mut level = Level::new(2);
    level.mark(5);
    level.mark(63);
    assert_eq!(level.occupied(), (1 << 5) | (1 << 63));
    level.unmark(5);
    assert_eq!(level.occupied(), 1 << 63);
}

#[test]
fn compaction_keeps_order_and_positions() {
    let mut list = List::default();
    for idx in 0..100 {
        list.push(idx);
    }
    // Elements at odd positions die, and 0 stays at 0.
    for pos in (1..100).step_by(2) {
        list.kill(pos);
    }
    assert!(list.wants_compaction() || list.dead() * 2 == list.len());
    let mut moved = Vec::new();
    list.compact(|idx, new_pos| moved.push((idx, new_pos)));
    assert_eq!((list.len(), list.dead()), (50, 0));
    assert_eq!(list.items(), (0..100).step_by(2).collect::<Vec<u32>>());
    // Only those that moved are reported: all but element 0.
    assert_eq!(moved, (1..50).map(|i| (2 * i, i)).collect::<Vec<_>>());
    assert!(!list.wants_compaction());
}

#[test]
fn emptied_list_gives_back_a_large_buffer() {
    let mut list = List::default();
    for idx in 0..10_000 {
        list.push(idx);
    }
    while list.last().is_some() {
        list.pop();
    }
    assert_eq!(list.capacity(), 0);
    let mut small = List::default();
    small.push(1);
    small.pop();
    assert!(small.capacity() > 0, "a small buffer is kept");
}

#[test]
fn next_expiration_rotates() {
    let mut level = Level::new(1);
    level.mark(12);
    level.mark(40);
    let exp = level.next_expiration(64 * 10 + 3).unwrap();
    assert_eq!((exp.level, exp.bucket, exp.deadline), (1, 12, 64 * 12));
    // The bucket elapsed is in, at its first tick, is the one being processed.
    let exp = level.next_expiration(64 * 12).unwrap();
    assert_eq!((exp.bucket, exp.deadline), (12, 64 * 12));
    level.unmark(12);
    let exp = level.next_expiration(64 * 12).unwrap();
    assert_eq!((exp.bucket, exp.deadline), (40, 64 * 40));

    let mut top = Level::new(NUM_LEVELS - 1);
    top.mark(0);
    // Elapsed in top bucket 5: bucket 0 is next rotation.
    let exp = top.next_expiration(5 << 30).unwrap();
    assert_eq!(exp.deadline, 1 << 36);
    // The current top bucket, past its start, holds the next rotation: it
    // comes after every other bucket.
    top.mark(5);
    top.mark(7);
    let exp = top.next_expiration((5 << 30) + 1).unwrap();
    assert_eq!((exp.bucket, exp.deadline), (7, 7 << 30));
    top.unmark(7);
    top.unmark(0);
    let exp = top.next_expiration((5 << 30) + 1).unwrap();
    assert_eq!((exp.bucket, exp.deadline), (5, (1 << 36) + (5 << 30)));
    // At its first tick it is the bucket being processed: first.
    let exp = top.next_expiration(5 << 30).unwrap();
    assert_eq!((exp.bucket, exp.deadline), (5, 5 << 30));
}
