//! The wheel's slab: entries addressed by `u32` index, the vacant ones linked
//! into a free list (last freed, first reused), as the `slab` crate does.
//!
//! Its own for two reasons. Each cell keeps a `u32` beside the entry, its
//! position in its list, that can be written without reading the cell (a
//! compaction moves many entries' elements, and would otherwise take a cache
//! miss per entry to learn that the cell is occupied). And `slab`'s vacant
//! link is a `usize`, which makes every cell 8-aligned: with the position
//! beside it, a cell for `T = u32` is 20 bytes here, 24 or 32 there.

use std::ops::{Index, IndexMut};

/// The end of the free list. Indices stay below it.
const NONE: u32 = u32::MAX;

pub(super) struct Slab<E> {
    cells: Vec<Cell<E>>,
    /// Head of the free list of vacant cells, or [`NONE`] (then the next
    /// insert appends).
    free: u32,
    len: usize,
}

struct Cell<E> {
    /// The position of the entry in its list, for the wheel (stale in a
    /// vacant cell).
    pos: u32,
    state: State<E>,
}

enum State<E> {
    /// Next vacant cell, or [`NONE`].
    Vacant(u32),
    Occupied(E),
}

impl<E> Slab<E> {
    pub(super) fn with_capacity(n: usize) -> Self {
        Slab { cells: Vec::with_capacity(n), free: NONE, len: 0 }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stores `entry` in the cell freed last, or a new one; returns its index.
    /// Panics when `u32::MAX - 1` entries are live.
    pub(super) fn insert(&mut self, entry: E) -> u32 {
        self.len += 1;
        if self.free == NONE {
            let idx = self.cells.len();
            assert!(idx < NONE as usize, "timing wheel full: slab index {idx} does not fit a TimerKey");
            self.cells.push(Cell { pos: 0, state: State::Occupied(entry) });
            return idx as u32;
        }
        let idx = self.free;
        let cell = &mut self.cells[idx as usize];
        let State::Vacant(next) = cell.state else { unreachable!("free list names an occupied cell {idx}") };
        self.free = next;
        cell.state = State::Occupied(entry);
        idx
    }

    /// Takes the entry at `idx` out, with its position, if there is one.
    pub(super) fn try_remove(&mut self, idx: u32) -> Option<(E, u32)> {
        let cell = self.cells.get_mut(idx as usize)?;
        if let State::Vacant(_) = cell.state {
            return None;
        }
        let State::Occupied(entry) = std::mem::replace(&mut cell.state, State::Vacant(self.free)) else {
            unreachable!()
        };
        self.free = idx;
        self.len -= 1;
        Some((entry, cell.pos))
    }

    /// Takes the entry at `idx` out. Panics if there is none.
    pub(super) fn remove(&mut self, idx: u32) -> E {
        match self.try_remove(idx) {
            Some((entry, _)) => entry,
            None => panic!("slab index {idx} is vacant"),
        }
    }

    pub(super) fn get(&self, idx: u32) -> Option<&E> {
        match &self.cells.get(idx as usize)?.state {
            State::Occupied(entry) => Some(entry),
            State::Vacant(_) => None,
        }
    }

    pub(super) fn get_mut(&mut self, idx: u32) -> Option<&mut E> {
        match &mut self.cells.get_mut(idx as usize)?.state {
            State::Occupied(entry) => Some(entry),
            State::Vacant(_) => None,
        }
    }

    /// The position stored beside cell `idx` (meaningful if it is occupied).
    pub(super) fn pos(&self, idx: u32) -> u32 {
        self.cells[idx as usize].pos
    }

    /// Stores the position beside cell `idx`, without reading the cell.
    pub(super) fn set_pos(&mut self, idx: u32, pos: u32) {
        self.cells[idx as usize].pos = pos;
    }

    #[cfg(test)]
    pub(super) fn contains(&self, idx: u32) -> bool {
        self.get(idx).is_some()
    }
}

impl<E> Index<u32> for Slab<E> {
    type Output = E;

    fn index(&self, idx: u32) -> &E {
        match self.get(idx) {
            Some(entry) => entry,
            None => panic!("slab index {idx} is vacant"),
        }
    }
}

impl<E> IndexMut<u32> for Slab<E> {
    fn index_mut(&mut self, idx: u32) -> &mut E {
        match self.get_mut(idx) {
            Some(entry) => entry,
            None => panic!("slab index {idx} is vacant"),
        }
    }
}

/// The size of a cell holding an `E`, for the wheel's size test.
#[cfg(test)]
pub(super) fn cell_size<E>() -> usize {
    std::mem::size_of::<Cell<E>>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_the_cell_freed_last() {
        let mut slab = Slab::with_capacity(0);
        let (a, b, c) = (slab.insert('a'), slab.insert('b'), slab.insert('c'));
        assert_eq!((a, b, c, slab.len()), (0, 1, 2, 3));
        slab.set_pos(c, 9);
        assert_eq!(slab.pos(c), 9);
        assert_eq!(slab.try_remove(a), Some(('a', 0)));
        assert_eq!(slab.try_remove(c), Some(('c', 9)));
        assert_eq!(slab.try_remove(c), None);
        assert_eq!(slab.try_remove(7), None);
        assert_eq!((slab.len(), slab.get(a), slab[b]), (1, None, 'b'));
        assert_eq!(slab.insert('d'), c);
        assert_eq!(slab.insert('e'), a);
        assert_eq!(slab.insert('f'), 3);
        slab[a] = 'E';
        assert_eq!((slab.remove(a), slab.len(), slab.contains(a), slab.contains(b)), ('E', 3, false, true));
        assert!(!slab.is_empty());
    }

    #[test]
    #[should_panic(expected = "vacant")]
    fn vacant_index_panics() {
        let mut slab = Slab::with_capacity(1);
        let a = slab.insert(1);
        slab.remove(a);
        let _ = slab[a];
    }
}
