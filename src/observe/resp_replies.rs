//! The server's side of RESP2 and RESP3: whole replies (and pushes), read as a count of values
//! still owed. A scalar completes one value; an aggregate of `n` elements completes one and
//! owes `n` more (a map or an attribute `2n`, and an attribute also the value it annotates), so
//! a reply of any depth is followed with one counter and no stack: nothing a server sends can
//! make this state grow. Bulk bodies are counted past.
//!
//! Of a reply, only what pub/sub needs is looked at, and only for a flat one (no aggregate
//! inside): its first element against the pub/sub words Redis writes (`subscribe`, `message`,
//! …), whether its third is a positive integer (a subscription count), and whether a simple
//! string reply is `RESET`.

use super::matcher::Matcher;
use super::resp_numbers::{number, quick_line, NEG};

/// The first element of a pub/sub message, as Redis writes it: confirmations (the first six;
/// the third and sixth are a shard channel's), then messages.
pub(super) const PUBSUB: &[&[u8]] = &[
    b"subscribe",
    b"psubscribe",
    b"ssubscribe",
    b"unsubscribe",
    b"punsubscribe",
    b"sunsubscribe",
    b"message",
    b"pmessage",
    b"smessage",
];
const RESET: &[&[u8]] = &[b"RESET"];

/// A whole reply or push, as far as the session needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Reply {
    /// The type byte of its (first) value: `*`, `>`, `+`, …
    pub(super) top: u8,
    /// Elements an aggregate announced (saturating); 0 for a scalar.
    pub(super) elems: u8,
    /// Flat, with this [`PUBSUB`] word first.
    pub(super) pubsub: Option<usize>,
    /// Flat, of three elements, the third an integer: its value (a negative one as 0).
    pub(super) count: Option<u32>,
    /// A simple string `RESET`.
    pub(super) reset: bool,
}

// `Replies::stage`.
const START: u8 = 0;
const LINE: u8 = 1;
const NUMBER: u8 = 2;
const BULK: u8 = 3;

// `Replies::bits`, beside the number bits (`NEG`, `DIGIT`, `CR` of `resp_numbers`).
const NESTED: u8 = 8;
const THIRD_INT: u8 = 16;
const RESET_SEEN: u8 = 64;
const NUMBER_BITS: u8 = 7;

// `Replies::capture`: what the value under way is read for.
const NOTHING: u8 = 0;
const RESET_WORD: u8 = 1;
const FIRST: u8 = 2;
const THIRD: u8 = 3;

/// The server-to-client stream's framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Replies {
    /// Values still to read before the reply under way is whole (0: between replies).
    left: u32,
    /// The number being read; then a bulk's bytes left, its CRLF included.
    n: u32,
    matcher: Matcher,
    stage: u8,
    /// The type byte of the value under way.
    kind: u8,
    top: u8,
    elems: u8,
    /// The reply's elements begun so far (saturating), while it is flat.
    index: u8,
    /// Its first element's [`PUBSUB`] index + 1, or 0.
    first: u8,
    bits: u8,
    capture: u8,
}

/// The usual case, a whole scalar reply at hand (a bulk string, a status, an error, an
/// integer): read at once. `None` when it is not all there, or is anything else: the stages
/// read it then.
fn whole_scalar(bytes: &[u8]) -> Option<(usize, Reply)> {
    let top = *bytes.first()?;
    let used = match top {
        b'$' => {
            let (len, used) = quick_line(&bytes[1..])?;
            Some(1 + used + len as usize + 2).filter(|&end| end <= bytes.len())?
        }
        b'+' | b'-' | b':' => {
            let end = bytes.iter().take(256).position(|&b| b == b'\n')?;
            (end >= 2 && bytes[end - 1] == b'\r').then_some(end + 1)?
        }
        _ => return None,
    };
    let reset = top == b'+' && &bytes[1..used - 2] == b"RESET";
    Some((used, Reply { top, elems: 0, pubsub: None, count: None, reset }))
}

fn is_aggregate(kind: u8) -> bool {
    matches!(kind, b'*' | b'~' | b'>' | b'%' | b'|')
}

impl Replies {
    /// Reads from `bytes` at most to the end of the reply under way. Returns how many bytes
    /// it took and the reply, if it ended.
    pub(super) fn read(&mut self, bytes: &[u8]) -> Result<(usize, Option<Reply>), ()> {
        let mut used = 0;
        while used < bytes.len() {
            let (n, done) = self.step(&bytes[used..])?;
            used += n;
            if done.is_some() {
                return Ok((used, done));
            }
        }
        Ok((used, None))
    }

    /// One stage of [`Self::read`]: what `bytes` holds of the part under way.
    fn step(&mut self, bytes: &[u8]) -> Result<(usize, Option<Reply>), ()> {
        let Some(&first) = bytes.first() else { return Ok((0, None)) };
        match self.stage {
            START => {
                if self.left == 0 {
                    if let Some((used, reply)) = whole_scalar(bytes) {
                        return Ok((used, Some(reply)));
                    }
                }
                self.start(first)?;
                Ok((1, None))
            }
            LINE => {
                let end = bytes.iter().position(|&b| b == b'\n');
                let line = &bytes[..end.unwrap_or(bytes.len())];
                self.inspect_line(line);
                match end {
                    Some(end) => Ok((end + 1, self.value_ended())),
                    None => Ok((bytes.len(), None)),
                }
            }
            NUMBER => {
                let (used, ended) = number(&mut self.n, &mut self.bits, bytes)?;
                match ended {
                    true => Ok((used, self.header_ended()?)),
                    false => Ok((used, None)),
                }
            }
            _ => {
                let take = bytes.len().min(self.n as usize);
                let content = take.min(self.n.saturating_sub(2) as usize);
                if self.capture == FIRST && !self.matcher.is_dead() {
                    self.matcher.feed(PUBSUB, &bytes[..content], false);
                }
                self.n -= take as u32;
                match self.n {
                    0 => Ok((take, self.value_ended())),
                    _ => Ok((take, None)),
                }
            }
        }
    }

    /// A value begins with its type byte.
    fn start(&mut self, kind: u8) -> Result<(), ()> {
        let position = match self.left {
            0 => {
                (self.left, self.top, self.elems, self.index, self.first, self.bits) = (1, kind, 0, 0, 0, 0);
                None
            }
            _ if self.bits & NESTED == 0 => {
                let i = self.index;
                self.index = i.saturating_add(1);
                if is_aggregate(kind) {
                    self.bits |= NESTED;
                }
                Some(i)
            }
            _ => None,
        };
        self.capture = match (position, kind) {
            (None, b'+') if self.left == 1 && self.top == kind => RESET_WORD,
            (Some(0), b'$') => FIRST,
            (Some(2), b':') => THIRD,
            _ => NOTHING,
        };
        self.matcher = match self.capture {
            RESET_WORD => Matcher::start(RESET.len()),
            FIRST => Matcher::start(PUBSUB.len()),
            _ => Matcher::default(),
        };
        self.kind = kind;
        self.bits &= !NUMBER_BITS;
        (self.stage, self.n) = match kind {
            b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => (LINE, 0),
            b'$' | b'!' | b'=' | b'*' | b'~' | b'>' | b'%' | b'|' => (NUMBER, 0),
            _ => return Err(()),
        };
        Ok(())
    }

    /// A line value's bytes (its LF not included).
    fn inspect_line(&mut self, line: &[u8]) {
        let content = &line[..line.iter().position(|&b| b == b'\r').unwrap_or(line.len())];
        match self.capture {
            RESET_WORD => self.matcher.feed(RESET, content, false),
            THIRD => {
                for &b in content {
                    match b {
                        b'-' => self.bits |= NEG,
                        b'0'..=b'9' => self.n = self.n.saturating_mul(10).saturating_add(u32::from(b - b'0')),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    /// A bulk's length or an aggregate's count has been read.
    fn header_ended(&mut self) -> Result<Option<Reply>, ()> {
        let (n, null) = (self.n, self.bits & NEG != 0);
        if null {
            return Ok(self.value_ended()); // `$-1`, `*-1`: a null
        }
        if !is_aggregate(self.kind) {
            self.n = n.checked_add(2).ok_or(())?;
            self.stage = BULK;
            return Ok(None);
        }
        let owed = match self.kind {
            b'%' => n.checked_mul(2).ok_or(())?,
            b'|' => n.checked_mul(2).and_then(|n| n.checked_add(1)).ok_or(())?,
            _ => n,
        };
        if self.left == 1 && self.top == self.kind && self.index == 0 {
            self.elems = u8::try_from(n).unwrap_or(u8::MAX);
        }
        if self.kind == b'|' {
            self.bits |= NESTED; // an attribute: the reply's shape is not pub/sub's
        }
        self.left = (self.left - 1).checked_add(owed).ok_or(())?;
        self.stage = START;
        Ok(self.reply_if_whole())
    }

    /// A scalar (or a null) ended.
    fn value_ended(&mut self) -> Option<Reply> {
        match self.capture {
            FIRST => self.first = self.matcher.found(PUBSUB).map_or(0, |i| i as u8 + 1),
            THIRD => {
                self.bits |= THIRD_INT;
                if self.bits & NEG != 0 {
                    self.n = 0;
                }
            }
            RESET_WORD if self.matcher.found(RESET).is_some() => self.bits |= RESET_SEEN,
            _ => {}
        }
        self.capture = NOTHING;
        self.stage = START;
        self.left -= 1;
        self.reply_if_whole()
    }

    /// The reply, once no value is owed; between replies, nothing is kept.
    fn reply_if_whole(&mut self) -> Option<Reply> {
        let reply = (self.left == 0).then(|| self.reply())?;
        *self = Replies::default();
        Some(reply)
    }

    /// The reply just completed. A flat reply of three elements ends with its third, so `n`
    /// still holds that element's value when it is an integer.
    fn reply(&self) -> Reply {
        let flat = self.bits & NESTED == 0;
        let third = flat && self.elems == 3 && self.bits & THIRD_INT != 0;
        Reply {
            top: self.top,
            elems: self.elems,
            pubsub: (flat && self.first > 0).then(|| usize::from(self.first) - 1),
            count: third.then_some(self.n),
            reset: self.bits & RESET_SEEN != 0,
        }
    }

    /// The framing's fields, for a live upgrade.
    pub(super) fn parts(&self) -> (u32, u32, (u16, u8), [u8; 8]) {
        let small =
            [self.stage, self.kind, self.top, self.elems, self.index, self.first, self.bits, self.capture];
        (self.left, self.n, self.matcher.parts(), small)
    }

    pub(super) fn from_parts(left: u32, n: u32, matcher: (u16, u8), small: [u8; 8]) -> Option<Replies> {
        let [stage, kind, top, elems, index, first, bits, capture] = small;
        let valid = stage <= BULK && capture <= THIRD && usize::from(first) <= PUBSUB.len();
        valid.then_some(Replies {
            left,
            n,
            matcher: Matcher::from_parts(matcher.0, matcher.1),
            stage,
            kind,
            top,
            elems,
            index,
            first,
            bits,
            capture,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replies(bytes: &[u8], piece: usize) -> Result<Vec<Reply>, ()> {
        let mut r = Replies::default();
        let mut out = Vec::new();
        for chunk in bytes.chunks(piece) {
            let mut rest = chunk;
            while !rest.is_empty() {
                let (used, done) = r.read(rest)?;
                rest = &rest[used..];
                out.extend(done);
            }
        }
        Ok(out)
    }

    fn plain(top: u8, elems: u8) -> Reply {
        Reply { top, elems, pubsub: None, count: None, reset: false }
    }

    #[test]
    fn replies_of_any_depth_are_whole_once_every_value_is_read() {
        let bytes = b"+OK\r\n$5\r\nhe\r\no\r\n*2\r\n*2\r\n:1\r\n%1\r\n+k\r\n$-1\r\n_\r\n\
                      |1\r\n+ttl\r\n:3\r\n,1.5\r\n*0\r\n*-1\r\n>3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nhi\r\n\
                      +RESET\r\n";
        let message = Reply { pubsub: Some(6), ..plain(b'>', 3) };
        let expected = vec![
            plain(b'+', 0),
            plain(b'$', 0),
            plain(b'*', 2),
            plain(b'|', 1),
            plain(b'*', 0),
            plain(b'*', 0),
            message,
            Reply { reset: true, ..plain(b'+', 0) },
        ];
        for piece in [1, 2, 5, bytes.len()] {
            assert_eq!(replies(bytes, piece), Ok(expected.clone()), "pieces of {piece}");
        }
    }

    #[test]
    fn a_subscription_count_is_read_from_a_flat_reply_only() {
        let confirm = b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:2\r\n*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n";
        let got = replies(confirm, 3).unwrap();
        assert_eq!((got[0].pubsub, got[0].count), (Some(0), Some(2)));
        assert_eq!((got[1].pubsub, got[1].count), (Some(3), Some(0)));
        let nested = b"*3\r\n$9\r\nsubscribe\r\n*1\r\n:1\r\n:2\r\n";
        assert_eq!(replies(nested, 1).unwrap()[0], plain(b'*', 3));
    }

    #[test]
    fn bytes_no_server_sends_are_an_error() {
        for bad in [&b"?\r\n"[..], b"$x\r\n", b"*4294967295\r\n%4294967295\r\n", b"$1\r\r"] {
            assert_eq!(replies(bad, 1), Err(()), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
