//! Connecting a relay to its upstream: the addresses are tried from the connection's starting
//! point in `balance` order, those up first, then those in backoff (the soonest to end first),
//! never a disabled one (the listener's health table chooses: `upstream::HealthTable::next`);
//! an address refused at once, or whose connect fails or times out later (each attempt has
//! `connect_timeout`), moves on to the next, and counts against the address. The client is
//! closed only when every address it may use has failed once, and its close line names the last
//! error and how many were tried. The client is not read meanwhile, so its bytes wait in its
//! socket.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use super::Core;
use crate::net::{is_out_of_descriptors, tune_upstream};
use crate::stream::Stream;
use crate::upstream::Target;
use crate::vocab::{CloseReason, IoFailure, Side};

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
    fn untried(&self) -> impl Iterator<Item = (usize, &Target)> {
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
    fn begin(&mut self, k: usize) -> &Target {
        self.tried |= 1 << k;
        self.current = k as u8;
        self.at(k)
    }
}

impl Core {
    /// The position of the next address connection `attempts` of listener `i` tries, as the
    /// listener's health table chooses; `None` when none is left that it may use.
    fn next_to_try(&self, i: usize, attempts: &Attempts, now: Instant) -> Option<usize> {
        match &self.listeners[i].upstreams {
            Some(upstreams) => upstreams.health().next(attempts.untried(), now),
            None => attempts.untried().next().map(|(k, _)| k),
        }
    }

    /// A connect of listener `i` to `target` failed: the address counts it.
    fn upstream_failed(&self, i: usize, target: &Target, error: &io::Error, now: Instant) {
        if let Some(upstreams) = &self.listeners[i].upstreams {
            upstreams.failed(target, error, now);
        }
    }

    /// The upstream connect of connection `key` succeeded: its address is up.
    pub(super) fn upstream_connected(&self, key: usize) {
        let slot = &self.slots[key];
        let upstreams = self.listeners[slot.listener].upstreams.as_ref();
        if let (Some(upstreams), Some(target)) =
            (upstreams, slot.attempts.as_ref().and_then(Attempts::current))
        {
            upstreams.connected(target);
        }
    }

    /// Starts a connect to the next address of listener `i`'s upstream that this connection may
    /// try; addresses that fail at once are passed over. `Err` when none is left: the reason and
    /// the last failure.
    pub(super) fn connect_next(
        &mut self,
        i: usize,
        attempts: &mut Attempts,
    ) -> Result<Stream, (CloseReason, IoFailure)> {
        let mut last = None;
        let now = Instant::now();
        while let Some(k) = self.next_to_try(i, attempts, now) {
            let target = attempts.begin(k);
            let connected = target.connect().or_else(|e| match self.reclaim_descriptors(&e) {
                true => target.connect(),
                false => Err(e),
            });
            match connected {
                Ok(stream) => {
                    let config = &self.listeners[i].config;
                    if let Stream::Tcp(s) = &stream {
                        tune_upstream(s, config.tcp_keepalive, config.tcp_user_timeout);
                    }
                    return Ok(stream);
                }
                // Out of descriptors is our problem, not the upstream's: no other address helps.
                Err(error) if is_out_of_descriptors(&error) => {
                    return Err((
                        CloseReason::Error,
                        IoFailure { side: Side::Upstream, op: "connect", error },
                    ));
                }
                Err(error) => {
                    self.upstream_failed(i, target, &error, now);
                    last = Some(error);
                }
            }
        }
        // Nothing tried: every address is disabled.
        let error = last
            .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "every upstream address is disabled"));
        Err((CloseReason::UpstreamRefused, IoFailure { side: Side::Upstream, op: "connect", error }))
    }

    /// The upstream connect of connection `key` failed (`reason`, `failure`): tries the next
    /// address, with a fresh `connect_timeout`. `None` when it is under way; otherwise what to
    /// close the connection with (the last failure).
    pub(super) fn retry_connect(
        &mut self,
        key: usize,
        reason: CloseReason,
        failure: Option<IoFailure>,
    ) -> Option<(CloseReason, Option<IoFailure>)> {
        let slot = &mut self.slots[key];
        let Some(mut attempts) = slot.attempts.take() else { return Some((reason, failure)) };
        let (i, now) = (slot.listener, Instant::now());
        if let (Some(target), Some(failed)) = (attempts.current(), &failure) {
            self.upstream_failed(i, target, &failed.error, now);
        }
        if self.next_to_try(i, &attempts, now).is_none() {
            self.slots[key].attempts = Some(attempts);
            return Some((reason, failure));
        }
        let slot = &mut self.slots[key];
        // The failed socket is closed first: its registration goes with it.
        drop(slot.conn.take_upstream());
        let next = self.connect_next(i, &mut attempts);
        let slot = &mut self.slots[key];
        slot.attempts = Some(attempts);
        let upstream = match next {
            Ok(upstream) => upstream,
            Err((reason, failure)) => return Some((reason, Some(failure))),
        };
        slot.conn.retarget(upstream);
        let token = super::token::Target::Conn(key, Side::Upstream, slot.gen).token();
        let upstream = slot.conn.upstream_mut().expect("just set");
        if let Err(error) = self.registry.register(upstream, token, super::accept::CONN_INTEREST) {
            return Some((
                CloseReason::Error,
                Some(IoFailure { side: Side::Upstream, op: "register", error }),
            ));
        }
        slot.deadlines.connecting_again(&self.listeners[i].config, &self.clock, Instant::now());
        let due = slot.deadlines.earliest();
        match slot.timer {
            Some(timer) => self.wheel.reset(timer, due),
            None => slot.timer = Some(self.wheel.insert(due, key as u32)),
        }
        None
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
