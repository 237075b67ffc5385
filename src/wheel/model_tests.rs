//! Model test of the timing wheel: random sequences of operations, checked
//! against a `BTreeMap` of `(deadline, id)` after every step.
//!
//! Deltas are drawn to hit small values, powers of 64 and their neighbours,
//! the wheel's range, and huge jumps; the start tick to hit block boundaries
//! and the end of `u64`. Polls use small budgets, so operations also run while
//! a poll is paused half-way through a bucket.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::{TimerKey, Wheel, MAX_DURATION};

#[derive(Clone, Debug)]
enum Op {
    /// Arm a timer at `now + delta`, or `now - delta` when `past`.
    Insert {
        delta: u64,
        past: bool,
    },
    /// Arm `count` timers at `now + delta + i % spread`: simultaneous expiries.
    InsertMany {
        delta: u64,
        count: u64,
        spread: u64,
    },
    Cancel(usize),
    /// `later`: at `now + delta`; else at `deadline - delta` (earlier, maybe past).
    Reset {
        pick: usize,
        delta: u64,
        later: bool,
    },
    /// mode 0: `deadline + delta` (activity); 1: `now + delta`; 2: `deadline - delta`.
    Postpone {
        pick: usize,
        delta: u64,
        mode: u8,
    },
    /// Poll at `now + delta` with `budget` until it returns false.
    Advance {
        delta: u64,
        budget: usize,
    },
    /// One poll at `now + delta` with `budget`: may stop half-way.
    PollOnce {
        delta: u64,
        budget: usize,
    },
    /// Poll at `next_deadline()` with no budget limit.
    ToNextDeadline,
}

fn delta() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => 0..70u64,
        4 => (1..=6u32, -2..=2i64).prop_map(|(k, d)| 64u64.pow(k).wrapping_add_signed(d)),
        3 => 0..300_000u64,
        1 => MAX_DURATION - 2..=MAX_DURATION + 2,
        1 => (30..=40u32, any::<u64>()).prop_map(|(bits, r)| r >> (64 - bits)),
    ]
}

/// Time moves on mostly in small steps, so that timers pile up.
fn step() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => 0..70u64,
        2 => (1..=3u32, -2..=2i64).prop_map(|(k, d)| 64u64.pow(k).wrapping_add_signed(d)),
        1 => delta(),
    ]
}

fn start() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => Just(0u64),
        2 => 0..10_000u64,
        2 => (1..=6u32, -3..=3i64).prop_map(|(k, d)| 64u64.pow(k).saturating_add_signed(d)),
        1 => any::<u64>().prop_map(|r| r >> 8),
        1 => (0..(1u64 << 20)).prop_map(|r| u64::MAX - r),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let budget = prop_oneof![3 => 1..4usize, 1 => 4..64usize, 1 => Just(usize::MAX)];
    prop_oneof![
        6 => (delta(), proptest::bool::weighted(0.1)).prop_map(|(delta, past)| Op::Insert { delta, past }),
        1 => (delta(), 2..30u64, 1..4u64)
            .prop_map(|(delta, count, spread)| Op::InsertMany { delta, count, spread }),
        2 => any::<usize>().prop_map(Op::Cancel),
        2 => (any::<usize>(), delta(), any::<bool>())
            .prop_map(|(pick, delta, later)| Op::Reset { pick, delta, later }),
        3 => (any::<usize>(), delta(), 0..3u8).prop_map(|(pick, delta, mode)| Op::Postpone { pick, delta, mode }),
        3 => (step(), budget.clone()).prop_map(|(delta, budget)| Op::Advance { delta, budget }),
        2 => (step(), budget).prop_map(|(delta, budget)| Op::PollOnce { delta, budget }),
        2 => Just(Op::ToNextDeadline),
    ]
}

/// The wheel under test and the model, with the test's notion of now.
struct Harness {
    wheel: Wheel<u64>,
    /// `(deadline, id)` of every live timer.
    model: BTreeMap<(u64, u64), ()>,
    live: HashMap<u64, (TimerKey, u64)>,
    /// Ids of live timers, to pick from.
    ids: Vec<u64>,
    next_id: u64,
    now: u64,
}

impl Harness {
    fn new(start: u64) -> Harness {
        let mut harness = Harness {
            wheel: Wheel::new(),
            model: BTreeMap::new(),
            live: HashMap::new(),
            ids: Vec::new(),
            next_id: 0,
            now: 0,
        };
        harness.poll(start, usize::MAX);
        harness
    }

    fn pick(&self, pick: usize) -> Option<(u64, TimerKey, u64)> {
        let id = *self.ids.get(pick % self.ids.len().max(1))?;
        let (key, deadline) = self.live[&id];
        Some((id, key, deadline))
    }

    fn insert(&mut self, deadline: u64) {
        let id = self.next_id;
        self.next_id += 1;
        let key = self.wheel.insert(deadline, id);
        self.model.insert((deadline, id), ());
        self.live.insert(id, (key, deadline));
        self.ids.push(id);
    }

    fn set_deadline(&mut self, id: u64, new: u64) {
        let (key, old) = self.live[&id];
        self.model.remove(&(old, id));
        self.model.insert((new, id), ());
        self.live.insert(id, (key, new));
    }

    fn forget(&mut self, id: u64) {
        let (_, deadline) = self.live.remove(&id).expect("fired or cancelled twice");
        self.model.remove(&(deadline, id));
        let at = self.ids.iter().position(|&i| i == id).unwrap();
        self.ids.swap_remove(at);
    }

    /// One poll at `now`; checks what fired. Returns what `poll` returned.
    fn poll_once(&mut self, now: u64, budget: usize) -> bool {
        self.now = now.max(self.now);
        let mut out = Vec::new();
        let more = self.wheel.poll(self.now, budget, &mut out);
        assert!(out.len() <= budget, "{} fired with budget {budget}", out.len());
        for id in out {
            let (_, deadline) = self.live[&id];
            assert!(deadline <= self.now, "id {id} fired early: deadline {deadline}, now {}", self.now);
            self.forget(id);
        }
        if !more {
            assert_eq!(self.wheel.elapsed(), self.now);
            if let Some(&(deadline, id)) = self.model.keys().next() {
                assert!(deadline > self.now, "id {id} due at {deadline} not fired by poll({})", self.now);
            }
        }
        more
    }

    fn poll(&mut self, now: u64, budget: usize) {
        let mut calls = 0u64;
        while self.poll_once(now, budget) {
            calls += 1;
            assert!(calls < 1_000_000, "poll never settles");
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Insert { delta, past } => self.insert(if past {
                self.now.saturating_sub(delta)
            } else {
                self.now.saturating_add(delta)
            }),
            Op::InsertMany { delta, count, spread } => {
                for i in 0..count {
                    self.insert(self.now.saturating_add(delta).saturating_add(i % spread));
                }
            }
            Op::Cancel(pick) => {
                if let Some((id, key, _)) = self.pick(pick) {
                    assert_eq!(self.wheel.cancel(key), id);
                    self.forget(id);
                }
            }
            Op::Reset { pick, delta, later } => {
                if let Some((id, key, old)) = self.pick(pick) {
                    let new = if later { self.now.saturating_add(delta) } else { old.saturating_sub(delta) };
                    self.wheel.reset(key, new);
                    self.set_deadline(id, new);
                }
            }
            Op::Postpone { pick, delta, mode } => {
                if let Some((id, key, old)) = self.pick(pick) {
                    let new = match mode {
                        0 => old.saturating_add(delta),
                        1 => self.now.saturating_add(delta),
                        _ => old.saturating_sub(delta),
                    };
                    self.wheel.postpone(key, new);
                    self.set_deadline(id, new);
                }
            }
            Op::Advance { delta, budget } => self.poll(self.now.saturating_add(delta), budget),
            Op::PollOnce { delta, budget } => {
                self.poll_once(self.now.saturating_add(delta), budget);
            }
            Op::ToNextDeadline => {
                let Some(at) = self.wheel.next_deadline() else { return };
                let before = self.now;
                // What was due before this poll may fire now; anything else
                // must fire exactly at its deadline, which is `at`.
                let due: Vec<(u64, u64)> = self.model.keys().copied().collect();
                self.poll(at, usize::MAX);
                for (deadline, id) in due {
                    if !self.live.contains_key(&id) && deadline > before {
                        assert_eq!(deadline, at, "id {id} fired late at {at}");
                    }
                }
            }
        }
        self.check();
    }

    fn check(&self) {
        let wheel = &self.wheel;
        wheel.check_invariants();
        assert_eq!(wheel.len(), self.model.len());
        assert!(wheel.elapsed() <= self.now);
        match (wheel.next_deadline(), self.model.keys().next()) {
            (None, None) => {}
            (Some(at), Some(&(first, id))) => {
                assert!(at >= wheel.elapsed(), "next_deadline {at} before elapsed {}", wheel.elapsed());
                assert!(
                    at <= first.max(wheel.elapsed()),
                    "next_deadline {at} after id {id}'s deadline {first}"
                );
            }
            (at, first) => panic!("next_deadline {at:?} but model's first {first:?}"),
        }
        for (&id, &(key, deadline)) in &self.live {
            assert_eq!((wheel.deadline(key), *wheel.get(key)), (deadline, id));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn wheel_matches_model(start in start(), ops in proptest::collection::vec(op(), 1..200)) {
        let mut harness = Harness::new(start);
        for op in ops {
            harness.apply(op);
        }
        // Drain: everything fires, exactly once, never early.
        harness.poll(u64::MAX, 7);
        prop_assert!(harness.model.is_empty() && harness.wheel.is_empty());
    }
}
