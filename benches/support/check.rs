//! A differential check run before the benchmarks (and in `--test` mode): the same random
//! operations on every structure and on a plain model must hand out the same timers at every
//! poll. Benchmarking a baseline that is wrong would prove nothing.

use std::collections::HashMap;

use super::Rng;
use crate::baselines::Timers;

/// Random inserts, cancels, resets (earlier and later), bookkeeping appends and restores, and
/// polls, at a few hundred live timers; panics on the first disagreement with the model.
pub fn differential<T: Timers>() {
    let mut rng = Rng(7);
    let mut model: HashMap<u32, u64> = HashMap::new();
    let items: Vec<(u64, u32)> = (0..300).map(|i| (1 + rng.below(5_000), i)).collect();
    let (mut timers, keys) = T::build(&items);
    let mut keys: HashMap<u32, T::Key> = (0..300).zip(keys).collect();
    model.extend(items.iter().map(|&(deadline, value)| (value, deadline)));
    let (mut now, mut next_value) = (0u64, 300u32);
    let mut out = Vec::new();
    for step in 0..20_000 {
        let live: Vec<u32> = {
            let mut v: Vec<u32> = model.keys().copied().collect();
            v.sort_unstable();
            v
        };
        let pick = |rng: &mut Rng| live.get(rng.index(live.len().max(1))).copied();
        match rng.below(10) {
            0..=1 => {
                let deadline = now + rng.below(5_000);
                keys.insert(next_value, timers.insert(deadline, next_value));
                model.insert(next_value, deadline);
                next_value += 1;
            }
            2 => {
                // A new connection: due after every live timer.
                let deadline = model.values().copied().max().unwrap_or(now).max(now) + rng.below(3);
                keys.insert(next_value, timers.append(deadline, next_value));
                model.insert(next_value, deadline);
                next_value += 1;
            }
            3 => {
                if let Some(v) = pick(&mut rng) {
                    assert_eq!(timers.cancel(keys.remove(&v).unwrap()), v, "{} cancel", T::NAME);
                    model.remove(&v);
                }
            }
            4 => {
                // Cancel a few, then restore them in reverse order.
                let picked: Vec<u32> = (0..3).filter_map(|_| pick(&mut rng)).collect();
                let mut cancelled = Vec::new();
                for v in picked {
                    if let Some(key) = keys.remove(&v) {
                        assert_eq!(timers.cancel(key), v, "{} cancel", T::NAME);
                        cancelled.push((v, key));
                    }
                }
                for &(v, key) in cancelled.iter().rev() {
                    keys.insert(v, timers.restore(key, model[&v], v));
                }
            }
            5..=6 => {
                if let Some(v) = pick(&mut rng) {
                    let deadline =
                        if rng.below(2) == 0 { model[&v] + rng.below(5_000) } else { now + rng.below(100) };
                    timers.reset(keys.get_mut(&v).unwrap(), deadline);
                    model.insert(v, deadline);
                }
            }
            _ => {
                if let (Some(next), Some(&earliest)) = (timers.next_deadline(), model.values().min()) {
                    assert!(next <= earliest.max(now), "{} next_deadline {next} > {earliest}", T::NAME);
                }
                now += rng.below(300);
                timers.poll(now, &mut out);
                out.sort_unstable();
                let mut due: Vec<u32> = model.iter().filter(|&(_, &d)| d <= now).map(|(&v, _)| v).collect();
                due.sort_unstable();
                assert_eq!(out, due, "{} poll({now}) at step {step}", T::NAME);
                for v in out.drain(..) {
                    model.remove(&v);
                    keys.remove(&v);
                }
            }
        }
        assert_eq!(timers.len(), model.len(), "{} len at step {step}", T::NAME);
    }
}
