//! A fixed table of client slots, each client with a deadline, and when accepting is to resume
//! without a new event: the metrics endpoint's and the control socket's clients. A slot's index
//! is its poll token's offset, so a client keeps its slot from accept to close; a free slot is
//! found by a scan (the tables are small).

use std::time::Instant;

/// A client that must be done by a deadline.
pub trait Timed {
    fn deadline(&self) -> Instant;
}

/// At most `capacity` clients, by slot.
#[derive(Debug)]
pub struct Slots<C> {
    slots: Vec<Option<C>>,
    /// When to accept again without a new event: the last pass stopped at its budget (then at
    /// once), or on an error such as running out of descriptors (then after a pause).
    accept_again: Option<Instant>,
}

impl<C: Timed> Slots<C> {
    pub fn new(capacity: usize) -> Slots<C> {
        Slots { slots: (0..capacity).map(|_| None).collect(), accept_again: None }
    }

    /// A free slot, if any.
    pub fn free(&self) -> Option<usize> {
        self.slots.iter().position(Option::is_none)
    }

    pub fn put(&mut self, slot: usize, client: C) {
        self.slots[slot] = Some(client);
    }

    pub fn get_mut(&mut self, slot: usize) -> Option<&mut C> {
        self.slots.get_mut(slot).and_then(Option::as_mut)
    }

    /// The clients in the table.
    pub fn iter(&self) -> impl Iterator<Item = &C> {
        self.slots.iter().flatten()
    }

    /// Takes the client out of its slot (dropping it closes it).
    pub fn take(&mut self, slot: usize) -> Option<C> {
        self.slots.get_mut(slot).and_then(Option::take)
    }

    /// Keeps the clients for which `keep` is true, dropping (closing) the others.
    pub fn retain(&mut self, mut keep: impl FnMut(&mut C) -> bool) {
        for slot in &mut self.slots {
            if slot.as_mut().is_some_and(|c| !keep(c)) {
                *slot = None;
            }
        }
    }

    /// Accepting resumes at `at` without a new event (`None`: only on one).
    pub fn accept_again(&mut self, at: Option<Instant>) {
        self.accept_again = at;
    }

    /// The earliest deadline of a client, or when accepting is to resume: the poll timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.slots.iter().flatten().map(Timed::deadline).chain(self.accept_again).min()
    }

    /// Drops (closes) the clients whose deadline has passed; true if accepting is due.
    pub fn expire(&mut self, now: Instant) -> bool {
        for slot in &mut self.slots {
            if slot.as_ref().is_some_and(|c| c.deadline() <= now) {
                *slot = None;
            }
        }
        self.accept_again.is_some_and(|t| t <= now)
    }

    /// Clients in the table.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct Due(Instant);
    impl Timed for Due {
        fn deadline(&self) -> Instant {
            self.0
        }
    }

    #[test]
    fn slots_fill_free_and_expire_by_deadline() {
        let now = Instant::now();
        let mut slots = Slots::new(2);
        slots.put(slots.free().unwrap(), Due(now + Duration::from_secs(1)));
        slots.put(slots.free().unwrap(), Due(now + Duration::from_secs(5)));
        assert_eq!((slots.free(), slots.len()), (None, 2));
        assert_eq!(slots.next_deadline(), Some(now + Duration::from_secs(1)));
        assert!(!slots.expire(now + Duration::from_secs(2)), "no accept pass is due");
        assert_eq!((slots.free(), slots.len()), (Some(0), 1));
        assert!(slots.take(1).is_some() && slots.take(1).is_none());
        assert_eq!(slots.next_deadline(), None);
        slots.accept_again(Some(now + Duration::from_millis(100)));
        assert_eq!(slots.next_deadline(), Some(now + Duration::from_millis(100)));
        assert!(!slots.expire(now) && slots.expire(now + Duration::from_millis(100)));
    }
}
