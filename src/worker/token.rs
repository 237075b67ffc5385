//! Poll tokens: what an event is for. A connection's token carries its slab key, its side and
//! its generation, so that an event collected for a connection that was closed, and whose key
//! was reused within the same batch of events, is told apart and dropped.

use mio::Token;

use crate::side::Side;

/// Poll tokens: the low two bits say what the rest indexes. A connection's token also carries the
/// generation of the connection (bits above [`KEY_BITS`]), so that an event meant for a closed
/// connection whose slab key was reused within the same batch of events is recognised and dropped:
/// a connection only ever sees events of its own sockets. That is what lets an upstream's first
/// writable event be trusted to mean "connected" (or failed) without a `getpeername` to confirm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    Conn(usize, Side, usize),
    Listener(usize),
    Control,
    Alarm,
}

/// Bits of a connection token that hold its slab key: 2^24 connections per worker, far beyond
/// what the descriptor limit allows (two descriptors each).
const KEY_BITS: u32 = 24;
/// Bits of a connection token that hold its generation: 38 on a 64-bit target (6 on 32-bit, where
/// a reused key could in principle go unrecognised after 64 admissions in one batch).
const GEN_BITS: u32 = usize::BITS - 2 - KEY_BITS;
pub(super) const KEY_MASK: usize = (1 << KEY_BITS) - 1;
pub(super) const GEN_MASK: usize = (1 << GEN_BITS) - 1;

impl Target {
    pub(super) fn token(self) -> Token {
        Token(match self {
            Target::Conn(key, side, gen) => {
                debug_assert!(key <= KEY_MASK, "connection key {key} does not fit a token");
                let tag = match side {
                    Side::Client => 0,
                    Side::Upstream => 1,
                };
                ((gen & GEN_MASK) << (KEY_BITS + 2)) | (key << 2) | tag
            }
            Target::Listener(i) => (i << 2) | 2,
            Target::Control => 3,
            Target::Alarm => (1 << 2) | 3,
        })
    }

    pub(super) fn from_token(token: Token) -> Target {
        let index = token.0 >> 2;
        let (key, gen) = (index & KEY_MASK, index >> KEY_BITS);
        match token.0 & 3 {
            0 => Target::Conn(key, Side::Client, gen),
            1 => Target::Conn(key, Side::Upstream, gen),
            2 => Target::Listener(index),
            _ if index == 0 => Target::Control,
            _ => Target::Alarm,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_with_their_generation() {
        let targets = [
            Target::Conn(0, Side::Client, 0),
            Target::Conn(7, Side::Upstream, 1),
            Target::Conn(KEY_MASK, Side::Client, GEN_MASK),
            Target::Conn(12_345, Side::Upstream, GEN_MASK - 1),
            Target::Listener(0),
            Target::Listener(41),
            Target::Control,
            Target::Alarm,
        ];
        for target in targets {
            assert_eq!(Target::from_token(target.token()), target, "{target:?}");
        }
        // Same key and side, another generation: another token, so a stale event is told apart.
        let (old, new) = (Target::Conn(5, Side::Upstream, 9), Target::Conn(5, Side::Upstream, 10));
        assert_ne!(old.token(), new.token());
        // The generation wraps within its bits instead of spilling into the key.
        assert_eq!(
            Target::from_token(Target::Conn(3, Side::Client, GEN_MASK + 1).token()),
            Target::Conn(3, Side::Client, 0)
        );
    }
}
