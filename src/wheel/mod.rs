//! TEMPORARY stand-in (replaced by the real wheel).
use std::collections::BTreeMap;
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerKey(u32);
pub struct Wheel<T> {
    e: slab::Slab<(u64, T)>,
    q: BTreeMap<(u64, u32), ()>,
    now: u64,
}
impl<T> Default for Wheel<T> {
    fn default() -> Self {
        Self::new()
    }
}
impl<T> Wheel<T> {
    pub fn new() -> Self {
        Wheel { e: slab::Slab::new(), q: BTreeMap::new(), now: 0 }
    }
    pub fn len(&self) -> usize {
        self.e.len()
    }
    pub fn is_empty(&self) -> bool {
        self.e.is_empty()
    }
    pub fn insert(&mut self, d: u64, v: T) -> TimerKey {
        let k = self.e.insert((d, v)) as u32;
        self.q.insert((d, k), ());
        TimerKey(k)
    }
    pub fn cancel(&mut self, k: TimerKey) -> T {
        let (d, v) = self.e.remove(k.0 as usize);
        self.q.remove(&(d, k.0));
        v
    }
    pub fn reset(&mut self, k: TimerKey, d: u64) {
        let old = self.e[k.0 as usize].0;
        self.q.remove(&(old, k.0));
        self.e[k.0 as usize].0 = d;
        self.q.insert((d, k.0), ());
    }
    pub fn postpone(&mut self, k: TimerKey, d: u64) {
        self.reset(k, d)
    }
    pub fn next_deadline(&self) -> Option<u64> {
        self.q.keys().next().map(|k| k.0)
    }
    pub fn poll(&mut self, now: u64, budget: usize, out: &mut Vec<T>) -> bool {
        self.now = self.now.max(now);
        for _ in 0..budget {
            match self.q.keys().next().copied() {
                Some((d, k)) if d <= self.now => {
                    self.q.remove(&(d, k));
                    out.push(self.e.remove(k as usize).1);
                }
                _ => return false,
            }
        }
        self.q.keys().next().is_some_and(|k| k.0 <= self.now)
    }
}
