//! What the daemon itself says in PostgreSQL's protocol: the FATAL ErrorResponse a closed
//! session's client reads, exactly as PostgreSQL writes it (`send_message_to_frontend` in
//! `elog.c`: `S` and `V` severity, `C` SQLSTATE, `M` message, each a C string, then a zero;
//! the source-location fields it adds are left out, the error not coming from a line of its
//! source), the Terminate its server reads, and the CancelRequest that stops a busy session's
//! query, sent on a connection of its own.

use std::sync::LazyLock;

/// The startup packet's code for a CancelRequest (1234.5678).
pub(super) const CANCEL_REQUEST: u32 = 80_877_102;
/// Terminate: `X` and its length.
pub(super) const TERMINATE: &[u8] = b"X\0\0\0\x04";

/// The key BackendKeyData gave, which a CancelRequest names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendKey {
    pub pid: u32,
    pub secret: u32,
}

impl BackendKey {
    /// The CancelRequest packet for this backend: length 16, the code, the process id, the key.
    pub fn cancel_request(&self) -> [u8; 16] {
        let mut packet = [0u8; 16];
        packet[..4].copy_from_slice(&16u32.to_be_bytes());
        packet[4..8].copy_from_slice(&CANCEL_REQUEST.to_be_bytes());
        packet[8..12].copy_from_slice(&self.pid.to_be_bytes());
        packet[12..].copy_from_slice(&self.secret.to_be_bytes());
        packet
    }
}

/// An ErrorResponse as PostgreSQL writes a FATAL error: `S` and `V` severity, `C` SQLSTATE,
/// `M` message, each a C string, then the terminating zero.
pub fn fatal(sqlstate: &str, message: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(32 + message.len());
    for (field, text) in [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', sqlstate), (b'M', message)] {
        body.push(field);
        body.extend_from_slice(text.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut message = vec![b'E'];
    message.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    message.extend_from_slice(&body);
    message
}

pub(super) static IDLE_SESSION: LazyLock<Vec<u8>> =
    LazyLock::new(|| fatal("57P05", "terminating connection due to idle-session timeout"));
pub(super) static IDLE_IN_TRANSACTION: LazyLock<Vec<u8>> =
    LazyLock::new(|| fatal("25P03", "terminating connection due to idle-in-transaction timeout"));
pub(super) static ADMINISTRATOR: LazyLock<Vec<u8>> =
    LazyLock::new(|| fatal("57P01", "terminating connection due to administrator command"));
