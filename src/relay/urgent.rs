//! Urgent data (`MSG_OOB`) on the relay's path: where a socket that reported it stands before
//! a read (before its mark, at it, or past it), taking the urgent byte out of band, and sending
//! it on out of band. See the parent module for how the pump uses them.

use std::io;
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{recv, send, MsgFlags};

use super::Socket;
use crate::os::sys;

/// Where a socket that reported urgent data stands, before a read.
pub(super) enum Mark {
    /// The mark is further on: an inline read stops short at it.
    Ahead,
    /// At the mark: its urgent byte, taken out of band.
    Byte(u8),
    /// At the mark, but the urgent byte has not arrived yet.
    NotYet,
    /// At the mark with its byte already taken: the next inline read goes past it.
    Passed,
}

pub(super) fn urgent_mark(src: &Socket) -> io::Result<Mark> {
    if !sys::at_urgent_mark(&src.stream)? {
        return Ok(Mark::Ahead);
    }
    let mut byte = [0u8];
    loop {
        return match recv(src.stream.as_raw_fd(), &mut byte, MsgFlags::MSG_OOB) {
            Ok(1) => Ok(Mark::Byte(byte[0])),
            Ok(_) | Err(Errno::EINVAL) => Ok(Mark::Passed),
            Err(Errno::EAGAIN) => Ok(Mark::NotYet),
            Err(Errno::EINTR) => continue,
            Err(e) => Err(e.into()),
        };
    }
}

/// Whether urgent data is still pending on a socket whose inline queue is empty (a peek).
pub(super) fn urgent_pending(src: &Socket) -> bool {
    let mut byte = [0u8];
    let flags = MsgFlags::MSG_OOB | MsgFlags::MSG_PEEK;
    !matches!(recv(src.stream.as_raw_fd(), &mut byte, flags), Err(Errno::EINVAL))
}

/// Sends one urgent byte; `Ok(false)` when `dst` is full.
pub(super) fn send_urgent(dst: &mut Socket, byte: u8) -> io::Result<bool> {
    while dst.writable {
        match send(dst.stream.as_raw_fd(), &[byte], MsgFlags::MSG_OOB | MsgFlags::MSG_NOSIGNAL) {
            Ok(1) => return Ok(true),
            Ok(_) => return Err(io::ErrorKind::WriteZero.into()),
            Err(Errno::EAGAIN) => dst.writable = false,
            Err(Errno::EINTR) => {}
            // A socket without urgent data (a Unix socket on a kernel without AF_UNIX OOB):
            // the byte goes inline, where its place in the stream is kept.
            Err(Errno::EOPNOTSUPP) => match send(dst.stream.as_raw_fd(), &[byte], MsgFlags::MSG_NOSIGNAL) {
                Ok(1) => return Ok(true),
                Ok(_) => return Err(io::ErrorKind::WriteZero.into()),
                Err(Errno::EAGAIN) => dst.writable = false,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            },
            Err(e) => return Err(e.into()),
        }
    }
    Ok(false)
}
