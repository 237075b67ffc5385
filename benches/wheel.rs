//! The timing wheel against three baselines, at 1k, 64k and 1M live timers: the sorted
//! doubly-linked timer list of the classic SIGALRM epoll server (the "before"), a `BinaryHeap`
//! with lazy deletion, and a `BTreeMap` (see `baselines/`). Deadlines spread over a 5-minute
//! idle timeout at 1 ms ticks; the timers touched are picked at random, as connections'
//! activity would pick them, unless a benchmark id ends in `_inorder` (below).
//!
//! What each group times (everything else, such as picking timers, refilling, restoring, is
//! done between clock reads, in chunks of 256 operations):
//! - `insert`: a new timer, random deadline (the size is kept by cancelling another, untimed);
//! - `cancel`: of a random timer (put back afterwards, untimed);
//! - `insert_cancel`: cancel a random timer and insert a new one, both timed;
//! - `activity`: a connection moved bytes and its idle deadline moves to `now + IDLE`.
//!   `wheel_lazy_store` is what the daemon does: compare with the deadline in force and store
//!   it in the connection (a 64-byte struct, just touched, so in cache); the wheel is left
//!   alone and re-arms the timer when it fires early (the cost of that is `expire/wheel_lazy`).
//!   `wheel_postpone` is `Wheel::postpone` on the timer's entry. The baselines' activity path
//!   is their eager reset, in `reset`;
//! - `reset`: eager reset to that later deadline (the sorted list walks on from the timer's
//!   old place to the tail: `adjust_timer`);
//! - `expire`: per timer handed out. Poll at each `next_deadline` until a batch of 256 has
//!   fired (time advances, as the event loop's would), divide by the number handed out; the
//!   fired timers are replaced by new ones due one idle timeout after they fired, untimed.
//!   `wheel_lazy`: the same for the daemon's lazy re-arm, with each connection active 4 times
//!   per idle timeout on average (activity stores, untimed); timed per handed-out timer is the
//!   poll, the read of the connection's stored deadline, and for a timer that fired early its
//!   re-insert at that deadline; connections that did time out are replaced, untimed;
//! - `next_deadline`: the query the event loop makes before each `epoll_wait`;
//! - `latency/dependent_load`: no timer at all, a reference: the cost of one cache miss at
//!   each size (a load whose address comes from the previous load, over `n` 24-byte records).
//!
//! `_inorder` (the wheel, and every structure in `expire`): timers inserted in deadline order,
//! as connections arriving over time would be, so slab neighbours are deadline neighbours;
//! touched in slab order, new deadlines at `now + IDLE`. Set against the random layout, it
//! shows what cache misses cost at 1M (24 MB of entries).
//!
//! The sorted list's insert and reset are O(n): they run at 1k and 64k only (at 1M one insert
//! walks half a million nodes); its O(1) operations run at every size.
//!
//! At the end: a markdown summary (ns per operation, the 1M ÷ 1k ratios, memory per timer
//! measured by a counting allocator, and the wheel's targets with verdicts). Run: `cargo bench
//! --bench wheel` (about 3 minutes); `cargo bench --bench wheel -- --test` runs each benchmark
//! once at 1k, a smoke test. Before anything, every structure is checked against a model.

#[path = "baselines/mod.rs"]
mod baselines;
#[path = "support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use idlereaper::wheel::{TimerKey, Wheel};

use self::baselines::{LazyHeap, SortedList, Timers, TreeTimers};
use self::support::harness::{Fixture, Group, Layout};
use self::support::{chunked, Recorder, Rng, CHUNK, IDLE, LINEAR_MAX};

#[global_allocator]
static ALLOCATOR: support::memory::Counting = support::memory::Counting;

/// Activities per connection per idle timeout in `expire/wheel_lazy`.
const ACTIVITY_PER_IDLE: u64 = 4;

fn insert<T: Timers>(g: &mut Group, n: usize, layout: Layout) {
    let id = layout.id(T::NAME);
    if T::LINEAR && n > LINEAR_MAX {
        return g.capped(&id, n);
    }
    g.bench(
        &id,
        n,
        || Fixture::<T>::new(n, layout),
        |fx, iters| {
            let (mut todo, mut made) = (Vec::with_capacity(CHUNK), Vec::with_capacity(CHUNK));
            chunked(iters, |want| {
                made.clear();
                fx.take_picked(want, &mut todo, Fixture::new_deadline);
                for &(_, key, _) in &todo {
                    fx.timers.cancel(key); // keeps the size; untimed
                }
                let start = Instant::now();
                for &(i, _, deadline) in &todo {
                    made.push(fx.timers.insert(deadline, i as u32));
                }
                let time = start.elapsed();
                for (&(i, _, deadline), &key) in todo.iter().zip(&made) {
                    (fx.keys[i], fx.deadlines[i]) = (Some(key), deadline);
                }
                (todo.len(), time)
            })
        },
    );
}

fn cancel<T: Timers>(g: &mut Group, n: usize, layout: Layout) {
    g.bench(
        &layout.id(T::NAME),
        n,
        || Fixture::<T>::new(n, layout),
        |fx, iters| {
            let mut todo = Vec::with_capacity(CHUNK);
            chunked(iters, |want| {
                fx.take_picked(want, &mut todo, |_| ());
                let start = Instant::now();
                for &(_, key, ()) in &todo {
                    black_box(fx.timers.cancel(key));
                }
                let time = start.elapsed();
                for &(i, key, ()) in todo.iter().rev() {
                    fx.keys[i] = Some(fx.timers.restore(key, fx.deadlines[i], i as u32));
                }
                (todo.len(), time)
            })
        },
    );
}

fn insert_cancel<T: Timers>(g: &mut Group, n: usize) {
    if T::LINEAR && n > LINEAR_MAX {
        return g.capped(T::NAME, n);
    }
    g.bench(
        T::NAME,
        n,
        || Fixture::<T>::new(n, Layout::Random),
        |fx, iters| {
            let mut todo = Vec::with_capacity(CHUNK);
            chunked(iters, |want| {
                fx.take_picked(want, &mut todo, Fixture::new_deadline);
                let start = Instant::now();
                for (i, key, deadline) in &mut todo {
                    black_box(fx.timers.cancel(*key));
                    *key = fx.timers.insert(*deadline, *i as u32);
                }
                let time = start.elapsed();
                for &(i, key, deadline) in &todo {
                    (fx.keys[i], fx.deadlines[i]) = (Some(key), deadline);
                }
                (todo.len(), time)
            })
        },
    );
}

fn reset<T: Timers>(g: &mut Group, n: usize, layout: Layout) {
    let id = layout.id(T::NAME);
    if T::LINEAR && n > LINEAR_MAX {
        return g.capped(&id, n);
    }
    g.bench(
        &id,
        n,
        || Fixture::<T>::new(n, layout),
        |fx, iters| {
            let mut todo = Vec::with_capacity(CHUNK);
            chunked(iters, |want| {
                fx.take_picked(want, &mut todo, Fixture::activity_deadline);
                let start = Instant::now();
                for (_, key, deadline) in &mut todo {
                    fx.timers.reset(key, *deadline);
                }
                let time = start.elapsed();
                for &(i, key, deadline) in &todo {
                    (fx.keys[i], fx.deadlines[i]) = (Some(key), deadline);
                }
                (todo.len(), time)
            })
        },
    );
}

fn postpone(g: &mut Group, n: usize, layout: Layout) {
    let id = layout.id("wheel_postpone");
    g.bench(
        &id,
        n,
        || Fixture::<Wheel<u32>>::new(n, layout),
        |fx, iters| {
            let mut todo = Vec::with_capacity(CHUNK);
            chunked(iters, |want| {
                todo.clear();
                for _ in 0..want {
                    let i = fx.pick();
                    todo.push((fx.keys[i].expect("all armed"), fx.activity_deadline()));
                }
                let start = Instant::now();
                for &(key, deadline) in &todo {
                    fx.timers.postpone(key, deadline);
                }
                (todo.len(), start.elapsed())
            })
        },
    );
}

/// A connection as the event loop sees it: its deadline in force and its timer, in one
/// cache line with the rest of its state.
#[repr(align(64))]
struct Conn {
    deadline: u64,
    timer: TimerKey,
    bytes: u64,
    _state: [u64; 5],
}

/// The daemon's side of the timers: connections that store their deadline, and the wheel
/// armed for a deadline no later than that.
struct Daemon {
    wheel: Wheel<u32>,
    conns: Vec<Conn>,
    rng: Rng,
    activities: u64,
    /// Time reached by the expiry loop, and activities owed since (fractional).
    now: u64,
    owed: f64,
    out: Vec<u32>,
    closed: Vec<(u32, u64)>,
}

impl Daemon {
    /// `n` connections in the steady state of `expire/wheel_lazy`: timers armed uniformly over
    /// the next idle timeout (armed one idle timeout before), and each connection's stored
    /// deadline set by its last activity since then, if any (activities at random, on average
    /// [`ACTIVITY_PER_IDLE`] per connection per idle timeout).
    fn new(n: usize) -> Self {
        let items = Layout::Random.items(n);
        let (wheel, keys) = Wheel::build(&items);
        let mut rng = Rng(!(n as u64));
        let mut conn = |(&(armed, _), timer)| {
            let uniform = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
            let since_activity = -(1.0 - uniform).ln() * (IDLE / ACTIVITY_PER_IDLE) as f64;
            let deadline = match since_activity < (IDLE - armed) as f64 {
                true => IDLE - since_activity as u64,
                false => armed,
            };
            Conn { deadline, timer, bytes: 0, _state: [0; 5] }
        };
        let conns = items.iter().zip(keys).map(&mut conn).collect();
        Daemon {
            wheel,
            conns,
            rng,
            activities: 0,
            now: 0,
            owed: 0.0,
            out: Vec::with_capacity(2048),
            closed: Vec::new(),
        }
    }
}

/// The daemon's activity path: the connection was just driven (touched, untimed); timed is
/// the comparison with the deadline in force and the store.
fn lazy_store(g: &mut Group, n: usize) {
    g.bench(
        "wheel_lazy_store",
        n,
        || Daemon::new(n),
        |d, iters| {
            let mut todo = Vec::with_capacity(CHUNK);
            chunked(iters, |want| {
                todo.clear();
                let mut driven = 0;
                for _ in 0..want {
                    let i = d.rng.index(d.conns.len());
                    d.conns[i].bytes += 1;
                    driven += d.conns[i].bytes;
                    d.activities += 1;
                    todo.push((i, IDLE + d.activities / 16));
                }
                black_box(driven);
                let start = Instant::now();
                for &(i, deadline) in &todo {
                    let conn = &mut d.conns[i];
                    if deadline < conn.deadline {
                        d.wheel.reset(conn.timer, deadline);
                    }
                    conn.deadline = deadline;
                }
                (todo.len(), start.elapsed())
            })
        },
    );
}

fn expire<T: Timers>(g: &mut Group, n: usize, layout: Layout) {
    let setup = || (T::build(&layout.items(n)).0, Vec::with_capacity(2048), Vec::new());
    g.bench(&layout.id(T::NAME), n, setup, |(timers, out, marks), iters| {
        chunked(iters, |want| {
            out.clear();
            marks.clear();
            let start = Instant::now();
            while out.len() < want {
                let now = timers.next_deadline().expect("never empty");
                timers.poll(now, out);
                marks.push((out.len(), now));
            }
            let time = start.elapsed();
            let mut from = 0;
            for &(end, now) in marks.iter() {
                for &value in &out[from..end] {
                    timers.append(now + IDLE, value);
                }
                from = end;
            }
            (out.len(), time)
        })
    });
}

/// The expiry half of the daemon's lazy re-arm (see the module docs).
fn expire_lazy(g: &mut Group, n: usize) {
    let rec = g.rec;
    g.bench(
        "wheel_lazy",
        n,
        || Daemon::new(n),
        |d, iters| {
            chunked(iters, |want| {
                let (mut handed, mut rearmed, mut now) = (0, 0, d.now);
                let start = Instant::now();
                while handed < want {
                    now = d.wheel.next_deadline().expect("never empty");
                    Timers::poll(&mut d.wheel, now, &mut d.out);
                    for value in d.out.drain(..) {
                        handed += 1;
                        let conn = &mut d.conns[value as usize];
                        if conn.deadline > now {
                            conn.timer = d.wheel.insert(conn.deadline, value);
                            rearmed += 1;
                        } else {
                            d.closed.push((value, now));
                        }
                    }
                }
                let time = start.elapsed();
                for (value, closed_at) in d.closed.drain(..) {
                    let conn = &mut d.conns[value as usize];
                    conn.deadline = closed_at + IDLE;
                    conn.timer = d.wheel.insert(conn.deadline, value);
                }
                d.owed +=
                    (now - d.now) as f64 * (d.conns.len() as u64 * ACTIVITY_PER_IDLE) as f64 / IDLE as f64;
                d.now = now;
                let mut activities = 0;
                while d.owed >= 1.0 {
                    let i = d.rng.index(d.conns.len());
                    d.conns[i].deadline = now + IDLE;
                    d.owed -= 1.0;
                    activities += 1;
                }
                rec.add(&format!("lazy_handed/{n}"), handed as u64);
                rec.add(&format!("lazy_rearmed/{n}"), rearmed);
                rec.add(&format!("lazy_activities/{n}"), activities);
                (handed, time)
            })
        },
    );
}

fn next_deadline<T: Timers>(g: &mut Group, n: usize) {
    g.bench(
        T::NAME,
        n,
        || T::build(&Layout::Random.items(n)).0,
        |timers, iters| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(black_box(&mut *timers).next_deadline());
            }
            start.elapsed()
        },
    );
}

/// For reference, what a cache miss costs here: one load from a random 24-byte record (a
/// wheel entry's size) among `n`, each address depending on the previous load (a walk of one
/// random cycle through all of them, as a linked list in random slab order is walked).
fn dependent_load(g: &mut Group, n: usize) {
    let setup = || {
        let mut records: Vec<[u32; 6]> = (0..n as u32).map(|i| [i, 0, 0, 0, 0, 0]).collect();
        let mut rng = Rng(n as u64);
        // Sattolo's shuffle: a single cycle.
        for i in (1..n).rev() {
            let j = rng.index(i);
            let (a, b) = (records[i][0], records[j][0]);
            (records[i][0], records[j][0]) = (b, a);
        }
        (records, 0u32)
    };
    g.bench("dependent_load", n, setup, |(records, at), iters| {
        let start = Instant::now();
        let mut i = *at;
        for _ in 0..iters {
            i = records[i as usize][0];
        }
        *at = black_box(i);
        start.elapsed()
    });
}

/// Runs `$bench::<T>(group, n, $args)` for each structure.
macro_rules! each_structure {
    ($bench:ident($g:expr, $n:expr $(, $arg:expr)*)) => {
        $bench::<Wheel<u32>>($g, $n $(, $arg)*);
        $bench::<LazyHeap>($g, $n $(, $arg)*);
        $bench::<TreeTimers>($g, $n $(, $arg)*);
        $bench::<SortedList>($g, $n $(, $arg)*);
    };
}

fn benchmarks(c: &mut Criterion, rec: &Recorder, sizes: &[usize]) {
    Group::run(c, rec, "insert", |g| {
        for &n in sizes {
            insert::<Wheel<u32>>(g, n, Layout::InOrder);
            each_structure!(insert(g, n, Layout::Random));
        }
    });
    Group::run(c, rec, "cancel", |g| {
        for &n in sizes {
            cancel::<Wheel<u32>>(g, n, Layout::InOrder);
            each_structure!(cancel(g, n, Layout::Random));
        }
    });
    Group::run(c, rec, "insert_cancel", |g| {
        for &n in sizes {
            each_structure!(insert_cancel(g, n));
        }
    });
    Group::run(c, rec, "activity", |g| {
        for &n in sizes {
            lazy_store(g, n);
            postpone(g, n, Layout::Random);
            postpone(g, n, Layout::InOrder);
        }
    });
    Group::run(c, rec, "reset", |g| {
        for &n in sizes {
            reset::<Wheel<u32>>(g, n, Layout::InOrder);
            each_structure!(reset(g, n, Layout::Random));
        }
    });
    Group::run(c, rec, "expire", |g| {
        for &n in sizes {
            expire_lazy(g, n);
            each_structure!(expire(g, n, Layout::Random));
            each_structure!(expire(g, n, Layout::InOrder));
        }
    });
    Group::run(c, rec, "next_deadline", |g| {
        for &n in sizes {
            each_structure!(next_deadline(g, n));
        }
    });
    Group::run(c, rec, "latency", |g| {
        for &n in sizes {
            dependent_load(g, n);
        }
    });
}

fn main() {
    let test = support::test_mode();
    let sizes: &[usize] = if test { &support::TEST_SIZES } else { &support::SIZES };
    support::check::differential::<Wheel<u32>>();
    support::check::differential::<LazyHeap>();
    support::check::differential::<TreeTimers>();
    support::check::differential::<SortedList>();

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(600))
        .sample_size(support::SAMPLE_SIZE)
        .nresamples(10_000)
        .configure_from_args();
    let rec = Recorder::default();
    benchmarks(&mut c, &rec, sizes);
    c.final_summary();
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let memory = support::summary::memory(sizes);
    support::summary::print(&rec, &memory, test);
}
