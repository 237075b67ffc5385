//! Handing out due timers: [`Wheel::poll`] advances to `now` within a budget, emptying the
//! pending list and each bucket that comes up (its due entries handed out, the others filed
//! again lower down), and [`Wheel::next_deadline`] says when there may be work next.

use super::entry::Place;
use super::level::{Expiration, TOMBSTONE};
use super::{Wheel, PENDING_LIST};

/// How many elements of a list `poll` looks at before acting on them: their
/// entries are read in a tight loop first, so that the cache misses (random
/// slab entries) overlap instead of being taken one after the other.
const WALK_CHUNK: usize = 16;

impl<T> Wheel<T> {
    /// The earliest tick at which `poll` could have work; `None` when empty.
    ///
    /// Never later than the earliest true deadline, and never before
    /// `elapsed` (so it is `elapsed` when a deadline is already past). It may
    /// be earlier than any deadline: a bucket of a higher level to cascade, an
    /// entry postponed lazily or clamped, or `elapsed` itself when work is
    /// left over from a poll that ran out of budget. A poll at such a tick
    /// files entries again and may return nothing. Cost: a rotate and a
    /// `trailing_zeros` per level.
    pub fn next_deadline(&self) -> Option<u64> {
        if !self.lists[PENDING_LIST].is_empty() {
            return Some(self.elapsed);
        }
        self.next_expiration().map(|exp| exp.deadline)
    }

    /// Advances to `now` (a `now` before `elapsed` counts as `elapsed`) and
    /// moves the values of the timers whose true deadline is `<= now` into
    /// `out`, examining at most `budget` list elements (expired, filed again,
    /// and cancelled ones met on the way all count). Returns `true` if it
    /// stopped on the budget with more work due at `now` (poll again soon),
    /// `false` when everything due at `now` is handled. Any operation may come
    /// between a `true` and the next poll, and the next poll may have a larger
    /// `now`. Empty buckets cost nothing.
    pub fn poll(&mut self, now: u64, mut budget: usize, out: &mut Vec<T>) -> bool {
        let now = now.max(self.elapsed);
        loop {
            if self.walk(Place::PENDING, now, &mut budget, out) {
                return true;
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
            // Stopping on the budget leaves the rest of the bucket in place; the
            // bucket then comes up at `elapsed`, first in line. No entry is ever
            // filed into the bucket being processed (it files past `now`).
            self.elapsed = exp.deadline;
            if self.walk(Place::bucket(exp.level, exp.bucket), now, &mut budget, out) {
                return true;
            }
        }
    }

    /// Empties the list at `place` from its end, handing out or filing again
    /// each live entry. Returns `true` if it stopped on the budget first. Taken
    /// from the end, the elements left keep their positions; nothing is pushed
    /// to the list meanwhile (entries are filed past `now`).
    fn walk(&mut self, place: Place, now: u64, budget: &mut usize, out: &mut Vec<T>) -> bool {
        let list = place.list();
        loop {
            let len = self.lists[list].len();
            if len == 0 {
                return false;
            }
            if *budget == 0 {
                return true;
            }
            // First whether the last few are due, all at once: a tight loop
            // of independent loads, so that their cache misses overlap.
            // Tombstones are not looked up (`get` of one is `None`).
            let chunk = len.min(WALK_CHUNK).min(*budget);
            let mut due = [false; WALK_CHUNK];
            let items = &self.lists[list].items()[len - chunk..];
            for (due, &idx) in due.iter_mut().zip(items.iter().rev()) {
                *due = self.entries.get(idx).is_some_and(|e| e.deadline.get() <= now);
            }
            // Then act on them, entries now in cache. Acting on one changes
            // only that entry, and other lists: what was found above holds.
            for &due in &due[..chunk] {
                let Some(idx) = self.lists[list].last() else {
                    break; // only tombstones were left: emptied
                };
                *budget -= 1;
                self.pop(place);
                if idx == TOMBSTONE {
                } else if due {
                    out.push(self.entries.remove(idx).value);
                } else {
                    self.file(idx);
                }
            }
        }
    }

    /// The occupied bucket that comes up first, over all levels (the lower level
    /// on a tie, which cannot happen between distinct buckets).
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
}
