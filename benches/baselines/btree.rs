//! Timers as a `BTreeMap<(deadline, id), value>`: the sorted container of the standard library.
//! The handle is the key; `id` is a sequence number that keeps keys unique. Insert, cancel and
//! reset (remove and insert) O(log n); expire pops the first entry; the next deadline is the
//! first key, O(log n) down the left edge.

use std::collections::BTreeMap;

/// Handle of a live timer: its key, (deadline, id).
pub type TreeKey = (u64, u64);

pub struct TreeTimers {
    map: BTreeMap<TreeKey, u32>,
    next_id: u64,
}

impl TreeTimers {
    pub fn new() -> Self {
        TreeTimers { map: BTreeMap::new(), next_id: 0 }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn insert(&mut self, deadline: u64, value: u32) -> TreeKey {
        let key = (deadline, self.next_id);
        self.next_id += 1;
        self.map.insert(key, value);
        key
    }

    pub fn cancel(&mut self, key: TreeKey) -> u32 {
        self.map.remove(&key).unwrap_or_else(|| panic!("{key:?} is not a live timer"))
    }

    /// Remove and insert under the new deadline; the key (the handle) changes.
    pub fn reset(&mut self, key: &mut TreeKey, deadline: u64) {
        let value = self.cancel(*key);
        key.0 = deadline;
        self.map.insert(*key, value);
    }

    pub fn poll(&mut self, now: u64, out: &mut Vec<u32>) {
        while let Some(entry) = self.map.first_entry() {
            if entry.key().0 > now {
                break;
            }
            out.push(entry.remove());
        }
    }

    pub fn next_deadline(&self) -> Option<u64> {
        self.map.first_key_value().map(|(&(deadline, _), _)| deadline)
    }
}
