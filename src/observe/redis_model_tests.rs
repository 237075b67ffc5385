//! The observer against simulated Redis conversations. The simulation plays a client and a
//! Redis server: commands queued and answered in order (pipelined, as arrays or inline lines),
//! replies of any shape in RESP2 or RESP3 (nested aggregates, maps, attributes, nulls, bulks
//! holding CRLF, large ones), SUBSCRIBE/PSUBSCRIBE/SSUBSCRIBE with the counts Redis gives and
//! the messages that follow, UNSUBSCRIBE of some or all, MONITOR and its lines, RESET, MULTI/EXEC,
//! HELLO 3. It knows the truth at every step: a command not yet answered is busy; then
//! monitoring; then subscribed while any subscription is left; otherwise idle. The observer, fed
//! the same bytes cut at random points, must say the same after every step; damaged and random
//! streams must never make it panic.

use std::collections::{BTreeSet, VecDeque};

use proptest::prelude::*;

use super::tests::array;
use super::*;
use crate::observe::test_support::{damaged, in_pieces, Rng};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Cmd {
    Get,
    Blocking,
    Ping,
    Subscribe(u8, Vec<String>),
    Unsubscribe(u8, Vec<String>),
    Monitor,
    Reset,
    Multi,
    Exec,
    Hello(u8),
}

type Step = (bool, Vec<u8>, State);

struct Sim {
    rng: Rng,
    pending: VecDeque<Cmd>,
    resp3: bool,
    /// Subscriptions by kind: 0 channels, 1 patterns, 2 shard channels.
    subs: [BTreeSet<String>; 3],
    monitoring: bool,
    in_multi: bool,
    /// The client has sent MULTI and not yet EXEC (or RESET).
    client_multi: bool,
    queued: usize,
    steps: Vec<Step>,
}

/// The words of subscribing (`s`) or unsubscribing (`u`) of each kind.
const SUBSCRIBE: [&str; 3] = ["subscribe", "psubscribe", "ssubscribe"];
const UNSUBSCRIBE: [&str; 3] = ["unsubscribe", "punsubscribe", "sunsubscribe"];

fn bulk(bytes: &[u8]) -> Vec<u8> {
    [format!("${}\r\n", bytes.len()).into_bytes(), bytes.to_vec(), b"\r\n".to_vec()].concat()
}

impl Sim {
    fn truth(&self) -> State {
        if !self.pending.is_empty() {
            State::Busy
        } else if self.monitoring {
            State::Monitoring
        } else if self.subs.iter().any(|s| !s.is_empty()) {
            State::Subscribed
        } else {
            State::Idle
        }
    }

    fn say(&mut self, from_client: bool, bytes: Vec<u8>) {
        let truth = self.truth();
        self.steps.push((from_client, bytes, truth));
    }

    /// A reply value of the protocol in use, up to `depth` aggregates deep.
    fn value(&mut self, depth: u32) -> Vec<u8> {
        let kinds = if self.resp3 { 12 } else { 6 };
        match self.rng.below(if depth == 0 { 4 } else { kinds }) {
            0 => b"+OK\r\n".to_vec(),
            1 => format!(":{}\r\n", self.rng.next() as i64).into_bytes(),
            2 => {
                let n = self.rng.size(300_000);
                let mut body = self.rng.bytes(n);
                if n > 4 {
                    body[1..3].copy_from_slice(b"\r\n");
                }
                bulk(&body)
            }
            3 => b"$-1\r\n".to_vec(),
            4 | 5 => self.aggregate(b'*', depth),
            6 => {
                let scalars: [&[u8]; 4] = [b"_\r\n", b"#t\r\n", b",3.14\r\n", b"(12345678901234567890\r\n"];
                scalars[self.rng.below(4) as usize].to_vec()
            }
            7 => self.aggregate(b'%', depth),
            8 => self.aggregate(b'~', depth),
            9 => [b"|1\r\n+key\r\n:1\r\n".to_vec(), self.value(depth - 1)].concat(),
            10 => b"=9\r\ntxt:hello\r\n".to_vec(),
            _ => b"!5\r\noops!\r\n".to_vec(),
        }
    }

    fn aggregate(&mut self, kind: u8, depth: u32) -> Vec<u8> {
        let n = self.rng.below(5) as usize;
        let mut out = format!("{}{n}\r\n", kind as char).into_bytes();
        for _ in 0..n * if kind == b'%' { 2 } else { 1 } {
            out.extend(self.value(depth - 1));
        }
        out
    }

    /// `[word, channel, count]`: an array in RESP2, a push in RESP3.
    fn pubsub(&self, word: &str, channel: Option<&str>, count: usize) -> Vec<u8> {
        let head = if self.resp3 { ">3\r\n" } else { "*3\r\n" };
        let channel = channel.map_or(b"$-1\r\n".to_vec(), |c| bulk(c.as_bytes()));
        [head.as_bytes(), &bulk(word.as_bytes()), &channel, format!(":{count}\r\n").as_bytes()].concat()
    }

    fn count(&self, kind: usize) -> usize {
        match kind {
            2 => self.subs[2].len(),
            _ => self.subs[0].len() + self.subs[1].len(),
        }
    }

    /// The server answers the oldest command.
    fn answer(&mut self) {
        let Some(cmd) = self.pending.pop_front() else { return };
        // RESET is run at once even inside MULTI.
        if self.in_multi && !matches!(cmd, Cmd::Exec | Cmd::Reset) {
            self.queued += 1;
            return self.say(false, b"+QUEUED\r\n".to_vec());
        }
        let reply = match cmd {
            Cmd::Get | Cmd::Blocking => self.value(3),
            Cmd::Ping if !self.resp3 && self.count(0) + self.count(2) > 0 => {
                b"*2\r\n$4\r\npong\r\n$0\r\n\r\n".to_vec()
            }
            Cmd::Ping => b"+PONG\r\n".to_vec(),
            Cmd::Subscribe(kind, names) => {
                let mut out = Vec::new();
                for name in names {
                    self.subs[kind as usize].insert(name.clone());
                    out.extend(self.pubsub(SUBSCRIBE[kind as usize], Some(&name), self.count(kind as usize)));
                }
                out
            }
            Cmd::Unsubscribe(kind, names) => {
                let k = kind as usize;
                let names: Vec<String> =
                    if names.is_empty() { self.subs[k].iter().cloned().collect() } else { names };
                if names.is_empty() {
                    self.pubsub(UNSUBSCRIBE[k], None, self.count(k))
                } else {
                    let mut out = Vec::new();
                    for name in names {
                        self.subs[k].remove(&name);
                        out.extend(self.pubsub(UNSUBSCRIBE[k], Some(&name), self.count(k)));
                    }
                    out
                }
            }
            Cmd::Monitor => {
                self.monitoring = true;
                b"+OK\r\n".to_vec()
            }
            Cmd::Reset => {
                (self.monitoring, self.in_multi, self.resp3) = (false, false, false);
                self.subs = Default::default();
                b"+RESET\r\n".to_vec()
            }
            Cmd::Multi => {
                self.in_multi = true;
                b"+OK\r\n".to_vec()
            }
            Cmd::Exec => {
                self.in_multi = false;
                let n = std::mem::take(&mut self.queued);
                let mut out = format!("*{n}\r\n").into_bytes();
                (0..n).for_each(|_| out.extend(b"+OK\r\n"));
                out
            }
            Cmd::Hello(v) => {
                self.resp3 = v == 3;
                match self.resp3 {
                    true => b"%1\r\n$5\r\nproto\r\n:3\r\n".to_vec(),
                    false => b"*2\r\n$5\r\nproto\r\n:2\r\n".to_vec(),
                }
            }
        };
        self.say(false, reply);
    }

    /// The client sends `cmd`, as an array or (simple words) an inline line.
    fn send(&mut self, cmd: Cmd, words: Vec<String>) {
        match cmd {
            Cmd::Multi => self.client_multi = true,
            Cmd::Exec | Cmd::Reset => self.client_multi = false,
            _ => {}
        }
        self.pending.push_back(cmd);
        let bytes = match self.rng.chance(30) {
            true => format!("{}\r\n", words.join(" ")).into_bytes(),
            false => array(&words.iter().map(|w| w.as_bytes()).collect::<Vec<_>>()),
        };
        self.say(true, bytes);
    }

    fn names(&mut self, max: u64) -> Vec<String> {
        (0..self.rng.below(max + 1)).map(|_| format!("ch{}", self.rng.below(4))).collect()
    }

    fn step(&mut self) {
        let subscribed = self.subs.iter().any(|s| !s.is_empty())
            || self.pending.iter().any(|c| matches!(c, Cmd::Subscribe(..)));
        let monitoring = self.monitoring || self.pending.contains(&Cmd::Monitor);
        let resp2_sub = subscribed && !self.resp3;
        match self.rng.below(14) {
            _ if monitoring && self.rng.chance(30) && self.monitoring => {
                self.say(false, b"+1700000000.123456 [0 127.0.0.1:6000] \"get\" \"k\"\r\n".to_vec())
            }
            _ if self.monitoring && !self.pending.contains(&Cmd::Reset) && self.rng.chance(20) => {
                self.send(Cmd::Reset, vec!["RESET".into()])
            }
            _ if monitoring => self.answer(),
            0..=2 if !resp2_sub => {
                let (cmd, words) = match self.rng.below(3) {
                    0 => (Cmd::Blocking, vec!["BLPOP".into(), "list".into(), "4".into()]),
                    _ => (Cmd::Get, vec!["get".into(), "key".into()]),
                };
                self.send(cmd, words)
            }
            3 => self.send(Cmd::Ping, vec!["PING".into()]),
            4 | 5 if !self.client_multi => {
                let kind = self.rng.below(3) as u8;
                let names: Vec<String> = [self.names(3), vec!["first".into()]].concat();
                let words = [vec![SUBSCRIBE[kind as usize].to_uppercase()], names.clone()].concat();
                self.send(Cmd::Subscribe(kind, names), words)
            }
            6 if !self.client_multi => {
                let kind = self.rng.below(3) as u8;
                let mut names = self.names(2);
                // The observer keeps two UNSUBSCRIBE-of-all on their way, not a third.
                let alls = self
                    .pending
                    .iter()
                    .filter(|c| matches!(c, Cmd::Unsubscribe(_, n) if n.is_empty()))
                    .count();
                if alls >= 2 && names.is_empty() {
                    names.push("ch0".into());
                }
                let words = [vec![UNSUBSCRIBE[kind as usize].into()], names.clone()].concat();
                self.send(Cmd::Unsubscribe(kind, names), words)
            }
            7 if self.pending.is_empty() && !subscribed && !self.client_multi => {
                self.send(Cmd::Monitor, vec!["MONITOR".into()])
            }
            8 if !resp2_sub && !self.client_multi => self.send(Cmd::Multi, vec!["MULTI".into()]),
            9 if self.client_multi => self.send(Cmd::Exec, vec!["EXEC".into()]),
            10 if !resp2_sub && !self.client_multi => {
                let v = 2 + self.rng.below(2) as u8;
                self.send(Cmd::Hello(v), vec!["HELLO".into(), v.to_string()])
            }
            11 if self.pending.is_empty() && subscribed => {
                let (word, n) =
                    [("message", 3), ("pmessage", 4), ("smessage", 3)][self.rng.below(3) as usize];
                let head = if self.resp3 { format!(">{n}\r\n") } else { format!("*{n}\r\n") };
                let mut m = [head.into_bytes(), bulk(word.as_bytes())].concat();
                (1..n).for_each(|_| m.extend(bulk(b"x\r\ny")));
                self.say(false, m);
            }
            12 if self.rng.chance(20) => self.send(Cmd::Reset, vec!["RESET".into()]),
            _ => self.answer(),
        }
    }

    fn conversation(seed: u64, n: usize) -> Vec<Step> {
        let mut sim = Sim {
            rng: Rng::new(seed),
            pending: VecDeque::new(),
            resp3: false,
            subs: Default::default(),
            monitoring: false,
            in_multi: false,
            client_multi: false,
            queued: 0,
            steps: Vec::new(),
        };
        for _ in 0..n {
            sim.step();
        }
        while !sim.pending.is_empty() {
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
    fn the_observer_agrees_with_the_simulated_server(seed in any::<u64>(), n in 1usize..80) {
        let steps = Sim::conversation(seed, n);
        let mut cuts = Rng::new(seed ^ 0xc0ffee);
        let (mut observed, mut whole) = (Session::new(), Session::new());
        for (i, (from_client, bytes, truth)) in steps.iter().enumerate() {
            in_pieces(&mut cuts, bytes, |piece| feed(&mut observed, *from_client, piece));
            feed(&mut whole, *from_client, bytes);
            let shown: Vec<_> = steps[..=i].iter().map(|(c, b, t)| (*c, String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned(), *t)).collect();
            prop_assert_eq!(observed.state(), *truth, "step {} of seed {}: {:?}", i, seed, shown);
        }
        prop_assert_eq!(observed, whole, "however the bytes were cut");
    }

    #[test]
    fn damaged_streams_never_panic_and_stay_bounded(seed in any::<u64>(), n in 1usize..60) {
        let steps = Sim::conversation(seed, n);
        let mut rng = Rng::new(seed ^ 0xbad);
        let mut session = Session::new();
        let mut fed = 0u64;
        for (from_client, bytes, _) in &steps {
            let bytes = if rng.chance(15) { damaged(&mut rng, bytes) } else { bytes.clone() };
            fed += bytes.len() as u64;
            in_pieces(&mut rng, &bytes, |piece| feed(&mut session, *from_client, piece));
            prop_assert!(u64::from(session.owed) <= fed && u64::from(session.monitor_in) <= fed);
        }
        let _ = session.state();
        prop_assert_eq!(Session::from_bytes(&session.to_bytes()), session);
    }

    #[test]
    fn random_bytes_either_way_never_panic(seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let mut session = Session::new();
        for _ in 0..20 {
            let n = rng.size(2000);
            let mut junk = rng.bytes(n);
            if rng.chance(30) && !junk.is_empty() {
                junk[0] = b"*$+-:>%|~_#,(!="[rng.below(15) as usize];
            }
            feed(&mut session, rng.chance(50), &junk);
        }
        let _ = session.state();
    }
}
