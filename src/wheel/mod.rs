//! Hierarchical hashed timing wheel: the idle, connect and lifetime timers of
//! every connection, with O(1) insert, cancel, reset and postpone.
//!
//! The wheel never reads a clock: the caller speaks in integer ticks (1 ms by
//! default) and gets the values of expired timers back from [`Wheel::poll`].
//!
//! # Layout
//! Six levels of 64 buckets. Level `l` has buckets `64^l` ticks wide:
//!
//! | level | bucket width | level span (1 ms ticks) |
//! |---|---|---|
//! | 0 | 1 tick | 64 ms |
//! | 1 | 64 | ~4 s |
//! | 2 | 4096 | ~4.4 min |
//! | 3 | 2^18 | ~4.7 h |
//! | 4 | 2^24 | ~12.4 days |
//! | 5 | 2^30 | ~795 days |
//!
//! A timer is filed at the level of the highest base-64 digit in which its
//! deadline differs from `elapsed`, in the bucket named by that digit. When a
//! bucket comes up, its entries are either due (their values are handed out) or
//! filed again, lower down. Each level keeps a `u64` bitmap of its occupied
//! buckets, so finding the next bucket is a rotate and a `trailing_zeros`, and a
//! jump over an empty stretch of time costs nothing per tick.
//!
//! Entries (deadline, value, and which list they are filed in) live in the
//! wheel's own slab (`slab.rs`), addressed by `u32` indices, 20 bytes a cell for
//! `T = u32`. Each bucket's list is an array of those indices (`Vec<u32>`, 4
//! bytes per timer), plus one "pending" list for timers that are due at the
//! next poll (deadline at or before `elapsed`). The slab keeps each entry's
//! position in its list beside it.
//!
//! # Why arrays, not linked lists
//! With a million timers the entries are far bigger than the cache, so what
//! an operation costs is the entries it touches at random:
//! - cancel touches only its own entry: the entry leaves the slab, and its
//!   element in the list becomes a tombstone (a store, no load; the list's
//!   count of tombstones lives with the list). An element is live iff it is
//!   not a tombstone: exact, however indices are reused.
//! - a bucket coming up is walked as an array, from its end. The entries of
//!   the next 16 elements are looked up in a tight loop before they are acted
//!   on, so their cache misses overlap instead of being taken one after the
//!   other as a list's `next` pointers would force.
//! - a list is compacted in place (tombstones dropped, order kept) before a
//!   push once it holds more tombstones than live elements, at least 32. That
//!   reads the array sequentially and stores the new positions of the entries
//!   that move without reading them: O(1) amortised per cancel, and a list
//!   holds at most about twice its live elements, so memory stays bounded
//!   under any churn (with growth slack, about 5 bytes per timer in lists
//!   after plain inserts, 9 after heavy churn). A large list that empties
//!   gives its buffer back.
//!
//! # Lazy postpone
//! [`Wheel::postpone`] moves a deadline later in O(1): it only stores the new deadline.
//! The entry stays where it is filed; when its bucket comes up and the stored
//! deadline is not due, the entry is filed again (Netty's `IdleStateHandler`,
//! tokio's lazy reset). An entry's bucket always comes up at or before its
//! deadline, so a postponed timer never fires late. (The daemon's worker goes one step
//! further on its activity path: it keeps the deadline in the connection's slot, touching no
//! wheel state, and re-arms when the timer fires early — `worker/expiry.rs`.)
//!
//! # Range and clamping
//! A deadline more than [`MAX_DURATION`] (2^36 - 1) ticks after `elapsed` is
//! *filed* at `elapsed + MAX_DURATION`, the farthest bucket (never wrapped round
//! to a near one). The timer keeps its true deadline: when that far bucket comes
//! up it is filed again, and it fires at its true deadline, never earlier. The
//! cost is one re-file per 2^36 ticks of distance (a poll that jumps `2^k`
//! ticks past such a bucket, toward a still later deadline, files it again
//! `2^(k-36)` times), which only matters for timers set centuries ahead.
//!
//! # Budget
//! [`Wheel::poll`] examines at most `budget` list elements, tombstones
//! included, so a bucket full of cancelled timers is walked a budget at a time
//! too. A bucket is taken from its end; stopping on the budget leaves the rest
//! of it in place, positions unchanged, and the next poll resumes there.
//!
//! # Guarantees
//! - a value is handed out only by a `poll(now)` with `now >= deadline`;
//! - `poll(now, usize::MAX, ..)` hands out every timer with `deadline <= now`;
//! - polled at [`Wheel::next_deadline`] (or at every tick), a timer fires at
//!   the first poll with `now >= deadline`.

mod entry;
#[cfg(test)]
mod invariants;
mod level;
#[cfg(test)]
mod list_tests;
#[cfg(test)]
mod model_tests;
mod poll;
mod slab;
#[cfg(test)]
mod tests;

use std::fmt;

use self::entry::{comes_up_at, level_for, Entry, Place, Tick};
use self::level::{bucket_for, bucket_time, Level, List, LEVEL_BITS, LEVEL_MULT};
use self::slab::Slab;

/// Number of levels: 6 levels of 64 buckets span 64^6 = 2^36 ticks, about 795
/// days at 1 ms, beyond any idle, connect or lifetime timeout.
const NUM_LEVELS: usize = 6;

/// How far ahead of `elapsed` a timer can be filed: 64^6 - 1 ticks. Farther
/// deadlines are filed at `elapsed + MAX_DURATION` and filed again from there.
pub const MAX_DURATION: u64 = (1 << (LEVEL_BITS as usize * NUM_LEVELS)) - 1;

/// The lists: one per bucket of every level, `level * 64 + bucket`, then the
/// pending list.
const PENDING_LIST: usize = NUM_LEVELS * LEVEL_MULT;
const NUM_LISTS: usize = PENDING_LIST + 1;

/// Handle of a live timer. Plain index; using it after the timer fired or was
/// cancelled is a caller bug (it panics when the slab cell is vacant, and
/// silently names another timer once the cell is reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerKey(u32);

/// A hierarchical hashed timing wheel of values `T`. See the module docs.
pub struct Wheel<T> {
    /// The tick the wheel has been advanced to. Every filed entry's bucket comes
    /// up at or after it.
    elapsed: u64,
    /// The occupancy bitmaps.
    levels: [Level; NUM_LEVELS],
    /// The buckets' lists, and last the pending list (the entries due at the
    /// next poll). See [`Place`].
    lists: [List; NUM_LISTS],
    entries: Slab<Entry<T>>,
}

impl<T> Wheel<T> {
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    pub fn with_capacity(n: usize) -> Self {
        Wheel {
            elapsed: 0,
            levels: std::array::from_fn(Level::new),
            lists: std::array::from_fn(|_| List::default()),
            entries: Slab::with_capacity(n),
        }
    }

    /// The tick the wheel has been advanced to (by `poll`). Starts at 0. After
    /// a poll that ran out of budget it may be less than that poll's `now`.
    pub fn elapsed(&self) -> u64 {
        self.elapsed
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Arms a timer for `deadline` (absolute tick). A deadline `<= elapsed`
    /// fires at the next poll. A deadline beyond `elapsed + MAX_DURATION` is
    /// filed there and fires at its true deadline (module docs, "clamping").
    /// O(1) amortised.
    pub fn insert(&mut self, deadline: u64, value: T) -> TimerKey {
        let idx = self.entries.insert(Entry { deadline: Tick::new(deadline), value, place: Place::PENDING });
        self.file(idx);
        TimerKey(idx)
    }

    /// Disarms a timer and returns its value. O(1): the entry leaves the slab
    /// and its element in its list becomes a tombstone.
    pub fn cancel(&mut self, key: TimerKey) -> T {
        let Some((entry, pos)) = self.entries.try_remove(key.0) else {
            panic!("TimerKey({}) is not a live timer", key.0)
        };
        self.kill(entry.place, pos);
        entry.value
    }

    /// Moves a timer to a new deadline, earlier or later, at once (its old
    /// element becomes a tombstone, a new one is pushed). O(1) amortised.
    pub fn reset(&mut self, key: TimerKey, deadline: u64) {
        let entry = self.entry_mut(key.0);
        entry.deadline = Tick::new(deadline);
        let place = entry.place;
        self.kill(place, self.entries.pos(key.0));
        self.file(key.0);
    }

    /// A later deadline in O(1): sets the deadline without moving the entry, if the
    /// entry's bucket comes up no later than `deadline` (true whenever the
    /// deadline moves later); the bucket then files it again. Otherwise the
    /// timer would fire late, and this is a [`reset`](Self::reset). O(1).
    pub fn postpone(&mut self, key: TimerKey, deadline: u64) {
        let elapsed = self.elapsed;
        let entry = self.entry_mut(key.0);
        // Invariant: an entry's bucket comes up no later than its deadline.
        if deadline >= entry.deadline.get() || deadline >= comes_up_at(elapsed, entry.place) {
            entry.deadline = Tick::new(deadline);
        } else {
            self.reset(key, deadline);
        }
    }

    /// The true deadline of a live timer.
    pub fn deadline(&self, key: TimerKey) -> u64 {
        self.entry(key.0).deadline.get()
    }

    pub fn get(&self, key: TimerKey) -> &T {
        &self.entry(key.0).value
    }

    pub fn get_mut(&mut self, key: TimerKey) -> &mut T {
        &mut self.entry_mut(key.0).value
    }

    /// Files entry `idx` (not in any list, or a tombstone in its old one) in
    /// the list its deadline calls for, seen from `elapsed`.
    fn file(&mut self, idx: u32) {
        let deadline = self.entries[idx].deadline.get();
        if deadline <= self.elapsed {
            return self.push(idx, Place::PENDING);
        }
        let when = deadline.min(self.elapsed.saturating_add(MAX_DURATION));
        let level = level_for(self.elapsed, when);
        let bucket = bucket_for(when, level);
        debug_assert!(
            (self.elapsed + 1..=when).contains(&bucket_time(self.elapsed, level, bucket)),
            "bucket must come up after elapsed and no later than the deadline: \
             elapsed={}; deadline={deadline}; when={when}; level={level}; bucket={bucket}",
            self.elapsed
        );
        self.levels[level].mark(bucket);
        self.push(idx, Place::bucket(level, bucket));
    }

    /// Appends entry `idx` to the list at `place` (its bit is the caller's),
    /// compacting that list first if it holds more tombstones than live
    /// elements. The positions of the entries that move are stored without
    /// reading the entries: no cache miss per entry.
    fn push(&mut self, idx: u32, place: Place) {
        let list = &mut self.lists[place.list()];
        if list.wants_compaction() {
            let entries = &mut self.entries;
            list.compact(|moved, pos| entries.set_pos(moved, pos));
        }
        let pos = list.push(idx);
        self.entries.set_pos(idx, pos);
        self.entries[idx].place = place;
    }

    /// Takes the last element off the list at `place`, keeping the bitmap in step.
    fn pop(&mut self, place: Place) {
        self.lists[place.list()].pop();
        self.unmark_if_empty(place);
    }

    /// The element at `pos` of the list at `place` becomes a tombstone.
    fn kill(&mut self, place: Place, pos: u32) {
        self.lists[place.list()].kill(pos);
        self.unmark_if_empty(place);
    }

    fn unmark_if_empty(&mut self, place: Place) {
        if self.lists[place.list()].is_empty() {
            if let Some((level, bucket)) = place.level_bucket() {
                self.levels[level].unmark(bucket);
            }
        }
    }

    fn entry(&self, idx: u32) -> &Entry<T> {
        match self.entries.get(idx) {
            Some(entry) => entry,
            None => panic!("TimerKey({idx}) is not a live timer"),
        }
    }

    fn entry_mut(&mut self, idx: u32) -> &mut Entry<T> {
        match self.entries.get_mut(idx) {
            Some(entry) => entry,
            None => panic!("TimerKey({idx}) is not a live timer"),
        }
    }
}

impl<T> Default for Wheel<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for Wheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let occupied: Vec<String> = self.levels.iter().map(|l| format!("{:#x}", l.occupied())).collect();
        f.debug_struct("Wheel")
            .field("elapsed", &self.elapsed)
            .field("len", &self.len())
            .field("pending", &self.lists[PENDING_LIST].len())
            .field("occupied", &occupied)
            .finish()
    }
}
