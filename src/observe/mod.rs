//! Protocol observers: what "idle" means to the service behind a relay listener with
//! `protocol = "postgres"` or `"redis"`.
//!
//! An observer is fed the bytes the relay already moves, per direction and in the order it
//! reads them ([`Observer::client_sent`], [`Observer::server_sent`]), and keeps a small `Copy`
//! state per connection from which the loop reads the connection's [`State`] and the idle
//! [`Timer`] that state runs. It never sees a socket, a timer or the clock, never changes,
//! delays or buffers a byte, and never allocates: it follows the protocol's framing (a type and
//! a length for PostgreSQL, RESP's types and lengths for Redis) and reads only the few bytes it
//! needs (a status byte, a command's name), counting past everything else. Its state is bounded
//! by construction, whatever the peers send; bytes it cannot follow make the connection
//! [`State::Opaque`] for the rest of its life, which the loop treats as plain byte idleness.
//!
//! A leaf: it imports nothing of the crate. [`postgres`] and [`redis`] are the two protocols'
//! sessions; [`pg_frame`] reads PostgreSQL's framing and [`pg_messages`] writes what the daemon
//! says in it; [`resp_commands`] and [`resp_replies`] read RESP's each way, over the number
//! lines of [`resp_numbers`]; [`matcher`] recognises a few words as their bytes go by.

mod matcher;
mod pg_frame;
mod pg_messages;
pub mod postgres;
pub mod redis;
mod resp_commands;
mod resp_numbers;
mod resp_replies;
#[cfg(test)]
mod test_support;

/// What a listener's connections speak, as far as idleness goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// Bytes only: idle means nothing moved (no observer).
    #[default]
    Tcp,
    Postgres,
    Redis,
}

impl Protocol {
    /// The name the configuration, the logs and `show conns` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Postgres => "postgres",
            Protocol::Redis => "redis",
        }
    }
}

/// Where a connection stands, as its service sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// PostgreSQL: before the first ReadyForQuery (startup, authentication).
    Starting,
    /// Waiting for the client: PostgreSQL idle outside a transaction, Redis with no reply owed.
    Idle,
    /// PostgreSQL: idle inside a transaction (ReadyForQuery `T` or `E`), or an extended-query
    /// batch sent without its Sync.
    IdleInTransaction,
    /// A reply is owed (a query, a blocking command), or COPY is under way: never idle.
    Busy,
    /// Redis: subscribed to a channel, a pattern or a shard channel.
    Subscribed,
    /// Redis: MONITOR.
    Monitoring,
    /// The observer no longer follows the connection: bytes decide, as for `tcp`.
    Opaque(Cause),
}

impl State {
    /// The name `show conns` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Idle => "idle",
            State::IdleInTransaction => "idle_in_transaction",
            State::Busy => "busy",
            State::Subscribed => "subscribed",
            State::Monitoring => "monitoring",
            State::Opaque(_) => "opaque",
        }
    }
}

/// Why an observer stopped following a connection (`idlereaper_protocol_opaque_total`'s
/// `cause`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// PostgreSQL: the server accepted an SSLRequest, or the client opened with TLS directly.
    Tls,
    /// PostgreSQL: the server accepted a GSSENCRequest.
    Gss,
    /// PostgreSQL: the session entered replication (CopyBoth).
    Replication,
    /// Redis: `CLIENT REPLY OFF` or `SKIP` (replies no longer follow commands).
    ReplyOff,
    /// Bytes the observer cannot follow.
    Unparsable,
}

impl Cause {
    /// Every cause, in the order the metrics show them; [`Cause::index`] is the position.
    pub const ALL: [Cause; 5] =
        [Cause::Tls, Cause::Gss, Cause::Replication, Cause::ReplyOff, Cause::Unparsable];

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Tls => "tls",
            Cause::Gss => "gss",
            Cause::Replication => "replication",
            Cause::ReplyOff => "reply_off",
            Cause::Unparsable => "unparsable",
        }
    }

    pub fn index(self) -> usize {
        match self {
            Cause::Tls => 0,
            Cause::Gss => 1,
            Cause::Replication => 2,
            Cause::ReplyOff => 3,
            Cause::Unparsable => 4,
        }
    }

    fn from_index(i: u8) -> Option<Cause> {
        Cause::ALL.get(usize::from(i)).copied()
    }
}

/// Which inactivity timer a state runs (the listener's configuration gives its length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// `idle_timeout`.
    Idle,
    /// `idle_in_transaction_timeout` (PostgreSQL).
    IdleInTransaction,
    /// `subscriber_idle_timeout` (Redis; unset: none).
    SubscriberIdle,
    /// None: the connection is never closed as idle (`max_lifetime`, `kill` and a stop still
    /// apply).
    Never,
}

impl Timer {
    /// The name `show conns` and the close line use.
    pub fn as_str(self) -> &'static str {
        match self {
            Timer::Idle => "idle",
            Timer::IdleInTransaction => "idle_in_transaction",
            Timer::SubscriberIdle => "subscriber_idle",
            Timer::Never => "none",
        }
    }
}

impl State {
    /// The timer this state runs.
    pub fn timer(self) -> Timer {
        match self {
            State::Starting | State::Idle | State::Opaque(_) => Timer::Idle,
            State::IdleInTransaction => Timer::IdleInTransaction,
            State::Subscribed => Timer::SubscriberIdle,
            State::Busy | State::Monitoring => Timer::Never,
        }
    }
}

/// Why the daemon closes a connection it observes, for what the client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// Its idle timer ran out.
    Idle,
    /// Its idle-in-transaction timer ran out.
    IdleInTransaction,
    /// The operator's doing: `idlereaperctl kill`, a stop, `max_lifetime`.
    Administrator,
}

/// What to send before closing an observed connection, each only where its stream stands at a
/// message boundary: bytes for the client (after everything relayed to it), bytes for the
/// server (likewise), and the key to cancel the query the server is running, on a connection
/// of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Farewell {
    pub to_client: Option<&'static [u8]>,
    pub to_server: Option<&'static [u8]>,
    pub cancel: Option<postgres::BackendKey>,
}

/// One connection's observer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observer {
    Postgres(postgres::Session),
    Redis(redis::Session),
}

impl Observer {
    /// A connection just accepted; `None` for `tcp`.
    pub fn new(protocol: Protocol) -> Option<Observer> {
        match protocol {
            Protocol::Tcp => None,
            Protocol::Postgres => Some(Observer::Postgres(postgres::Session::new())),
            Protocol::Redis => Some(Observer::Redis(redis::Session::new())),
        }
    }

    pub fn protocol(&self) -> Protocol {
        match self {
            Observer::Postgres(_) => Protocol::Postgres,
            Observer::Redis(_) => Protocol::Redis,
        }
    }

    /// Bytes the client sent, in order.
    pub fn client_sent(&mut self, bytes: &[u8]) {
        match self {
            Observer::Postgres(s) => s.client_sent(bytes),
            Observer::Redis(s) => s.client_sent(bytes),
        }
    }

    /// Bytes the server sent, in order.
    pub fn server_sent(&mut self, bytes: &[u8]) {
        match self {
            Observer::Postgres(s) => s.server_sent(bytes),
            Observer::Redis(s) => s.server_sent(bytes),
        }
    }

    pub fn state(&self) -> State {
        match self {
            Observer::Postgres(s) => s.state(),
            Observer::Redis(s) => s.state(),
        }
    }

    /// What to send before the daemon closes the connection (Redis: nothing, as Redis itself
    /// sends nothing to a client it drops).
    pub fn farewell(&self, closing: Closing) -> Farewell {
        match self {
            Observer::Postgres(s) => s.farewell(closing),
            Observer::Redis(_) => Farewell::default(),
        }
    }

    /// The state as bytes, for a live upgrade to carry: a protocol byte, then the session's.
    pub fn to_bytes(self) -> Vec<u8> {
        match self {
            Observer::Postgres(s) => [&[1][..], &s.to_bytes()].concat(),
            Observer::Redis(s) => [&[2][..], &s.to_bytes()].concat(),
        }
    }

    /// What [`Observer::to_bytes`] wrote. Bytes this binary cannot read give an observer of
    /// the protocol that no longer follows the connection (byte idleness, the safe side);
    /// `None` if not even the protocol is known.
    pub fn from_bytes(bytes: &[u8]) -> Option<Observer> {
        let (&protocol, rest) = bytes.split_first()?;
        Some(match protocol {
            1 => Observer::Postgres(postgres::Session::from_bytes(rest)),
            2 => Observer::Redis(redis::Session::from_bytes(rest)),
            _ => return None,
        })
    }
}

/// A fixed-size little-endian record of a session's fields, for [`Observer::to_bytes`].
struct Record {
    bytes: Vec<u8>,
}

impl Record {
    fn new() -> Record {
        Record { bytes: Vec::with_capacity(64) }
    }

    fn u8(mut self, v: u8) -> Record {
        self.bytes.push(v);
        self
    }

    fn u16(mut self, v: u16) -> Record {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn u32(mut self, v: u32) -> Record {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn u64(mut self, v: u64) -> Record {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }
}

/// Reads a [`Record`] back; every read past the end fails.
struct Fields<'a> {
    bytes: &'a [u8],
}

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.bytes.split_first_chunk::<N>()?;
        self.bytes = rest;
        Some(*head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|[b]| b)
    }

    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }

    /// Every byte was read.
    fn done(&self) -> Option<()> {
        self.bytes.is_empty().then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observer_is_small_and_plain_data() {
        // The whole per-connection cost of observing: held inline in every connection.
        assert_eq!(std::mem::size_of::<postgres::Session>(), 40);
        assert_eq!(std::mem::size_of::<redis::Session>(), 60);
        assert!(std::mem::size_of::<Option<Observer>>() <= 64, "{}", std::mem::size_of::<Option<Observer>>());
    }

    #[test]
    fn every_state_runs_its_timer() {
        assert_eq!(State::Starting.timer(), Timer::Idle);
        assert_eq!(State::Opaque(Cause::Tls).timer(), Timer::Idle);
        assert_eq!(State::IdleInTransaction.timer(), Timer::IdleInTransaction);
        assert_eq!(State::Subscribed.timer(), Timer::SubscriberIdle);
        assert_eq!(State::Busy.timer(), Timer::Never);
        assert_eq!(State::Monitoring.timer(), Timer::Never);
    }

    #[test]
    fn causes_have_their_places() {
        for (i, cause) in Cause::ALL.iter().enumerate() {
            assert_eq!(cause.index(), i);
            assert_eq!(Cause::from_index(i as u8), Some(*cause));
        }
    }

    #[test]
    fn a_state_crosses_an_upgrade_as_bytes() {
        for protocol in [Protocol::Postgres, Protocol::Redis] {
            let mut o = Observer::new(protocol).unwrap();
            o.client_sent(b"\0\0\0\x08\x04\xd2\x16\x2f");
            let back = Observer::from_bytes(&o.to_bytes()).unwrap();
            assert_eq!(back, o);
            // Cut short: the protocol is kept, the connection no longer followed.
            let bytes = o.to_bytes();
            let cut = Observer::from_bytes(&bytes[..bytes.len() - 1]).unwrap();
            assert_eq!((cut.protocol(), cut.state()), (protocol, State::Opaque(Cause::Unparsable)));
        }
        assert_eq!(Observer::from_bytes(&[9, 0]), None);
        assert_eq!(Observer::new(Protocol::Tcp), None);
    }
}
