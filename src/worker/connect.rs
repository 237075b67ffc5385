//! Connecting a relay to its upstream: the addresses are tried in the order `balance` gives,
//! from the connection's starting point; an address refused at once, or whose connect fails
//! or times out later (each attempt has `connect_timeout`), moves on to the next. The client is
//! closed only when every address has failed once, and its close line names the last error and
//! how many were tried. The client is not read meanwhile, so its bytes wait in its socket.

use std::io;
use std::time::Instant;

use super::attempts::Attempts;
use super::slot::CONN_INTEREST;
use super::Core;
use crate::close_reason::CloseReason;
use crate::os::net::{is_out_of_descriptors, tune_upstream};
use crate::os::stream::Stream;
use crate::side::{IoFailure, Side};

impl Core {
    /// Starts a connect to the next untried address of listener `i`'s upstream; addresses that
    /// fail at once are passed over. `Err` when none is left: the reason and the last failure.
    pub(super) fn connect_next(
        &mut self,
        i: usize,
        attempts: &mut Attempts,
    ) -> Result<Stream, (CloseReason, IoFailure)> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no upstream address");
        while let Some(target) = attempts.next_target() {
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
