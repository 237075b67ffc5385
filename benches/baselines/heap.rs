//! A binary min-heap of `(deadline, id, generation)` with lazy deletion: the usual answer to
//! "a priority queue cannot remove from the middle".
//!
//! A side table indexed by timer id holds each timer's current generation and value. Cancel
//! and reset only bump the generation (reset also pushes a fresh entry): the old heap entry
//! stays, stale, until it reaches the top, where `poll` and `next_deadline` discard it. Stale
//! entries would pile up under a steady stream of resets whose deadlines all lie ahead, so a
//! push that finds more stale entries than live ones rebuilds the heap without them (O(n),
//! once per n pushes: amortized O(1), and counted in the timings of the operations that push).
//!
//! Costs: insert and reset O(log n) (O(1) on average for a random deadline), cancel O(1),
//! expire O(log n) per timer, next deadline O(1) plus the stale tops it discards.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// The end of the free list of ids.
const NIL: u32 = u32::MAX;

/// Rebuild when the heap holds more than `live * (1 + 1) + SLACK` entries.
const SLACK: usize = 64;

/// One side-table slot, 8 bytes. The generation is odd while the id is live, even while free.
struct Slot {
    generation: u32,
    /// The value while live; the next free id while free.
    value: u32,
}

/// Handle of a live timer: its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapKey(u32);

pub struct LazyHeap {
    /// 16-byte entries: deadline, id, generation.
    heap: BinaryHeap<Reverse<(u64, u32, u32)>>,
    slots: Vec<Slot>,
    free: u32,
    live: usize,
}

impl LazyHeap {
    pub fn with_capacity(n: usize) -> Self {
        LazyHeap { heap: BinaryHeap::with_capacity(n), slots: Vec::with_capacity(n), free: NIL, live: 0 }
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn insert(&mut self, deadline: u64, value: u32) -> HeapKey {
        self.live += 1;
        let id = if self.free == NIL {
            let id = u32::try_from(self.slots.len()).ok().filter(|&i| i != NIL).expect("heap full");
            self.slots.push(Slot { generation: 0, value });
            id
        } else {
            let id = self.free;
            let slot = &mut self.slots[id as usize];
            self.free = std::mem::replace(&mut slot.value, value);
            id
        };
        let slot = &mut self.slots[id as usize];
        slot.generation = slot.generation.wrapping_add(1);
        let generation = slot.generation;
        self.push(deadline, id, generation);
        HeapKey(id)
    }

    /// Marks the timer dead (its heap entry goes stale) and frees its id. O(1).
    pub fn cancel(&mut self, key: HeapKey) -> u32 {
        let slot = &mut self.slots[key.0 as usize];
        assert!(slot.generation % 2 == 1, "HeapKey({}) is not a live timer", key.0);
        slot.generation = slot.generation.wrapping_add(1);
        let value = std::mem::replace(&mut slot.value, self.free);
        self.free = key.0;
        self.live -= 1;
        value
    }

    /// Marks the current entry stale and pushes one for the new deadline.
    pub fn reset(&mut self, key: HeapKey, deadline: u64) {
        let slot = &mut self.slots[key.0 as usize];
        assert!(slot.generation % 2 == 1, "HeapKey({}) is not a live timer", key.0);
        slot.generation = slot.generation.wrapping_add(2);
        let generation = slot.generation;
        self.push(deadline, key.0, generation);
    }

    /// Pops every live timer due at `now` into `out`, and the stale entries on the way.
    pub fn poll(&mut self, now: u64, out: &mut Vec<u32>) {
        while let Some(&Reverse((deadline, id, generation))) = self.heap.peek() {
            if self.slots[id as usize].generation != generation {
                self.heap.pop();
            } else if deadline <= now {
                self.heap.pop();
                out.push(self.cancel(HeapKey(id)));
            } else {
                break;
            }
        }
    }

    /// The top's deadline, after discarding stale tops.
    pub fn next_deadline(&mut self) -> Option<u64> {
        while let Some(&Reverse((deadline, id, generation))) = self.heap.peek() {
            if self.slots[id as usize].generation == generation {
                return Some(deadline);
            }
            self.heap.pop();
        }
        None
    }

    fn push(&mut self, deadline: u64, id: u32, generation: u32) {
        if self.heap.len() > 2 * self.live + SLACK {
            let slots = &self.slots;
            self.heap.retain(|&Reverse((_, id, generation))| slots[id as usize].generation == generation);
        }
        self.heap.push(Reverse((deadline, id, generation)));
    }
}
