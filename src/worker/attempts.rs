//! A relay's connect attempts ([`Attempts`]): the upstream addresses in the order `balance`
//! gives, where this connection started in them and how many it has tried; once connected, the
//! address that serves it. Kept in the connection's slot, and carried across a live upgrade.

use std::io;
use std::sync::Arc;

use crate::upstream::Target;

/// A relay's connect attempts: the addresses, where this connection started in them and how
/// many it has tried — and so, once connected, the address that serves it (for its close line).
/// Kept in the slot itself (24 bytes), not boxed: one allocation fewer per connection.
#[derive(Debug)]
pub(super) struct Attempts {
    targets: Arc<[Target]>,
    start: u32,
    /// Addresses tried so far, the one in progress (or connected) included.
    tried: u32,
}

impl Attempts {
    pub(super) fn new(targets: Arc<[Target]>, start: usize) -> Attempts {
        // A start beyond the list wraps anyway (`% len`): reduce it first so that it fits.
        let start = u32::try_from(start % targets.len().max(1)).unwrap_or(0);
        Attempts { targets, start, tried: 0 }
    }

    /// For a live upgrade: the addresses, where this connection started, how many were tried.
    pub(super) fn freeze(&self) -> (Vec<String>, usize, usize) {
        let targets = self.targets.iter().map(ToString::to_string).collect();
        (targets, self.start as usize, self.tried as usize)
    }

    /// The attempts a live upgrade handed over.
    pub(super) fn thaw((targets, start, tried): &(Vec<String>, usize, usize)) -> io::Result<Attempts> {
        let targets = targets.iter().map(|t| Target::parse(t)).collect::<io::Result<Arc<[Target]>>>()?;
        let count = |n: usize| {
            let out_of_range =
                || io::Error::new(io::ErrorKind::InvalidData, format!("connect attempts: {n}"));
            u32::try_from(n).map_err(|_| out_of_range())
        };
        Ok(Attempts { targets, start: count(*start)?, tried: count(*tried)? })
    }

    /// The address being tried now, or, once the upstream has connected, the one that did.
    pub(super) fn current(&self) -> Option<&Target> {
        let n = self.targets.len();
        (self.tried > 0 && n > 0).then(|| &self.targets[(self.start as usize + self.tried as usize - 1) % n])
    }

    /// How many addresses were tried, the one in progress (or connected) included.
    pub(super) fn tried(&self) -> usize {
        self.tried as usize
    }

    /// The next untried address, counted as tried from now on; `None` once every one has been.
    pub(super) fn next_target(&mut self) -> Option<&Target> {
        if self.exhausted() {
            return None;
        }
        let at = (self.start as usize + self.tried as usize) % self.targets.len();
        self.tried += 1;
        Some(&self.targets[at])
    }

    /// Every address has been tried.
    pub(super) fn exhausted(&self) -> bool {
        self.tried as usize >= self.targets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_is_tried_once_from_the_start_round_the_list() {
        let addresses = ["127.0.0.1:1", "127.0.0.1:2", "unix:/run/three.sock"];
        let targets: Arc<[Target]> = addresses.iter().map(|t| Target::parse(t).unwrap()).collect();
        // A start beyond the list wraps: 4 is the second address.
        let mut attempts = Attempts::new(targets, 4);
        assert!(attempts.current().is_none(), "nothing tried yet");
        let mut tried = Vec::new();
        while let Some(target) = attempts.next_target() {
            tried.push(target.to_string());
            assert_eq!(attempts.current().map(ToString::to_string), tried.last().cloned());
        }
        assert_eq!(tried, ["127.0.0.1:2", "unix:/run/three.sock", "127.0.0.1:1"]);
        assert!(attempts.exhausted() && attempts.tried() == 3);
        assert!(attempts.next_target().is_none() && attempts.tried() == 3, "no address twice");
    }
}
