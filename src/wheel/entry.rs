//! What the wheel files: an entry (deadline, value, and the list it is filed in), the place
//! naming that list, and the bucket arithmetic that says where a deadline is filed and when a
//! place comes up.

use std::fmt;
use std::num::NonZeroU16;

use super::level::{bucket_time, BUCKET_MASK, LEVEL_BITS, LEVEL_MULT};
use super::{NUM_LEVELS, PENDING_LIST};

/// Which list an entry is filed in: its number in `Wheel::lists`, plus one
/// (the zero niche keeps the slab's entries at the entry's size).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Place(pub(super) NonZeroU16);

impl Place {
    /// Due at the next poll.
    pub(super) const PENDING: Place = Place(NonZeroU16::MIN.saturating_add(PENDING_LIST as u16));

    pub(super) fn bucket(level: usize, bucket: usize) -> Place {
        debug_assert!(level < NUM_LEVELS && bucket < LEVEL_MULT, "level={level}; bucket={bucket}");
        Place(NonZeroU16::MIN.saturating_add((level * LEVEL_MULT + bucket) as u16))
    }

    /// The list's number in `Wheel::lists`.
    pub(super) fn list(self) -> usize {
        usize::from(self.0.get() - 1)
    }

    /// `(level, bucket)`, or `None` for the pending list.
    pub(super) fn level_bucket(self) -> Option<(usize, usize)> {
        let list = self.list();
        (list < PENDING_LIST).then_some((list / LEVEL_MULT, list % LEVEL_MULT))
    }
}

impl fmt::Debug for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.level_bucket() {
            Some((level, bucket)) => write!(f, "Bucket({level}, {bucket})"),
            None => f.write_str("Pending"),
        }
    }
}

/// One timer: 16 bytes for `T = u32`, and the slab keeps its position in its
/// list beside it (`lists[place].items()[pos] == idx`): 20 bytes a cell (see
/// the `entry_size` test).
pub(super) struct Entry<T> {
    /// The true deadline; the entry may be filed earlier (lazy postpone, clamping).
    pub(super) deadline: Tick,
    pub(super) value: T,
    pub(super) place: Place,
}

/// A tick as two `u32` halves: 4-aligned, so that an entry with a 4-byte
/// value is 20 bytes rather than 24.
#[derive(Clone, Copy)]
pub(super) struct Tick([u32; 2]);

impl Tick {
    pub(super) fn new(tick: u64) -> Tick {
        Tick([tick as u32, (tick >> 32) as u32])
    }

    pub(super) fn get(self) -> u64 {
        u64::from(self.0[0]) | u64::from(self.0[1]) << 32
    }
}

/// The level at which a deadline `when` is filed, seen from `elapsed`: that of
/// the highest base-64 digit in which the two differ. The lowest digit always
/// counts as differing (so the current 64 ticks are level 0), and anything
/// above the top level's digits goes to the top level, whose buckets then hold
/// the next rotation (`when - elapsed` is at most `MAX_DURATION`).
pub(super) fn level_for(elapsed: u64, when: u64) -> usize {
    let masked = (elapsed ^ when) | BUCKET_MASK;
    let significant = (63 - masked.leading_zeros() as usize).min(LEVEL_BITS as usize * NUM_LEVELS - 1);
    significant / LEVEL_BITS as usize
}

/// When an entry filed at `place` is processed next, seen from `elapsed`:
/// its bucket's time, or at once (any tick) for the pending list.
pub(super) fn comes_up_at(elapsed: u64, place: Place) -> u64 {
    match place.level_bucket() {
        None => 0,
        Some((level, bucket)) => bucket_time(elapsed, level, bucket),
    }
}
