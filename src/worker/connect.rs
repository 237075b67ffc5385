//! Connecting a relay to its upstream: the addresses are tried in the order `balance` gives,
//! from the connection's starting point; an address refused at once, or whose connect fails
//! or times out later (each attempt has `connect_timeout`), moves on to the next. The client is
//! closed only when every address has failed once, and its close line names the last error and
//! how many were tried. The client is not read meanwhile, so its bytes wait in its socket.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use super::Core;
use crate::net::{is_out_of_descriptors, tune_upstream};
use crate::stream::Stream;
use crate::upstream::Target;
use crate::vocab::{CloseReason, IoFailure, Side};

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

    /// Every address has been tried.
    pub(super) fn exhausted(&self) -> bool {
        self.tried as usize >= self.targets.len()
    }
}

impl Core {
    /// Starts a connect to the next untried address of listener `i`'s upstream; addresses that
    /// fail at once are passed over. `Err` when none is left: the reason and the last failure.
    pub(super) fn connect_next(
        &mut self,
        i: usize,
        attempts: &mut Attempts,
    ) -> Result<Stream, (CloseReason, IoFailure)> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no upstream address");
        while !attempts.exhausted() {
            let at = (attempts.start as usize + attempts.tried as usize) % attempts.targets.len();
            let target = &attempts.targets[at];
            attempts.tried += 1;
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
                Err(error) => last = error,
            }
        }
        Err((CloseReason::UpstreamRefused, IoFailure { side: Side::Upstream, op: "connect", error: last }))
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
        if attempts.exhausted() {
            slot.attempts = Some(attempts);
            return Some((reason, failure));
        }
        let i = slot.listener;
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
