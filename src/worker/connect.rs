//! Connecting a relay to its upstream: the addresses are tried from the connection's starting
//! point in `balance` order, those up first, then those in backoff (the soonest to end first),
//! never a disabled one (the listener's health table chooses: `upstream::HealthTable::next`);
//! an address refused at once, or whose connect fails or times out later (each attempt has
//! `connect_timeout`), moves on to the next, and counts against the address. The client is
//! closed only when every address it may use has failed once, and its close line names the last
//! error and how many were tried. The client is not read meanwhile, so its bytes wait in its
//! socket.

use std::io;
use std::time::Instant;

use super::attempts::Attempts;
use super::slot::CONN_INTEREST;
use super::Core;
use crate::close_reason::CloseReason;
use crate::os::net::{is_out_of_descriptors, tune_upstream};
use crate::os::stream::Stream;
use crate::side::{IoFailure, Side};
use crate::upstream::Target;

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
        if let Err(error) = self.registry.register(upstream, token, CONN_INTEREST) {
            return Some((
                CloseReason::Error,
                Some(IoFailure { side: Side::Upstream, op: "register", error }),
            ));
        }
        slot.deadlines.connecting_again(&self.listeners[i].config, &self.clock, Instant::now());
        slot.arm(&mut self.wheel, key);
        None
    }
}
