//! One end of a scripted TCP conversation, and what it observed: the bytes it received (checked
//! against the stream the other end sent) and how its connection ended — a clean EOF, an abort
//! (a reset seen on a read or a write), its own close or reset, or a stall. For tests that run
//! the same conversation over two paths and compare what the ends saw.
//!
//! A peer reads on its own thread and writes on a second one (both ends may send megabytes at
//! once), so an abort may show on either: the first read or write after a reset gets the error
//! and the next read on that socket may then return EOF. Only the pair (read end, write error)
//! says whether the peer saw an abort.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use super::{close_with_reset, ByteStream};

/// Read and write timeout of a peer's socket: a step of a healthy conversation never waits this
/// long (its longest pause is a few hundred milliseconds), so reaching it means the path stalled.
pub const PEER_IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a peer's whole conversation may run.
pub const PEER_DEADLINE: Duration = Duration::from_secs(30);
/// Size of a full-speed read.
const READ_SIZE: usize = 64 * 1024;

/// What a peer sends: `total` bytes of the stream `seed`, in writes of `chunk` bytes, sleeping
/// `pause` after each of the first `pauses` writes; and, at most once, one urgent byte.
#[derive(Debug, Clone)]
pub struct Sending {
    pub seed: u64,
    pub total: u64,
    pub chunk: usize,
    pub pause: Duration,
    pub pauses: u32,
    pub urgent: Option<Urgent>,
}

/// One byte sent with `MSG_OOB` after the first `at` inline bytes (`at <= total`). A reader
/// without `SO_OOBINLINE` never sees it in its inline stream.
#[derive(Debug, Clone, Copy)]
pub struct Urgent {
    pub at: u64,
    pub byte: u8,
}

/// How a peer reads.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// 64 KiB reads.
    Fast,
    /// Reads of `chunk` bytes with `pause` after each of the first `pauses` reads, then fast.
    Slow { chunk: usize, pause: Duration, pauses: u32 },
    /// Reads nothing for this long, then fast.
    Stalled(Duration),
}

/// How a peer ends its side of the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Sends everything then shuts down writing (FIN), while reading to the end; then closes.
    HalfClose,
    /// Sends everything while reading to the end, then closes: its FIN follows the other's.
    CloseAfterEof,
    /// Reads to the end first, then sends everything and closes.
    ReplyAfterEof,
    /// Sends everything (no FIN) while reading; once it has received this many bytes (or its
    /// stream ended) and sent everything, closes with a reset.
    ResetAfter(u64),
    /// Closes (FIN) right after connecting; sends and reads nothing.
    CloseAtOnce,
    /// Resets right after connecting; sends and reads nothing.
    ResetAtOnce,
}

impl Ending {
    /// The peer closes or resets on its own: what it sees afterwards is its own doing.
    pub fn ends_by_itself(self) -> bool {
        matches!(self, Ending::ResetAfter(_) | Ending::CloseAtOnce | Ending::ResetAtOnce)
    }
}

/// Everything one end does.
#[derive(Debug, Clone)]
pub struct PeerPlan {
    pub send: Sending,
    pub pace: Pace,
    pub ending: Ending,
}

/// How a peer's reading ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadEnd {
    Eof,
    Error(io::ErrorKind),
    /// The peer stopped reading by its plan (or after more reads than bytes were sent).
    Stopped,
    /// There was no connection: the connect failed, or no connection came to be accepted.
    NoConnection,
}

/// What a peer observed.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Inline bytes received.
    pub received: u64,
    /// How the received bytes differ from the stream that was sent, if they do.
    pub corrupt: Option<String>,
    pub read_end: ReadEnd,
    pub write_error: Option<io::ErrorKind>,
    /// The peer closed or reset by its plan.
    pub ended_itself: bool,
}

/// [`Observed`] in one word, for comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// EOF on the read side and no error anywhere.
    Clean,
    /// A reset seen on a read or a write (ECONNRESET, EPIPE, ...).
    Aborted,
    /// The peer closed or reset itself; what it saw is not comparable.
    EndedItself,
    /// A timeout or an unexpected error: the path stalled or misbehaved.
    Stuck,
    NoConnection,
}

/// The errors by which a peer learns that the connection was reset.
fn is_abort(kind: io::ErrorKind) -> bool {
    use io::ErrorKind::*;
    matches!(kind, ConnectionReset | ConnectionAborted | BrokenPipe | NotConnected)
}

impl Observed {
    /// A peer that never had a connection.
    pub fn no_connection() -> Observed {
        Observed {
            received: 0,
            corrupt: None,
            read_end: ReadEnd::NoConnection,
            write_error: None,
            ended_itself: false,
        }
    }

    /// A peer whose connect failed with `error`. A connection reset before the connecting
    /// thread saw it established fails the connect (std's `connect_timeout` reports the
    /// `SO_ERROR` of a hung-up socket): that peer saw an abort, not a missing connection.
    pub fn connect_failed(error: &io::Error) -> Observed {
        match is_abort(error.kind()) {
            true => Observed { read_end: ReadEnd::Error(error.kind()), ..Observed::no_connection() },
            false => Observed::no_connection(),
        }
    }

    pub fn outcome(&self) -> Outcome {
        let read_error = match self.read_end {
            ReadEnd::NoConnection => return Outcome::NoConnection,
            ReadEnd::Error(kind) => Some(kind),
            _ => None,
        };
        let errors = || read_error.into_iter().chain(self.write_error);
        if errors().any(|k| !is_abort(k)) {
            Outcome::Stuck
        } else if self.ended_itself {
            Outcome::EndedItself
        } else if errors().next().is_some() {
            Outcome::Aborted
        } else if self.read_end == ReadEnd::Eof {
            Outcome::Clean
        } else {
            Outcome::Stuck
        }
    }
}

impl fmt::Display for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {} bytes, read end {:?}", self.outcome(), self.received, self.read_end)?;
        if let Some(kind) = self.write_error {
            write!(f, ", write error {kind:?}")?;
        }
        if let Some(corrupt) = &self.corrupt {
            write!(f, ", CORRUPT: {corrupt}")?;
        }
        Ok(())
    }
}

/// Plays `plan` on `stream`, expecting to receive what `incoming` sends; returns what it saw.
pub fn run_peer(stream: TcpStream, plan: &PeerPlan, incoming: &Sending) -> Observed {
    stream.set_read_timeout(Some(PEER_IO_TIMEOUT)).expect("set a read timeout");
    stream.set_write_timeout(Some(PEER_IO_TIMEOUT)).expect("set a write timeout");
    let deadline = Instant::now() + PEER_DEADLINE;
    let mut seen = Observed {
        received: 0,
        corrupt: None,
        read_end: ReadEnd::Stopped,
        write_error: None,
        ended_itself: plan.ending.ends_by_itself(),
    };
    let mut stream = stream;
    match plan.ending {
        Ending::CloseAtOnce => drop(stream),
        Ending::ResetAtOnce => close_with_reset(stream),
        Ending::ReplyAfterEof => {
            receive(&mut stream, plan.pace, incoming, None, deadline, &mut seen);
            if seen.read_end == ReadEnd::Eof {
                seen.write_error = send(&mut stream, &plan.send, deadline).err().map(|e| e.kind());
            }
        }
        ending => {
            let mut writer = stream.try_clone().expect("clone a peer socket");
            let sending = plan.send.clone();
            let writing = thread::spawn(move || -> io::Result<()> {
                send(&mut writer, &sending, deadline)?;
                if ending == Ending::HalfClose {
                    writer.shutdown(Shutdown::Write)?;
                }
                Ok(())
            });
            let stop_after = match ending {
                Ending::ResetAfter(k) => Some(k),
                _ => None,
            };
            receive(&mut stream, plan.pace, incoming, stop_after, deadline, &mut seen);
            seen.write_error = writing.join().expect("the writer thread").err().map(|e| e.kind());
            if stop_after.is_some() {
                close_with_reset(stream);
            }
        }
    }
    seen
}

/// Sends `plan` (the urgent byte included) on `stream`.
fn send(stream: &mut TcpStream, plan: &Sending, deadline: Instant) -> io::Result<()> {
    let chunk = plan.chunk.max(1);
    let mut bytes = ByteStream::new(plan.seed);
    let mut buf = vec![0u8; chunk];
    let mut urgent = plan.urgent;
    let mut writes = 0u32;
    // Every round writes at least one byte or returns; one more round for the urgent byte.
    let rounds = plan.total / chunk as u64 + 3;
    for _ in 0..rounds {
        if let Some(u) = urgent.filter(|u| u.at == bytes.offset) {
            if socket2::SockRef::from(&*stream).send_out_of_band(&[u.byte])? != 1 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            urgent = None;
        }
        if bytes.offset == plan.total {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let limit = urgent.map_or(plan.total, |u| u.at);
        let n = (limit - bytes.offset).min(chunk as u64) as usize;
        bytes.fill(&mut buf[..n]);
        stream.write_all(&buf[..n])?;
        writes += 1;
        if writes <= plan.pauses {
            thread::sleep(plan.pause);
        }
    }
    Err(io::Error::other("the send loop ran out of rounds"))
}

/// Reads (at `pace`) until EOF, an error, or — with `stop_after` — that many bytes; records
/// the bytes (checked against `incoming`) and the end in `seen`.
fn receive(
    stream: &mut TcpStream,
    pace: Pace,
    incoming: &Sending,
    stop_after: Option<u64>,
    deadline: Instant,
    seen: &mut Observed,
) {
    let mut expected = ByteStream::new(incoming.seed);
    let mut buf = vec![0u8; READ_SIZE];
    if let Pace::Stalled(stall) = pace {
        thread::sleep(stall);
    }
    // Every read that does not end the loop returns at least one byte.
    let max_reads = incoming.total + 2;
    for reads in 0..max_reads {
        if stop_after.is_some_and(|k| seen.received >= k) {
            seen.read_end = ReadEnd::Stopped;
            return;
        }
        if Instant::now() >= deadline {
            seen.read_end = ReadEnd::Error(io::ErrorKind::TimedOut);
            return;
        }
        let (want, pause) = match pace {
            Pace::Slow { chunk, pause, pauses } if reads < u64::from(pauses) => {
                (chunk.clamp(1, READ_SIZE), pause)
            }
            _ => (READ_SIZE, Duration::ZERO),
        };
        let n = match stream.read(&mut buf[..want]) {
            Ok(0) => {
                seen.read_end = ReadEnd::Eof;
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                seen.read_end = ReadEnd::Error(e.kind());
                return;
            }
        };
        if seen.corrupt.is_none() {
            let arrived = seen.received + n as u64;
            if arrived > incoming.total {
                seen.corrupt = Some(format!("{arrived} bytes arrived, {} were sent", incoming.total));
            } else if let Err(at) = expected.check(&buf[..n]) {
                seen.corrupt = Some(format!("byte {at} differs from what was sent"));
            }
        }
        seen.received += n as u64;
        thread::sleep(pause);
    }
    seen.corrupt.get_or_insert_with(|| format!("more reads than the {} bytes sent", incoming.total));
    seen.read_end = ReadEnd::Stopped;
}
