//! The observer against simulated PostgreSQL conversations. The simulation plays client and
//! server as the protocol has them — units of work queued in the server's order (a Query, a
//! FunctionCall, an extended batch closed by its Sync), each answered in turn, transactions,
//! COPY both ways (libpq's extended COPY with its ignored Sync too), asynchronous messages —
//! and knows the truth at every step: a unit unanswered or COPY under way is busy; an open
//! batch or a transaction is idle in transaction; otherwise idle. The observer, fed the same
//! bytes cut at random points, must say the same after every step. Damaged and random streams
//! must never make it panic, and its counts stay bounded by what it was fed.

use std::collections::VecDeque;

use proptest::prelude::*;

use super::tests::{msg, packet, rfq, startup, welcome};
use super::*;
use crate::observe::test_support::{damaged, in_pieces, Rng};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Plain,
    Begin,
    Commit,
    Fail,
    Function,
    /// An extended batch's Sync.
    Sync,
}

/// One step: who speaks, what they say, and where the session stands after it.
type Step = (bool, Vec<u8>, State);

struct Sim {
    rng: Rng,
    units: VecDeque<Unit>,
    /// Extended-query messages sent since the last Sync.
    open: bool,
    txn: u8,
    copying: bool,
    steps: Vec<Step>,
}

impl Sim {
    fn truth(&self) -> State {
        if !self.units.is_empty() || self.copying {
            State::Busy
        } else if self.open || self.txn != b'I' {
            State::IdleInTransaction
        } else {
            State::Idle
        }
    }

    fn say(&mut self, from_client: bool, bytes: Vec<u8>) {
        let truth = self.truth();
        self.steps.push((from_client, bytes, truth));
    }

    fn data_rows(&mut self) -> Vec<u8> {
        let mut out = msg(b'T', &[0, 1, b'x', 0]);
        for _ in 0..self.rng.below(4) {
            let n = self.rng.size(70_000);
            let row = self.rng.bytes(n);
            out.extend(msg(b'D', &row));
        }
        if self.rng.chance(20) {
            out.extend(msg(b'N', b"SNOTICE\0Mhello\0\0"));
        }
        out.extend(msg(b'C', b"SELECT\0"));
        out
    }

    /// The server answers the oldest unit.
    fn answer(&mut self) {
        let Some(unit) = self.units.pop_front() else { return };
        let mut reply = match unit {
            Unit::Plain => self.data_rows(),
            Unit::Sync => [msg(b'1', b""), msg(b'2', b""), self.data_rows()].concat(),
            Unit::Function => msg(b'V', &[0, 0, 0, 1, 9]),
            Unit::Begin | Unit::Commit => msg(b'C', b"BEGIN\0"),
            Unit::Fail => msg(b'E', b"SERROR\0C42601\0Mbad\0\0"),
        };
        self.txn = match (unit, self.txn) {
            (Unit::Begin, b'I') => b'T',
            (Unit::Commit, _) => b'I',
            (Unit::Fail, b'I') => b'I',
            (Unit::Fail, _) => b'E',
            (_, txn) => txn,
        };
        reply.extend(rfq(self.txn));
        self.say(false, reply);
    }

    /// COPY FROM STDIN by a simple Query, or by libpq's extended batch; COPY TO STDOUT.
    fn copy(&mut self) {
        let extended = self.rng.chance(50);
        let data: Vec<u8> = (0..self.rng.below(4)).flat_map(|_| msg(b'd', &[b'x'; 100])).collect();
        if self.rng.chance(30) {
            self.units.push_back(Unit::Plain);
            self.say(true, msg(b'Q', b"copy t to stdout\0"));
            self.copying = true;
            self.say(false, [msg(b'H', &[0, 0, 0]), data, msg(b'c', b"")].concat());
            self.copying = false;
            self.units.pop_front();
            self.say(false, [msg(b'C', b"COPY\0"), rfq(self.txn)].concat());
            return;
        }
        let (request, end) = match extended {
            true => {
                let batch = [msg(b'P', b"\0copy\0\0\0"), msg(b'B', &[0; 10]), msg(b'E', &[0; 5])];
                (batch.concat(), [msg(b'c', b""), msg(b'S', b"")].concat())
            }
            false => (msg(b'Q', b"copy t from stdin\0"), msg(b'c', b"")),
        };
        // Until the server's CommandComplete and ReadyForQuery, COPY is under way.
        self.copying = true;
        self.say(true, [request, if extended { msg(b'S', b"") } else { vec![] }].concat());
        self.say(false, msg(b'G', &[0, 0, 0]));
        self.say(true, [data, end].concat());
        self.copying = false;
        self.say(false, [msg(b'C', b"COPY\0"), rfq(self.txn)].concat());
    }

    fn step(&mut self) {
        match self.rng.below(12) {
            0..=2 => {
                let unit = [Unit::Plain, Unit::Plain, Unit::Begin, Unit::Commit, Unit::Fail]
                    [self.rng.below(5) as usize];
                self.units.push_back(unit);
                let n = self.rng.size(20_000);
                let text = [self.rng.bytes(n), vec![0]].concat();
                self.say(true, msg(b'Q', &text));
            }
            3 => {
                self.units.push_back(Unit::Function);
                self.say(true, msg(b'F', &[0; 12]));
            }
            4 | 5 => {
                self.open = true;
                let kinds = [b'P', b'B', b'D', b'E', b'C', b'H'];
                let n = 1 + self.rng.below(4);
                let batch: Vec<u8> = (0..n)
                    .flat_map(|_| {
                        let kind = kinds[self.rng.below(6) as usize];
                        let size = self.rng.size(300);
                        msg(kind, &self.rng.bytes(size))
                    })
                    .collect();
                self.say(true, batch);
            }
            6 => {
                self.open = false;
                self.units.push_back(Unit::Sync);
                self.say(true, msg(b'S', b""));
            }
            7..=9 => self.answer(),
            10 => {
                let noise =
                    [msg(b'A', b"\0\0\0\x01ch\0x\0"), msg(b'N', b"SWARNING\0\0"), msg(b'S', b"a\0b\0")];
                let pick = noise[self.rng.below(3) as usize].clone();
                self.say(false, pick);
            }
            _ if self.units.is_empty() && !self.open => self.copy(),
            _ => self.answer(),
        }
    }

    /// A whole conversation of about `n` steps: startup (perhaps after a refused SSLRequest),
    /// then work, then every unit answered.
    fn conversation(seed: u64, n: usize) -> Vec<Step> {
        let mut sim = Sim {
            rng: Rng::new(seed),
            units: VecDeque::new(),
            open: false,
            txn: b'I',
            copying: false,
            steps: vec![],
        };
        if sim.rng.chance(30) {
            sim.steps.push((true, packet(SSL_REQUEST, b""), State::Starting));
            sim.steps.push((false, b"N".to_vec(), State::Starting));
        }
        sim.steps.push((true, startup(), State::Starting));
        sim.say(false, welcome());
        for _ in 0..n {
            sim.step();
        }
        while !sim.units.is_empty() {
            sim.answer();
        }
        sim.steps
    }
}

fn feed(session: &mut Session, from_client: bool, bytes: &[u8]) {
    match from_client {
        true => session.client_sent(bytes),
        false => session.server_sent(bytes),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn the_observer_agrees_with_the_simulated_server(seed in any::<u64>(), n in 1usize..60) {
        let steps = Sim::conversation(seed, n);
        let mut cuts = Rng::new(seed ^ 0xc0ffee);
        let mut observed = Session::new();
        let mut whole = Session::new();
        for (i, (from_client, bytes, truth)) in steps.iter().enumerate() {
            in_pieces(&mut cuts, bytes, |piece| feed(&mut observed, *from_client, piece));
            feed(&mut whole, *from_client, bytes);
            prop_assert_eq!(observed.state(), *truth, "step {} of seed {}: {:?}", i, seed, &steps[..=i]);
        }
        prop_assert_eq!(observed, whole, "however the bytes were cut");
    }

    #[test]
    fn damaged_streams_never_panic_and_stay_bounded(seed in any::<u64>(), n in 1usize..40) {
        let steps = Sim::conversation(seed, n);
        let mut rng = Rng::new(seed ^ 0xbad);
        let mut session = Session::new();
        let mut fed = 0u64;
        for (from_client, bytes, _) in &steps {
            let bytes = if rng.chance(15) { damaged(&mut rng, bytes) } else { bytes.clone() };
            fed += bytes.len() as u64;
            in_pieces(&mut rng, &bytes, |piece| feed(&mut session, *from_client, piece));
            prop_assert!(u64::from(session.owed) <= fed, "{session:?}");
        }
        let _ = session.state();
        let _ = session.farewell(Closing::Idle);
        prop_assert_eq!(Session::from_bytes(&session.to_bytes()), session);
    }

    #[test]
    fn random_bytes_either_way_never_panic(seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let mut session = Session::new();
        if rng.chance(50) {
            session.client_sent(&startup());
            session.server_sent(&welcome());
        }
        for _ in 0..20 {
            let n = rng.size(2000);
            let junk = rng.bytes(n);
            feed(&mut session, rng.chance(50), &junk);
        }
        let _ = (session.state(), session.farewell(Closing::Administrator));
    }
}
