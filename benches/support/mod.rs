//! What the benchmark groups share: the workload's constants, a deterministic generator, the
//! chunked timing loop, and the recorder that keeps every sample for the closing summary.

pub mod check;
pub mod harness;
pub mod memory;
pub mod summary;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use criterion::Bencher;

/// Live timers: 1k, 64k and 1M.
pub const SIZES: [usize; 3] = [1_000, 64 * 1024, 1_000_000];

/// `--test` runs every benchmark once: at this size only, so the smoke test stays fast.
pub const TEST_SIZES: [usize; 1] = [1_000];

/// Largest size at which the O(n) operations of the sorted list (insert, reset) run: at 1M a
/// single insert walks half a million nodes, ~10 ms, for no new information.
pub const LINEAR_MAX: usize = 64 * 1024;

/// The idle timeout, in ticks: 5 minutes at 1 ms. Deadlines spread over it.
pub const IDLE: u64 = 300_000;

/// Operations between two clock reads: untimed set-up for a chunk, then the chunk timed.
pub const CHUNK: usize = 256;

/// Criterion's samples per benchmark (unless `--sample-size` says otherwise).
pub const SAMPLE_SIZE: usize = 15;

/// splitmix64: a small deterministic generator, so runs are comparable.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }
}

/// Runs `iters` operations as chunks of at most [`CHUNK`]. `chunk(want)` does its untimed
/// set-up, times up to `want` operations (it may do fewer, or more when a poll hands out more),
/// cleans up, and returns (operations done, time). The total is scaled to `iters` operations.
pub fn chunked(iters: u64, mut chunk: impl FnMut(usize) -> (usize, Duration)) -> Duration {
    let (mut done, mut total) = (0u64, Duration::ZERO);
    while done < iters {
        let (ops, time) = chunk((iters - done).min(CHUNK as u64) as usize);
        done += ops as u64;
        total += time;
    }
    if done == iters {
        total
    } else {
        total.mul_f64(iters as f64 / done as f64)
    }
}

/// Whether criterion runs in test mode (`--test`, or `cargo test --benches`): each benchmark
/// once, no measurement.
pub fn test_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench")
}

/// `--sample-size N` from the command line, else [`SAMPLE_SIZE`].
pub fn sample_size() -> usize {
    let args: Vec<String> = std::env::args().collect();
    let value = args.iter().position(|a| a == "--sample-size").and_then(|i| args.get(i + 1));
    value.and_then(|v| v.parse().ok()).unwrap_or(SAMPLE_SIZE)
}

/// Benchmark id: (group, function, size).
pub type Id = (String, String, usize);

/// Every sample criterion took, as (iterations, seconds), per benchmark; and a few counters
/// the summary reports.
#[derive(Default)]
pub struct Recorder {
    samples: RefCell<BTreeMap<Id, Vec<(u64, f64)>>>,
    /// (group, function) in the order first run.
    order: RefCell<Vec<(String, String)>>,
    counters: RefCell<BTreeMap<String, u64>>,
}

impl Recorder {
    /// `b.iter_custom(routine)`, keeping the samples.
    pub fn measure(
        &self,
        b: &mut Bencher<'_>,
        group: &str,
        function: &str,
        n: usize,
        mut routine: impl FnMut(u64) -> Duration,
    ) {
        b.iter_custom(|iters| {
            let time = routine(iters);
            let id = (group.to_string(), function.to_string(), n);
            let row = (id.0.clone(), id.1.clone());
            if !self.order.borrow().contains(&row) {
                self.order.borrow_mut().push(row);
            }
            self.samples.borrow_mut().entry(id).or_default().push((iters, time.as_secs_f64()));
            time
        });
    }

    /// Nanoseconds per operation: criterion's estimate (the slope of time over iterations,
    /// through the origin) over the measurement samples, the last `sample_size` taken.
    /// `None` when there are too few (not run, or test mode).
    pub fn ns_per_op(&self, group: &str, function: &str, n: usize) -> Option<f64> {
        let samples = self.samples.borrow();
        let all = samples.get(&(group.to_string(), function.to_string(), n))?;
        let count = sample_size();
        if all.len() < count + 1 {
            return None;
        }
        let last = &all[all.len() - count..];
        let (xy, xx) =
            last.iter().fold((0.0, 0.0), |(xy, xx), &(x, y)| (xy + x as f64 * y, xx + (x as f64).powi(2)));
        Some(xy / xx * 1e9)
    }

    pub fn add(&self, counter: &str, value: u64) {
        *self.counters.borrow_mut().entry(counter.to_string()).or_default() += value;
    }

    pub fn counter(&self, counter: &str) -> u64 {
        self.counters.borrow().get(counter).copied().unwrap_or(0)
    }

    /// The (group, function) pairs run, in the order first run.
    pub fn rows(&self) -> Vec<(String, String)> {
        self.order.borrow().clone()
    }
}
