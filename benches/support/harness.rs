//! The benchmark's harness: the timer layouts, a structure with its timers and the
//! benchmark's record of them, and a criterion group whose samples also go to the recorder.

use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion};

use super::{Recorder, Rng, IDLE, LINEAR_MAX};
use crate::baselines::Timers;

/// Which timers exist and which are touched.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Deadlines uniform over the idle timeout, inserted in random order; random timers touched.
    Random,
    /// Inserted in deadline order; touched in slab order; new deadlines `now + IDLE`.
    InOrder,
}

impl Layout {
    pub fn id(self, name: &str) -> String {
        match self {
            Layout::Random => name.to_string(),
            Layout::InOrder => format!("{name}_inorder"),
        }
    }

    /// The `n` initial timers, as (deadline, value) in insertion order.
    pub fn items(self, n: usize) -> Vec<(u64, u32)> {
        let mut rng = Rng(n as u64);
        (0..n as u32)
            .map(|i| match self {
                Layout::Random => (1 + rng.below(IDLE), i),
                Layout::InOrder => (1 + i as u64 * IDLE / n as u64, i),
            })
            .collect()
    }
}

/// A structure with `n` timers and the benchmark's record of them.
pub struct Fixture<T: Timers> {
    pub timers: T,
    pub keys: Vec<Option<T::Key>>,
    pub deadlines: Vec<u64>,
    layout: Layout,
    rng: Rng,
    /// Next timer to touch in slab order.
    cursor: usize,
    /// Timers created so far: arrivals for `InOrder`, `n` per idle timeout.
    arrivals: u64,
    /// Activities so far: `now` is one tick per 16.
    activities: u64,
}

impl<T: Timers> Fixture<T> {
    pub fn new(n: usize, layout: Layout) -> Self {
        let items = layout.items(n);
        let (timers, keys) = T::build(&items);
        Fixture {
            timers,
            keys: keys.into_iter().map(Some).collect(),
            deadlines: items.iter().map(|&(deadline, _)| deadline).collect(),
            layout,
            rng: Rng(!(n as u64)),
            cursor: 0,
            arrivals: n as u64,
            activities: 0,
        }
    }

    /// Takes the keys of `want` picked timers out of the record, each with `extra(self)` (its
    /// new deadline, say), into `todo`, for an operation to time; a timer picked twice is taken
    /// once. The caller puts the keys back.
    pub fn take_picked<X>(
        &mut self,
        want: usize,
        todo: &mut Vec<(usize, T::Key, X)>,
        mut extra: impl FnMut(&mut Self) -> X,
    ) {
        todo.clear();
        for _ in 0..want {
            let i = self.pick();
            if let Some(key) = self.keys[i].take() {
                let x = extra(self);
                todo.push((i, key, x));
            }
        }
    }

    pub fn pick(&mut self) -> usize {
        match self.layout {
            Layout::Random => self.rng.index(self.keys.len()),
            Layout::InOrder => {
                let i = self.cursor;
                self.cursor = (i + 1) % self.keys.len();
                i
            }
        }
    }

    /// A new timer's deadline: random over the idle timeout, or one idle timeout after `now`.
    pub fn new_deadline(&mut self) -> u64 {
        match self.layout {
            Layout::Random => 1 + self.rng.below(IDLE),
            Layout::InOrder => {
                self.arrivals += 1;
                1 + self.arrivals * IDLE / self.keys.len() as u64
            }
        }
    }

    /// The deadline an activity sets: `now + IDLE`, `now` advancing a tick every 16 activities.
    pub fn activity_deadline(&mut self) -> u64 {
        self.activities += 1;
        IDLE + self.activities / 16
    }
}

/// A benchmark group whose samples also go to the recorder.
pub struct Group<'a, 'c> {
    group: BenchmarkGroup<'c, WallTime>,
    name: &'static str,
    pub rec: &'a Recorder,
}

impl<'a, 'c> Group<'a, 'c> {
    /// Runs `body` as the benchmark group `name`.
    pub fn run(c: &mut Criterion, rec: &Recorder, name: &'static str, body: impl FnOnce(&mut Group)) {
        let mut g = Group { group: c.benchmark_group(name), name, rec };
        body(&mut g);
        g.group.finish();
    }

    /// Benchmarks `routine(state, iters) -> time` as `name/function/n`. The state is set up
    /// on first use, so filtered-out benchmarks cost nothing, and outside the timing.
    pub fn bench<S>(
        &mut self,
        function: &str,
        n: usize,
        setup: impl FnOnce() -> S,
        mut routine: impl FnMut(&mut S, u64) -> Duration,
    ) {
        let (name, rec) = (self.name, self.rec);
        let mut setup = Some(setup);
        let mut state = None;
        self.group.bench_function(BenchmarkId::new(function, n), |b| {
            let state = state.get_or_insert_with(|| setup.take().expect("set up once")());
            rec.measure(b, name, function, n, |iters| routine(state, iters));
        });
    }

    /// Says why `function` does not run at size `n`.
    pub fn capped(&self, function: &str, n: usize) {
        println!(
            "{}/{function}/{n}: not run: O(n) per operation (a walk of the list); capped at {LINEAR_MAX} \
             timers",
            self.name
        );
    }
}
