//! The timer structures the benchmark compares, behind one trait: the wheel and three
//! baselines. Only the operations the event loop needs; the handle type is each structure's own.

mod btree;
mod heap;
mod sorted_list;

use idlereaper::wheel::{TimerKey, Wheel};

pub use self::btree::TreeTimers;
pub use self::heap::LazyHeap;
pub use self::sorted_list::SortedList;

pub trait Timers: Sized {
    type Key: Copy;

    /// The name in benchmark ids and tables.
    const NAME: &'static str;

    /// Insert and reset are O(n): the benchmark runs them only at small sizes.
    const LINEAR: bool = false;

    /// Bench setup: the timers `items` (deadline, value), inserted in the order given into a
    /// structure that starts empty and grows as inserts make it grow. Key `i` is item `i`.
    fn build(items: &[(u64, u32)]) -> (Self, Vec<Self::Key>);

    fn insert(&mut self, deadline: u64, value: u32) -> Self::Key;

    fn cancel(&mut self, key: Self::Key) -> u32;

    /// Eager reset: the timer is moved for `deadline` now. The key may change.
    fn reset(&mut self, key: &mut Self::Key, deadline: u64);

    /// Hands out every timer due at `now` (deadline `<= now`).
    fn poll(&mut self, now: u64, out: &mut Vec<u32>);

    /// No later than the earliest deadline (the wheel may answer earlier: a cascade).
    fn next_deadline(&mut self) -> Option<u64>;

    fn len(&self) -> usize;

    /// Untimed bookkeeping: a timer due at or after every live one (a connection arriving).
    fn append(&mut self, deadline: u64, value: u32) -> Self::Key {
        self.insert(deadline, value)
    }

    /// Untimed bookkeeping: puts back a timer just cancelled. Called for the timers cancelled
    /// last, in reverse order, with nothing in between.
    fn restore(&mut self, _key: Self::Key, deadline: u64, value: u32) -> Self::Key {
        self.insert(deadline, value)
    }
}

fn build_by_insert<T: Timers>(mut timers: T, items: &[(u64, u32)]) -> (T, Vec<T::Key>) {
    let keys = items.iter().map(|&(deadline, value)| timers.insert(deadline, value)).collect();
    (timers, keys)
}

impl Timers for Wheel<u32> {
    type Key = TimerKey;
    const NAME: &'static str = "wheel";

    fn build(items: &[(u64, u32)]) -> (Self, Vec<TimerKey>) {
        // As the daemon does: `Wheel::new()`, the slab grows by doubling.
        build_by_insert(Wheel::new(), items)
    }

    fn insert(&mut self, deadline: u64, value: u32) -> TimerKey {
        Wheel::insert(self, deadline, value)
    }

    fn cancel(&mut self, key: TimerKey) -> u32 {
        Wheel::cancel(self, key)
    }

    fn reset(&mut self, key: &mut TimerKey, deadline: u64) {
        Wheel::reset(self, *key, deadline)
    }

    fn poll(&mut self, now: u64, out: &mut Vec<u32>) {
        // The event loop's budget; looping on it hands out everything due.
        while Wheel::poll(self, now, 1024, out) {}
    }

    fn next_deadline(&mut self) -> Option<u64> {
        Wheel::next_deadline(self)
    }

    fn len(&self) -> usize {
        Wheel::len(self)
    }
}

impl Timers for LazyHeap {
    type Key = self::heap::HeapKey;
    const NAME: &'static str = "heap";

    fn build(items: &[(u64, u32)]) -> (Self, Vec<Self::Key>) {
        build_by_insert(LazyHeap::with_capacity(0), items)
    }

    fn insert(&mut self, deadline: u64, value: u32) -> Self::Key {
        LazyHeap::insert(self, deadline, value)
    }

    fn cancel(&mut self, key: Self::Key) -> u32 {
        LazyHeap::cancel(self, key)
    }

    fn reset(&mut self, key: &mut Self::Key, deadline: u64) {
        LazyHeap::reset(self, *key, deadline)
    }

    fn poll(&mut self, now: u64, out: &mut Vec<u32>) {
        LazyHeap::poll(self, now, out)
    }

    fn next_deadline(&mut self) -> Option<u64> {
        LazyHeap::next_deadline(self)
    }

    fn len(&self) -> usize {
        LazyHeap::len(self)
    }
}

impl Timers for TreeTimers {
    type Key = self::btree::TreeKey;
    const NAME: &'static str = "btreemap";

    fn build(items: &[(u64, u32)]) -> (Self, Vec<Self::Key>) {
        build_by_insert(TreeTimers::new(), items)
    }

    fn insert(&mut self, deadline: u64, value: u32) -> Self::Key {
        TreeTimers::insert(self, deadline, value)
    }

    fn cancel(&mut self, key: Self::Key) -> u32 {
        TreeTimers::cancel(self, key)
    }

    fn reset(&mut self, key: &mut Self::Key, deadline: u64) {
        TreeTimers::reset(self, key, deadline)
    }

    fn poll(&mut self, now: u64, out: &mut Vec<u32>) {
        TreeTimers::poll(self, now, out)
    }

    fn next_deadline(&mut self) -> Option<u64> {
        TreeTimers::next_deadline(self)
    }

    fn len(&self) -> usize {
        TreeTimers::len(self)
    }
}

impl Timers for SortedList {
    type Key = self::sorted_list::ListKey;
    const NAME: &'static str = "sorted_list";
    const LINEAR: bool = true;

    fn build(items: &[(u64, u32)]) -> (Self, Vec<Self::Key>) {
        // Linked in one go: inserting one by one would be O(n²).
        SortedList::build(items.iter().copied())
    }

    fn insert(&mut self, deadline: u64, value: u32) -> Self::Key {
        SortedList::insert(self, deadline, value)
    }

    fn cancel(&mut self, key: Self::Key) -> u32 {
        SortedList::cancel(self, key)
    }

    fn reset(&mut self, key: &mut Self::Key, deadline: u64) {
        SortedList::reset(self, *key, deadline)
    }

    fn poll(&mut self, now: u64, out: &mut Vec<u32>) {
        SortedList::tick(self, now, out)
    }

    fn next_deadline(&mut self) -> Option<u64> {
        SortedList::next_deadline(self)
    }

    fn len(&self) -> usize {
        SortedList::len(self)
    }

    fn append(&mut self, deadline: u64, value: u32) -> Self::Key {
        SortedList::append(self, deadline, value)
    }

    fn restore(&mut self, key: Self::Key, deadline: u64, value: u32) -> Self::Key {
        SortedList::restore(self, key, deadline, value)
    }
}
