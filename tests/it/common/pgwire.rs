//! A PostgreSQL client that speaks the protocol by hand ([`PgWire`]), for the tests that must
//! see the bytes a client gets: an ErrorResponse's fields before EOF, when the EOF comes, a
//! notification. Trust authentication only (as the test clusters use).

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use super::{Endpoint, Stream};

/// One message from the server: its type byte and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgMessage {
    pub kind: u8,
    pub body: Vec<u8>,
}

impl PgMessage {
    /// An ErrorResponse's or NoticeResponse's fields, in order: (code, text).
    pub fn fields(&self) -> Vec<(u8, String)> {
        let mut out = Vec::new();
        let mut rest = &self.body[..];
        while let Some((&code, after)) = rest.split_first() {
            if code == 0 {
                break;
            }
            let end = after.iter().position(|&b| b == 0).unwrap_or(after.len());
            out.push((code, String::from_utf8_lossy(&after[..end]).into_owned()));
            rest = after.get(end + 1..).unwrap_or_default();
        }
        out
    }

    /// The value of field `code` (`b'C'`: the SQLSTATE, `b'M'`: the message).
    pub fn field(&self, code: u8) -> Option<String> {
        self.fields().into_iter().find(|(c, _)| *c == code).map(|(_, text)| text)
    }
}

/// A message of type `kind` with `body`, as the frontend writes it.
pub fn pg_message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// A simple Query message.
pub fn pg_query(sql: &str) -> Vec<u8> {
    pg_message(b'Q', format!("{sql}\0").as_bytes())
}

/// A connection, established: the startup done, the first ReadyForQuery read.
pub struct PgWire {
    pub stream: Stream,
    /// What the startup said, up to and including the first ReadyForQuery.
    pub startup: Vec<PgMessage>,
}

impl PgWire {
    /// Connects to `to` as `postgres` to `database`, with startup `options` (a `-c` list, as
    /// libpq's `options`), and reads up to the first ReadyForQuery; panics on an error.
    pub fn connect(to: &Endpoint, database: &str, options: &str) -> PgWire {
        let mut stream = to.connect();
        let mut params = format!("user\0postgres\0database\0{database}\0");
        if !options.is_empty() {
            params += &format!("options\0{options}\0");
        }
        params.push('\0');
        let mut packet = (params.len() as u32 + 8).to_be_bytes().to_vec();
        packet.extend_from_slice(&196_608u32.to_be_bytes());
        packet.extend_from_slice(params.as_bytes());
        stream.write_all(&packet).expect("send the startup packet");
        let mut pg = PgWire { stream, startup: Vec::new() };
        let startup = pg.until_ready().expect("the startup's answer");
        assert!(startup.iter().all(|m| m.kind != b'E'), "startup refused: {startup:?}");
        pg.startup = startup;
        pg
    }

    /// Reads one message; `None` at EOF (or a reset) between messages.
    pub fn read(&mut self) -> io::Result<Option<PgMessage>> {
        let mut head = [0u8; 5];
        match self.stream.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset) => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0; len.saturating_sub(4)];
        self.stream.read_exact(&mut body)?;
        Ok(Some(PgMessage { kind: head[0], body }))
    }

    /// Reads up to and including the next ReadyForQuery.
    pub fn until_ready(&mut self) -> io::Result<Vec<PgMessage>> {
        let mut got = Vec::new();
        for _ in 0..1_000_000 {
            let Some(m) = self.read()? else {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("closed after {got:?}")));
            };
            let ready = m.kind == b'Z';
            got.push(m);
            if ready {
                return Ok(got);
            }
        }
        Err(io::Error::other("no ReadyForQuery in a million messages"))
    }

    /// Runs `sql` (a simple Query) and returns what came up to its ReadyForQuery.
    pub fn query(&mut self, sql: &str) -> Vec<PgMessage> {
        self.stream.write_all(&pg_query(sql)).expect("send a query");
        self.until_ready().unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The transaction status of the last ReadyForQuery in `messages`.
    pub fn status(messages: &[PgMessage]) -> Option<u8> {
        messages.iter().rev().find(|m| m.kind == b'Z').and_then(|m| m.body.first().copied())
    }

    /// Reads every message until the server closes (within `timeout`), and when it did.
    pub fn until_closed(&mut self, timeout: Duration) -> (Vec<PgMessage>, Instant) {
        let start = Instant::now();
        let mut got = Vec::new();
        for _ in 0..1_000_000 {
            let left = timeout.saturating_sub(start.elapsed()).max(Duration::from_millis(1));
            self.stream.set_timeouts(left);
            match self.read() {
                Ok(Some(m)) => got.push(m),
                Ok(None) => return (got, Instant::now()),
                Err(e) => panic!("still open {:?} on ({e}); got {got:?}", start.elapsed()),
            }
        }
        panic!("a million messages and no close: {got:?}");
    }
}
