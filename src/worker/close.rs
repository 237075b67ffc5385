//! Closing connections, and the ledger.
//!
//! A close frees the slot, the timer, the buffers and the listener's admission counts, resets
//! the peers the relay contract says to reset ([`abort_sides`]), logs the one close line, and
//! records the close in the ledger. The ledger is [`Core::record`]: every accept, refusal and
//! close goes through it, and it is the only writer of the listeners' connection counters —
//! `/metrics` and the USR1 statistics line are both read from those counters.

use std::time::Duration;

use log::info;
use log::kv::Value;

use super::Core;
use crate::cancel::Canceller;
use crate::close_reason::CloseReason;
use crate::config::{IdleClose, ListenerConfig};
use crate::conn::Conn;
use crate::observe::Closing;
use crate::os::stream::{Peer, Stream};
use crate::os::sys::TcpProgress;
use crate::proxy_protocol;
use crate::side::{IoFailure, Side};
use crate::upstream::Target;

/// What the ledger records.
pub(super) enum Entry {
    /// A client admitted: a connection now open.
    Accepted,
    /// A client closed at accept.
    Refused(CloseReason),
    /// An admitted connection ended after `lifetime`.
    Closed { reason: CloseReason, lifetime: Duration },
}

impl Core {
    /// The ledger: records an accept, a refusal or a close of listener `i` in its counters.
    pub(super) fn record(&self, i: usize, entry: Entry) {
        let metrics = &self.listeners[i].metrics;
        match entry {
            Entry::Accepted => {
                metrics.accepted();
                metrics.active_add(1);
            }
            Entry::Refused(reason) => metrics.refused(reason),
            Entry::Closed { reason, lifetime } => {
                metrics.active_add(-1);
                metrics.closed(reason, lifetime);
                if matches!(reason, CloseReason::UpstreamRefused | CloseReason::ConnectTimeout) {
                    metrics.upstream_connect_error();
                }
            }
        }
    }

    /// Closes both sockets of a connection, logs it once, and frees its slot and timer.
    pub(super) fn close(&mut self, key: usize, reason: CloseReason, failure: Option<IoFailure>) {
        drop(self.close_client(key, reason, failure, None));
    }

    /// [`close`](Self::close), except that the upstream socket is handed back still open, for
    /// the caller to drop: the client's socket is closed at once. Nothing of the connection is
    /// left behind: its key may be reused as soon as this returns.
    ///
    /// The close is a reset where the relay contract requires one (see [`abort_sides`]); `kernel`
    /// is what the kernel said of the sockets just before, if the caller asked.
    pub(super) fn close_client(
        &mut self,
        key: usize,
        reason: CloseReason,
        failure: Option<IoFailure>,
        kernel: Option<[TcpProgress; 2]>,
    ) -> Option<Stream> {
        let mut slot = self.slots.remove(key);
        if self.starved.is_some() {
            // A descriptor is about to be freed: listeners paused for want of one may try again.
            for listener in &mut self.listeners {
                listener.paused_until = None;
            }
        }
        let conn = &mut slot.conn;
        let config = &self.listeners[slot.listener].config;
        let rst = config.idle_close == IdleClose::Rst;
        let abort = abort_sides(conn, reason, kernel, rst);
        let abort = farewell(conn, reason, abort, &mut self.cancels, config);
        for (side, abort) in [Side::Client, Side::Upstream].into_iter().zip(abort) {
            if abort {
                conn.abort(side);
            }
        }
        if let Some(timer) = slot.timer.take() {
            self.wheel.cancel(timer);
        }
        conn.release(&mut self.pool, &mut self.pipes);
        let listener = &self.listeners[slot.listener];
        listener.release(slot.peer.ip(), slot.per_ip_counted);
        let lifetime = slot.accepted.elapsed();
        self.record(slot.listener, Entry::Closed { reason, lifetime });
        let bytes = (conn.bytes_from_client(), conn.bytes_from_upstream());
        let attempts = slot.attempts.as_ref();
        let tried = attempts.map_or(0, |a| a.tried());
        // The address that served the connection: none for a sink, or while still connecting.
        let upstream = attempts.filter(|_| !conn.is_connecting()).and_then(|a| a.current());
        let (id, peer, failure) = (slot.id, slot.peer, failure.as_ref());
        let line = CloseLine { id, peer, lifetime, bytes, reason, failure, tried, upstream };
        line.log(&listener.config.name);
        // Dropping the connection closes the client's descriptor, and dropping the upstream
        // closes the other; closing also removes them from the epoll set (they are never
        // duplicated), so no `deregister` calls: two system calls fewer per close. An event
        // already collected for them carries the old generation and is ignored.
        conn.take_upstream()
    }

    /// A client admitted whose connection failed before it got a slot (every upstream address
    /// failed at once; `tried` of them): accepted and closed in the ledger, and logged.
    pub(super) fn closed_at_once(
        &self,
        i: usize,
        id: u64,
        peer: Peer,
        reason: CloseReason,
        failure: IoFailure,
        tried: usize,
    ) {
        self.record(i, Entry::Accepted);
        self.record(i, Entry::Closed { reason, lifetime: Duration::ZERO });
        let line = CloseLine {
            id,
            peer,
            lifetime: Duration::ZERO,
            bytes: (0, 0),
            reason,
            failure: Some(&failure),
            tried,
            upstream: None,
        };
        line.log(&self.listeners[i].config.name);
    }

    /// Closes every connection (a stop whose drain time is over, or a second stop).
    pub(super) fn close_all(&mut self, reason: CloseReason) {
        self.adopt_some(usize::MAX);
        let keys: Vec<usize> = self.slots.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.close(key, reason, None);
        }
    }
}

/// Which of a closing connection's sockets (`[client, upstream]`) are reset rather than closed
/// with FIN: a reset is passed on as a reset; an error resets both; a close on a timer resets
/// both with `idle_close = "rst"`; a close the daemon decides on resets a peer whose bytes are
/// undelivered (held by the daemon or unacknowledged in its socket; `kernel` says which, or is
/// asked now). An orderly end closes both with FIN.
fn abort_sides(conn: &Conn, reason: CloseReason, kernel: Option<[TcpProgress; 2]>, rst: bool) -> [bool; 2] {
    match reason {
        CloseReason::ClientReset => [false, true],
        CloseReason::UpstreamReset => [true, false],
        CloseReason::Error => [true, true],
        CloseReason::Idle
        | CloseReason::IdleInTransaction
        | CloseReason::SubscriberIdle
        | CloseReason::MaxLifetime
        | CloseReason::HalfCloseTimeout
            if rst =>
        {
            [true, true]
        }
        r if r.is_forced() => {
            let kernel = kernel.or_else(|| conn.kernel_progress());
            [Side::Client, Side::Upstream].map(|side| conn.undelivered_toward(side, kernel.as_ref()))
        }
        _ => [false, false],
    }
}

/// What an observed connection's peers are told as the daemon closes it for `reason` (see
/// `observe::Farewell`: PostgreSQL's FATAL error and Terminate, each at a message boundary and
/// after every byte relayed), and the CancelRequest for a busy session's query, queued to the
/// upstream address that served it. Returns `abort` with any peer that took part of its message
/// only: a cut message ends in a reset.
fn farewell(
    conn: &mut Conn,
    reason: CloseReason,
    abort: [bool; 2],
    cancels: &mut Canceller,
    config: &ListenerConfig,
) -> [bool; 2] {
    let Some(observer) = conn.observed() else { return abort };
    let closing = match reason {
        CloseReason::Idle => Closing::Idle,
        CloseReason::IdleInTransaction => Closing::IdleInTransaction,
        CloseReason::Killed | CloseReason::Shutdown | CloseReason::MaxLifetime => Closing::Administrator,
        _ => return abort,
    };
    let farewell = observer.farewell(closing);
    if let (Some(key), Some(to)) = (farewell.cancel, conn.upstream().and_then(Target::of)) {
        let preamble = config.proxy_protocol.map(|v| proxy_protocol::header_unknown(v).into_boxed_slice());
        cancels.cancel(to, preamble, key, config.connect_timeout);
    }
    let cut = conn.farewell(&farewell, abort);
    [abort[0] || cut[0], abort[1] || cut[1]]
}

/// The one log line per closed connection (fields in the documented order; text or JSON, see
/// `logging`).
struct CloseLine<'a> {
    id: u64,
    peer: Peer,
    lifetime: Duration,
    /// From the client, from the upstream.
    bytes: (u64, u64),
    reason: CloseReason,
    failure: Option<&'a IoFailure>,
    /// Upstream addresses tried, shown when the connect failed.
    tried: usize,
    /// The upstream address connected, for a relay whose connect succeeded.
    upstream: Option<&'a Target>,
}

impl CloseLine<'_> {
    fn log(&self, listener: &str) {
        let CloseLine { id, peer, reason, .. } = self;
        let lifetime_ms = u64::try_from(self.lifetime.as_millis()).unwrap_or(u64::MAX);
        let (bytes_from_client, bytes_from_upstream) = self.bytes;
        let upstream = self.upstream.map(Value::from_display);
        let upstreams_tried = match reason {
            CloseReason::UpstreamRefused | CloseReason::ConnectTimeout => Some(self.tried),
            _ => None,
        };
        let error = self.failure.map(Value::from_display);
        info!(
            id, listener, client:% = peer, reason:% = reason, lifetime_ms, bytes_from_client,
            bytes_from_upstream, upstream, upstreams_tried, error;
            "conn closed"
        );
    }
}
