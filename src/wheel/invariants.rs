//! Test-only views of a wheel's inner state, and the check that its invariants hold (walks
//! every list: O(len + dead elements)); and unit tests of the bucket arithmetic.

use std::num::NonZeroU16;

use super::entry::{comes_up_at, Place};
use super::level::{bucket_time, List, TOMBSTONE};
use super::Wheel;

impl<T> Wheel<T> {
    /// Every list with its place.
    pub(super) fn all_lists(&self) -> impl Iterator<Item = (Place, &List)> {
        self.lists.iter().enumerate().map(|(i, list)| (Place(NonZeroU16::MIN.saturating_add(i as u16)), list))
    }

    /// The list of `bucket` of `level`.
    pub(super) fn bucket_list(&self, level: usize, bucket: usize) -> &List {
        &self.lists[Place::bucket(level, bucket).list()]
    }

    /// Elements held in lists, live and dead, and allocated for them.
    pub(super) fn list_elements(&self) -> (usize, usize) {
        self.all_lists().fold((0, 0), |(len, cap), (_, list)| (len + list.len(), cap + list.capacity()))
    }

    /// Walks every list and checks positions, places, dead counts, the bitmaps
    /// and the timing invariants. For tests only: O(len + dead elements).
    pub(super) fn check_invariants(&self) {
        let (mut seen, mut current) = (0, 0);
        for (place, list) in self.all_lists() {
            if let (Some((level, bucket)), false) = (place.level_bucket(), list.is_empty()) {
                let t = bucket_time(self.elapsed, level, bucket);
                assert!(t >= self.elapsed, "{place:?} at {t} before elapsed {}", self.elapsed);
                current += usize::from(t == self.elapsed);
            }
            let mut live = 0;
            for (pos, &idx) in list.items().iter().enumerate() {
                if idx == TOMBSTONE {
                    continue;
                }
                live += 1;
                let entry =
                    self.entries.get(idx).unwrap_or_else(|| panic!("{place:?}[{pos}]: {idx} is vacant"));
                assert_eq!((entry.place, self.entries.pos(idx)), (place, pos as u32), "entry {idx}");
                let t = comes_up_at(self.elapsed, place);
                assert!(
                    t <= entry.deadline.get(),
                    "entry {idx} in {place:?} at {t} after its deadline {}",
                    entry.deadline.get()
                );
            }
            assert_eq!(list.len() - live, list.dead(), "dead count of {place:?}");
            assert!(list.is_empty() || live > 0, "{place:?} holds dead elements only");
            seen += live;
        }
        for (l, level) in self.levels.iter().enumerate() {
            let filled =
                (0..64).filter(|&s| !self.bucket_list(l, s).is_empty()).fold(0u64, |m, s| m | 1 << s);
            assert_eq!(filled, level.occupied(), "level {l}");
        }
        assert!(current <= 1, "{current} buckets come up at elapsed {}", self.elapsed);
        // Every entry is in exactly one element: its own `(place, pos)`.
        assert_eq!(seen, self.entries.len());
    }
}

mod arithmetic_tests {
    use super::super::entry::level_for;
    use super::super::*;

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
        // Entry<u32> is 16 bytes (deadline 8 as two halves, value 4, place 2,
        // 2 padding); the slab's cell adds the position, 4, and `Vacant` fits
        // beside the zero niche of `Place`. For a `usize` value, 8-aligned: 24
        // and 32.
        assert_eq!(std::mem::size_of::<Entry<u32>>(), 16);
        assert_eq!(slab::cell_size::<Entry<u32>>(), 20);
        assert_eq!(slab::cell_size::<Entry<usize>>(), 32);
    }
}
