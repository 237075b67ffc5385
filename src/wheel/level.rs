//! One level of the timing wheel: 64 slots, each the head of an intrusive list
//! of entries (linked through the wheel's slab), and a `u64` bitmap of the
//! slots that are occupied. Also the slot arithmetic, as small free functions.
//!
//! A level knows nothing of entries: it stores list heads (`u32` slab indices,
//! [`NIL`] for an empty slot) and keeps the bitmap in step with them. Level `l`
//! has slots `64^l` ticks wide and covers `64^(l+1)` ticks.

use super::{NIL, NUM_LEVELS};

/// log2 of the number of slots per level.
pub(super) const LEVEL_BITS: u32 = 6;

/// Slots per level: 64, so that one `u64` is the occupancy bitmap. Must be a
/// power of two: slot numbers are bit fields of the tick.
pub(super) const LEVEL_MULT: usize = 1 << LEVEL_BITS;

/// Mask of the slot number within a level (`LEVEL_MULT - 1`).
pub(super) const SLOT_MASK: u64 = LEVEL_MULT as u64 - 1;

/// When the slot `slot` of level `level` must be processed next: the first
/// tick of that slot after `elapsed`, or `elapsed` itself for the slot being
/// processed right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Expiration {
    pub(super) level: usize,
    pub(super) slot: usize,
    pub(super) deadline: u64,
}

/// One level of the wheel.
pub(super) struct Level {
    level: usize,
    /// Bit `s` is set iff `heads[s] != NIL`.
    occupied: u64,
    /// Head of each slot's list, as a slab index.
    heads: [u32; LEVEL_MULT],
}

impl Level {
    pub(super) fn new(level: usize) -> Level {
        debug_assert!(level < NUM_LEVELS, "level={level}");
        Level { level, occupied: 0, heads: [NIL; LEVEL_MULT] }
    }

    /// The first entry of `slot`, or [`NIL`].
    pub(super) fn head(&self, slot: usize) -> u32 {
        self.heads[slot]
    }

    /// Makes `head` the first entry of `slot` ([`NIL`] empties the slot) and
    /// keeps the bitmap in step.
    pub(super) fn set_head(&mut self, slot: usize, head: u32) {
        self.heads[slot] = head;
        if head == NIL {
            self.occupied &= !occupied_bit(slot);
        } else {
            self.occupied |= occupied_bit(slot);
        }
    }

    pub(super) fn occupied(&self) -> u64 {
        self.occupied
    }

    /// The occupied slot to process first at or after `elapsed`, and when.
    /// A rotate and a `trailing_zeros`: the bitmap is rotated so that bit 0
    /// is the slot that comes first.
    pub(super) fn next_expiration(&self, elapsed: u64) -> Option<Expiration> {
        if self.occupied == 0 {
            return None;
        }
        // The slot `elapsed` is in comes first if `elapsed` is its first tick
        // (it is being processed); otherwise it can only hold entries of the
        // top level's next rotation, and comes last.
        let now_slot = slot_for(elapsed, self.level);
        let first =
            if elapsed & (slot_range(self.level) - 1) == 0 { now_slot } else { (now_slot + 1) % LEVEL_MULT };
        let zeros = self.occupied.rotate_right(first as u32).trailing_zeros() as usize;
        let slot = (first + zeros) % LEVEL_MULT;
        let deadline = slot_time(elapsed, self.level, slot);
        debug_assert!(
            deadline > elapsed || (deadline == elapsed && slot == now_slot),
            "deadline={deadline:#x}; elapsed={elapsed:#x}; level={}; slot={slot}; occupied={:#066b}",
            self.level,
            self.occupied
        );
        Some(Expiration { level: self.level, slot, deadline })
    }
}

fn occupied_bit(slot: usize) -> u64 {
    1 << slot
}

/// Ticks covered by one slot of `level`: `64^level`.
pub(super) fn slot_range(level: usize) -> u64 {
    1 << (LEVEL_BITS as usize * level)
}

/// Ticks covered by the whole of `level`: `64^(level+1)`.
pub(super) fn level_range(level: usize) -> u64 {
    slot_range(level) << LEVEL_BITS
}

/// The slot of `level` that tick `when` falls in: its base-64 digit number `level`.
pub(super) fn slot_for(when: u64, level: usize) -> usize {
    ((when >> (LEVEL_BITS as usize * level)) & SLOT_MASK) as usize
}

/// The tick at which `slot` of `level` is processed, seen from `elapsed`:
/// the first tick of that slot in the current rotation of the level.
///
/// A slot that starts before `elapsed` can only be a slot of the top level
/// holding entries of the *next* rotation (deadlines up to `MAX_DURATION`
/// ahead cross into the next block of `64^NUM_LEVELS` ticks), so it is one
/// `level_range` later. A slot that starts exactly at `elapsed` is the one
/// being processed now (a poll stopped on its budget in the middle of it).
pub(super) fn slot_time(elapsed: u64, level: usize, slot: usize) -> u64 {
    let level_start = elapsed & !(level_range(level) - 1);
    let start = level_start + slot as u64 * slot_range(level);
    if start < elapsed {
        debug_assert_eq!(level, NUM_LEVELS - 1, "elapsed={elapsed:#x}; slot={slot}");
        start + level_range(level)
    } else {
        start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(slot_range(0), 1);
        assert_eq!(level_range(0), 64);
        assert_eq!(slot_range(1), 64);
        assert_eq!(level_range(1), 4096);
        assert_eq!(slot_range(5), 1 << 30);
        assert_eq!(level_range(5), 1 << 36);
    }

    #[test]
    fn slot_for_digits() {
        for pos in 0..64u64 {
            assert_eq!(slot_for(pos, 0), pos as usize);
        }
        for level in 1..NUM_LEVELS {
            for pos in 0..64u64 {
                let when = pos * slot_range(level);
                assert_eq!(slot_for(when, level), pos as usize, "when={when}");
                assert_eq!(slot_for(when + slot_range(level) - 1, level), pos as usize);
                // Lower digits do not leak into this level.
                assert_eq!(slot_for(when, level - 1), 0);
            }
        }
        // 63 and 64 straddle a level-0 wrap; 4095 and 4096 a level-1 wrap.
        assert_eq!((slot_for(63, 0), slot_for(64, 0)), (63, 0));
        assert_eq!((slot_for(63, 1), slot_for(64, 1)), (0, 1));
        assert_eq!((slot_for(4095, 1), slot_for(4096, 1)), (63, 0));
        assert_eq!((slot_for(4095, 2), slot_for(4096, 2)), (0, 1));
    }

    #[test]
    fn slot_time_current_rotation() {
        // Level 0 from elapsed 10: slot 20 is tick 20; slot 10 is "now".
        assert_eq!(slot_time(10, 0, 20), 20);
        assert_eq!(slot_time(10, 0, 10), 10);
        // Level 1 from elapsed 64*3 + 5: slot 4 starts at 256.
        assert_eq!(slot_time(64 * 3 + 5, 1, 4), 256);
        // Non-zero block: elapsed in the second level-2 block.
        let base = 1 << 18;
        assert_eq!(slot_time(base + 1, 2, 1), base + 4096);
    }

    #[test]
    fn slot_time_top_level_wraps() {
        let top = NUM_LEVELS - 1;
        let elapsed = (1u64 << 36) * 7 + (3 << 30) + 12345;
        // A top slot before the current one belongs to the next rotation.
        assert_eq!(slot_time(elapsed, top, 1), (1u64 << 36) * 8 + (1 << 30));
        // The current slot, not at its start: next rotation too.
        assert_eq!(slot_time(elapsed, top, 3), (1u64 << 36) * 8 + (3 << 30));
        // The current slot exactly at its start is being processed now.
        let at_start = (1u64 << 36) * 7 + (3 << 30);
        assert_eq!(slot_time(at_start, top, 3), at_start);
        // Near the end of u64 nothing overflows for slots ahead.
        let high = u64::MAX - (1 << 31);
        assert_eq!(slot_time(high, top, 63), u64::MAX - ((1 << 30) - 1));
    }

    #[test]
    fn bitmap_follows_heads() {
        let mut level = Level::new(2);
        assert_eq!(level.occupied(), 0);
        level.set_head(5, 7);
        level.set_head(63, 9);
        assert_eq!(level.occupied(), (1 << 5) | (1 << 63));
        level.set_head(5, NIL);
        assert_eq!(level.occupied(), 1 << 63);
        assert_eq!(level.head(63), 9);
        assert_eq!(level.head(5), NIL);
    }

    #[test]
    fn next_expiration_rotates() {
        let mut level = Level::new(1);
        level.set_head(12, 0);
        level.set_head(40, 1);
        let exp = level.next_expiration(64 * 10 + 3).unwrap();
        assert_eq!((exp.level, exp.slot, exp.deadline), (1, 12, 64 * 12));
        // The slot elapsed is in, at its first tick, is the one being processed.
        let exp = level.next_expiration(64 * 12).unwrap();
        assert_eq!((exp.slot, exp.deadline), (12, 64 * 12));
        level.set_head(12, NIL);
        let exp = level.next_expiration(64 * 12).unwrap();
        assert_eq!((exp.slot, exp.deadline), (40, 64 * 40));

        let mut top = Level::new(NUM_LEVELS - 1);
        top.set_head(0, 3);
        // Elapsed in top slot 5: slot 0 is next rotation.
        let exp = top.next_expiration(5 << 30).unwrap();
        assert_eq!(exp.deadline, 1 << 36);
        // The current top slot, past its start, holds the next rotation: it
        // comes after every other slot.
        top.set_head(5, 4);
        top.set_head(7, 4);
        let exp = top.next_expiration((5 << 30) + 1).unwrap();
        assert_eq!((exp.slot, exp.deadline), (7, 7 << 30));
        top.set_head(7, NIL);
        top.set_head(0, NIL);
        let exp = top.next_expiration((5 << 30) + 1).unwrap();
        assert_eq!((exp.slot, exp.deadline), (5, (1 << 36) + (5 << 30)));
        // At its first tick it is the slot being processed: first.
        let exp = top.next_expiration(5 << 30).unwrap();
        assert_eq!((exp.slot, exp.deadline), (5, 5 << 30));
    }
}
