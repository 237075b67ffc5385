//! Hierarchical hashed timing wheel: the idle, connect and lifetime timers of
//! every connection, with O(1) insert, cancel, reset and postpone.
//!
//! The wheel never reads a clock: the caller speaks in integer ticks (1 ms by
//! default) and gets the values of expired timers back from [`Wheel::poll`].
//!
//! # Layout
//! Six levels of 64 slots. Level `l` has slots `64^l` ticks wide:
//!
//! | level | slot width | level span (1 ms ticks) |
//! |---|---|---|
//! | 0 | 1 tick | 64 ms |
//! | 1 | 64 | ~4 s |
//! | 2 | 4096 | ~4.4 min |
//! | 3 | 2^18 | ~4.7 h |
//! | 4 | 2^24 | ~12.4 days |
//! | 5 | 2^30 | ~795 days |
//!
//! A timer is filed at the level of the highest base-64 digit in which its
//! deadline differs from `elapsed`, in the slot named by that digit. When a
//! slot comes up, its entries are either due (their values are handed out) or
//! filed again, lower down. Each level keeps a `u64` bitmap of its occupied
//! slots, so finding the next slot is a rotate and a `trailing_zeros`, and a
//! jump over an empty stretch of time costs nothing per tick.
//!
//! Entries live in a [`Slab`], addressed by `u32` indices, linked into one
//! doubly-linked list per slot, plus one "pending" list for timers that are
//! due at the next poll (deadline at or before `elapsed`).
//!
//! # Lazy postpone
//! [`Wheel::postpone`] is the activity path: it only stores the new deadline.
//! The entry stays where it is filed; when its slot comes up and the stored
//! deadline is not due, the entry is filed again (Netty's `IdleStateHandler`,
//! tokio's lazy reset). An entry's slot always comes up at or before its
//! deadline, so a postponed timer never fires late.
//!
//! # Range and clamping
//! A deadline more than [`MAX_DURATION`] (2^36 - 1) ticks after `elapsed` is
//! *filed* at `elapsed + MAX_DURATION`, the farthest slot (never wrapped round
//! to a near one). The timer keeps its true deadline: when that far slot comes
//! up it is filed again, and it fires at its true deadline, never earlier. The
//! cost is one re-file per 2^36 ticks of distance (a poll that jumps `2^k`
//! ticks past such a slot, toward a still later deadline, files it again
//! `2^(k-36)` times), which only matters for timers set centuries ahead.
//!
//! # Guarantees
//! - a value is handed out only by a `poll(now)` with `now >= deadline`;
//! - `poll(now, usize::MAX, ..)` hands out every timer with `deadline <= now`;
//! - polled at [`Wheel::next_deadline`] (or at every tick), a timer fires at
//!   the first poll with `now >= deadline`.

mod level;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;

use std::fmt;

use slab::Slab;

use self::level::{slot_for, slot_time, Expiration, Level, LEVEL_BITS, SLOT_MASK};

/// Number of levels: 6 levels of 64 slots span 64^6 = 2^36 ticks, about 795
/// days at 1 ms, beyond any idle, connect or lifetime timeout.
const NUM_LEVELS: usize = 6;

/// How far ahead of `elapsed` a timer can be filed: 64^6 - 1 ticks. Farther
/// deadlines are filed at `elapsed + MAX_DURATION` and filed again from there.
pub const MAX_DURATION: u64 = (1 << (LEVEL_BITS as usize * NUM_LEVELS)) - 1;

/// The end of a list, and the absent slab index. Slab indices stay below it.
const NIL: u32 = u32::MAX;

/// Handle of a live timer. Plain index; using it after the timer fired or was
/// cancelled is a caller bug (it panics when the slot is vacant, and silently
/// names another timer once the slot is reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerKey(u32);

/// Which list an entry is linked into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// Due at the next poll.
    Pending,
    Slot {
        level: u8,
        slot: u8,
    },
}

/// One timer. 24 bytes for `T = u32`, in the slab too (see the `entry_size` test).
struct Entry<T> {
    /// The true deadline; the entry may be filed earlier (lazy postpone, clamping).
    deadline: u64,
    prev: u32,
    next: u32,
    place: Place,
    value: T,
}

/// A hierarchical hashed timing wheel of values `T`. See the module docs.
pub struct Wheel<T> {
    /// The tick the wheel has been advanced to. Every filed entry's slot comes
    /// up at or after it.
    elapsed: u64,
    levels: [Level; NUM_LEVELS],
    /// Head of the list of entries due at the next poll.
    pending: u32,
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
            pending: NIL,
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
    pub fn insert(&mut self, deadline: u64, value: T) -> TimerKey {
        let idx = self.entries.insert(Entry { deadline, prev: NIL, next: NIL, place: Place::Pending, value });
        let idx = match u32::try_from(idx) {
            Ok(idx) if idx != NIL => idx,
            _ => panic!("timing wheel full: slab index {idx} does not fit a TimerKey"),
        };
        self.file(idx);
        TimerKey(idx)
    }

    /// Disarms a timer and returns its value. O(1).
    pub fn cancel(&mut self, key: TimerKey) -> T {
        self.unlink(key.0);
        self.entries.remove(key.0 as usize).value
    }

    /// Moves a timer to a new deadline, earlier or later, at once (unlink and
    /// file again). O(1).
    pub fn reset(&mut self, key: TimerKey, deadline: u64) {
        self.unlink(key.0);
        self.entry_mut(key.0).deadline = deadline;
        self.file(key.0);
    }

    /// The activity path: sets the deadline without moving the entry, if the
    /// entry's slot comes up no later than `deadline` (true whenever the
    /// deadline moves later); the slot then files it again. Otherwise the
    /// timer would fire late, and this is a [`reset`](Self::reset). O(1).
    pub fn postpone(&mut self, key: TimerKey, deadline: u64) {
        let elapsed = self.elapsed;
        let entry = self.entry_mut(key.0);
        // Invariant: an entry's slot comes up no later than its deadline.
        if deadline >= entry.deadline || deadline >= comes_up_at(elapsed, entry.place) {
            entry.deadline = deadline;
        } else {
            self.reset(key, deadline);
        }
    }

    /// The true deadline of a live timer.
    pub fn deadline(&self, key: TimerKey) -> u64 {
        self.entry(key.0).deadline
    }

    pub fn get(&self, key: TimerKey) -> &T {
        &self.entry(key.0).value
    }

    pub fn get_mut(&mut self, key: TimerKey) -> &mut T {
        &mut self.entry_mut(key.0).value
    }

    /// The earliest tick at which `poll` could have work; `None` when empty.
    ///
    /// Never later than the earliest true deadline, and never before
    /// `elapsed` (so it is `elapsed` when a deadline is already past). It may
    /// be earlier than any deadline: a slot of a higher level to cascade, an
    /// entry postponed lazily or clamped, or `elapsed` itself when work is
    /// left over from a poll that ran out of budget. A poll at such a tick
    /// files entries again and may return nothing. Cost: a rotate and a
    /// `trailing_zeros` per level.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.pending != NIL {
            return Some(self.elapsed);
        }
        self.next_expiration().map(|exp| exp.deadline)
    }

    /// Advances to `now` (a `now` before `elapsed` counts as `elapsed`) and
    /// moves the values of the timers whose true deadline is `<= now` into
    /// `out`, examining at most `budget` entries (expired, and filed again,
    /// both count). Returns `true` if it stopped on the budget with more work
    /// due at `now` (poll again soon), `false` when everything due at `now` is
    /// handled. Any operation may come between a `true` and the next poll, and
    /// the next poll may have a larger `now`. Empty slots cost nothing.
    pub fn poll(&mut self, now: u64, mut budget: usize, out: &mut Vec<T>) -> bool {
        let now = now.max(self.elapsed);
        loop {
            while self.pending != NIL {
                if budget == 0 {
                    return true;
                }
                budget -= 1;
                self.process(self.pending, now, out);
            }
            let Some(exp) = self.next_expiration().filter(|exp| exp.deadline <= now) else {
                self.elapsed = now;
                return false;
            };
            debug_assert!(
                exp.deadline >= self.elapsed,
                "time ran backwards: elapsed={}; {exp:?}",
                self.elapsed
            );
            // Stopping on the budget leaves the rest of the slot in place; the
            // slot then comes up at `elapsed`, first in line, and no entry is
            // ever filed into the slot being processed (it files past `now`).
            self.elapsed = exp.deadline;
            loop {
                let idx = self.levels[exp.level].head(exp.slot);
                if idx == NIL {
                    break;
                }
                if budget == 0 {
                    return true;
                }
                budget -= 1;
                self.process(idx, now, out);
            }
        }
    }

    /// The occupied slot that comes up first, over all levels (the lower level
    /// on a tie, which cannot happen between distinct slots).
    fn next_expiration(&self) -> Option<Expiration> {
        let mut best: Option<Expiration> = None;
        for level in &self.levels {
            if let Some(exp) = level.next_expiration(self.elapsed) {
                match best {
                    Some(b) if b.deadline <= exp.deadline => {}
                    _ => best = Some(exp),
                }
            }
        }
        best
    }

    /// Takes entry `idx` off its list, and hands out its value if it is due at
    /// `now` or files it again.
    fn process(&mut self, idx: u32, now: u64, out: &mut Vec<T>) {
        self.unlink(idx);
        if self.entries[idx as usize].deadline <= now {
            out.push(self.entries.remove(idx as usize).value);
        } else {
            self.file(idx);
        }
    }

    /// Links an unlinked entry into the list its deadline calls for, seen from
    /// `elapsed`.
    fn file(&mut self, idx: u32) {
        let deadline = self.entries[idx as usize].deadline;
        if deadline <= self.elapsed {
            self.push_front(idx, Place::Pending);
            return;
        }
        let when = deadline.min(self.elapsed.saturating_add(MAX_DURATION));
        let level = level_for(self.elapsed, when);
        let slot = slot_for(when, level);
        debug_assert!(
            (self.elapsed + 1..=when).contains(&slot_time(self.elapsed, level, slot)),
            "slot must come up after elapsed and no later than the deadline: \
             elapsed={}; deadline={deadline}; when={when}; level={level}; slot={slot}",
            self.elapsed
        );
        self.push_front(idx, Place::Slot { level: level as u8, slot: slot as u8 });
    }

    fn head(&self, place: Place) -> u32 {
        match place {
            Place::Pending => self.pending,
            Place::Slot { level, slot } => self.levels[level as usize].head(slot as usize),
        }
    }

    fn set_head(&mut self, place: Place, idx: u32) {
        match place {
            Place::Pending => self.pending = idx,
            Place::Slot { level, slot } => self.levels[level as usize].set_head(slot as usize, idx),
        }
    }

    fn push_front(&mut self, idx: u32, place: Place) {
        let old = self.head(place);
        let entry = &mut self.entries[idx as usize];
        entry.prev = NIL;
        entry.next = old;
        entry.place = place;
        if old != NIL {
            self.entries[old as usize].prev = idx;
        }
        self.set_head(place, idx);
    }

    /// Takes a live entry off its list (the entry's own links are left stale).
    fn unlink(&mut self, idx: u32) {
        let Entry { prev, next, place, .. } = *self.entry(idx);
        if prev == NIL {
            debug_assert_eq!(self.head(place), idx, "entry {idx} without prev is not the head of {place:?}");
            self.set_head(place, next);
        } else {
            self.entries[prev as usize].next = next;
        }
        if next != NIL {
            self.entries[next as usize].prev = prev;
        }
    }

    fn entry(&self, idx: u32) -> &Entry<T> {
        match self.entries.get(idx as usize) {
            Some(entry) => entry,
            None => panic!("TimerKey({idx}) is not a live timer"),
        }
    }

    fn entry_mut(&mut self, idx: u32) -> &mut Entry<T> {
        match self.entries.get_mut(idx as usize) {
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
            .field("pending", &(self.pending != NIL))
            .field("occupied", &occupied)
            .finish()
    }
}

/// The level at which a deadline `when` is filed, seen from `elapsed`: that of
/// the highest base-64 digit in which the two differ. The lowest digit always
/// counts as differing (so the current 64 ticks are level 0), and anything
/// above the top level's digits goes to the top level, whose slots then hold
/// the next rotation (`when - elapsed` is at most `MAX_DURATION`).
fn level_for(elapsed: u64, when: u64) -> usize {
    let masked = (elapsed ^ when) | SLOT_MASK;
    let significant = (63 - masked.leading_zeros() as usize).min(LEVEL_BITS as usize * NUM_LEVELS - 1);
    significant / LEVEL_BITS as usize
}

/// When an entry filed at `place` is processed next, seen from `elapsed`:
/// its slot's time, or at once (any tick) for the pending list.
fn comes_up_at(elapsed: u64, place: Place) -> u64 {
    match place {
        Place::Pending => 0,
        Place::Slot { level, slot } => slot_time(elapsed, level as usize, slot as usize),
    }
}

#[cfg(test)]
impl<T> Wheel<T> {
    /// Walks every list and checks links, places, the bitmaps and the timing
    /// invariants. For tests only: O(len).
    fn check_invariants(&self) {
        let mut lists = vec![Place::Pending];
        for level in 0..NUM_LEVELS as u8 {
            for slot in 0..64 {
                lists.push(Place::Slot { level, slot });
            }
        }
        let (mut seen, mut current) = (0, 0);
        for place in lists {
            let (mut prev, mut idx) = (NIL, self.head(place));
            if let (Place::Slot { level, slot }, true) = (place, idx != NIL) {
                let t = slot_time(self.elapsed, level as usize, slot as usize);
                assert!(t >= self.elapsed, "{place:?} at {t} before elapsed {}", self.elapsed);
                current += usize::from(t == self.elapsed);
            }
            while idx != NIL {
                let entry = &self.entries[idx as usize];
                assert_eq!((entry.prev, entry.place), (prev, place), "entry {idx}");
                let t = comes_up_at(self.elapsed, place);
                assert!(
                    t <= entry.deadline,
                    "entry {idx} in {place:?} at {t} after its deadline {}",
                    entry.deadline
                );
                (prev, idx, seen) = (idx, entry.next, seen + 1);
            }
        }
        for (l, level) in self.levels.iter().enumerate() {
            let heads = (0..64).filter(|&s| level.head(s) != NIL).fold(0u64, |m, s| m | 1 << s);
            assert_eq!(heads, level.occupied(), "level {l}");
        }
        assert!(current <= 1, "{current} slots come up at elapsed {}", self.elapsed);
        assert_eq!(seen, self.entries.len());
    }
}

#[cfg(test)]
mod arithmetic_tests {
    use super::*;

    #[test]
    fn level_for_digits() {
        for when in 0..64 {
            assert_eq!(level_for(0, when), 0, "when={when}");
        }
        for level in 1..NUM_LEVELS {
            let p = 1u64 << (6 * level);
            assert_eq!(level_for(0, p - 1), level - 1);
            assert_eq!(level_for(0, p), level);
            assert_eq!(level_for(0, p * 63 + p - 1), level);
        }
        // Elapsed non-zero: the current block of 64 is level 0 even near its end.
        assert_eq!(level_for(100, 127), 0);
        assert_eq!(level_for(100, 128), 1);
        assert_eq!(level_for(4095, 4096), 2);
        // Beyond the top level's digits: top level.
        assert_eq!(level_for(0, 1 << 36), NUM_LEVELS - 1);
        assert_eq!(level_for((1 << 36) - 1, 1 << 36), NUM_LEVELS - 1);
        assert_eq!(level_for(0, u64::MAX), NUM_LEVELS - 1);
    }

    #[test]
    fn entry_size() {
        /// Same definition as `slab`'s private entry enum.
        #[allow(dead_code)]
        enum SlabEntry<T> {
            Vacant(usize),
            Occupied(T),
        }
        // x86_64: Entry<u32> is 24 bytes (deadline 8, prev/next 8, value 4,
        // place 3, 1 padding) and so is the slab's entry: `Vacant` fits beside
        // the niche of `Place`'s tag. 32 for a `usize` value.
        assert_eq!(std::mem::size_of::<Entry<u32>>(), 24);
        assert_eq!(std::mem::size_of::<SlabEntry<Entry<u32>>>(), 24);
        assert_eq!(std::mem::size_of::<SlabEntry<Entry<usize>>>(), 32);
    }
}
