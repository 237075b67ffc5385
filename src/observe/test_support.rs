//! What the observers' tests share: a small seeded generator, and feeding a byte stream in
//! pieces cut at random points (the relay reads whatever the kernel has, so a message may
//! arrive in any number of pieces).

/// xorshift64*: reproducible from its seed, good enough to pick actions and cut points.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(super) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True `percent` times in a hundred.
    pub(super) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub(super) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// A length of up to `max`, mostly small.
    pub(super) fn size(&mut self, max: usize) -> usize {
        match self.below(10) {
            0..=5 => self.below(16) as usize,
            6..=8 => self.below(300) as usize,
            _ => self.below(max as u64 + 1) as usize,
        }
    }
}

/// Calls `feed` with `bytes` cut into pieces: one byte at a time, whole, or random lengths.
pub(super) fn in_pieces(rng: &mut Rng, bytes: &[u8], mut feed: impl FnMut(&[u8])) {
    let mut rest = bytes;
    let style = rng.below(4);
    while !rest.is_empty() {
        let n = match style {
            0 => 1,
            1 => rest.len(),
            _ => 1 + rng.below(rest.len().min(70) as u64) as usize,
        };
        let (piece, after) = rest.split_at(n.min(rest.len()));
        feed(piece);
        rest = after;
    }
}

/// `bytes` damaged: a few bytes changed, inserted or removed.
pub(super) fn damaged(rng: &mut Rng, bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() as u64 + 1) as usize;
        match rng.below(3) {
            0 if at < out.len() => out[at] = rng.next() as u8,
            1 => {
                let n = rng.size(40);
                let junk = rng.bytes(n);
                out.splice(at..at, junk);
            }
            _ if at < out.len() => {
                let n = (rng.below(8) as usize).min(out.len() - at);
                out.drain(at..at + n);
            }
            _ => {}
        }
    }
    out
}
