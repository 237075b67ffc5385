//! Memory per live timer, measured rather than estimated: the bench binary's global allocator
//! counts the bytes allocated and not yet freed while a measurement is on, and a structure's
//! footprint is that net count (capacity, not length: growth slack counts) plus its own
//! `size_of` (the wheel's levels are inline), divided by its live timers. The allocator's own
//! per-block overhead is not counted; it matters only for the `BTreeMap` (one block per node).

use std::alloc::{GlobalAlloc, Layout, System};
use std::mem::size_of;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

use super::{Rng, IDLE};
use crate::baselines::Timers;

/// The system allocator, counting while [`COUNTING`] is on. Off, the cost is one relaxed load.
pub struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static NET: AtomicIsize = AtomicIsize::new(0);

fn count(bytes: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        NET.fetch_add(bytes, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the `GlobalAlloc`
// contract; the counting only reads sizes and touches two atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: the caller's `layout` obligations carry over unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes there).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`; `new_size` obligations carry over unchanged.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        new
    }
}

/// Bytes per live timer of one structure at one size.
pub struct Footprint {
    /// After inserting `n` timers into an empty structure (random deadlines, as the benchmark).
    pub built: f64,
    /// After churn: `n` eager resets to a later deadline and `n` insert + cancel pairs at
    /// random timers. `None` for the sorted list, whose nodes are reused in place (and whose
    /// O(n) inserts would take minutes at these sizes).
    pub churned: Option<f64>,
}

pub fn footprint<T: Timers>(n: usize) -> Footprint {
    let mut rng = Rng(n as u64);
    let items: Vec<(u64, u32)> = (0..n as u32).map(|i| (1 + rng.below(IDLE), i)).collect();
    COUNTING.store(true, Ordering::Relaxed);
    let base = NET.load(Ordering::Relaxed);
    let (mut timers, mut keys) = T::build(&items);
    let overhead = (keys.capacity() * size_of::<T::Key>()) as isize - size_of::<T>() as isize;
    let held = |live: usize| (NET.load(Ordering::Relaxed) - base - overhead) as f64 / live as f64;
    let built = held(timers.len());
    let churned = (!T::LINEAR).then(|| {
        for op in 0..n as u64 {
            timers.reset(&mut keys[rng.index(n)], IDLE + 1 + op / 16);
        }
        for _ in 0..n {
            let i = rng.index(n);
            timers.cancel(keys[i]);
            keys[i] = timers.insert(1 + rng.below(IDLE), i as u32);
        }
        held(timers.len())
    });
    drop((timers, keys));
    COUNTING.store(false, Ordering::Relaxed);
    Footprint { built, churned }
}
