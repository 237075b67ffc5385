//! The client's side of RESP: commands, as Redis reads them (`networking.c`): an array of bulk
//! strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`), or an inline line (`GET k\n`, words split as
//! `sdssplitargs` splits them, quotes and all). Bulk bodies are counted past; only the first
//! three arguments are looked at, and only while they may be a command whose name matters
//! ([`Kind`]) — a name longer than the longest of those stops being looked at.
//!
//! What Redis would refuse (a count or length that is not a number, a bulk without its `$`, an
//! inline line over 64 KiB) is an error: the caller stops following the connection.

use super::matcher::Matcher;
use super::resp_numbers::{number, quick_line, NEG};

/// Commands whose name matters, in upper case (compared regardless of case).
const NAMES: &[&[u8]] = &[
    b"SUBSCRIBE",
    b"PSUBSCRIBE",
    b"SSUBSCRIBE",
    b"UNSUBSCRIBE",
    b"PUNSUBSCRIBE",
    b"SUNSUBSCRIBE",
    b"MONITOR",
    b"RESET",
    b"MULTI",
    b"EXEC",
    b"DISCARD",
    b"CLIENT",
];
const REPLY: &[&[u8]] = &[b"REPLY"];
const MODES: &[&[u8]] = &[b"OFF", b"SKIP", b"ON"];
/// Redis's `PROTO_INLINE_MAX_SIZE`: a longer inline line (or count line) is refused.
const INLINE_MAX: u32 = 64 * 1024;

/// What a command is, as far as replies and idleness go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Anything else: one reply.
    Plain,
    /// (P|S)SUBSCRIBE: 0 channels, 1 patterns, 2 shard channels.
    Subscribe(usize),
    /// (P|S)UNSUBSCRIBE, likewise.
    Unsubscribe(usize),
    Monitor,
    Reset,
    Multi,
    /// EXEC or DISCARD.
    EndMulti,
    /// CLIENT REPLY OFF or SKIP.
    ReplyOff,
}

/// A whole command: its kind and how many arguments it had, its name included (saturating).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Command {
    pub(super) kind: Kind,
    pub(super) args: u16,
}

// `Commands::kind` while a command is read: 1 + an index of NAMES, or these.
const PLAIN: u8 = 0;
const CLIENT: u8 = 12;
const CLIENT_REPLY: u8 = 13;
const REPLY_OFF: u8 = 14;

// `Commands::stage`.
const START: u8 = 0;
const COUNT: u8 = 1;
const DOLLAR: u8 = 2;
const LENGTH: u8 = 3;
const BULK: u8 = 4;
const INLINE: u8 = 5;

// `Commands::bits` while a number is read: those of [`number`] (`NEG`, `DIGIT`, `CR`); and
// while an inline line is split into words:
const IN_WORD: u8 = 1;
const DOUBLE: u8 = 2;
const SINGLE: u8 = 4;
const ESCAPE: u8 = 8;

/// The client-to-server stream's framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Commands {
    /// Bulk arguments still to come in the command under way.
    args: u32,
    /// The number being read; then a bulk's bytes left, its CRLF included; an inline line's
    /// length so far.
    n: u32,
    matcher: Matcher,
    stage: u8,
    kind: u8,
    bits: u8,
    /// Arguments begun so far (saturating).
    arg: u16,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

impl Commands {
    /// Reads from `bytes` at most to the end of the command under way. Returns how many bytes
    /// it took and the command, if it ended.
    pub(super) fn read(&mut self, bytes: &[u8]) -> Result<(usize, Option<Command>), ()> {
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
    fn step(&mut self, bytes: &[u8]) -> Result<(usize, Option<Command>), ()> {
        let Some(&first) = bytes.first() else { return Ok((0, None)) };
        match self.stage {
            START => {
                if first == b'*' {
                    if let Some((used, command)) = self.whole(bytes) {
                        return Ok((used, Some(command)));
                    }
                }
                (self.n, self.bits, self.arg, self.kind) = (0, 0, 0, PLAIN);
                if first == b'*' {
                    self.stage = COUNT;
                    return Ok((1, None));
                }
                self.stage = INLINE;
                Ok((0, None))
            }
            COUNT | LENGTH => {
                let (used, ended) = number(&mut self.n, &mut self.bits, bytes)?;
                if !ended {
                    return Ok((used, None));
                }
                let negative = self.bits & NEG != 0;
                let (n, bits) = (self.n, std::mem::take(&mut self.bits));
                match self.stage {
                    // `*0` or a negative count: Redis waits for the next command.
                    COUNT if negative || n == 0 => self.stage = START,
                    COUNT if n > i32::MAX as u32 => return Err(()),
                    COUNT => (self.args, self.stage) = (n, DOLLAR),
                    _ if bits & NEG != 0 => return Err(()),
                    _ => {
                        self.n = n.checked_add(2).ok_or(())?;
                        self.stage = BULK;
                        self.matcher = self.look_at();
                    }
                }
                Ok((used, None))
            }
            DOLLAR if first == b'$' => {
                (self.stage, self.n, self.bits) = (LENGTH, 0, 0);
                Ok((1, None))
            }
            DOLLAR => Err(()),
            BULK => {
                let take = bytes.len().min(self.n as usize);
                let content = take.min(self.n.saturating_sub(2) as usize);
                self.feed(&bytes[..content]);
                self.n -= take as u32;
                if self.n > 0 {
                    return Ok((take, None));
                }
                self.argument_ended();
                self.args -= 1;
                if self.args > 0 {
                    self.stage = DOLLAR;
                    return Ok((take, None));
                }
                let command = self.command();
                *self = Commands::default(); // between commands, nothing is kept
                Ok((take, Some(command)))
            }
            _ => self.inline(bytes),
        }
    }

    /// The usual case, a whole array command at hand (pipelined ones are): read at once, as
    /// the stages would read it. `None`, with nothing changed, when it is not all there or not
    /// that simple: the stages read it then.
    fn whole(&mut self, bytes: &[u8]) -> Option<(usize, Command)> {
        let (count, used) = quick_line(bytes.get(1..)?)?;
        if count == 0 || count > i32::MAX as u32 {
            return None;
        }
        let mut c = Commands { args: 0, n: 0, arg: 0, kind: PLAIN, bits: 0, stage: START, ..*self };
        let mut at = 1 + used;
        for _ in 0..count {
            if bytes.get(at) != Some(&b'$') {
                return None;
            }
            let (len, used) = quick_line(&bytes[at + 1..])?;
            let body = at + 1 + used;
            let end = body.checked_add(len as usize + 2).filter(|&end| end <= bytes.len())?;
            c.matcher = c.look_at();
            c.feed(&bytes[body..body + len as usize]);
            c.argument_ended();
            at = end;
        }
        *self = Commands::default();
        Some((at, c.command()))
    }

    /// Whether the argument about to start is worth looking at, and against what.
    fn look_at(&self) -> Matcher {
        match (self.arg, self.kind) {
            (0, _) => Matcher::start(NAMES.len()),
            (1, CLIENT) => Matcher::start(REPLY.len()),
            (2, CLIENT_REPLY) => Matcher::start(MODES.len()),
            _ => Matcher::default(),
        }
    }

    fn table(&self) -> &'static [&'static [u8]] {
        match self.arg {
            0 => NAMES,
            1 => REPLY,
            _ => MODES,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        if !self.matcher.is_dead() {
            self.matcher.feed(self.table(), bytes, true);
        }
    }

    /// An argument ended: what it says of the command.
    fn argument_ended(&mut self) {
        let found = self.matcher.found(self.table());
        self.kind = match (self.arg, self.kind, found) {
            (0, _, Some(i)) => i as u8 + 1,
            (1, CLIENT, Some(_)) => CLIENT_REPLY,
            (2, CLIENT_REPLY, Some(0 | 1)) => REPLY_OFF,
            (0, _, None) | (1, CLIENT, None) | (2, CLIENT_REPLY, _) => PLAIN,
            (_, kind, _) => kind,
        };
        self.arg = self.arg.saturating_add(1);
        self.matcher = Matcher::default();
    }

    fn command(&self) -> Command {
        let kind = match self.kind {
            k @ 1..=3 => Kind::Subscribe(usize::from(k) - 1),
            k @ 4..=6 => Kind::Unsubscribe(usize::from(k) - 4),
            7 => Kind::Monitor,
            8 => Kind::Reset,
            9 => Kind::Multi,
            10 | 11 => Kind::EndMulti,
            REPLY_OFF => Kind::ReplyOff,
            _ => Kind::Plain,
        };
        Command { kind, args: self.arg }
    }

    /// An inline command: its line, split into words as Redis splits it.
    fn inline(&mut self, bytes: &[u8]) -> Result<(usize, Option<Command>), ()> {
        let end = bytes.iter().position(|&b| b == b'\n');
        let line = &bytes[..end.unwrap_or(bytes.len())];
        self.n = self.n.saturating_add(line.len() as u32);
        if self.n > INLINE_MAX {
            return Err(());
        }
        for &b in line {
            self.inline_byte(b);
        }
        let Some(end) = end else { return Ok((bytes.len(), None)) };
        if self.bits & IN_WORD != 0 {
            self.argument_ended();
        }
        // A line without a word is no command.
        let command = (self.arg > 0).then(|| self.command());
        *self = Commands::default();
        Ok((end + 1, command))
    }

    fn inline_byte(&mut self, b: u8) {
        let bits = self.bits;
        if bits & IN_WORD == 0 {
            if is_space(b) {
                return;
            }
            self.bits |= IN_WORD;
            self.matcher = self.look_at();
        }
        if bits & ESCAPE != 0 {
            self.bits &= !ESCAPE;
            self.feed(&[b]);
        } else if bits & (DOUBLE | SINGLE) != 0 {
            let quote = if bits & DOUBLE != 0 { b'"' } else { b'\'' };
            match b {
                b'\\' => self.bits |= ESCAPE,
                _ if b == quote => self.bits &= !(DOUBLE | SINGLE),
                _ => self.feed(&[b]),
            }
        } else {
            match b {
                b'"' => self.bits |= DOUBLE,
                b'\'' => self.bits |= SINGLE,
                _ if is_space(b) => {
                    self.argument_ended();
                    self.bits = 0;
                }
                _ => self.feed(&[b]),
            }
        }
    }

    /// The framing's fields, for a live upgrade.
    pub(super) fn parts(&self) -> (u32, u32, (u16, u8), u16, [u8; 3]) {
        (self.args, self.n, self.matcher.parts(), self.arg, [self.stage, self.kind, self.bits])
    }

    pub(super) fn from_parts(
        args: u32,
        n: u32,
        matcher: (u16, u8),
        arg: u16,
        small: [u8; 3],
    ) -> Option<Commands> {
        let [stage, kind, bits] = small;
        (stage <= INLINE && kind <= REPLY_OFF).then_some(Commands {
            args,
            n,
            matcher: Matcher::from_parts(matcher.0, matcher.1),
            stage,
            kind,
            arg,
            bits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command in `bytes`, read in pieces of `piece` bytes.
    fn commands(bytes: &[u8], piece: usize) -> Result<Vec<Command>, ()> {
        let mut c = Commands::default();
        let mut out = Vec::new();
        for chunk in bytes.chunks(piece) {
            let mut rest = chunk;
            while !rest.is_empty() {
                let (used, done) = c.read(rest)?;
                rest = &rest[used..];
                out.extend(done);
            }
        }
        Ok(out)
    }

    fn cmd(kind: Kind, args: u16) -> Command {
        Command { kind, args }
    }

    #[test]
    fn arrays_and_inline_lines_are_read_whatever_the_pieces() {
        let bytes = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nsubscribe a \"b c\" 'd'\r\n\r\n*1\r\n$5\r\nreSet\r\n\
                      *0\r\n*-1\r\n*3\r\n$6\r\nclient\r\n$5\r\nREPLY\r\n$3\r\noff\r\nclient reply on\n";
        let expected = vec![
            cmd(Kind::Plain, 2),
            cmd(Kind::Subscribe(0), 4),
            cmd(Kind::Reset, 1),
            cmd(Kind::ReplyOff, 3),
            cmd(Kind::Plain, 3),
        ];
        for piece in [1, 2, 3, 7, bytes.len()] {
            assert_eq!(commands(bytes, piece), Ok(expected.clone()), "pieces of {piece}");
        }
    }

    #[test]
    fn a_bulk_body_is_counted_past_even_when_it_holds_crlf_and_stars() {
        let value = b"*1\r\n$4\r\nPING\r\n\n\n";
        let mut bytes = format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${}\r\n", value.len()).into_bytes();
        bytes.extend_from_slice(value);
        bytes.extend_from_slice(b"\r\nMONITOR\r\n");
        assert_eq!(commands(&bytes, 5), Ok(vec![cmd(Kind::Plain, 3), cmd(Kind::Monitor, 1)]));
    }

    #[test]
    fn what_redis_refuses_is_an_error() {
        for bad in [&b"*x\r\n"[..], b"*2\r\nGET\r\n", b"*1\r\n$-3\r\n", b"*1\r\n$3\rx", b"*99999999999\r\n"] {
            assert_eq!(commands(bad, 1), Err(()), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(commands(&vec![b'a'; 70_000], 1000), Err(()), "an inline line over 64 KiB");
    }
}
