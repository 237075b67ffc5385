//! A fixed table of clients, each with a deadline, and when accepting is to resume without a new
//! event: the metrics endpoint's and the control socket's clients. A client's index in the table
//! is its poll token's offset, so a client keeps its index from accept to close; a free index is
//! found by a scan (the tables are small).

use std::time::Instant;

/// A client that must be done by a deadline.
pub trait Timed {
    fn deadline(&self) -> Instant;
}

/// At most `capacity` clients, by index.
#[derive(Debug)]
pub struct ClientTable<C> {
    clients: Vec<Option<C>>,
    /// When to accept again without a new event: the last pass stopped at its budget (then at
    /// once), or on an error such as running out of descriptors (then after a pause).
    accept_again: Option<Instant>,
}

impl<C: Timed> ClientTable<C> {
    pub fn new(capacity: usize) -> ClientTable<C> {
        ClientTable { clients: (0..capacity).map(|_| None).collect(), accept_again: None }
    }

    /// A free index, if any.
    pub fn free(&self) -> Option<usize> {
        self.clients.iter().position(Option::is_none)
    }

    pub fn put(&mut self, index: usize, client: C) {
        self.clients[index] = Some(client);
    }

    pub fn get_mut(&mut self, index: usize) -> Option<&mut C> {
        self.clients.get_mut(index).and_then(Option::as_mut)
    }

    /// The clients in the table.
    pub fn iter(&self) -> impl Iterator<Item = &C> {
        self.clients.iter().flatten()
    }

    /// Takes the client out of the table (dropping it closes it).
    pub fn take(&mut self, index: usize) -> Option<C> {
        self.clients.get_mut(index).and_then(Option::take)
    }

    /// Keeps the clients for which `keep` is true, dropping (closing) the others.
    pub fn retain(&mut self, mut keep: impl FnMut(&mut C) -> bool) {
        for place in &mut self.clients {
            if place.as_mut().is_some_and(|c| !keep(c)) {
                *place = None;
            }
        }
    }

    /// Accepting resumes at `at` without a new event (`None`: only on one).
    pub fn accept_again(&mut self, at: Option<Instant>) {
        self.accept_again = at;
    }

    /// The earliest deadline of a client, or when accepting is to resume: the poll timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.clients.iter().flatten().map(Timed::deadline).chain(self.accept_again).min()
    }

    /// Drops (closes) the clients whose deadline has passed; true if accepting is due.
    pub fn expire(&mut self, now: Instant) -> bool {
        for place in &mut self.clients {
            if place.as_ref().is_some_and(|c| c.deadline() <= now) {
                *place = None;
            }
        }
        self.accept_again.is_some_and(|t| t <= now)
    }

    /// Clients in the table.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.clients.iter().flatten().count()
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
    fn a_table_fills_frees_and_expires_by_deadline() {
        let now = Instant::now();
        let mut table = ClientTable::new(2);
        table.put(table.free().unwrap(), Due(now + Duration::from_secs(1)));
        table.put(table.free().unwrap(), Due(now + Duration::from_secs(5)));
        assert_eq!((table.free(), table.len()), (None, 2));
        assert_eq!(table.next_deadline(), Some(now + Duration::from_secs(1)));
        assert!(!table.expire(now + Duration::from_secs(2)), "no accept pass is due");
        assert_eq!((table.free(), table.len()), (Some(0), 1));
        assert!(table.take(1).is_some() && table.take(1).is_none());
        assert_eq!(table.next_deadline(), None);
        table.accept_again(Some(now + Duration::from_millis(100)));
        assert_eq!(table.next_deadline(), Some(now + Duration::from_millis(100)));
        assert!(!table.expire(now) && table.expire(now + Duration::from_millis(100)));
    }
}
