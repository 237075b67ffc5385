//! Benchmarks of the timing wheel at 1k, 64k and 1M live timers: the costs
//! the event loop pays per connection (insert, cancel, postpone on activity,
//! reset), per expired timer, and per `next_deadline`; with a `BTreeMap`
//! insert + cancel as the sorted-timer baseline.
//!
//! Deadlines are spread over a 5-minute idle timeout at 1 ms ticks, and the
//! timers touched are picked at random, as connections' activity would be.
//! Run: `cargo bench --bench wheel`; the whole run takes about two minutes.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion};
use idlereaper::wheel::{TimerKey, Wheel};

const SIZES: [usize; 3] = [1_000, 64 * 1024, 1_000_000];

/// The idle timeout, in ticks: 5 minutes at 1 ms.
const IDLE: u64 = 300_000;

/// Operations per untimed setup step in the `iter_custom` benchmarks.
const CHUNK: usize = 256;

/// splitmix64: a small deterministic generator, so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }
}

/// A wheel with `n` timers due uniformly over the next idle timeout.
fn filled(n: usize, rng: &mut Rng) -> (Wheel<u32>, Vec<TimerKey>) {
    let mut wheel = Wheel::with_capacity(n + CHUNK);
    let keys = (0..n).map(|i| wheel.insert(1 + rng.below(IDLE), i as u32)).collect();
    (wheel, keys)
}

fn config<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(20);
    group
}

/// Insert of a new timer plus cancel of a random old one: the size stays steady.
fn insert_cancel(c: &mut Criterion) {
    let mut group = config(c, "insert_cancel");
    for n in SIZES {
        let mut rng = Rng(n as u64);
        let (mut wheel, mut keys) = filled(n, &mut rng);
        group.bench_with_input(BenchmarkId::new("wheel", n), &n, |b, _| {
            b.iter(|| {
                let i = rng.index(keys.len());
                black_box(wheel.cancel(keys[i]));
                keys[i] = wheel.insert(1 + rng.below(IDLE), i as u32);
            })
        });
        let mut map = BTreeMap::new();
        let mut keys: Vec<(u64, u32)> = (0..n as u32).map(|i| (1 + rng.below(IDLE), i)).collect();
        for &key in &keys {
            map.insert(key, key.1);
        }
        group.bench_with_input(BenchmarkId::new("btreemap", n), &n, |b, _| {
            b.iter(|| {
                let i = rng.index(keys.len());
                black_box(map.remove(&keys[i]));
                keys[i] = (1 + rng.below(IDLE), i as u32);
                map.insert(keys[i], i as u32);
            })
        });
    }
    group.finish();
}

/// Insert alone (random old timers are cancelled outside the timing).
fn insert(c: &mut Criterion) {
    let mut group = config(c, "insert");
    for n in SIZES {
        let mut rng = Rng(n as u64);
        let (mut wheel, keys) = filled(n, &mut rng);
        let mut keys: Vec<Option<TimerKey>> = keys.into_iter().map(Some).collect();
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let chunk = (iters - done).min(CHUNK as u64) as usize;
                    let mut free = Vec::with_capacity(chunk);
                    for _ in 0..chunk {
                        let i = rng.index(keys.len());
                        if let Some(key) = keys[i].take() {
                            wheel.cancel(key);
                            free.push(i);
                        }
                    }
                    let deadlines: Vec<u64> = free.iter().map(|_| 1 + rng.below(IDLE)).collect();
                    let start = Instant::now();
                    for (&i, &deadline) in free.iter().zip(&deadlines) {
                        keys[i] = Some(wheel.insert(deadline, i as u32));
                    }
                    total += start.elapsed();
                    done += free.len() as u64;
                }
                total
            })
        });
    }
    group.finish();
}

/// Cancel alone, of random old timers (new ones are inserted outside the timing).
fn cancel(c: &mut Criterion) {
    let mut group = config(c, "cancel");
    for n in SIZES {
        let mut rng = Rng(n as u64);
        let (mut wheel, keys) = filled(n, &mut rng);
        let mut keys: Vec<Option<TimerKey>> = keys.into_iter().map(Some).collect();
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let chunk = (iters - done).min(CHUNK as u64) as usize;
                    let mut picked = Vec::with_capacity(chunk);
                    for _ in 0..chunk {
                        let i = rng.index(keys.len());
                        if let Some(key) = keys[i].take() {
                            picked.push((i, key));
                        }
                    }
                    let start = Instant::now();
                    for &(_, key) in &picked {
                        black_box(wheel.cancel(key));
                    }
                    total += start.elapsed();
                    for &(i, _) in &picked {
                        keys[i] = Some(wheel.insert(1 + rng.below(IDLE), i as u32));
                    }
                    done += picked.len() as u64;
                }
                total
            })
        });
    }
    group.finish();
}

/// The activity path: a random connection moved its bytes, its idle deadline
/// moves to `now + IDLE`, with `now` advancing one tick per 16 operations.
fn postpone(c: &mut Criterion) {
    let mut group = config(c, "postpone");
    for n in SIZES {
        let mut rng = Rng(n as u64);
        let (mut wheel, keys) = filled(n, &mut rng);
        let mut ops = 0u64;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                ops += 1;
                wheel.postpone(keys[rng.index(keys.len())], IDLE + ops / 16);
            })
        });
    }
    group.finish();
}

/// Moving a random timer to a random deadline (unlink and relink).
fn reset(c: &mut Criterion) {
    let mut group = config(c, "reset");
    for n in SIZES {
        let mut rng = Rng(n as u64);
        let (mut wheel, keys) = filled(n, &mut rng);
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| wheel.reset(keys[rng.index(keys.len())], 1 + rng.below(IDLE)))
        });
    }
    group.finish();
}

/// Cost per expired timer, in steady state: the loop polls at each
/// `next_deadline` with a budget, as the event loop does; what fires is armed
/// again one idle timeout later, outside the timing. Cascades are included.
fn expire(c: &mut Criterion) {
    let mut group = config(c, "expire");
    for n in SIZES {
        let mut rng = Rng(n as u64);
        let (mut wheel, _) = filled(n, &mut rng);
        let mut out = Vec::with_capacity(1024);
        group.bench_with_input(BenchmarkId::new("per_timer", n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let start = Instant::now();
                    while out.len() < CHUNK {
                        let now = wheel.next_deadline().expect("never empty");
                        while wheel.poll(now, 1024, &mut out) {}
                    }
                    total += start.elapsed();
                    done += out.len() as u64;
                    let now = wheel.elapsed();
                    for value in out.drain(..) {
                        wheel.insert(now + 1 + rng.below(IDLE), value);
                    }
                }
                total
            })
        });
    }
    group.finish();
}

fn next_deadline(c: &mut Criterion) {
    let mut group = config(c, "next_deadline");
    for n in SIZES {
        let mut rng = Rng(n as u64);
        let (wheel, _) = filled(n, &mut rng);
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| black_box(&wheel).next_deadline())
        });
    }
    group.finish();
}

criterion_group!(benches, insert_cancel, insert, cancel, postpone, reset, expire, next_deadline);
criterion_main!(benches);
