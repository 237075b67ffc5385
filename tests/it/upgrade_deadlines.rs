//! Deadlines across live upgrades: a connection that lives through a dozen upgrades is closed on
//! the deadline it would have had with none — its idle, half-close, connect and `max_lifetime`
//! deadlines no earlier than they fall and no later than one tick after, plus the pauses of the
//! upgrades (each `upgraded` line's `pause_ms`). A coarse tick (250 ms) makes a deadline rounded
//! up again by each new image show: a dozen such roundings add seconds.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

const TICK: Duration = Duration::from_millis(250);
const UPGRADES: usize = 12;
/// Every deadline falls this long after the connections are set up, once the upgrades are done
/// (each takes a few hundred milliseconds with a debug build — the new binary is asked three
/// questions before the exec — and they are spread over a tick each). Under the echo upstream's
/// 10 s read timeout.
const DEADLINE: Duration = Duration::from_secs(8);
/// What a loaded 2-core machine may add to noticing a close (the test's threads waking up).
const SLACK: Duration = Duration::from_millis(300);

/// One connection's deadline, as the test can bound it: no earlier than `earliest` (before the
/// daemon's last movement on it), no later than `latest` (after it).
struct Expected {
    what: &'static str,
    earliest: Instant,
    latest: Instant,
    closed: thread::JoinHandle<Instant>,
    reason: &'static str,
    client: SocketAddr,
}

fn watch(mut stream: TcpStream) -> thread::JoinHandle<Instant> {
    thread::spawn(move || wait_closed(&mut stream, DEADLINE + Duration::from_secs(20)))
}

/// An idle relay connection: one round trip, then silence. Its idle deadline is `idle` after
/// the daemon wrote the echo, which it did between the send and the echo's arrival.
fn idle_connection(listen: SocketAddr, idle: Duration) -> Expected {
    let mut c = connect(listen);
    let client = c.local_addr().unwrap();
    let sent = Instant::now();
    assert_echo(&mut c, b"the last bytes for a while");
    let echoed = Instant::now();
    let closed = watch(c);
    Expected { what: "idle", earliest: sent + idle, latest: echoed + idle, closed, reason: "idle", client }
}

/// The `[daemon]` section with a coarse tick.
fn daemon_config(dir: &std::path::Path) -> String {
    daemon_section(dir, "2s").replace("tick = \"1ms\"", "tick = \"250ms\"")
}

/// Sends SIGUSR2 and waits for the `upgraded` line; returns its `pause_ms`.
fn upgrade(daemon: &mut Daemon, n: usize) -> Duration {
    daemon.signal(libc::SIGUSR2);
    let line = wait_for(Duration::from_secs(20), || {
        let log = daemon.log();
        if log.contains("upgrade refused") || daemon.poll_exit().is_some() {
            panic!("upgrade {n} failed; log:\n{log}");
        }
        log.lines().filter(|l| l.contains(" INFO upgraded ")).nth(n).map(str::to_owned)
    });
    let line = line.unwrap_or_else(|| panic!("no upgrade {n} within 20 s; log:\n{}", daemon.log()));
    let fields = parse_fields(line.split_once(" INFO upgraded ").unwrap().1);
    let pause: f64 = fields.get("pause_ms").and_then(|v| v.parse().ok()).expect("pause_ms= in the line");
    Duration::from_secs_f64(pause / 1000.0)
}

#[test]
fn deadlines_do_not_drift_across_a_dozen_upgrades() {
    let echo = Upstream::echo();
    // Reads the request to its FIN, says when, and then neither answers nor closes.
    let release = Arc::new(AtomicBool::new(false));
    let (fin_tx, fin_seen) = mpsc::channel();
    let holding = {
        let release = release.clone();
        Upstream::start(move |mut s| {
            let mut request = Vec::new();
            let _ = s.read_to_end(&mut request);
            let _ = fin_tx.send(Instant::now());
            hold_until(&release, Duration::from_secs(40));
        })
    };
    let (unanswering, _fillers) = unanswering_upstream();
    let (idle, lifetime, half, connecting) = (free_addr(), free_addr(), free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let d = |d: Duration| format!("{}ms", d.as_millis());
    let config = daemon_config(dir.path())
        + &relay_listener("idle", idle, echo.addr, &d(DEADLINE))
        + &relay_listener("lifetime", lifetime, echo.addr, "60s")
        + &format!("max_lifetime = \"{}\"\n\n", d(DEADLINE))
        + &relay_listener("half", half, holding.addr, "60s")
        + &format!("half_close_timeout = \"{}\"\n\n", d(DEADLINE))
        + &relay_listener("connecting", connecting, unanswering.local_addr().unwrap(), "60s")
        + &format!("connect_timeout = \"{}\"\n\n", d(DEADLINE));
    let mut daemon = Daemon::start_in(dir, &config);

    let mut expected = Vec::new();
    // Three idle connections, their deadlines at different points of a tick.
    for _ in 0..3 {
        expected.push(idle_connection(idle, DEADLINE));
        thread::sleep(TICK / 3);
    }
    // max_lifetime counts from the accept, which comes after the connect and before the echo.
    let before_connect = Instant::now();
    let mut c = connect(lifetime);
    assert_echo(&mut c, b"accepted by now");
    let (client, latest) = (c.local_addr().unwrap(), Instant::now() + DEADLINE);
    let closed = watch(c);
    let earliest = before_connect + DEADLINE;
    expected.push(Expected {
        what: "max_lifetime",
        earliest,
        latest,
        closed,
        reason: "max_lifetime",
        client,
    });
    // half_close_timeout counts from the client's FIN, passed on before the upstream reads it.
    let mut c = connect(half);
    c.write_all(b"a request, then FIN").unwrap();
    let shut = Instant::now();
    c.shutdown(Shutdown::Write).unwrap();
    let fin = fin_seen.recv_timeout(Duration::from_secs(10)).expect("the upstream saw the FIN");
    let client = c.local_addr().unwrap();
    let closed = watch(c);
    let (earliest, latest) = (shut + DEADLINE, fin + DEADLINE);
    expected.push(Expected {
        what: "half-close",
        earliest,
        latest,
        closed,
        reason: "half_close_timeout",
        client,
    });
    // connect_timeout counts from the accept; the daemon accepts once the handshake is done.
    let before_connect = Instant::now();
    let c = connect(connecting);
    let client = c.local_addr().unwrap();
    let (earliest, latest) = (before_connect + DEADLINE, Instant::now() + SLACK + DEADLINE);
    let closed = watch(c);
    expected.push(Expected { what: "connect", earliest, latest, closed, reason: "connect_timeout", client });

    // Upgrades at uneven moments, so that each new image's start falls anywhere in a tick
    // (an image whose ticks began where it started would round every deadline up again).
    let mut prng = Prng::new(7);
    let mut pauses = Duration::ZERO;
    for n in 0..UPGRADES {
        thread::sleep(Duration::from_millis(prng.next_u64() % TICK.as_millis() as u64));
        pauses += upgrade(&mut daemon, n);
    }
    let first_deadline = expected.iter().map(|e| e.earliest).min().unwrap();
    assert!(
        Instant::now() + TICK < first_deadline,
        "the machine is too slow: {UPGRADES} upgrades took until a deadline; log:\n{}",
        daemon.log()
    );

    let mut report = Vec::new();
    for e in expected {
        let closed =
            e.closed.join().unwrap_or_else(|_| panic!("{}: not closed; log:\n{}", e.what, daemon.log()));
        let line = daemon.wait_close_of(e.client, Duration::from_secs(5));
        line.assert_reason(e.reason);
        let bound = TICK + pauses + SLACK;
        let late = closed.saturating_duration_since(e.latest);
        report.push(format!("{}: {late:?} after its latest deadline", e.what));
        assert!(closed >= e.earliest, "{}: closed {:?} before its deadline", e.what, e.earliest - closed);
        assert!(
            closed <= e.latest + bound,
            "{}: closed {late:?} after its deadline, beyond a tick ({TICK:?}) plus {UPGRADES} upgrades' \
             pauses ({pauses:?}) plus {SLACK:?}: {}",
            e.what,
            line.raw
        );
        // The age crossed every upgrade exactly: the lifetime the close line shows is at least
        // the time the client saw.
        if e.reason == "max_lifetime" {
            assert!(line.num("lifetime_ms") >= DEADLINE.as_millis() as u64, "{}", line.raw);
        }
    }
    eprintln!("{UPGRADES} upgrades, pauses {pauses:?} in all: {}", report.join("; "));
    release.store(true, std::sync::atomic::Ordering::SeqCst);
    daemon.stop();
}
