//! Recognising a word among a few known ones as its bytes go by, without keeping the bytes: a
//! bit per candidate still matching and how many bytes were seen. Three bytes of state, fed a
//! chunk at a time; a word longer than the longest candidate matches nothing.

/// A word being matched against a table of at most 16 candidates. Packed: three bytes where
/// the parsers keep it, not four.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C, packed)]
pub(super) struct Matcher {
    /// Bit `i`: candidate `i` matches every byte seen so far.
    live: u16,
    /// Bytes seen (saturating).
    seen: u8,
}

impl Matcher {
    /// A word about to start, against a table of `n` candidates.
    pub(super) fn start(n: usize) -> Matcher {
        debug_assert!(n <= 16, "{n} candidates");
        Matcher { live: if n >= 16 { u16::MAX } else { (1 << n) - 1 }, seen: 0 }
    }

    /// Nothing can match any more: the rest of the word need not be fed.
    pub(super) fn is_dead(&self) -> bool {
        self.live == 0
    }

    /// The next bytes of the word. `fold` compares ASCII letters regardless of case (the
    /// table is written in upper case then).
    pub(super) fn feed(&mut self, table: &[&[u8]], bytes: &[u8], fold: bool) {
        for &b in bytes {
            if self.live == 0 {
                return;
            }
            let b = if fold { b.to_ascii_uppercase() } else { b };
            let at = usize::from(self.seen);
            let mut bits = self.live;
            while bits != 0 {
                let i = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if table[i].get(at) != Some(&b) {
                    self.live &= !(1 << i);
                }
            }
            self.seen = self.seen.saturating_add(1);
        }
    }

    /// The candidate the whole word is, if any.
    pub(super) fn found(&self, table: &[&[u8]]) -> Option<usize> {
        let mut bits = self.live;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if table[i].len() == usize::from(self.seen) {
                return Some(i);
            }
        }
        None
    }

    /// The matcher's two fields, for a live upgrade.
    pub(super) fn parts(&self) -> (u16, u8) {
        (self.live, self.seen)
    }

    pub(super) fn from_parts(live: u16, seen: u8) -> Matcher {
        Matcher { live, seen }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORDS: &[&[u8]] = &[b"SUBSCRIBE", b"PSUBSCRIBE", b"RESET", b"RES"];

    fn find(word: &[u8], split: usize) -> Option<usize> {
        let mut m = Matcher::start(WORDS.len());
        m.feed(WORDS, &word[..split], true);
        m.feed(WORDS, &word[split..], true);
        m.found(WORDS)
    }

    #[test]
    fn words_are_found_whatever_the_split_and_case() {
        for split in 0..=5 {
            assert_eq!(find(b"reset", split), Some(2));
            assert_eq!(find(b"ReS", split.min(3)), Some(3));
            assert_eq!(find(b"psubscribe", split), Some(1));
        }
        assert_eq!(find(b"resets", 3), None);
        assert_eq!(find(b"re", 1), None);
        assert_eq!(find(b"", 0), None);
        assert_eq!(find(b"subscribex", 4), None);
    }

    #[test]
    fn a_long_word_dies_early_and_matches_nothing() {
        let mut m = Matcher::start(WORDS.len());
        m.feed(WORDS, &[b'x'; 300], false);
        assert!(m.is_dead());
        assert_eq!(m.found(WORDS), None);
        let mut m = Matcher::start(WORDS.len());
        m.feed(WORDS, b"reset", false);
        assert_eq!(m.found(WORDS), None, "case matters without folding");
    }
}
