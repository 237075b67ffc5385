//! The scenarios of the differential test: what a seed makes the client and the upstream do.
//!
//! Every scenario must end the same way on a direct connection every time it runs, so the
//! generator leaves out what is racy there:
//! - at most one peer resets, and only one that never sent FIN: after a FIN, whether the other
//!   end notices the reset depends on whether it is still writing;
//! - a peer that resets after receiving `k` bytes gets `k` no larger than what the other sends
//!   before waiting (0 when the other reads to the end before replying);
//! - a client that leaves right after connecting faces an upstream that sends nothing: bytes
//!   sent to a closed socket draw a reset, which races the upstream's own reads and writes;
//! - no two peers that both wait for the other's FIN before sending theirs.

use std::time::Duration;

use crate::common::{Ending, Pace, PeerPlan, Prng, Sending, Urgent};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// Most writes a transfer is cut into (more would make a large transfer of tiny chunks slow).
const MAX_WRITES: u64 = 256;

#[derive(Debug, Clone)]
pub struct Scenario {
    pub seed: u64,
    pub client: PeerPlan,
    pub upstream: PeerPlan,
}

impl Scenario {
    /// The scenario of `seed`.
    pub fn generate(seed: u64) -> Scenario {
        let mut g = Gen(Prng::new(seed));
        let roll = g.below(100);
        if roll < 6 {
            return early_exit(&mut g, seed);
        }
        let mut client = peer(&mut g, Ending::HalfClose);
        let mut upstream = peer(&mut g, Ending::HalfClose);
        if roll < 36 {
            // One peer resets, the other ends in any of the graceful ways.
            let (resetter, other) = match g.chance(50) {
                true => (&mut client, &mut upstream),
                false => (&mut upstream, &mut client),
            };
            other.ending = g.pick(&[Ending::HalfClose, Ending::CloseAfterEof, Ending::ReplyAfterEof]);
            let k = match other.ending {
                Ending::ReplyAfterEof => 0,
                _ => match g.below(3) {
                    0 => 0,
                    1 => other.send.total,
                    _ => g.below(other.send.total + 1),
                },
            };
            resetter.ending = Ending::ResetAfter(k);
        } else {
            use Ending::*;
            let pairs = [
                (HalfClose, HalfClose),
                (HalfClose, CloseAfterEof),
                (CloseAfterEof, HalfClose),
                (HalfClose, ReplyAfterEof),
                (ReplyAfterEof, HalfClose),
            ];
            (client.ending, upstream.ending) = g.pick(&pairs);
        }
        Scenario { seed, client, upstream }
    }

    /// A short name for the kind of scenario, to group failures by.
    pub fn kind(&self) -> String {
        let mut parts = Vec::new();
        match self.client.ending {
            Ending::CloseAtOnce => parts.push("client closes at once"),
            Ending::ResetAtOnce => parts.push("client resets at once"),
            Ending::ResetAfter(_) => parts.push("client resets"),
            _ => {}
        }
        if let Ending::ResetAfter(_) = self.upstream.ending {
            parts.push("upstream resets");
        }
        if self.client.send.urgent.is_some() {
            parts.push("urgent to upstream");
        }
        if self.upstream.send.urgent.is_some() {
            parts.push("urgent to client");
        }
        if parts.is_empty() {
            parts.push("plain");
        }
        parts.join(" + ")
    }
}

/// The client closes or resets while the daemon connects upstream; nobody sends anything.
fn early_exit(g: &mut Gen, seed: u64) -> Scenario {
    let silent = |g: &mut Gen, ending| PeerPlan { send: sending(g, 0), pace: Pace::Fast, ending };
    let client_ending = g.pick(&[Ending::CloseAtOnce, Ending::ResetAtOnce]);
    let upstream_ending = g.pick(&[Ending::HalfClose, Ending::CloseAfterEof]);
    Scenario { seed, client: silent(g, client_ending), upstream: silent(g, upstream_ending) }
}

/// A peer that sends a random amount, reads at a random pace, and ends with `ending`.
fn peer(g: &mut Gen, ending: Ending) -> PeerPlan {
    let total = match g.below(100) {
        0..10 => 0,
        // Large enough that the relay splices.
        10..15 => MIB + g.below(2 * MIB),
        15..40 => g.below(256 * KIB) + 1,
        _ => g.below(4 * KIB) + 1,
    };
    let mut send = sending(g, total);
    if g.chance(25) {
        send.urgent = Some(urgent(g, &mut send));
    }
    let pace = match g.below(10) {
        0..5 => Pace::Fast,
        5..8 => Pace::Slow {
            chunk: g.pick(&[1, 7, 100, 512, 2048]),
            pause: Duration::from_micros(g.below(2000)),
            pauses: g.below(40) as u32,
        },
        _ => Pace::Stalled(Duration::from_millis(50 + g.below(250))),
    };
    PeerPlan { send, pace, ending }
}

/// An urgent byte for `send`: at either end of the stream, or anywhere in it; half the time in
/// the middle of a transfer big enough that the relay splices by then (which it may not do
/// across an urgent mark).
fn urgent(g: &mut Gen, send: &mut Sending) -> Urgent {
    let byte = g.below(256) as u8;
    if g.chance(50) {
        send.total = send.total.max(256 * KIB + g.below(768 * KIB));
        send.chunk = send.chunk.max(16 * 1024);
        return Urgent { at: 128 * KIB + g.below(send.total - 128 * KIB), byte };
    }
    let at = match g.below(4) {
        0 => 0,
        1 => send.total,
        _ => g.below(send.total + 1),
    };
    Urgent { at, byte }
}

/// `total` bytes of a fresh stream in chunks of a random size, perhaps with pauses.
fn sending(g: &mut Gen, total: u64) -> Sending {
    let chunk = g.pick(&[1, 13, 100, 1000, 4096, 16 * 1024, 64 * 1024, 256 * 1024]);
    let chunk = chunk.max(total.div_ceil(MAX_WRITES) as usize);
    let (pause, pauses) = match g.chance(30) {
        true => (Duration::from_micros(g.below(3000)), g.below(20) as u32),
        false => (Duration::ZERO, 0),
    };
    Sending { seed: g.0.next_u64(), total, chunk, pause, pauses, urgent: None }
}

/// Random choices from a [`Prng`].
struct Gen(Prng);

impl Gen {
    /// Uniform in `0..n` (0 if `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        match n {
            0 => 0,
            n => self.0.next_u64() % n,
        }
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}
