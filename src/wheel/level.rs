//! One level of the timing wheel: the `u64` bitmap of its 64 buckets that hold
//! entries, and the bucket arithmetic as small free functions. Also [`List`],
//! the array of entries (slab indices) of one bucket, or of the pending list;
//! the wheel owns the lists of all levels, one array of them.
//!
//! Neither knows what an entry is: a list stores `u32` slab indices, with
//! [`TOMBSTONE`]s where entries were cancelled or moved away, and counts the
//! tombstones; the wheel keeps the bitmaps in step with the lists. Level `l`
//! has buckets `64^l` ticks wide and covers `64^(l+1)` ticks.

use super::NUM_LEVELS;

/// log2 of the number of buckets per level.
pub(super) const LEVEL_BITS: u32 = 6;

/// Buckets per level: 64, so that one `u64` is the occupancy bitmap. Must be a
/// power of two: bucket numbers are bit fields of the tick.
pub(super) const LEVEL_MULT: usize = 1 << LEVEL_BITS;

/// Mask of the bucket number within a level (`LEVEL_MULT - 1`).
pub(super) const BUCKET_MASK: u64 = LEVEL_MULT as u64 - 1;

/// A list is compacted before a push once its dead elements outnumber its
/// live ones and are at least this many (below it, compacting costs more
/// than the few bytes it would save).
const COMPACT_MIN_DEAD: u32 = 32;

/// From this capacity on a list grows by half, not by doubling.
const GROW_BY_HALF: usize = 64;

/// A list that becomes empty gives its buffer back if it holds more than this
/// many elements (16 KiB), so that a burst does not pin memory in a bucket
/// forever; smaller buffers are kept for the bucket's next turn.
const KEEP_CAPACITY: usize = 4096;

/// The element of a timer that was cancelled or moved away. Slab indices stay
/// below it.
pub(super) const TOMBSTONE: u32 = u32::MAX;

/// The entries filed in one bucket (or pending): slab indices in push order.
/// When an entry is cancelled or moved to another list, its element becomes a
/// [`TOMBSTONE`] (the entry knows its position), so an element is live iff it
/// is not one, and `dead` counts them. Tombstones go when the list is popped
/// down to them, compacted or emptied.
///
/// A list is never left holding tombstones only: it is then emptied at once.
/// So a non-empty list always has a live element.
#[derive(Default)]
pub(super) struct List {
    items: Vec<u32>,
    dead: u32,
}

impl List {
    /// Elements, live and dead.
    pub(super) fn len(&self) -> usize {
        self.items.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    #[cfg(test)]
    pub(super) fn dead(&self) -> usize {
        self.dead as usize
    }

    /// Allocated elements (for memory accounting in tests).
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.items.capacity()
    }

    pub(super) fn items(&self) -> &[u32] {
        &self.items
    }

    /// Whether the next push should compact first: more dead than live, and
    /// enough of them to be worth it. Compacting then costs a look at each
    /// element (sequential) and a store for each live one that moves: at most
    /// two looks and one store per element that died since the last
    /// compaction, O(1) amortised. Only a push grows the buffer, so checking
    /// here bounds it to about twice the live elements (plus growth slack).
    pub(super) fn wants_compaction(&self) -> bool {
        self.dead >= COMPACT_MIN_DEAD && self.dead as usize * 2 > self.items.len()
    }

    /// Appends `idx`; returns its position.
    pub(super) fn push(&mut self, idx: u32) -> u32 {
        let pos = self.items.len();
        if pos == self.items.capacity() {
            self.grow();
        }
        self.items.push(idx);
        pos as u32
    }

    /// Makes room for one more element: doubling while small, then by half,
    /// which still costs O(1) amortised per push but leaves less slack in the
    /// buckets that hold a large share of the timers.
    #[cold]
    fn grow(&mut self) {
        let capacity = self.items.capacity();
        self.items.reserve_exact(if capacity < GROW_BY_HALF { capacity.max(4) } else { capacity / 2 });
    }

    /// The last element ([`TOMBSTONE`] if dead), without taking it.
    pub(super) fn last(&self) -> Option<u32> {
        self.items.last().copied()
    }

    /// Takes the last element. Empties the list if only dead elements are left.
    pub(super) fn pop(&mut self) {
        if self.items.pop() == Some(TOMBSTONE) {
            self.dead -= 1;
        }
        self.settle();
    }

    /// The element at `pos` dies (its entry was cancelled or moved away).
    /// Empties the list if it was the last live one.
    pub(super) fn kill(&mut self, pos: u32) {
        debug_assert_ne!(self.items[pos as usize], TOMBSTONE, "element {pos} killed twice");
        self.items[pos as usize] = TOMBSTONE;
        self.dead += 1;
        self.settle();
    }

    /// Drops the tombstones, keeping the live elements in order, and tells
    /// `moved(idx, new_pos)` for each that moved.
    pub(super) fn compact(&mut self, mut moved: impl FnMut(u32, u32)) {
        let Some(first) = self.items.iter().position(|&idx| idx == TOMBSTONE) else { return };
        // Without a branch on liveness, which is as good as random here.
        let mut kept = first;
        for pos in first..self.items.len() {
            let idx = self.items[pos];
            self.items[kept] = idx;
            kept += usize::from(idx != TOMBSTONE);
        }
        debug_assert_eq!(self.items.len() - kept, self.dead as usize, "dead count off");
        self.items.truncate(kept);
        self.dead = 0;
        for (pos, &idx) in self.items.iter().enumerate().skip(first) {
            moved(idx, pos as u32);
        }
        // The buffer grew to hold the dead elements too: give back what the
        // live ones and half as many again do not need (the pushes to come
        // take it back, O(1) amortised).
        if self.items.capacity() > KEEP_CAPACITY && self.items.capacity() > 2 * kept {
            self.items.shrink_to(kept + kept / 2);
        }
    }

    /// Empties the list if nothing live is left, and gives back a large buffer.
    fn settle(&mut self) {
        if self.dead as usize == self.items.len() {
            self.dead = 0;
            if self.items.capacity() > KEEP_CAPACITY {
                self.items = Vec::new();
            } else {
                self.items.clear();
            }
        }
    }
}

/// When the bucket `bucket` of level `level` must be processed next: the first
/// tick of that bucket after `elapsed`, or `elapsed` itself for the bucket being
/// processed right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Expiration {
    pub(super) level: usize,
    pub(super) bucket: usize,
    pub(super) deadline: u64,
}

/// One level of the wheel: which of its 64 buckets hold entries. The buckets'
/// lists are the wheel's (`Wheel::lists`); the wheel keeps the bits in step.
pub(super) struct Level {
    level: usize,
    /// Bit `s` is set iff bucket `s`'s list is not empty.
    occupied: u64,
}

impl Level {
    pub(super) fn new(level: usize) -> Level {
        debug_assert!(level < NUM_LEVELS, "level={level}");
        Level { level, occupied: 0 }
    }

    /// Bucket `bucket` holds entries now.
    pub(super) fn mark(&mut self, bucket: usize) {
        self.occupied |= occupied_bit(bucket);
    }

    /// Bucket `bucket` is empty now.
    pub(super) fn unmark(&mut self, bucket: usize) {
        self.occupied &= !occupied_bit(bucket);
    }

    pub(super) fn occupied(&self) -> u64 {
        self.occupied
    }

    /// The occupied bucket to process first at or after `elapsed`, and when.
    /// A rotate and a `trailing_zeros`: the bitmap is rotated so that bit 0
    /// is the bucket that comes first.
    pub(super) fn next_expiration(&self, elapsed: u64) -> Option<Expiration> {
        if self.occupied == 0 {
            return None;
        }
        // The bucket `elapsed` is in comes first if `elapsed` is its first tick
        // (it is being processed); otherwise it can only hold entries of the
        // top level's next rotation, and comes last.
        let now_bucket = bucket_for(elapsed, self.level);
        let first = if elapsed & (bucket_range(self.level) - 1) == 0 {
            now_bucket
        } else {
            (now_bucket + 1) % LEVEL_MULT
        };
        let zeros = self.occupied.rotate_right(first as u32).trailing_zeros() as usize;
        let bucket = (first + zeros) % LEVEL_MULT;
        let deadline = bucket_time(elapsed, self.level, bucket);
        debug_assert!(
            deadline > elapsed || (deadline == elapsed && bucket == now_bucket),
            "deadline={deadline:#x}; elapsed={elapsed:#x}; level={}; bucket={bucket}; occupied={:#066b}",
            self.level,
            self.occupied
        );
        Some(Expiration { level: self.level, bucket, deadline })
    }
}

fn occupied_bit(bucket: usize) -> u64 {
    1 << bucket
}

/// Ticks covered by one bucket of `level`: `64^level`.
pub(super) fn bucket_range(level: usize) -> u64 {
    1 << (LEVEL_BITS as usize * level)
}

/// Ticks covered by the whole of `level`: `64^(level+1)`.
pub(super) fn level_range(level: usize) -> u64 {
    bucket_range(level) << LEVEL_BITS
}

/// The bucket of `level` that tick `when` falls in: its base-64 digit number `level`.
pub(super) fn bucket_for(when: u64, level: usize) -> usize {
    ((when >> (LEVEL_BITS as usize * level)) & BUCKET_MASK) as usize
}

/// The tick at which `bucket` of `level` is processed, seen from `elapsed`:
/// the first tick of that bucket in the current rotation of the level.
///
/// A bucket that starts before `elapsed` can only be a bucket of the top level
/// holding entries of the *next* rotation (deadlines up to `MAX_DURATION`
/// ahead cross into the next block of `64^NUM_LEVELS` ticks), so it is one
/// `level_range` later. A bucket that starts exactly at `elapsed` is the one
/// being processed now (a poll stopped on its budget in the middle of it).
pub(super) fn bucket_time(elapsed: u64, level: usize, bucket: usize) -> u64 {
    let level_start = elapsed & !(level_range(level) - 1);
    let start = level_start + bucket as u64 * bucket_range(level);
    if start < elapsed {
        debug_assert_eq!(level, NUM_LEVELS - 1, "elapsed={elapsed:#x}; bucket={bucket}");
        start + level_range(level)
    } else {
        start
    }
}

#[cfg(test)]
#[path = "level_tests.rs"]
mod tests;
