//! The copy path of the relay: one `read` into the loop's shared scratch buffer, shown to the
//! connection's observer, and written straight on; only what `dst` cannot take now is kept, in a
//! pooled buffer, which stops further reads until it drains (backpressure).

use std::io::{self, Read, Write};

use super::{Half, Io, Way};
use crate::buffer::Buf;
use crate::os::stream::Stream;
use crate::side::Side;

/// Which end of a copy failed.
pub(super) enum Fault {
    Read(io::Error),
    Write(io::Error),
}

/// One `read` into the scratch buffer, shown to the observer, and as much of it written on as
/// `dst` takes; the rest is kept in a pooled buffer. A full read marks the direction as bulk.
pub(super) fn copy(half: &mut Half, way: Way<'_>, io: &mut Io<'_>) -> Result<usize, Fault> {
    let Way { src, dst, src_side, observer } = way;
    let n = src.stream.read(io.scratch).map_err(Fault::Read)?;
    if n == io.scratch.len() {
        half.bulk = true;
    }
    if let Some(observer) = observer.as_mut() {
        match src_side {
            Side::Client => observer.client_sent(&io.scratch[..n]),
            Side::Upstream => observer.server_sent(&io.scratch[..n]),
        }
    }
    src.drained_by(n, io.scratch.len());
    let mut rest = BorrowedBuf { bytes: &io.scratch[..n] };
    write_out(&mut dst.stream, &mut dst.writable, &mut rest).map_err(Fault::Write)?;
    if !rest.bytes.is_empty() {
        half.pending = Some(io.pool.take(rest.bytes));
    }
    Ok(n)
}

/// Bytes waiting to be written: a pooled buffer or a slice of the scratch buffer.
pub(super) trait Outgoing {
    fn pending(&self) -> &[u8];
    fn consume(&mut self, n: usize);
}

impl Outgoing for Buf {
    fn pending(&self) -> &[u8] {
        Buf::pending(self)
    }
    fn consume(&mut self, n: usize) {
        Buf::consume(self, n)
    }
}

struct BorrowedBuf<'a> {
    bytes: &'a [u8],
}

impl Outgoing for BorrowedBuf<'_> {
    fn pending(&self) -> &[u8] {
        self.bytes
    }
    fn consume(&mut self, n: usize) {
        self.bytes = &self.bytes[n..];
    }
}

/// Writes until `buf` is empty or `dst` would block (then clears `writable`).
pub(super) fn write_out(dst: &mut Stream, writable: &mut bool, buf: &mut impl Outgoing) -> io::Result<()> {
    while !buf.pending().is_empty() && *writable {
        match dst.write(buf.pending()) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf.consume(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => *writable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
