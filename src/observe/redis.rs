//! Redis (RESP2 and RESP3, inline commands too): whether a reply is owed, and whether the client
//! is subscribed or monitoring — what Redis's own `timeout` exempts (`timeout.c`: blocked
//! clients, pub/sub subscribers, MONITOR), followed exactly rather than seconds late.
//!
//! Commands ([`super::resp_commands`]) and replies ([`super::resp_replies`]) are counted:
//! every command owes one reply (a blocking one too: BLPOP, XREAD BLOCK, WAIT … are just a reply
//! owed; MULTI's QUEUED answers are replies), except:
//! - **(P|S)SUBSCRIBE and (P|S)UNSUBSCRIBE** owe no reply: each channel gets a confirmation
//!   (`["subscribe", channel, count]`, a push in RESP3), whose count says whether the client is
//!   still subscribed. While it is, a RESP2 array shaped as a message (`message`, `pmessage`,
//!   `smessage`) is a message, not a reply; in RESP3 every push (`>`) is one.
//! - **MONITOR** owes its `+OK`; from then on the server's lines are not replies, and the
//!   connection is monitoring until a RESET's `+RESET`.
//! - **RESET** ends subscriptions and MONITOR once its `+RESET` arrives.
//! - **CLIENT REPLY OFF | SKIP**: replies no longer follow commands: opaque.
//!
//! A reply nobody waits for, a subscription or MONITOR inside MULTI (their replies would come
//! inside EXEC's), and bytes Redis would refuse are not followed: opaque.
//!
//! A reaped Redis client is told nothing (Redis itself tells a client it drops nothing, and an
//! unsolicited error would be read as the reply to the client's next command).

use super::resp_commands::{Command, Commands, Kind};
use super::resp_replies::{Replies, Reply};
use super::{Cause, Fields, Record, State};

// `Session::flags`: three flags, and in bits 3-5 the opaque cause (its index + 1; 0: none).
const MONITORING: u8 = 1;
/// A RESET was sent while monitoring: its `+RESET` ends MONITOR.
const LEAVING: u8 = 2;
const IN_MULTI: u8 = 4;
const CAUSE_SHIFT: u8 = 3;
const CAUSE_BITS: u8 = 7 << CAUSE_SHIFT;

/// The (P|S)UNSUBSCRIBE words' positions in [`super::resp_replies::PUBSUB`], by kind:
/// channels, patterns, shard channels.
const UNSUBSCRIBE_WORD: [usize; 3] = [3, 4, 5];

/// One Redis connection, as the observer follows it.
///
/// Confirmations are counted in order. A (P|S)UNSUBSCRIBE naming no channel gets one per
/// subscription of its kind (or one, with none): how many is known only once the server
/// reaches it, so up to two such commands are kept in their place among the others
/// (`confirms` before, between and after them; `pending`), each answered when the count of its
/// kind falls to zero. Redis counts channels and patterns together: the split is kept from how
/// each confirmation changes the total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Session {
    commands: Commands,
    replies: Replies,
    /// Replies owed.
    owed: u32,
    /// Channels and patterns subscribed, as the latest confirmation of either counted them.
    regular: u32,
    /// How many of those are channels.
    channels: u32,
    /// Confirmations still to come for commands that name their channels: before the first
    /// UNSUBSCRIBE-of-all on its way, between it and the second, after that (saturating).
    confirms: [u16; 3],
    /// Replies still to come up to MONITOR's own (0: no MONITOR on its way; saturating, which
    /// only starts the never-reaped monitoring a little early).
    monitor_in: u16,
    /// Shard channels subscribed, as the latest shard confirmation counted them (saturating).
    shards: u16,
    flags: u8,
    /// Bits 0-3: the kinds (+ 1) of up to two UNSUBSCRIBE-of-all on their way, the first in
    /// bits 0-1; bits 4-7: RESETs whose `+RESET` has not come (saturating).
    pending: u8,
}

impl Session {
    pub fn new() -> Session {
        Session::default()
    }

    fn cause(&self) -> Option<Cause> {
        Cause::from_index(((self.flags & CAUSE_BITS) >> CAUSE_SHIFT).wrapping_sub(1))
    }

    fn lose(&mut self, cause: Cause) {
        if self.cause().is_none() {
            self.flags |= (cause.index() as u8 + 1) << CAUSE_SHIFT;
        }
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    fn owe(&mut self) {
        match self.owed.checked_add(1) {
            Some(owed) => self.owed = owed,
            None => self.lose(Cause::Unparsable),
        }
    }

    fn resets(&self) -> u8 {
        self.pending >> 4
    }

    fn set_resets(&mut self, n: u8) {
        self.pending = (self.pending & 0x0f) | (n.min(15) << 4);
    }

    /// The kind of the first UNSUBSCRIBE-of-all on its way, if any.
    fn first_all(&self) -> Option<usize> {
        usize::from(self.pending & 3).checked_sub(1)
    }

    /// Bytes the client sent.
    pub fn client_sent(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && self.cause().is_none() {
            match self.commands.read(bytes) {
                Ok((used, done)) => {
                    bytes = &bytes[used..];
                    if let Some(command) = done {
                        self.command(command);
                    }
                }
                Err(()) => self.lose(Cause::Unparsable),
            }
        }
    }

    /// Bytes the server sent.
    pub fn server_sent(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && self.cause().is_none() {
            match self.replies.read(bytes) {
                Ok((used, done)) => {
                    bytes = &bytes[used..];
                    if let Some(reply) = done {
                        self.reply(reply);
                    }
                }
                Err(()) => self.lose(Cause::Unparsable),
            }
        }
    }

    /// Confirmations expected of a command that names `n` channels, in its place.
    fn expect(&mut self, n: u16) {
        let segment = match (self.pending & 3, self.pending & 12) {
            (0, _) => 0,
            (_, 0) => 1,
            _ => 2,
        };
        self.confirms[segment] = self.confirms[segment].saturating_add(n);
    }

    /// An UNSUBSCRIBE-of-all of `kind` (0 channels, 1 patterns, 2 shard channels).
    fn expect_all(&mut self, kind: usize) {
        let bits = kind as u8 + 1;
        match (self.pending & 3, self.pending & 12) {
            (0, _) => self.pending |= bits,
            (_, 0) => self.pending |= bits << 2,
            _ => self.lose(Cause::Unparsable), // a third one on its way: not followed
        }
    }

    /// A whole command from the client.
    fn command(&mut self, Command { kind, args }: Command) {
        let channels = args.saturating_sub(1);
        let monitoring = self.has(MONITORING) && !self.has(LEAVING);
        match kind {
            Kind::ReplyOff => self.lose(Cause::ReplyOff),
            // Their replies would come with EXEC's: not followed.
            Kind::Subscribe(_) | Kind::Unsubscribe(_) | Kind::Monitor if self.has(IN_MULTI) => {
                self.lose(Cause::Unparsable)
            }
            // Before MONITOR's +OK: which replies come before RESET's is not known.
            Kind::Reset if self.monitor_in > 0 => self.lose(Cause::Unparsable),
            Kind::Reset => {
                if monitoring {
                    self.flags |= LEAVING;
                    self.owed = 1; // the server's other lines are not counted while monitoring
                } else {
                    self.owe();
                }
                self.set_resets(self.resets().saturating_add(1));
                self.flags &= !IN_MULTI;
            }
            // While monitoring, replies cannot be told from the monitor's lines.
            _ if monitoring => {}
            // Without a channel: an error reply.
            Kind::Subscribe(_) if channels == 0 => self.owe(),
            Kind::Subscribe(_) => self.expect(channels),
            Kind::Unsubscribe(kind) if channels == 0 => self.expect_all(kind),
            Kind::Unsubscribe(_) => self.expect(channels),
            Kind::Monitor => {
                self.owe();
                if self.monitor_in == 0 {
                    self.monitor_in = u16::try_from(self.owed).unwrap_or(u16::MAX);
                }
            }
            Kind::Multi => {
                self.owe();
                self.flags |= IN_MULTI;
            }
            Kind::EndMulti => {
                self.owe();
                self.flags &= !IN_MULTI;
            }
            Kind::Plain => self.owe(),
        }
    }

    fn subscribed(&self) -> bool {
        self.regular > 0 || self.shards > 0
    }

    fn awaiting_confirmations(&self) -> bool {
        self.confirms.iter().any(|&n| n > 0) || self.pending & 15 != 0
    }

    /// Back to no subscription: a RESET's `+RESET`. (Confirmations of commands sent before it
    /// have all come; those still expected are of commands sent after it.)
    fn unsubscribed(&mut self) {
        (self.regular, self.channels, self.shards) = (0, 0, 0);
    }

    /// A whole reply (or push) from the server.
    fn reply(&mut self, r: Reply) {
        let confirmation = r.pubsub.filter(|&w| w < 6).zip(r.count);
        if r.top == b'>' {
            if let Some((word, count)) = confirmation {
                self.confirm(word, count);
            }
            return; // a push is never a reply
        }
        if self.has(MONITORING) {
            if r.top == b'+' && r.reset && self.has(LEAVING) {
                self.flags &= !(MONITORING | LEAVING);
                self.unsubscribed();
                self.set_resets(0);
                self.owed = self.owed.saturating_sub(1);
            }
            return;
        }
        if r.top == b'*' && (self.awaiting_confirmations() || self.subscribed()) {
            if let Some((word, count)) = confirmation {
                return self.confirm(word, count);
            }
            let message = matches!((r.pubsub, r.elems), (Some(6), 3) | (Some(7), 4) | (Some(8), 3));
            if message && self.subscribed() {
                return;
            }
        }
        if self.owed == 0 {
            return self.lose(Cause::Unparsable);
        }
        self.owed -= 1;
        if r.top == b'+' && r.reset && self.resets() > 0 {
            self.set_resets(self.resets() - 1);
            self.flags &= !LEAVING;
            self.unsubscribed();
        }
        if self.monitor_in > 0 {
            self.monitor_in -= 1;
            if self.monitor_in == 0 && r.top == b'+' {
                // Whatever was sent after MONITOR is answered among its lines: not counted.
                self.flags |= MONITORING;
                self.owed = 0;
            }
        }
    }

    /// A subscription confirmation: `word` (a [`super::resp_replies::PUBSUB`] position) and
    /// the count Redis gives with it.
    fn confirm(&mut self, word: usize, count: u32) {
        match word {
            2 | 5 => self.shards = u16::try_from(count).unwrap_or(u16::MAX),
            _ => {
                if matches!(word, 0 | 3) {
                    let patterns = self.regular.saturating_sub(self.channels);
                    self.channels = count.saturating_sub(patterns);
                }
                self.regular = count;
                self.channels = self.channels.min(count);
            }
        }
        if self.confirms[0] > 0 {
            self.confirms[0] -= 1;
            return;
        }
        let Some(kind) = self.first_all() else { return };
        if UNSUBSCRIBE_WORD[kind] != word {
            return self.lose(Cause::Unparsable);
        }
        let left = match kind {
            0 => self.channels,
            1 => self.regular - self.channels,
            _ => u32::from(self.shards),
        };
        if left == 0 {
            // That UNSUBSCRIBE-of-all is answered: the next one (if any) comes first now.
            self.confirms = [self.confirms[1], self.confirms[2], 0];
            self.pending = (self.pending & 0xf0) | ((self.pending & 12) >> 2);
        }
    }

    pub fn state(&self) -> State {
        match self.cause() {
            Some(cause) => State::Opaque(cause),
            None if self.owed > 0 || self.awaiting_confirmations() => State::Busy,
            None if self.has(MONITORING) => State::Monitoring,
            None if self.subscribed() => State::Subscribed,
            None => State::Idle,
        }
    }

    /// The state as bytes (a live upgrade).
    pub(super) fn to_bytes(self) -> Vec<u8> {
        let (args, n, (live, seen), arg, small) = self.commands.parts();
        let mut r = Record::new().u32(args).u32(n).u16(live).u8(seen).u16(arg);
        for b in small {
            r = r.u8(b);
        }
        let (left, n, (live, seen), small) = self.replies.parts();
        r = r.u32(left).u32(n).u16(live).u8(seen);
        for b in small {
            r = r.u8(b);
        }
        r = r.u32(self.owed).u32(self.regular).u32(self.channels);
        for c in self.confirms {
            r = r.u16(c);
        }
        r.u16(self.monitor_in).u16(self.shards).u8(self.flags).u8(self.pending).bytes
    }

    /// What [`Session::to_bytes`] wrote; anything else is a session no longer followed.
    pub(super) fn from_bytes(bytes: &[u8]) -> Session {
        Session::read(bytes).unwrap_or_else(|| {
            let mut s = Session::new();
            s.lose(Cause::Unparsable);
            s
        })
    }

    fn read(bytes: &[u8]) -> Option<Session> {
        let mut f = Fields { bytes };
        let (args, n, live, seen, arg) = (f.u32()?, f.u32()?, f.u16()?, f.u8()?, f.u16()?);
        let small = f.take::<3>()?;
        let commands = Commands::from_parts(args, n, (live, seen), arg, small)?;
        let (left, n, live, seen) = (f.u32()?, f.u32()?, f.u16()?, f.u8()?);
        let small = f.take::<8>()?;
        let replies = Replies::from_parts(left, n, (live, seen), small)?;
        let (owed, regular, channels) = (f.u32()?, f.u32()?, f.u32()?);
        let confirms = [f.u16()?, f.u16()?, f.u16()?];
        let (monitor_in, shards, flags, pending) = (f.u16()?, f.u16()?, f.u8()?, f.u8()?);
        f.done()?;
        let session = Session {
            commands,
            replies,
            owed,
            regular,
            channels,
            confirms,
            monitor_in,
            shards,
            flags,
            pending,
        };
        let kinds_valid = pending & 3 != 0 || pending & 12 == 0;
        let cause_valid = usize::from((flags & CAUSE_BITS) >> CAUSE_SHIFT) <= Cause::ALL.len();
        (kinds_valid && cause_valid && channels <= regular).then_some(session)
    }
}

#[cfg(test)]
#[path = "redis_model_tests.rs"]
mod model;
#[cfg(test)]
#[path = "redis_tests.rs"]
mod tests;
