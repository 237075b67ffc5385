//! Load that could starve the event loop: a burst of 5,000 connects beyond `max_connections` and
//! `max_connections_per_ip`, and 5,000 connections reaching their idle deadline together. In
//! both, a well-behaved client keeps 64-byte round trips going through the relay: every one
//! must complete (the worst is printed — a report, with only a generous bound asserted).
//!
//! The two tests take a lock so that they do not run at once: each is the other's noise.

use std::collections::VecDeque;
use std::io::Write;
use std::net::{IpAddr, TcpStream};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

/// Held by each test for its whole run.
static HEAVY: Mutex<()> = Mutex::new(());

/// The bound on a round trip under load: generous (a loaded two-core CI machine, a debug build).
const WORST_ROUND_TRIP: Duration = Duration::from_secs(2);

fn assert_pings(what: &str, report: &PingReport) {
    eprintln!("{what}: {} round trips of {PING_SIZE} bytes, worst {:?}", report.round_trips, report.worst);
    if let Some(failure) = &report.failure {
        panic!("{what}: a round trip failed: {failure}");
    }
    assert!(report.round_trips >= 10, "{what}: only {} round trips", report.round_trips);
    assert!(report.worst < WORST_ROUND_TRIP, "{what}: worst round trip {:?}", report.worst);
}

/// Injects: 4 threads making 5,000 connects in a burst (each thread keeps its last 60 open,
/// so ~240 are held against `max_connections = 100`; one thread uses a single source address
/// against `max_connections_per_ip = 20`, the others spread over 150 addresses).
/// Must survive: a ping-pong client on the same listener keeps every round trip; the surplus
/// is refused for both reasons, and the refusal log is rate limited (far fewer lines than
/// refusals, the held-back ones counted in `refused_unlogged=`).
#[test]
fn a_connect_flood_beyond_the_limits_does_not_disturb_a_well_behaved_client() {
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    const CONNECTS: usize = 5000;
    const THREADS: usize = 4;
    const HELD_PER_THREAD: usize = 60;
    const IPS_PER_THREAD: usize = 50;

    let upstream = Upstream::echo();
    let listen = free_addr();
    let mut daemon = Daemon::start(
        &(relay_listener("flooded", listen, upstream.addr, "30s")
            + "max_connections = 100\nmax_connections_per_ip = 20\n"),
    );
    let pings = PingPong::start(listen, Duration::from_secs(60));

    let start = Instant::now();
    let flooders: Vec<_> = (0..THREADS)
        .map(|t| {
            // Thread 0: one source address; the others: 50 each, in turn.
            let sources: Vec<IpAddr> = if t == 0 {
                vec![IpAddr::V4(fresh_ip())]
            } else {
                (0..IPS_PER_THREAD).map(|_| IpAddr::V4(fresh_ip())).collect()
            };
            thread::spawn(move || {
                let mut held: VecDeque<TcpStream> = VecDeque::with_capacity(HELD_PER_THREAD + 1);
                let mut failed = 0;
                for i in 0..CONNECTS / THREADS {
                    match connect_from(sources[i % sources.len()], listen) {
                        Ok(s) => held.push_back(s),
                        Err(_) => failed += 1,
                    }
                    if held.len() > HELD_PER_THREAD {
                        held.pop_front();
                    }
                }
                (held, failed)
            })
        })
        .collect();
    let mut still_held = Vec::new();
    let mut failed = 0;
    for f in flooders {
        let (held, n) = f.join().expect("flood thread");
        still_held.extend(held);
        failed += n;
    }
    let flood_time = start.elapsed();
    eprintln!("flood: {CONNECTS} connects in {flood_time:?} ({failed} connects failed)");
    assert!(failed < CONNECTS / 10, "{failed} of {CONNECTS} connects failed outright");

    // A second later, a burst beyond max_connections from new addresses: its first refusal is
    // logged, carrying the count of those held back.
    let refusal_lines = |daemon: &Daemon| {
        daemon.log().lines().filter(|l| l.contains(" conn refused listener=flooded ")).count()
    };
    thread::sleep(Duration::from_millis(1100));
    let before_burst = refusal_lines(&daemon);
    let extra: Vec<TcpStream> =
        (0..120).filter_map(|_| connect_from(IpAddr::V4(fresh_ip()), listen).ok()).collect();
    let logged = wait_for(Duration::from_secs(5), || (refusal_lines(&daemon) > before_burst).then_some(()));
    assert!(logged.is_some(), "no refusal logged for a burst beyond max_connections; log:\n{}", daemon.log());
    let report = pings.finish();
    let stats = daemon.stats();
    let refused: u64 = stats["refused"].parse().unwrap();
    let log = daemon.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(" conn refused listener=flooded ")).collect();
    let unlogged: u64 = lines
        .iter()
        .filter_map(|l| {
            parse_fields(l.split_once(" conn refused ").unwrap().1).get("refused_unlogged").cloned()
        })
        .map(|n| n.parse::<u64>().unwrap())
        .sum();
    eprintln!(
        "flood: refused {refused}, in {} log lines (+{unlogged} counted as refused_unlogged); stats {stats:?}",
        lines.len()
    );
    assert_pings("during the connect flood", &report);
    for reason in ["limit", "per_ip_limit"] {
        assert!(
            lines.iter().any(|l| l.contains(&format!(" reason={reason}"))),
            "no refusal with reason={reason}; log lines:\n{}",
            lines.join("\n")
        );
    }
    assert!(refused >= 1000, "only {refused} of {CONNECTS} connects were refused: the limits did not bite");
    // One line per second per reason, at most, plus the first of each.
    let seconds = start.elapsed().as_secs() as usize + 2;
    assert!(lines.len() <= 2 * seconds, "{} refusal lines in {seconds} s: not rate limited", lines.len());
    assert!(unlogged > 0, "no line carries refused_unlogged=N:\n{}", lines.join("\n"));
    assert!(
        lines.len() as u64 + unlogged <= refused,
        "the log accounts for more refusals than the daemon counted"
    );
    drop(still_held);
    drop(extra);
}

/// Injects: 5,000 sink connections whose idle deadlines land together (created, then one byte
/// sent on each as fast as possible), expiring while a ping-pong client on another listener
/// of the same daemon measures round trips.
/// Must survive: every round trip completes; all 5,000 are closed with `reason=idle`, each
/// having relayed its one byte.
#[test]
fn a_mass_expiry_of_5000_connections_does_not_stall_the_loop() {
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    const CONNECTIONS: usize = 5000;
    const IDLE: Duration = Duration::from_secs(3);

    let upstream = Upstream::echo();
    let mass = free_addr();
    let ping = free_addr();
    let daemon = Daemon::start(
        &(sink_listener("mass", mass, "3s") + &relay_listener("ping", ping, upstream.addr, "60s")),
    );

    let start = Instant::now();
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for i in 0..CONNECTIONS {
        match TcpStream::connect_timeout(&mass, Duration::from_secs(5)) {
            Ok(s) => clients.push(s),
            Err(e) => panic!("connection {i} of {CONNECTIONS}: {e}"),
        }
    }
    let created = start.elapsed();
    assert!(created < IDLE, "creating {CONNECTIONS} connections took {created:?}, past the idle timeout");

    let pings = PingPong::start(ping, Duration::from_secs(60));
    let sending = Instant::now();
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(b"!").unwrap_or_else(|e| panic!("byte on connection {i}: {e}"));
    }
    let spread = sending.elapsed();
    eprintln!(
        "mass expiry: {CONNECTIONS} connections made in {created:?}, their bytes sent within {spread:?}"
    );

    // Poll the log (not too often: it grows to 5,000 lines) until every connection is closed.
    let deadline = IDLE + spread + Duration::from_secs(20);
    let mut closed = 0;
    let mut polls = 0;
    while sending.elapsed() < deadline && polls < 1000 {
        closed = daemon.closes().iter().filter(|c| c.get("listener") == Some("mass")).count();
        if closed >= CONNECTIONS {
            break;
        }
        polls += 1;
        thread::sleep(Duration::from_millis(200));
    }
    let all_closed_after = sending.elapsed();
    let report = pings.finish();
    assert_eq!(closed, CONNECTIONS, "closed connections {all_closed_after:?} after their bytes");
    eprintln!("mass expiry: all {CONNECTIONS} closed {all_closed_after:?} after the bytes were sent");
    assert_pings("during the mass expiry", &report);

    for line in daemon.closes().iter().filter(|c| c.get("listener") == Some("mass")) {
        line.assert_reason("idle");
        assert_eq!(line.num("bytes_from_client"), 1, "{}", line.raw);
        assert!(line.num("lifetime_ms") >= IDLE.as_millis() as u64, "{}", line.raw);
    }
    let open = clients.iter().filter(|c| peer_state(c) == PeerState::Open).count();
    assert_eq!(open, 0, "{open} clients still see their connection open");
}
