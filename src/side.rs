//! Which socket of a connection ([`Side`]), and an I/O failure on one ([`IoFailure`]) with the
//! operation it happened on. A leaf: it imports nothing of the crate, so every layer can use it.

use std::fmt;
use std::io;

/// Which socket of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
}

impl Side {
    /// The other socket of the pair.
    pub fn other(self) -> Side {
        match self {
            Side::Client => Side::Upstream,
            Side::Upstream => Side::Client,
        }
    }

    /// The position of this side in a `[client, upstream]` pair.
    pub fn index(self) -> usize {
        match self {
            Side::Client => 0,
            Side::Upstream => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Upstream => "upstream",
        }
    }
}

/// An I/O failure, with the socket and operation it happened on, for the close log line.
#[derive(Debug)]
pub struct IoFailure {
    pub side: Side,
    pub op: &'static str,
    pub error: io::Error,
}

impl fmt::Display for IoFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.side.name(), self.op, self.error)
    }
}

/// Whether an I/O error means the peer reset the connection (or is gone, refusing our writes).
pub fn is_reset(error: &io::Error) -> bool {
    use io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    matches!(error.kind(), ConnectionReset | BrokenPipe | ConnectionAborted)
}
