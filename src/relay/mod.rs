//! Moving bytes one way, from `src` to `dst`: the relay's inner loop.
//!
//! Two paths, one contract (read until `WouldBlock` or the budget, never hold more than one
//! buffer's worth, deliver every byte read or report the failure):
//! - **copy**: `read` into the loop's shared scratch buffer and `write` straight on; only what
//!   `dst` cannot take now is copied into a pooled buffer, which stops further reads until it
//!   drains (backpressure);
//! - **splice**: once a direction reads a full scratch buffer it is a bulk transfer, and while a
//!   pipe is available its bytes go `src` → pipe → `dst` with `splice(2)`, never through user
//!   space. A pipe is held only while it holds bytes, or for the rest of a bulk burst.
//!
//! Once `src` has sent FIN and every byte is delivered, `dst`'s write side is shut down
//! (half-close propagation).
//!
//! Urgent data (`MSG_OOB`): the kernel stops every read at the urgent mark, and `splice` cannot
//! read past it at all. A socket that reported urgent data (`EPOLLPRI`) is read with `recv`
//! only; at the mark its urgent byte is taken with `MSG_OOB` and sent on with `MSG_OOB` after
//! every byte before it, so the receiver sees it where the sender put it, out of band; then the
//! inline read goes on past the mark.
//!
//! A connection with a protocol observer (see [`crate::observe`]) is always copied: the
//! observer is fed each read, in order, before it is written on; its bytes never go through a
//! pipe, where it could not see them.
//!
//! A live upgrade gives a socket and a direction up, and takes them over again, in
//! [`handover`].

mod copy;
mod handover;
mod urgent;

use std::io;
use std::net::Shutdown;

use crate::os::stream::Stream;
use nix::fcntl::{splice, SpliceFFlags};

use crate::buffer::{Buf, Pool};
use crate::observe::Observer;
use crate::os::pipe::{Pipe, PipePool};
use crate::os::sys;
use crate::side::{IoFailure, Side};
use copy::{copy, write_out, Fault};
use urgent::{send_urgent, urgent_mark, urgent_pending, Mark};

/// A splice burst that moved less than this was not bulk after all: back to copying.
const BULK_MIN: usize = 64 * 1024;

/// Shared scratch space, pools and limits for driving connections.
pub struct Io<'a> {
    /// Read buffer reused by every connection.
    pub scratch: &'a mut [u8],
    pub pool: &'a mut Pool,
    pub pipes: &'a mut PipePool,
    /// Reads (or splices) allowed per direction per drive: bounds the work of one iteration.
    pub reads_per_drive: usize,
    /// The other direction has passed its FIN on already (set by the caller per pump).
    pub other_done: bool,
}

/// A socket and the readiness we believe it has: set by events, cleared by `WouldBlock` — or by
/// a short read, see [`Socket::drained_by`].
#[derive(Debug)]
pub struct Socket {
    pub stream: Stream,
    pub readable: bool,
    pub writable: bool,
    /// An event reported the peer's FIN or an error: read on until the end or the error shows.
    pub closing: bool,
    /// An event reported an error (`EPOLLERR`): `SO_ERROR` is checked after the next drive even
    /// if backpressure keeps the socket from being read.
    pub error: bool,
    /// An event reported urgent data (`EPOLLPRI`) whose mark has not been read past yet.
    pub urgent: bool,
    /// The peer reset the connection and `SO_ERROR` has already said so (the upstream connect
    /// completed and was reset at once): the end of its bytes is that reset, not an EOF.
    pub reset: bool,
}

impl Socket {
    pub fn new(stream: Stream) -> Socket {
        Socket {
            stream,
            readable: false,
            writable: false,
            closing: false,
            error: false,
            urgent: false,
            reset: false,
        }
    }

    /// After a read of `n` bytes into a buffer of `capacity`: a short read of a TCP socket means
    /// its receive queue is empty now, and any byte that arrives later raises a new edge, so the
    /// read that would only return `WouldBlock` is skipped (as nginx does) — two system calls
    /// fewer per request and response. Not when an event has reported FIN or an error: that
    /// edge may already be spent, so the loop reads on until it sees the end; nor at an urgent
    /// mark, where a read stops short with bytes still queued behind it.
    pub fn drained_by(&mut self, n: usize, capacity: usize) {
        if n < capacity && !self.closing && !self.urgent {
            self.readable = false;
        }
    }
}

/// One direction of a relay.
#[derive(Debug, Default)]
pub struct Half {
    /// Copied bytes not yet written.
    pending: Option<Buf>,
    /// Spliced bytes not yet written (`pipe.len`), or an empty pipe kept for a bulk burst.
    pipe: Option<Pipe>,
    /// Reads fill the scratch buffer: use splice when a pipe is free.
    bulk: bool,
    /// An urgent byte read at `src`'s mark, to be sent to `dst` with `MSG_OOB` once every byte
    /// before it is delivered, and before any byte after it.
    urgent: Option<u8>,
    /// `src` sent FIN.
    pub read_eof: bool,
    /// We shut down `dst`'s write side after delivering everything.
    pub write_shut: bool,
    /// Bytes read from `src`.
    pub bytes: u64,
}

impl Half {
    /// Both FIN received and passed on.
    pub fn done(&self) -> bool {
        self.read_eof && self.write_shut
    }

    /// Whether bytes are in flight (held in a buffer or a pipe).
    pub fn holds_bytes(&self) -> bool {
        self.pending.is_some() || self.pipe.as_ref().is_some_and(|p| p.len > 0) || self.urgent.is_some()
    }

    /// Queues `bytes` to be written to `dst` before anything read from `src` (a PROXY protocol
    /// header). Call before the first pump.
    pub fn queue(&mut self, bytes: &[u8], pool: &mut Pool) {
        debug_assert!(self.pending.is_none() && self.bytes == 0, "queued after relaying began");
        self.pending = Some(pool.take(bytes));
    }

    /// Gives buffers and pipes back (the connection is closing).
    pub fn release(&mut self, io_pool: &mut Pool, pipes: &mut PipePool) {
        if let Some(buf) = self.pending.take() {
            io_pool.give(buf);
        }
        if let Some(pipe) = self.pipe.take() {
            pipes.give(pipe);
        }
    }
}

/// What one [`pump`] did.
pub struct Pumped {
    pub moved: bool,
    pub budget_spent: bool,
    pub failure: Option<IoFailure>,
}

/// The sockets of one direction: where bytes come from (and which side that is), where they
/// go, and the connection's observer, if it has one.
pub struct Way<'a> {
    pub src: &'a mut Socket,
    pub dst: &'a mut Socket,
    pub src_side: Side,
    pub observer: &'a mut Option<Observer>,
}

/// Moves bytes from `src` to `dst` until one of them would block, `src` is finished, or the
/// budget is spent.
pub fn pump(half: &mut Half, way: Way<'_>, io: &mut Io<'_>) -> Pumped {
    let Way { src, dst, src_side, observer } = way;
    let mut out = Pumped { moved: false, budget_spent: false, failure: None };
    let spliced = pump_until_blocked(half, Way { src, dst, src_side, observer }, io, &mut out);
    if spliced > 0 && spliced < BULK_MIN && !src.readable {
        half.bulk = false;
    }
    // An empty pipe goes back to the pool unless the burst goes on.
    if half.pipe.as_ref().is_some_and(|p| p.len == 0) && !(half.bulk && src.readable) {
        io.pipes.give(half.pipe.take().expect("checked"));
    }
    debug_assert!(half.pending.as_ref().is_none_or(|b| !b.is_empty()), "an empty buffer is held");
    out
}

/// What the loop of [`pump`] does after a step of it.
enum Then {
    /// The next step of this turn.
    Go,
    /// The next turn, from the start.
    Again,
    /// Return: a socket would block, `src` is finished, or something failed.
    Stop,
}

/// Records a failure of `op` on `side`; the pump stops.
fn failed(out: &mut Pumped, side: Side, op: &'static str, error: io::Error) -> Then {
    out.failure = Some(IoFailure { side, op, error });
    Then::Stop
}

/// The loop of [`pump`]; returns how many bytes it spliced.
fn pump_until_blocked(half: &mut Half, way: Way<'_>, io: &mut Io<'_>, out: &mut Pumped) -> usize {
    let Way { src, dst, src_side, observer } = way;
    let (mut reads, mut spliced) = (0, 0);
    loop {
        if let Then::Stop = deliver_held(half, dst, src_side.other(), io, out) {
            return spliced;
        }
        if !src.readable {
            return spliced;
        }
        if reads == io.reads_per_drive {
            out.budget_spent = true;
            return spliced;
        }
        reads += 1;
        // Until its mark is passed, a socket with urgent data is read with `recv`, which can
        // read past the mark; `splice` cannot.
        let inline_only = src.urgent;
        if inline_only {
            match take_urgent_mark(half, src, src_side, out) {
                Then::Go => {}
                Then::Again => continue,
                Then::Stop => return spliced,
            }
        }
        let way = Way { src: &mut *src, dst: &mut *dst, src_side, observer: &mut *observer };
        if let Then::Stop = read_once(half, way, io, inline_only, &mut spliced, out) {
            return spliced;
        }
    }
}

/// Delivers what `half` holds before anything more is read: copied bytes, a pipe's bytes, an
/// urgent byte; then, once `src` has sent FIN, the FIN. `Go` when all is delivered and `src`
/// may be read; `Stop` when `dst` is full (backpressure: `src` waits until it drains), after
/// the FIN, or on a failure.
fn deliver_held(
    half: &mut Half,
    dst: &mut Socket,
    dst_side: Side,
    io: &mut Io<'_>,
    out: &mut Pumped,
) -> Then {
    if let Some(buf) = half.pending.as_mut() {
        if let Err(error) = write_out(&mut dst.stream, &mut dst.writable, buf) {
            return failed(out, dst_side, "write", error);
        }
        if !buf.is_empty() {
            return Then::Stop;
        }
        io.pool.give(half.pending.take().expect("checked above"));
    }
    if let Some(pipe) = half.pipe.as_mut() {
        if let Err(error) = splice_out(pipe, dst) {
            return failed(out, dst_side, "splice", error);
        }
        if pipe.len > 0 {
            return Then::Stop;
        }
    }
    if let Some(byte) = half.urgent {
        match send_urgent(dst, byte) {
            Ok(true) => half.urgent = None,
            Ok(false) => return Then::Stop, // the byte waits, and so does src
            Err(error) => return failed(out, dst_side, "send urgent", error),
        }
    }
    if !half.read_eof {
        return Then::Go;
    }
    if !half.write_shut {
        half.write_shut = true;
        // With the other direction finished too, the connection is closed next, and the close
        // sends this FIN after the last byte: no `shutdown` call for it.
        // NotConnected: the peer is already fully gone; the other half will notice.
        let shut = if io.other_done { Ok(()) } else { dst.stream.shutdown(Shutdown::Write) };
        match shut {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => {
                failed(out, dst_side, "shutdown", e);
            }
            _ => {}
        }
    }
    Then::Stop
}

/// At `src`'s urgent mark, takes the urgent byte (`Again`: it is sent on before anything past
/// the mark is read). `Go` to read inline (the mark is ahead, or passed); `Stop` when the mark
/// is not in yet, or on a failure.
fn take_urgent_mark(half: &mut Half, src: &mut Socket, src_side: Side, out: &mut Pumped) -> Then {
    match urgent_mark(src) {
        Ok(Mark::Byte(byte)) => {
            half.urgent = Some(byte);
            half.bytes += 1;
            out.moved = true;
            Then::Again
        }
        Ok(Mark::NotYet) => {
            src.readable = false;
            Then::Stop
        }
        Ok(Mark::Ahead) => Then::Go,
        Ok(Mark::Passed) => {
            src.urgent = false;
            Then::Go
        }
        Err(error) => failed(out, src_side, "read urgent", error),
    }
}

/// One read from `src`, spliced into a pipe (bulk, with no observer and no urgent data to
/// read inline) or copied and written on, and what it came to: bytes, the end, or `WouldBlock`.
fn read_once(
    half: &mut Half,
    way: Way<'_>,
    io: &mut Io<'_>,
    inline_only: bool,
    spliced: &mut usize,
    out: &mut Pumped,
) -> Then {
    let Way { src, dst, src_side, observer } = way;
    if half.bulk && half.pipe.is_none() && !inline_only && observer.is_none() {
        half.pipe = io.pipes.take();
    }
    let read = match half.pipe.as_mut().filter(|_| !inline_only) {
        Some(pipe) => splice_in(src, pipe).inspect(|&n| *spliced += n).map_err(Fault::Read),
        None => copy(half, Way { src: &mut *src, dst: &mut *dst, src_side, observer }, io),
    };
    match read {
        // `splice` returns 0 at an urgent mark once the peer has sent FIN: not the end.
        Ok(0) if half.pipe.is_some() && !inline_only && sys::at_urgent_mark(&src.stream).unwrap_or(false) => {
            src.urgent = true;
        }
        Ok(0) if src.reset => return failed(out, src_side, "read", io::ErrorKind::ConnectionReset.into()),
        Ok(0) => half.read_eof = true,
        Ok(n) => {
            half.bytes += n as u64;
            out.moved = true;
        }
        Err(Fault::Read(e)) if e.kind() == io::ErrorKind::WouldBlock => {
            src.readable = false;
            if src.urgent && !urgent_pending(src) {
                src.urgent = false; // the event's urgent data was already read past
            }
        }
        Err(Fault::Read(e)) if e.kind() == io::ErrorKind::Interrupted => {}
        Err(Fault::Read(error)) => return failed(out, src_side, "read", error),
        Err(Fault::Write(error)) => return failed(out, src_side.other(), "write", error),
    }
    Then::Go
}

/// Splices from a socket into an empty pipe. `WouldBlock` then means the socket has no data.
fn splice_in(src: &mut Socket, pipe: &mut Pipe) -> io::Result<usize> {
    debug_assert_eq!(pipe.len, 0, "splice into a pipe that holds bytes");
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    let n = splice(&src.stream, None, &pipe.write, None, pipe.capacity, flags)?;
    pipe.len = n;
    Ok(n)
}

/// Splices the pipe's bytes to `dst` until it is empty or `dst` would block.
fn splice_out(pipe: &mut Pipe, dst: &mut Socket) -> io::Result<()> {
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    while pipe.len > 0 && dst.writable {
        match splice(&pipe.read, None, &dst.stream, None, pipe.len, flags) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => pipe.len -= n,
            Err(nix::errno::Errno::EAGAIN) => dst.writable = false,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
