//! PostgreSQL, protocol 3.0 (and 3.2's startup code): where a session stands, from the message
//! framing alone.
//!
//! Every message after the startup packet is a type byte and a 4-byte length that counts
//! itself ([`Frame`]); the startup packet has the length only. Bodies are counted past, never
//! kept: the only body bytes read are the startup packet's code, ReadyForQuery's transaction
//! status and BackendKeyData's key. The rules, as `postgres.c` and the protocol's
//! documentation give them:
//! - **Replies owed.** A simple Query, a FunctionCall and a Sync each get exactly one
//!   ReadyForQuery; pipelined ones are counted. Extended-query messages (Parse, Bind, Describe,
//!   Execute, Close, Flush) sent since the last Sync make an open batch.
//! - **COPY.** CopyInResponse and CopyOutResponse start COPY; it is busy until the server's
//!   CommandComplete, ErrorResponse or ReadyForQuery. During COPY FROM STDIN the server ignores
//!   Sync and Flush, so a Sync that libpq sent with the Execute of the COPY (it sends another
//!   after CopyDone) gets no ReadyForQuery and is not counted. Pipelining anything else into a
//!   COPY is not followed (the server fails the COPY on it): opaque.
//! - **Opaque** for the rest of the connection: TLS (an SSLRequest answered `S`, or a client
//!   that opens with a TLS record), GSSAPI encryption (a GSSENCRequest answered `G`),
//!   replication (CopyBothResponse), and anything unexpected: an unknown message type, a
//!   length no message can have, a ReadyForQuery nobody waited for.
//!
//! The state: before the first ReadyForQuery, starting; replies owed or COPY under way, busy;
//! an open batch or a transaction status `T`/`E`, idle in transaction; otherwise idle.
//!
//! What a closed session is told ([`Session::farewell`]) is what PostgreSQL itself writes when
//! it ends a session for the same reason (`ProcessInterrupts` in `postgres.c`, the fields in
//! `send_message_to_frontend`'s order in `elog.c`): an ErrorResponse with severity FATAL, the
//! SQLSTATE and the message; the server gets Terminate, so that its backend rolls back and
//! exits as for a client that said goodbye. The source-location fields PostgreSQL adds are left
//! out: the error does not come from a line of its source.

use super::pg_frame::Frame;
pub use super::pg_messages::BackendKey;
use super::pg_messages::{ADMINISTRATOR, CANCEL_REQUEST, IDLE_IN_TRANSACTION, IDLE_SESSION, TERMINATE};
use super::{Cause, Closing, Farewell, Fields, Record, State};

/// The startup packet's code for an SSLRequest (1234.5679) and a GSSENCRequest (1234.5680)
/// (a CancelRequest's is in [`super::pg_messages`]).
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
/// `MAX_STARTUP_PACKET_LENGTH` in PostgreSQL: a longer startup packet is refused.
const MAX_STARTUP_PACKET: u32 = 10_000;
/// The first byte of a TLS record (a handshake): a client that skips the SSLRequest
/// (PostgreSQL 17's `sslnegotiation=direct`).
const TLS_HANDSHAKE: u8 = 0x16;

/// Where the session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The client's startup packet is expected (untyped).
    Startup,
    /// The client sent an SSLRequest (or a GSSENCRequest): the server's one-byte answer is next.
    SslAsked,
    GssAsked,
    /// The connection carries a CancelRequest: nothing more is said on it.
    Cancel,
    /// After the startup packet, before the first ReadyForQuery.
    Auth,
    Ready,
    Opaque(Cause),
}

/// Flags of [`Session::flags`].
const UNSYNCED: u8 = 1;
const COPY_IN: u8 = 2;
const COPY_OUT: u8 = 4;
/// The last reply owed was a Sync's (not a Query's or a FunctionCall's).
const LAST_SYNC: u8 = 8;
const HAS_KEY: u8 = 16;

/// One PostgreSQL connection, as the observer follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    client: Frame,
    server: Frame,
    phase: Phase,
    /// The last ReadyForQuery's transaction status: `I`, `T` or `E`.
    status: u8,
    flags: u8,
    /// ReadyForQuery messages owed.
    owed: u32,
    /// The startup packet's code while it arrives; then BackendKeyData's process id and key.
    word: u64,
}

impl Default for Session {
    fn default() -> Session {
        Session::new()
    }
}

impl Session {
    pub fn new() -> Session {
        Session {
            client: Frame::default(),
            server: Frame::default(),
            phase: Phase::Startup,
            status: b'I',
            flags: 0,
            owed: 0,
            word: 0,
        }
    }

    fn lose(&mut self, cause: Cause) {
        self.phase = Phase::Opaque(cause);
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    fn set(&mut self, flag: u8, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }

    /// Bytes the client sent.
    pub fn client_sent(&mut self, mut bytes: &[u8]) {
        while let Some(&first) = bytes.first() {
            let typed = match self.phase {
                Phase::Opaque(_) => return,
                Phase::Startup if self.client.at_boundary() && first == TLS_HANDSHAKE => {
                    return self.lose(Cause::Tls)
                }
                Phase::Startup => false,
                // Nothing may follow these until the server has answered (or at all).
                Phase::SslAsked | Phase::GssAsked | Phase::Cancel => return self.lose(Cause::Unparsable),
                Phase::Auth | Phase::Ready => true,
            };
            let lengths = if typed { (4, i32::MAX as u32) } else { (8, MAX_STARTUP_PACKET) };
            let Ok(chunk) = self.client.read(&mut bytes, typed, lengths) else {
                return self.lose(Cause::Unparsable);
            };
            if !typed {
                // The code: the body's first four bytes.
                for &b in chunk.body.iter().take(4usize.saturating_sub(chunk.at as usize)) {
                    self.word = (self.word << 8) | u64::from(b);
                }
            }
            if chunk.end {
                match typed {
                    true => self.client_message(self.client.kind),
                    false => self.startup_packet(self.client.len),
                }
            }
        }
    }

    /// The startup packet ended (`len`: its body's length).
    fn startup_packet(&mut self, len: u32) {
        let code = self.word as u32;
        self.phase = match (code, len) {
            (SSL_REQUEST, 4) => Phase::SslAsked,
            (GSSENC_REQUEST, 4) => Phase::GssAsked,
            (CANCEL_REQUEST, 12) => Phase::Cancel,
            (code, _) if code >> 16 == 3 => Phase::Auth,
            _ => Phase::Opaque(Cause::Unparsable),
        };
    }

    /// One more ReadyForQuery owed.
    fn owe(&mut self, sync: bool) {
        match self.owed.checked_add(1) {
            Some(owed) => self.owed = owed,
            None => return self.lose(Cause::Unparsable),
        }
        self.set(LAST_SYNC, sync);
    }

    /// A whole message from the client, of type `kind`.
    fn client_message(&mut self, kind: u8) {
        if self.has(COPY_IN) {
            match kind {
                b'd' | b'S' | b'H' => {} // data; Sync and Flush are ignored during COPY
                b'c' | b'f' => self.set(COPY_IN, false),
                _ => self.lose(Cause::Unparsable),
            }
            return;
        }
        match kind {
            b'Q' | b'F' => self.owe(false),
            b'S' => {
                self.set(UNSYNCED, false);
                self.owe(true);
            }
            b'P' | b'B' | b'D' | b'E' | b'C' | b'H' => self.set(UNSYNCED, true),
            // COPY data after the server failed a COPY (dropped), Terminate, authentication.
            b'd' | b'c' | b'f' | b'X' | b'p' => {}
            _ => self.lose(Cause::Unparsable),
        }
    }

    /// Bytes the server sent.
    pub fn server_sent(&mut self, mut bytes: &[u8]) {
        while let Some(&first) = bytes.first() {
            match self.phase {
                Phase::Opaque(_) => return,
                Phase::Startup | Phase::Cancel => return self.lose(Cause::Unparsable),
                Phase::SslAsked | Phase::GssAsked => {
                    let (yes, cause) = match self.phase {
                        Phase::SslAsked => (b'S', Cause::Tls),
                        _ => (b'G', Cause::Gss),
                    };
                    match first {
                        b if b == yes => return self.lose(cause),
                        b'N' => {
                            self.phase = Phase::Startup;
                            bytes = &bytes[1..];
                        }
                        // A server that does not know the request answers with an error.
                        b'E' => self.phase = Phase::Auth,
                        _ => return self.lose(Cause::Unparsable),
                    }
                    continue;
                }
                Phase::Auth | Phase::Ready => {}
            }
            let Ok(chunk) = self.server.read(&mut bytes, true, (4, i32::MAX as u32)) else {
                return self.lose(Cause::Unparsable);
            };
            match self.server.kind {
                b'Z' if chunk.at == 0 => {
                    if let Some(&status) = chunk.body.first() {
                        self.status = status;
                    }
                }
                b'K' => {
                    for &b in chunk.body.iter().take(8usize.saturating_sub(chunk.at as usize)) {
                        self.word = (self.word << 8) | u64::from(b);
                    }
                }
                _ => {}
            }
            if chunk.end {
                self.server_message(self.server.kind, self.server.len);
            }
        }
    }

    /// A whole message from the server, of type `kind` and body length `len`.
    fn server_message(&mut self, kind: u8, len: u32) {
        match kind {
            b'Z' => self.ready_for_query(len),
            b'G' => self.copy_in_response(),
            b'H' => self.set(COPY_OUT, true),
            b'W' => self.lose(Cause::Replication),
            b'c' | b'C' => self.set(COPY_OUT, false),
            b'E' => self.flags &= !(COPY_IN | COPY_OUT),
            b'K' => self.set(HAS_KEY, len == 8),
            // Authentication, parameters, notices, notifications, and a query's results.
            b'R' | b'S' | b'N' | b'A' | b'v' | b'1' | b'2' | b'3' | b'D' | b'I' | b'n' | b's' | b't'
            | b'T' | b'd' | b'V' => {}
            _ => self.lose(Cause::Unparsable),
        }
    }

    fn ready_for_query(&mut self, len: u32) {
        if len != 1 || !matches!(self.status, b'I' | b'T' | b'E') {
            return self.lose(Cause::Unparsable);
        }
        self.flags &= !(COPY_IN | COPY_OUT);
        match self.phase {
            // The end of the startup: no query's reply (a query pipelined meanwhile is still owed).
            Phase::Auth => self.phase = Phase::Ready,
            _ if self.owed == 0 => self.lose(Cause::Unparsable),
            _ => self.owed -= 1,
        }
    }

    /// CopyInResponse: the server reads COPY data from now on. It answers the oldest command
    /// not yet answered; only two cases are followed: a batch still open (its Execute), or one
    /// command owed and nothing after it (a Query; or a batch whose Sync the server will now
    /// ignore).
    fn copy_in_response(&mut self) {
        match (self.owed, self.has(UNSYNCED)) {
            (0, true) => {}
            (1, false) => {
                if self.has(LAST_SYNC) {
                    self.owed = 0;
                }
            }
            _ => return self.lose(Cause::Unparsable),
        }
        self.set(COPY_IN, true);
    }

    pub fn state(&self) -> State {
        match self.phase {
            Phase::Opaque(cause) => State::Opaque(cause),
            Phase::Ready => {
                if self.owed > 0 || self.has(COPY_IN) || self.has(COPY_OUT) {
                    State::Busy
                } else if self.has(UNSYNCED) || self.status != b'I' {
                    State::IdleInTransaction
                } else {
                    State::Idle
                }
            }
            _ => State::Starting,
        }
    }

    /// The key BackendKeyData gave (protocol 3.0's; 3.2's longer keys are not kept).
    pub fn backend_key(&self) -> Option<BackendKey> {
        self.has(HAS_KEY).then_some(BackendKey { pid: (self.word >> 32) as u32, secret: self.word as u32 })
    }

    /// What to send as the session is closed for `closing`: only once it is established (the
    /// first ReadyForQuery came), each where its stream is between two messages; the key to
    /// cancel what a busy session's server runs.
    pub fn farewell(&self, closing: Closing) -> Farewell {
        if self.phase != Phase::Ready {
            return Farewell::default();
        }
        let message: &'static [u8] = match closing {
            Closing::Idle => &IDLE_SESSION,
            Closing::IdleInTransaction => &IDLE_IN_TRANSACTION,
            Closing::Administrator => &ADMINISTRATOR,
        };
        Farewell {
            to_client: self.server.at_boundary().then_some(message),
            to_server: (self.client.at_boundary() && !self.has(COPY_IN)).then_some(TERMINATE),
            cancel: self.backend_key().filter(|_| self.state() == State::Busy),
        }
    }

    /// The state as bytes (a live upgrade).
    pub(super) fn to_bytes(self) -> Vec<u8> {
        let (phase, cause) = match self.phase {
            Phase::Startup => (0, 0),
            Phase::SslAsked => (1, 0),
            Phase::GssAsked => (2, 0),
            Phase::Cancel => (3, 0),
            Phase::Auth => (4, 0),
            Phase::Ready => (5, 0),
            Phase::Opaque(cause) => (6, cause.index() as u8),
        };
        let mut r = Record::new().u8(phase).u8(cause).u8(self.status).u8(self.flags).u32(self.owed);
        r = r.u64(self.word);
        for f in [&self.client, &self.server] {
            r = r.u8(f.header).u8(f.kind).u32(f.len).u32(f.left);
        }
        r.bytes
    }

    /// What [`Session::to_bytes`] wrote; anything else is a session no longer followed.
    pub(super) fn from_bytes(bytes: &[u8]) -> Session {
        Session::read(bytes).unwrap_or_else(|| {
            let mut s = Session::new();
            s.lose(Cause::Unparsable);
            s
        })
    }

    fn read(bytes: &[u8]) -> Option<Session> {
        let mut f = Fields { bytes };
        let (phase, cause) = (f.u8()?, f.u8()?);
        let phase = match phase {
            0 => Phase::Startup,
            1 => Phase::SslAsked,
            2 => Phase::GssAsked,
            3 => Phase::Cancel,
            4 => Phase::Auth,
            5 => Phase::Ready,
            6 => Phase::Opaque(Cause::from_index(cause)?),
            _ => return None,
        };
        let (status, flags, owed, word) = (f.u8()?, f.u8()?, f.u32()?, f.u64()?);
        let mut frame = || -> Option<Frame> {
            let frame = Frame { header: f.u8()?, kind: f.u8()?, len: f.u32()?, left: f.u32()? };
            (frame.header <= 5 && frame.left <= frame.len).then_some(frame)
        };
        let (client, server) = (frame()?, frame()?);
        f.done()?;
        Some(Session { client, server, phase, status, flags, owed, word })
    }
}

#[cfg(test)]
#[path = "postgres_model_tests.rs"]
mod model;
#[cfg(test)]
#[path = "postgres_tests.rs"]
mod tests;
