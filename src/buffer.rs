//! Relay buffers. A connection holds a buffer only while bytes it has read are waiting for the
//! other side to accept them; an idle connection holds none. Buffers come from a [`Pool`] that
//! keeps a bounded number of free ones for reuse.

/// Bytes read from one side and not yet written to the other: `data[start..end]`.
#[derive(Debug)]
pub struct Buf {
    data: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Buf {
    /// The bytes still to be written.
    pub fn pending(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// Marks `n` pending bytes as written.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.end - self.start, "consume {n} of {}", self.end - self.start);
        self.start += n;
    }

    /// True when every byte has been written.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Replaces the contents with `bytes` (at most the buffer's capacity).
    fn fill(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.data.len());
        debug_assert_eq!(n, bytes.len(), "buffer of {} cannot hold {}", self.data.len(), bytes.len());
        self.data[..n].copy_from_slice(&bytes[..n]);
        self.start = 0;
        self.end = n;
    }
}

/// A free list of equally sized buffers.
#[derive(Debug)]
pub struct Pool {
    size: usize,
    max_free: usize,
    free: Vec<Box<[u8]>>,
    outstanding: usize,
}

impl Pool {
    /// A pool of `size`-byte buffers that keeps at most `max_free` of them when they come back.
    pub fn new(size: usize, max_free: usize) -> Pool {
        Pool { size, max_free, free: Vec::new(), outstanding: 0 }
    }

    /// Buffers handed out and not yet returned.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// A buffer holding a copy of `bytes` (which must fit in one buffer).
    pub fn take(&mut self, bytes: &[u8]) -> Buf {
        let data = self.free.pop().unwrap_or_else(|| vec![0; self.size].into_boxed_slice());
        self.outstanding += 1;
        let mut buf = Buf { data, start: 0, end: 0 };
        buf.fill(bytes);
        buf
    }

    /// The size of every buffer: the most one can hold.
    pub fn buffer_size(&self) -> usize {
        self.size
    }

    /// Returns a buffer; it is kept for reuse or freed.
    pub fn give(&mut self, buf: Buf) {
        debug_assert!(self.outstanding > 0, "more buffers returned than taken");
        self.outstanding = self.outstanding.saturating_sub(1);
        if self.free.len() < self.max_free {
            self.free.push(buf.data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_holds_what_it_was_given_until_consumed() {
        let mut pool = Pool::new(8, 1);
        let mut buf = pool.take(b"hello");
        assert_eq!(buf.pending(), b"hello");
        buf.consume(2);
        assert_eq!(buf.pending(), b"llo");
        buf.consume(3);
        assert!(buf.is_empty());
        assert_eq!(pool.outstanding(), 1);
        pool.give(buf);
        assert_eq!(pool.outstanding(), 0);
    }

    #[test]
    fn the_pool_keeps_at_most_max_free() {
        let mut pool = Pool::new(4, 1);
        let a = pool.take(b"a");
        let b = pool.take(b"b");
        pool.give(a);
        pool.give(b);
        assert_eq!(pool.free.len(), 1);
        let c = pool.take(b"cd");
        assert_eq!(c.pending(), b"cd");
    }
}
