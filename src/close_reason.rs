//! Why a connection was closed ([`CloseReason`]): the names the close log line and the metrics
//! show, and what each reason tells of who ended it. Over [`crate::side`] only, so that the
//! relay, the listeners, the metrics and the worker can all use it without importing each other.

use std::fmt;

use crate::side::{is_reset, IoFailure, Side};

/// Why a connection was closed. The names are part of the log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// No byte moved in either direction for `idle_timeout` (on a protocol listener: idle as
    /// the service means it, for `idle_timeout`).
    Idle,
    /// PostgreSQL: idle in a transaction for `idle_in_transaction_timeout`.
    IdleInTransaction,
    /// Redis: a subscriber with nothing moving for `subscriber_idle_timeout`.
    SubscriberIdle,
    /// The client finished (FIN), and everything it sent was delivered.
    ClientClosed,
    /// The upstream finished (FIN) first, and everything it sent was delivered.
    UpstreamClosed,
    /// The upstream connection failed.
    UpstreamRefused,
    /// The upstream did not answer within `connect_timeout`.
    ConnectTimeout,
    /// The client reset its connection (or made our writes to it fail): the upstream is reset.
    ClientReset,
    /// The upstream reset its connection (or made our writes to it fail): the client is reset.
    UpstreamReset,
    /// Another I/O error on either socket: both are reset.
    Error,
    /// The daemon stopped before the connection ended.
    Shutdown,
    /// `max_lifetime` after accept, whatever the traffic.
    MaxLifetime,
    /// An operator closed it (`idlereaperctl kill`).
    Killed,
    /// One side sent FIN and the other did not finish within `half_close_timeout`.
    HalfCloseTimeout,
    /// Refused at accept: the listener was at `max_connections`.
    Limit,
    /// Refused at accept: the client's address was at `max_connections_per_ip`.
    PerIpLimit,
    /// Refused at accept by `allow` / `deny`.
    Denied,
    /// Refused at accept: the process was out of descriptors.
    OutOfDescriptors,
}

impl CloseReason {
    /// The name used in log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Idle => "idle",
            CloseReason::IdleInTransaction => "idle_in_transaction",
            CloseReason::SubscriberIdle => "subscriber_idle",
            CloseReason::ClientClosed => "client_closed",
            CloseReason::UpstreamClosed => "upstream_closed",
            CloseReason::UpstreamRefused => "upstream_refused",
            CloseReason::ConnectTimeout => "connect_timeout",
            CloseReason::ClientReset => "client_reset",
            CloseReason::UpstreamReset => "upstream_reset",
            CloseReason::Error => "error",
            CloseReason::Shutdown => "shutdown",
            CloseReason::MaxLifetime => "max_lifetime",
            CloseReason::Killed => "killed",
            CloseReason::HalfCloseTimeout => "half_close_timeout",
            CloseReason::Limit => "limit",
            CloseReason::PerIpLimit => "per_ip_limit",
            CloseReason::Denied => "denied",
            CloseReason::OutOfDescriptors => "out_of_descriptors",
        }
    }

    pub fn closed_by(side: Side) -> CloseReason {
        match side {
            Side::Client => CloseReason::ClientClosed,
            Side::Upstream => CloseReason::UpstreamClosed,
        }
    }

    /// The reason for closing after `failure`: a reset (or a write refused because the peer is
    /// gone) names its side; anything else is an error.
    pub fn of_failure(failure: &IoFailure) -> CloseReason {
        match (is_reset(&failure.error), failure.side) {
            (true, Side::Client) => CloseReason::ClientReset,
            (true, Side::Upstream) => CloseReason::UpstreamReset,
            (false, _) => CloseReason::Error,
        }
    }

    /// An inactivity timer ran out (one of the idle reasons).
    pub fn is_idle(self) -> bool {
        matches!(self, CloseReason::Idle | CloseReason::IdleInTransaction | CloseReason::SubscriberIdle)
    }

    /// A close the daemon decides on (a timer, a stop): each peer is reset if bytes for it are
    /// undelivered, and sent FIN otherwise.
    pub fn is_forced(self) -> bool {
        matches!(
            self,
            CloseReason::Idle
                | CloseReason::IdleInTransaction
                | CloseReason::SubscriberIdle
                | CloseReason::MaxLifetime
                | CloseReason::HalfCloseTimeout
                | CloseReason::Shutdown
                | CloseReason::Killed
        )
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
