//! A relay's connect attempts ([`Attempts`]): the upstream addresses in the order `balance`
//! gives, where this connection started in them and which it has tried; once connected, the
//! address that serves it. Kept in the connection's slot, and carried across a live upgrade.

use std::io;
use std::sync::Arc;

use crate::upstream::Target;

/// The most addresses one connection tries (a bit each in [`Attempts`]); a host name may
/// resolve to more, and round robin spreads connections over all of them.
const MAX_TRIED: usize = 64;

/// A relay's connect attempts: the addresses, where this connection started in them and which
/// it has tried — and so, once connected, the address that serves it (for its close line).
/// Kept in the slot itself (32 bytes), not boxed: one allocation fewer per connection.
#[derive(Debug)]
pub(super) struct Attempts {
    targets: Arc<[Target]>,
    /// Position `k` of this connection's order is `targets[(start + k) % len]`.
    start: u32,
    /// The positions tried so far, bit `k` for position `k`: the one in progress (or connected)
    /// included.
    tried: u64,
    /// The position in progress, or connected (once `tried` has any).
    current: u8,
}

impl Attempts {
    pub(super) fn new(targets: Arc<[Target]>, start: usize) -> Attempts {
        // A start beyond the list wraps anyway (`% len`): reduce it first so that it fits.
        let start = u32::try_from(start % targets.len().max(1)).unwrap_or(0);
        Attempts { targets, start, tried: 0, current: 0 }
    }

    /// The address at position `k` of this connection's order.
    fn at(&self, k: usize) -> &Target {
        &self.targets[(self.start as usize + k) % self.targets.len()]
    }

    /// The positions not tried yet, in order, with their addresses.
    pub(super) fn untried(&self) -> impl Iterator<Item = (usize, &Target)> {
        let len = self.targets.len().min(MAX_TRIED);
        (0..len).filter(|k| self.tried & (1 << k) == 0).map(|k| (k, self.at(k)))
    }

    /// For a live upgrade: the addresses, where this connection started, how many were tried —
    /// the addresses written in the order tried, the current one last among those tried, so that
    /// the count says which (the format of a binary that tried them in turn).
    pub(super) fn freeze(&self) -> (Vec<String>, usize, usize) {
        let len = self.targets.len();
        let tried = |k: &usize| *k < MAX_TRIED && self.tried & (1 << k) != 0;
        let current = self.current as usize;
        let before = (0..len).filter(|k| tried(k) && *k != current);
        let order = before.chain((self.tried != 0).then_some(current)).chain((0..len).filter(|k| !tried(k)));
        let targets = order.map(|k| self.at(k).to_string()).collect();
        (targets, 0, self.tried.count_ones() as usize)
    }

    /// The attempts a live upgrade handed over: the first `tried` positions tried, the last of
    /// them the current one.
    pub(super) fn thaw((targets, start, tried): &(Vec<String>, usize, usize)) -> io::Result<Attempts> {
        let targets = targets.iter().map(|t| Target::parse(t)).collect::<io::Result<Arc<[Target]>>>()?;
        let out_of_range =
            || io::Error::new(io::ErrorKind::InvalidData, format!("connect attempts: {start}, {tried}"));
        let start = u32::try_from(*start).map_err(|_| out_of_range())?;
        let tried = (*tried).min(targets.len()).min(MAX_TRIED);
        let mask = if tried == MAX_TRIED { u64::MAX } else { (1 << tried) - 1 };
        Ok(Attempts { targets, start, tried: mask, current: tried.saturating_sub(1) as u8 })
    }

    /// The address being tried now, or, once the upstream has connected, the one that did.
    pub(super) fn current(&self) -> Option<&Target> {
        (self.tried != 0 && !self.targets.is_empty()).then(|| self.at(self.current as usize))
    }

    /// How many addresses were tried, the one in progress (or connected) included.
    pub(super) fn tried(&self) -> usize {
        self.tried.count_ones() as usize
    }

    /// Marks position `k` as the one being tried, and returns its address.
    pub(super) fn begin(&mut self, k: usize) -> &Target {
        self.tried |= 1 << k;
        self.current = k as u8;
        self.at(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(n: u16) -> Arc<[Target]> {
        (1..=n).map(|port| Target::Tcp(([127, 0, 0, 1], port).into())).collect()
    }

    #[test]
    fn attempts_out_of_order_cross_an_upgrade_as_the_older_format_says_them() {
        // Started at the second address; tried the fourth (in backoff last time), then the
        // second: the second is current.
        let mut a = Attempts::new(targets(4), 1);
        assert_eq!(a.begin(2).to_string(), "127.0.0.1:4");
        assert_eq!(a.begin(0).to_string(), "127.0.0.1:2");
        let frozen = a.freeze();
        assert_eq!(frozen.0, ["127.0.0.1:4", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:1"]);
        assert_eq!((frozen.1, frozen.2), (0, 2));
        let back = Attempts::thaw(&frozen).unwrap();
        assert_eq!(back.current().map(ToString::to_string), Some("127.0.0.1:2".to_owned()));
        assert_eq!(back.tried(), 2);
        let left: Vec<String> = back.untried().map(|(_, t)| t.to_string()).collect();
        assert_eq!(left, ["127.0.0.1:3", "127.0.0.1:1"], "what is left to try, in order");
        // As a binary that tried in turn wrote them: started at the third, two tried.
        let older = (vec!["127.0.0.1:1".into(), "127.0.0.1:2".into(), "127.0.0.1:3".into()], 2, 2);
        let back = Attempts::thaw(&older).unwrap();
        assert_eq!(back.current().map(ToString::to_string), Some("127.0.0.1:1".to_owned()));
        assert_eq!(back.untried().map(|(k, _)| k).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn a_connection_tries_at_most_64_addresses() {
        let mut a = Attempts::new(targets(70), 10);
        let positions: Vec<usize> = a.untried().map(|(k, _)| k).collect();
        assert_eq!(positions, (0..64).collect::<Vec<_>>());
        for k in positions {
            a.begin(k);
        }
        assert_eq!((a.tried(), a.untried().count()), (64, 0));
        let back = Attempts::thaw(&a.freeze()).unwrap();
        assert_eq!((back.tried(), back.untried().count()), (64, 0));
        assert_eq!(back.current(), a.current());
    }
}
