//! Differential test of the relay: seeded scenarios (see `differential/scenario.rs`), each run
//! once over a direct loopback connection and once through the daemon, and what each peer
//! observed compared. The contract: every byte one peer sends reaches the other in order, or the
//! other sees an abort — never a clean EOF after missing bytes; a FIN arrives only after every
//! byte before it; a reset is passed on as a reset; an urgent byte is passed on as urgent, so
//! that a plain reader sees the same inline stream as on a direct connection.
//!
//! The rules: a peer that saw every byte and a clean EOF directly must see the same through the
//! relay; a peer that saw an abort directly must see an abort through the relay too; through
//! the relay, no peer may receive a byte that was not sent, see a clean EOF after anything but
//! every byte, or stall.
//!
//! The scenarios run through plain (`tcp`) listeners, and through `postgres` and `redis` ones:
//! their observers see every byte and must change none.
//!
//! `IDLEREAPER_DIFF_SEED=<n>` replays one scenario; `IDLEREAPER_DIFF_SCENARIOS=<n>` (default
//! 500) and `IDLEREAPER_DIFF_BASE_SEED=<n>` choose the seeds `base..base+n`. With a seed,
//! `IDLEREAPER_DIFF_SCENARIOS` says how many times to run it (8 at once): what the relay does
//! depends on timing, so a failure seen among 500 may need a few runs to show again.

mod scenario;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::Instant;

use crate::common::*;
use scenario::Scenario;

/// Scenarios run at once, each on its own relay listener and upstream listener.
const WORKERS: usize = 8;
const DEFAULT_SCENARIOS: u64 = 500;
const DEFAULT_BASE_SEED: u64 = 0x1d1e_0000;
/// Failures shown in full; the rest are counted by kind.
const SHOWN: usize = 10;

/// Where one worker's scenarios go: its upstream listener, and the daemon's relay listener
/// in front of it (if any).
struct Path {
    upstream: TcpListener,
    relay: Option<SocketAddr>,
}

impl Path {
    fn new(relay: Option<SocketAddr>) -> Path {
        let upstream = TcpListener::bind(SocketAddr::from((fresh_ip(), 0))).expect("bind an upstream");
        // A blocking accept that gives up: no scenario waits for a connection that never comes.
        socket2::SockRef::from(&upstream).set_read_timeout(Some(PEER_IO_TIMEOUT)).expect("SO_RCVTIMEO");
        Path { upstream, relay }
    }

    fn upstream_addr(&self) -> SocketAddr {
        self.upstream.local_addr().expect("upstream address")
    }
}

/// What the two peers of one run observed.
struct Run {
    client: Observed,
    upstream: Observed,
}

/// One rule broken in one scenario.
struct Problem {
    kind: &'static str,
    detail: String,
}

struct Failure {
    scenario: Scenario,
    direct: Run,
    other: Run,
    problems: Vec<Problem>,
}

#[test]
fn relayed_peers_observe_what_direct_peers_observe() {
    relayed_through("tcp");
}

/// A protocol observer sees every byte (the copy path, never splice) and changes none, whatever
/// it makes of them.
#[test]
fn relayed_peers_observe_what_direct_peers_observe_through_a_postgres_listener() {
    relayed_through("postgres");
}

#[test]
fn relayed_peers_observe_what_direct_peers_observe_through_a_redis_listener() {
    relayed_through("redis");
}

/// Every scenario, directly and through relay listeners of `protocol`.
fn relayed_through(protocol: &str) {
    let seeds = seeds_from_env();
    let relays: Vec<SocketAddr> = (0..WORKERS.min(seeds.len())).map(|_| free_addr()).collect();
    let paths: Vec<Path> = relays.iter().map(|&relay| Path::new(Some(relay))).collect();
    let listeners: String = paths
        .iter()
        .zip(&relays)
        .enumerate()
        .map(|(i, (path, &relay))| {
            relay_listener(&format!("diff{i}"), relay, path.upstream_addr(), "60s")
                + &format!(
                    "half_close_timeout = \"60s\"\nconnect_timeout = \"10s\"\nprotocol = \"{protocol}\"\n\n"
                )
        })
        .collect();
    let mut daemon = Daemon::start(&listeners);
    let label = format!("relayed ({protocol})");
    let failures = run_all(&seeds, &paths, &label);
    report(&failures, seeds.len(), &label);
    daemon.stop();
}

/// Checks the test itself: two direct runs of each scenario must agree by the same rules.
#[test]
#[ignore = "a check of the differential test, not of the daemon: run with --ignored"]
fn direct_runs_agree_with_each_other() {
    let seeds = seeds_from_env();
    let paths: Vec<Path> = (0..WORKERS.min(seeds.len())).map(|_| Path::new(None)).collect();
    let failures = run_all(&seeds, &paths, "second direct");
    report(&failures, seeds.len(), "second direct");
}

/// The seeds chosen by the environment (see the file's documentation).
fn seeds_from_env() -> Vec<u64> {
    let number = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|v| v.trim().parse::<u64>().unwrap_or_else(|e| panic!("{name}={v:?}: {e}")))
    };
    let count = number("IDLEREAPER_DIFF_SCENARIOS");
    if let Some(seed) = number("IDLEREAPER_DIFF_SEED") {
        return vec![seed; count.unwrap_or(1) as usize];
    }
    let base = number("IDLEREAPER_DIFF_BASE_SEED").unwrap_or(DEFAULT_BASE_SEED);
    (base..base.saturating_add(count.unwrap_or(DEFAULT_SCENARIOS))).collect()
}

/// Runs every scenario directly and then by its path's relay (or directly again), one worker
/// per path; returns the failures in seed order.
fn run_all(seeds: &[u64], paths: &[Path], label: &str) -> Vec<Failure> {
    let start = Instant::now();
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    thread::scope(|scope| {
        for path in paths {
            scope.spawn(|| {
                // Each round takes a scenario no other worker has: at most one per seed.
                for _ in 0..seeds.len() {
                    let Some(&seed) = seeds.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        break;
                    };
                    let scenario = Scenario::generate(seed);
                    let direct = run(&scenario, path, path.upstream_addr());
                    let other = run(&scenario, path, path.relay.unwrap_or(path.upstream_addr()));
                    let problems = judge(&scenario, &direct, &other);
                    if !problems.is_empty() {
                        let failure = Failure { scenario, direct, other, problems };
                        failures.lock().unwrap().push(failure);
                    }
                }
            });
        }
    });
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for &seed in seeds {
        *kinds.entry(Scenario::generate(seed).kind()).or_default() += 1;
    }
    eprintln!(
        "{} scenarios (direct, then {label}) with {} at once in {:.1?}; by kind: {kinds:?}",
        seeds.len(),
        paths.len(),
        start.elapsed()
    );
    let mut failures = failures.into_inner().unwrap();
    failures.sort_by_key(|f| f.scenario.seed);
    failures
}

/// Plays `scenario` with the client connecting to `target` and the upstream accepting on the
/// path's upstream listener.
fn run(scenario: &Scenario, path: &Path, target: SocketAddr) -> Run {
    drop_stale_connections(&path.upstream);
    thread::scope(|scope| {
        let client = scope.spawn(|| match TcpStream::connect_timeout(&target, PEER_IO_TIMEOUT) {
            Ok(stream) => run_peer(stream, &scenario.client, &scenario.upstream.send),
            Err(e) => Observed::connect_failed(&e),
        });
        let upstream = match path.upstream.accept() {
            Ok((stream, _)) => run_peer(stream, &scenario.upstream, &scenario.client.send),
            Err(_) => Observed::no_connection(),
        };
        Run { client: client.join().expect("the client peer"), upstream }
    })
}

/// Closes connections left waiting on `listener` (by a run whose upstream gave up waiting), so
/// that they are not taken for the next run's.
fn drop_stale_connections(listener: &TcpListener) {
    listener.set_nonblocking(true).expect("non-blocking listener");
    for _ in 0..64 {
        if listener.accept().is_err() {
            break;
        }
    }
    listener.set_nonblocking(false).expect("blocking listener");
}

/// The rules of the comparison (see the file's documentation), for each peer: `direct` is the
/// reference, `other` the run checked against it.
fn judge(scenario: &Scenario, direct: &Run, other: &Run) -> Vec<Problem> {
    let mut problems = Vec::new();
    let peers = [
        ("client", &scenario.upstream.send, &direct.client, &other.client),
        ("upstream", &scenario.client.send, &direct.upstream, &other.upstream),
    ];
    for (peer, sent, d, o) in peers {
        let mut problem =
            |kind, detail: String| problems.push(Problem { kind, detail: format!("{peer}: {detail}") });
        let (reference, checked) = (d.outcome(), o.outcome());
        let direct_whole = d.corrupt.is_none() && (reference != Outcome::Clean || d.received == sent.total);
        if !direct_whole || matches!(reference, Outcome::Stuck | Outcome::NoConnection) {
            problem("direct run not as designed", format!("directly: {d}"));
            continue;
        }
        if let Some(corrupt) = &o.corrupt {
            problem("bytes that were not sent", corrupt.clone());
        }
        match (reference, checked) {
            (Outcome::Aborted, Outcome::Clean) => problem(
                "abort passed on as a clean EOF",
                format!("{} of {} bytes then EOF", o.received, sent.total),
            ),
            (_, Outcome::Clean) if o.received != sent.total => problem(
                "clean EOF after missing bytes",
                format!("EOF after {} of {} bytes", o.received, sent.total),
            ),
            (_, Outcome::Stuck) => problem("stalled or failed", format!("{o}")),
            (_, Outcome::NoConnection) => problem("no connection", format!("{o}")),
            (Outcome::Clean, Outcome::Aborted) => {
                problem("abort where the direct peer saw a clean end", format!("{o}"))
            }
            _ => {}
        }
    }
    problems
}

/// Prints a summary by kind and some failures in full (the first of each kind, then the next
/// by seed), then fails if there are any.
fn report(failures: &[Failure], total: usize, label: &str) {
    if failures.is_empty() {
        return;
    }
    // (scenario kind, problem kind) → (failing scenarios, index of the first)
    let mut kinds: BTreeMap<(String, &str), (usize, usize)> = BTreeMap::new();
    for (i, failure) in failures.iter().enumerate() {
        let mut problems: Vec<&str> = failure.problems.iter().map(|p| p.kind).collect();
        problems.dedup();
        for problem in problems {
            kinds.entry((failure.scenario.kind(), problem)).or_insert((0, i)).0 += 1;
        }
    }
    let mut text = format!("{} of {total} scenarios failed; by kind (count, first seed):\n", failures.len());
    for ((scenario, problem), (count, first)) in &kinds {
        text += &format!("  {scenario}: {problem} — {count} (seed {})\n", failures[*first].scenario.seed);
    }
    let mut shown: Vec<usize> = kinds.values().map(|&(_, first)| first).collect();
    shown.sort_unstable();
    shown.dedup();
    shown.extend((0..failures.len()).filter(|i| !shown.contains(i)).collect::<Vec<_>>());
    for &i in shown.iter().take(SHOWN) {
        let failure = &failures[i];
        let s = &failure.scenario;
        text += &format!("\nseed {} [{}]\n  {s:?}\n", s.seed, s.kind());
        for (name, run) in [("direct", &failure.direct), (label, &failure.other)] {
            text += &format!("  {name}: client {}\n  {name}: upstream {}\n", run.client, run.upstream);
        }
        for problem in &failure.problems {
            text += &format!("  PROBLEM {}: {}\n", problem.kind, problem.detail);
        }
        text += &format!("  replay: IDLEREAPER_DIFF_SEED={} cargo test --test it differential::\n", s.seed);
    }
    if failures.len() > SHOWN {
        text += &format!("\n({} more failures not shown)\n", failures.len() - SHOWN);
    }
    panic!("{text}");
}
