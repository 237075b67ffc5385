//! Reproducible bytes: a xorshift stream to send, and to check what arrives against, in pieces
//! of any length (no copy of the whole transfer is kept).

use std::io::{self, Read, Write};

/// xorshift64* — enough randomness to catch reordered, dropped or duplicated bytes.
#[derive(Debug, Clone)]
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Prng {
        Prng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// The byte stream of a [`Prng`], generated (or checked) in pieces of any length.
pub struct ByteStream {
    rng: Prng,
    block: Vec<u8>,
    pos: usize,
    /// Bytes produced or checked so far.
    pub offset: u64,
}

const BLOCK: usize = 64 * 1024;

impl ByteStream {
    pub fn new(seed: u64) -> ByteStream {
        ByteStream { rng: Prng::new(seed), block: vec![0; BLOCK], pos: BLOCK, offset: 0 }
    }

    fn refill(&mut self) {
        for chunk in self.block.chunks_exact_mut(8) {
            chunk.copy_from_slice(&self.rng.next_u64().to_le_bytes());
        }
        self.pos = 0;
    }

    /// The next `n` bytes, at most one block at a time, handed to `f`.
    fn next_pieces(&mut self, mut n: usize, mut f: impl FnMut(&[u8]) -> bool) -> bool {
        while n > 0 {
            if self.pos == BLOCK {
                self.refill();
            }
            let take = n.min(BLOCK - self.pos);
            let piece = &self.block[self.pos..self.pos + take];
            if !f(piece) {
                return false;
            }
            self.pos += take;
            self.offset += take as u64;
            n -= take;
        }
        true
    }

    /// Fills `out` with the next bytes of the stream.
    pub fn fill(&mut self, out: &mut [u8]) {
        let mut at = 0;
        self.next_pieces(out.len(), |piece| {
            out[at..at + piece.len()].copy_from_slice(piece);
            at += piece.len();
            true
        });
    }

    /// Checks that `got` is the next part of the stream; on a mismatch, returns the stream
    /// offset of the first differing byte.
    pub fn check(&mut self, got: &[u8]) -> Result<(), u64> {
        let mut at = 0;
        let base = self.offset;
        let mut bad = None;
        self.next_pieces(got.len(), |piece| {
            let mine = &got[at..at + piece.len()];
            if mine != piece {
                let i = mine.iter().zip(piece).position(|(a, b)| a != b).unwrap();
                bad = Some(base + (at + i) as u64);
                return false;
            }
            at += piece.len();
            true
        });
        bad.map_or(Ok(()), Err)
    }
}

/// Reads at full speed (64 KiB reads), for [`recv_stream`].
pub fn full_speed(_received: u64) -> usize {
    BLOCK
}

/// Writes `total` bytes of the stream `seed` to `w` in 64 KiB writes.
pub fn send_stream(w: &mut impl Write, seed: u64, total: u64) -> io::Result<()> {
    let mut stream = ByteStream::new(seed);
    let mut buf = vec![0u8; BLOCK];
    let mut left = total;
    while left > 0 {
        let n = left.min(BLOCK as u64) as usize;
        stream.fill(&mut buf[..n]);
        w.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// Reads from `r` until EOF, checking every byte against the stream `seed` and that exactly
/// `total` bytes arrive. Before every read, `pace` gets the number of bytes received so far and
/// returns how many to read next (it may sleep first, to play a slow reader).
pub fn recv_stream(
    r: &mut impl Read,
    seed: u64,
    total: u64,
    mut pace: impl FnMut(u64) -> usize,
) -> Result<(), String> {
    let mut expected = ByteStream::new(seed);
    let mut buf = vec![0u8; BLOCK];
    loop {
        let want = pace(expected.offset).clamp(1, BLOCK);
        let n = match r.read(&mut buf[..want]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read failed after {} of {total} bytes: {e}", expected.offset)),
        };
        if n == 0 {
            return if expected.offset == total {
                Ok(())
            } else {
                Err(format!("EOF after {} of {total} bytes", expected.offset))
            };
        }
        if expected.offset + n as u64 > total {
            return Err(format!("more than {total} bytes arrived ({})", expected.offset + n as u64));
        }
        expected.check(&buf[..n]).map_err(|at| format!("byte {at} of {total} differs from what was sent"))?;
    }
}
