//! Kernel pipes for `splice(2)`: bulk bytes go socket → pipe → socket without being copied
//! through user space. A pipe costs two descriptors, so a connection holds one only while a bulk
//! transfer is in flight; pipes come from a bounded [`PipePool`], and when none is free the relay
//! copies as usual.

use std::io;
use std::os::fd::{IntoRawFd, OwnedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg, OFlag};

/// Requested pipe capacity: four 64 KiB reads per splice round trip. Linux may grant less
/// (`pipe-user-pages-soft`), which only costs more system calls.
const PIPE_SIZE: i32 = 256 * 1024;

/// A pipe and how many bytes it holds.
#[derive(Debug)]
pub struct Pipe {
    pub(crate) read: OwnedFd,
    pub(crate) write: OwnedFd,
    /// Bytes spliced in and not yet spliced out.
    pub(crate) len: usize,
    /// What the kernel granted.
    pub(crate) capacity: usize,
}

/// A free list of empty pipes, with a cap on how many exist at once.
#[derive(Debug)]
pub struct PipePool {
    free: Vec<Pipe>,
    open: usize,
    max: usize,
}

impl PipePool {
    /// A pool that opens at most `max` pipes (0 disables splicing).
    pub fn new(max: usize) -> PipePool {
        PipePool { free: Vec::new(), open: 0, max }
    }

    /// An empty pipe, or `None` when the cap is reached or the system refuses one (out of
    /// descriptors): the caller then copies.
    pub fn take(&mut self) -> Option<Pipe> {
        if let Some(pipe) = self.free.pop() {
            return Some(pipe);
        }
        if self.open >= self.max {
            return None;
        }
        let pipe = open_pipe().ok()?;
        self.open += 1;
        Some(pipe)
    }

    /// Returns a pipe: kept if empty, closed if it still holds bytes (its connection is gone).
    pub fn give(&mut self, pipe: Pipe) {
        if pipe.len == 0 {
            self.free.push(pipe);
        } else {
            self.open -= 1;
        }
    }

    /// Gives up a pipe that holds a connection's bytes, open, by its numbers (a live upgrade:
    /// its contents stay in the kernel): read end, write end, length, capacity.
    pub fn freeze(&mut self, pipe: Pipe) -> (RawFd, RawFd, usize, usize) {
        self.open = self.open.saturating_sub(1);
        (pipe.read.into_raw_fd(), pipe.write.into_raw_fd(), pipe.len, pipe.capacity)
    }

    /// A pipe inherited from the image before a live upgrade, with the bytes it holds.
    pub fn thaw(&mut self, read: OwnedFd, write: OwnedFd, len: usize, capacity: usize) -> Pipe {
        self.open += 1;
        Pipe { read, write, len, capacity }
    }

    /// Pipes currently open (free or in use).
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.open
    }
}

fn open_pipe() -> io::Result<Pipe> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    let capacity = fcntl(&write, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE))
        .or_else(|_| fcntl(&write, FcntlArg::F_GETPIPE_SZ))
        .map_or(64 * 1024, |n| n.max(4096) as usize);
    Ok(Pipe { read, write, len: 0, capacity })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_caps_open_pipes_and_reuses_empty_ones() {
        let mut pool = PipePool::new(1);
        let pipe = pool.take().expect("a pipe");
        assert!(pipe.capacity >= 4096);
        assert!(pool.take().is_none(), "capped at one");
        pool.give(pipe);
        let mut again = pool.take().expect("the same pipe again");
        assert_eq!(pool.open(), 1);
        again.len = 10; // still holding bytes: closed, not kept
        pool.give(again);
        assert_eq!(pool.open(), 0);
    }
}
