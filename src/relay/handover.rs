//! A live upgrade, the relay's side: a socket and a direction given up with everything they
//! hold ([`Socket::freeze`], [`Half::freeze`]), and taken over again in the new image.

use std::io;

use super::{Half, Socket};
use crate::buffer::Pool;
use crate::handover::state::{HalfState, SocketState};
use crate::os::pipe::PipePool;
use crate::os::stream::Stream;
use crate::os::sys;

impl Socket {
    /// Gives up the socket for a live upgrade: its number and the readiness believed.
    pub fn freeze(self) -> SocketState {
        let unix = matches!(self.stream, Stream::Unix(_));
        let bits = [self.readable, self.writable, self.closing, self.error, self.urgent, self.reset];
        let flags = bits.iter().enumerate().fold(0u8, |acc, (i, &b)| acc | (u8::from(b) << i));
        SocketState { fd: self.stream.into_raw(), unix, flags }
    }

    /// The socket a live upgrade handed over, as the old image left it.
    pub fn thaw(state: &SocketState) -> io::Result<Socket> {
        let bit = |i: u8| state.flags & (1 << i) != 0;
        Ok(Socket {
            stream: Stream::from_fd(sys::adopt(state.fd)?, state.unix),
            readable: bit(0),
            writable: bit(1),
            closing: bit(2),
            error: bit(3),
            urgent: bit(4),
            reset: bit(5),
        })
    }
}

impl Half {
    /// Gives up this direction for a live upgrade: the bytes it holds (a pipe's stay in the
    /// kernel), its flags and count.
    pub fn freeze(&mut self, pool: &mut Pool, pipes: &mut PipePool) -> HalfState {
        let pending = self.pending.take().map(|buf| {
            let bytes = buf.pending().to_vec();
            pool.give(buf);
            bytes
        });
        HalfState {
            pending,
            pipe: self.pipe.take().map(|pipe| pipes.freeze(pipe)),
            bulk: self.bulk,
            urgent: self.urgent,
            read_eof: self.read_eof,
            write_shut: self.write_shut,
            bytes: self.bytes,
        }
    }

    /// The direction a live upgrade handed over, holding the same bytes.
    pub fn thaw(state: &HalfState, pool: &mut Pool, pipes: &mut PipePool) -> io::Result<Half> {
        // Checked before any descriptor is adopted: the only failure after that is a
        // descriptor that is not open, which leaves nothing to close.
        if let Some(bytes) = state.pending.as_deref().filter(|b| b.is_empty() || b.len() > pool.buffer_size())
        {
            let msg = format!("held bytes: {} do not fit a buffer of {}", bytes.len(), pool.buffer_size());
            return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
        }
        let pipe = match state.pipe {
            Some((read, write, len, capacity)) => {
                let (read, write) = (sys::adopt(read)?, sys::adopt(write)?);
                Some(pipes.thaw(read, write, len, capacity))
            }
            None => None,
        };
        Ok(Half {
            pending: state.pending.as_deref().map(|bytes| pool.take(bytes)),
            pipe,
            bulk: state.bulk,
            urgent: state.urgent,
            read_eof: state.read_eof,
            write_shut: state.write_shut,
            bytes: state.bytes,
        })
    }
}
