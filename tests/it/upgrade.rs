//! Live upgrade (SIGUSR2): the daemon executes its binary again, read from disk, in the same
//! process, and carries on with everything it had — listening sockets, connections with the
//! bytes it held, half-closes, upstream connects in progress, idle deadlines where they were,
//! and its /metrics counters. What a user would notice is checked: no client sees a refusal, a
//! reset or a lost byte; the process keeps its PID and pidfile but now runs the new file; and
//! signals that come during an upgrade neither kill it nor wedge it.
//!
//! Each test runs a copy of the built binary from its own temp directory, so that replacing the
//! file (as a package upgrade does: a new file renamed over the old one) touches nothing else.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::common::*;

/// How long an upgrade may take, from USR2 to the `upgraded` line (it runs the new binary's
/// `--check` first), on a loaded 2-core machine with a debug build.
const UPGRADE_DEADLINE: Duration = Duration::from_secs(20);

/// The fields of the `n`-th (0-based) log line that contains `marker` (e.g. " INFO upgraded "),
/// once it is there (within `timeout`); panics with the log on a refusal, an exit or the timeout.
fn wait_line(daemon: &mut Daemon, marker: &str, n: usize, timeout: Duration) -> BTreeMap<String, String> {
    let found = wait_for(timeout, || {
        let log = daemon.log();
        if let Some(line) = log.lines().filter(|l| l.contains(marker)).nth(n) {
            let (_, fields) = line.split_once(marker).unwrap();
            return Some(Ok(parse_fields(fields)));
        }
        if log.contains("upgrade refused") {
            return Some(Err("the upgrade was refused".to_string()));
        }
        daemon.poll_exit().map(|status| Err(format!("the daemon exited ({status})")))
    });
    match found {
        Some(Ok(fields)) => fields,
        Some(Err(why)) => panic!("waiting for {marker:?}: {why}; log:\n{}", daemon.log()),
        None => panic!("no {marker:?} line (number {n}) within {timeout:?}; log:\n{}", daemon.log()),
    }
}

fn num(fields: &BTreeMap<String, String>, key: &str) -> u64 {
    fields.get(key).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no numeric {key}= in {fields:?}"))
}

/// The samples of the counters that must never go backwards.
fn monotonic(samples: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    samples
        .iter()
        .filter(|(k, _)| {
            k.starts_with("idlereaper_connections_accepted_total{")
                || k.starts_with("idlereaper_relayed_bytes_total{")
        })
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// Asserts that every counter of `before` is in `after`, not lower.
fn assert_not_backwards(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, daemon: &Daemon) {
    let before = monotonic(before);
    assert!(!before.is_empty(), "no accepted/bytes counters in the scrape");
    for (series, was) in &before {
        let now = after.get(series).copied();
        assert!(
            now.is_some_and(|now| now >= *was),
            "{series} went from {was} to {now:?} across the upgrade; log:\n{}",
            daemon.log()
        );
    }
}

/// A client that, on its own thread, keeps connecting, making one round trip and closing,
/// counting the successes and keeping every failure.
struct ConnectLoop {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    thread: JoinHandle<Vec<String>>,
}

impl ConnectLoop {
    fn start(addr: SocketAddr) -> ConnectLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, ok) = (stop.clone(), ok.clone());
            thread::spawn(move || {
                let start = Instant::now();
                let mut failures = Vec::new();
                // Bounded: until told, 60 s or 100k connections.
                for i in 0..100_000u64 {
                    if stop.load(Ordering::Relaxed) || start.elapsed() > Duration::from_secs(60) {
                        break;
                    }
                    let msg = format!("loop {i}");
                    let result =
                        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).and_then(|mut s| {
                            with_timeouts(&s);
                            s.write_all(msg.as_bytes())?;
                            let mut got = vec![0u8; msg.len()];
                            s.read_exact(&mut got)?;
                            if got != msg.as_bytes() {
                                return Err(io::Error::other("wrong bytes echoed"));
                            }
                            Ok(())
                        });
                    match result {
                        Ok(()) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failures.push(format!("connection {i} at {:?}: {e}", start.elapsed())),
                    }
                    thread::sleep(Duration::from_millis(1));
                }
                failures
            })
        };
        ConnectLoop { stop, ok, thread }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the loop; returns the successful round trips and the failures.
    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self.thread.join().expect("the connect loop panicked");
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

/// What the half-closed connection's upstream sends after the upgrade.
const HALF_RESPONSE: u64 = 1024 * 1024;
/// Most the stalled client writes (it stops when the relay stops taking bytes, much earlier).
const STALL_CAP: u64 = 256 * 1024 * 1024;
/// The idle timeout of the listener whose connection must close on its original deadline.
const SHORT_IDLE: Duration = Duration::from_secs(3);

#[test]
fn an_upgrade_keeps_every_connection_and_byte() {
    let test_start = Instant::now();
    // Upstreams: an echo; one that reads nothing until told; one that answers a half-closed
    // client only after the upgrade; one whose accept queue is full (SYNs dropped).
    let echo = patient_echo();
    let stall_go = Arc::new(AtomicBool::new(false));
    let stall_total = Arc::new(AtomicU64::new(0));
    let (stall_tx, stall_done) = mpsc::channel();
    let stall_upstream = {
        let (go, total) = (stall_go.clone(), stall_total.clone());
        Upstream::start(move |mut s| {
            hold_until(&go, Duration::from_secs(60));
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let total = total.load(Ordering::SeqCst);
            let _ = stall_tx.send(recv_stream(&mut s, 31, total, full_speed));
        })
    };
    let half_go = Arc::new(AtomicBool::new(false));
    let (half_tx, half_request) = mpsc::channel();
    let half_upstream = {
        let go = half_go.clone();
        Upstream::start(move |mut s| {
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut request = Vec::new();
            let read = s.read_to_end(&mut request).map(|_| request).map_err(|e| e.to_string());
            let _ = half_tx.send(read);
            hold_until(&go, Duration::from_secs(60));
            let _ = send_stream(&mut s, 41, HALF_RESPONSE);
            // Dropped: the FIN follows the last byte.
        })
    };
    let (pending_upstream, fillers) = unanswering_upstream();

    let (main, stall, half, pending, short, metrics) =
        (free_addr(), free_addr(), free_addr(), free_addr(), free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let program = copy_binary(dir.path());
    let config = daemon_section(dir.path(), "2s")
        + &relay_listener("main", main, echo.addr, "60s")
        + &relay_listener("stall", stall, stall_upstream.addr, "60s")
        + &relay_listener("half", half, half_upstream.addr, "60s")
        + &relay_listener("pending", pending, pending_upstream.local_addr().unwrap(), "60s")
        + "connect_timeout = \"10s\"\n\n"
        + &relay_listener("short", short, echo.addr, "3s")
        + &format!("[metrics]\nlisten = \"{metrics}\"\n");
    let mut daemon = Daemon::start_program(&program, dir, &config, |_, _| {});
    let pid = daemon.pid();
    assert_eq!(read_pidfile(&daemon), format!("{pid}\n"), "pidfile before the upgrade");

    // 1,000 idle connections, each after one round trip.
    let mut idle = open_idle(main, 1000);
    // A client connecting, making one round trip and closing, all along.
    let connect_loop = ConnectLoop::start(main);
    // Four streams moving data both ways.
    let streams: Vec<EchoStream> = (0..4).map(|i| EchoStream::start(main, 100 + i)).collect();
    // A half-closed connection: the request and the client's FIN reached the upstream, whose
    // response comes only after the upgrade.
    let mut half_client = connect(half);
    half_client.write_all(b"a request, then FIN\n").unwrap();
    half_client.shutdown(Shutdown::Write).unwrap();
    let request = half_request.recv_timeout(Duration::from_secs(10)).expect("the half-close upstream");
    assert_eq!(request.expect("read the request"), b"a request, then FIN\n");
    let half_reader = thread::spawn(move || {
        half_client.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        read_to_ending(&mut half_client)
    });
    // A stalled stream: the upstream reads nothing, so the daemon holds what it took.
    let stall_client = connect(stall);
    let stalled = write_until_stalled(&stall_client, 31, STALL_CAP);
    assert!(stalled < STALL_CAP, "the relay took {stalled} bytes without stalling");
    stall_client.shutdown(Shutdown::Write).unwrap();
    // A connection on the 3 s listener, idle from here: closed by the old image's clock only if
    // the time it was idle before the upgrade counts.
    // From an address of its own: the connect loop's clients on 127.0.0.1 may reuse its port.
    let mut short_client = connect_from(fresh_ip().into(), short).expect("connect to the 3 s listener");
    let short_me = short_client.local_addr().unwrap();
    let last_write = Instant::now();
    assert_echo(&mut short_client, b"the last bytes");
    let last_read = Instant::now();
    let short_watch = thread::spawn(move || wait_closed(&mut short_client, Duration::from_secs(15)));

    // The package manager replaces the binary: the running image is now a deleted file.
    replace_binary(&program);
    let exe = exe_of(pid);
    assert!(exe.ends_with(" (deleted)"), "/proc/{pid}/exe after the replacement: {exe}");

    // An upstream connect in progress: the SYN is dropped, retried in 1 s, 3 s, 7 s.
    let until = |d: Duration| thread::sleep((last_write + d).saturating_duration_since(Instant::now()));
    until(Duration::from_millis(1500));
    let mut pending_client = connect(pending);
    pending_client.write_all(b"bytes for a late upstream").unwrap();
    until(Duration::from_secs(2));

    assert!(
        last_write.elapsed() < SHORT_IDLE - Duration::from_millis(500),
        "the machine is too slow: the 3 s connection is near its deadline before the upgrade"
    );
    let loop_before = connect_loop.ok();
    let received_before: Vec<u64> = streams.iter().map(EchoStream::received).collect();
    let before = scrape(metrics);
    let signalled = Instant::now();
    daemon.signal(libc::SIGUSR2);
    let handing = wait_line(&mut daemon, " INFO upgrade: handing over ", 0, UPGRADE_DEADLINE);
    let upgraded = wait_line(&mut daemon, " INFO upgraded ", 0, UPGRADE_DEADLINE);
    let upgrade_took = signalled.elapsed();
    let after = scrape(metrics);
    eprintln!("upgrade: {handing:?} then {upgraded:?}, {upgrade_took:?} after USR2");

    // Same process and pidfile, now running the new file.
    assert!(daemon.poll_exit().is_none() && is_running(pid), "the daemon runs on; log:\n{}", daemon.log());
    assert_eq!(read_pidfile(&daemon), format!("{pid}\n"), "pidfile after the upgrade");
    let exe = exe_of(pid);
    assert!(!exe.ends_with(" (deleted)"), "/proc/{pid}/exe after the upgrade: {exe}");
    let started_from = program.canonicalize().unwrap();
    assert_eq!(Path::new(&exe), started_from, "the process runs the file at the path it was started from");
    assert_eq!(upgraded.get("from").map(String::as_str), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(upgraded.get("to").map(String::as_str), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(num(&handing, "listeners"), 5, "listeners handed over");
    assert_eq!(num(&upgraded, "listeners"), 5, "listeners taken over");
    // 1,000 idle + 4 streams + stalled + half-closed + connecting + short, and whatever the
    // connect loop had open then.
    let handed = num(&handing, "connections");
    assert!((1008..=1012).contains(&handed), "connections handed over: {handed}");
    assert_eq!(num(&upgraded, "connections"), handed, "every connection handed over was taken over");

    // /metrics: nothing went backwards, one successful upgrade.
    assert_not_backwards(&before, &after, &daemon);
    assert_eq!(sample(&before, "idlereaper_upgrades_total{result=\"success\"}"), 0.0);
    assert_eq!(sample(&after, "idlereaper_upgrades_total{result=\"success\"}"), 1.0);
    assert_eq!(sample(&after, "idlereaper_upgrades_total{result=\"refused\"}"), 0.0);

    // The upstream connect completes after the upgrade: make room in the accept queue.
    pending_upstream.set_nonblocking(true).unwrap();
    let filler_addrs: Vec<SocketAddr> = fillers.iter().map(|f| f.local_addr().unwrap()).collect();
    let mut taken_fillers = Vec::new();
    let daemon_side = wait_for(Duration::from_secs(10), || match pending_upstream.accept() {
        Ok((s, peer)) if filler_addrs.contains(&peer) => {
            taken_fillers.push(s);
            None
        }
        Ok((s, _)) => Some(s),
        Err(_) => None,
    });
    let mut daemon_side = daemon_side.unwrap_or_else(|| {
        panic!("the daemon's upstream connect never completed; log tail:\n{}", tail(&daemon.log(), 40))
    });
    daemon_side.set_nonblocking(false).unwrap();
    with_timeouts(&daemon_side);
    assert_eq!(read_n(&mut daemon_side, 25), b"bytes for a late upstream", "held client bytes");
    daemon_side.write_all(b"late, but here").unwrap();
    assert_eq!(read_n(&mut pending_client, 14), b"late, but here", "the answer reaches the client");

    // The short connection closes on the deadline it had before the upgrade.
    let closed = short_watch.join().expect("the 3 s connection did not close (EOF) within 15 s");
    let idle_for = closed - last_write;
    assert!(idle_for >= SHORT_IDLE, "closed {idle_for:?} after its last bytes: before its idle timeout");
    assert!(
        closed <= last_read + SHORT_IDLE + Duration::from_millis(1500),
        "closed {:?} after its last bytes and {:?} after USR2: the time idle before the upgrade \
         was not counted",
        idle_for,
        closed - signalled
    );
    let short_line = daemon.wait_close_of(short_me, Duration::from_secs(5));
    short_line.assert_reason("idle");
    // The address that served it crossed the upgrade with the connection.
    assert_eq!(short_line.get("upstream"), Some(echo.addr.to_string().as_str()), "{}", short_line.raw);

    // The half-closed client gets the whole response, then EOF.
    half_go.store(true, Ordering::SeqCst);
    let (response, end) = half_reader.join().expect("the half-closed client's reader");
    assert_eq!(response.len() as u64, HALF_RESPONSE, "response bytes to the half-closed client");
    assert_eq!(ByteStream::new(41).check(&response), Ok(()), "the response arrived intact");
    assert_eq!(end, StreamEnd::Eof, "the half-closed client's stream ends with EOF");

    // The stalled upstream reads at last: every byte the daemon held arrives, in order.
    stall_total.store(stalled, Ordering::SeqCst);
    stall_go.store(true, Ordering::SeqCst);
    let drained = stall_done.recv_timeout(Duration::from_secs(40)).expect("the stalled upstream's result");
    drained.unwrap_or_else(|e| panic!("the stalled stream ({stalled} bytes): {e}"));

    // The streams flow on after the upgrade, then every byte comes back intact.
    let flowing = wait_for(Duration::from_secs(10), || {
        streams.iter().zip(&received_before).all(|(s, b)| s.received() >= b + 256 * 1024).then_some(())
    });
    assert!(flowing.is_some(), "the streams did not move 256 KiB each after the upgrade");
    let moved: Vec<u64> = streams.into_iter().enumerate().map(|(i, s)| s.finish(i)).collect();

    // The connect loop went on across the upgrade, without one failure.
    let settle = wait_for(Duration::from_secs(10), || (connect_loop.ok() > loop_before + 20).then_some(()));
    assert!(settle.is_some(), "the connect loop stopped making progress after the upgrade");
    let (loops, failures) = connect_loop.finish();
    assert!(failures.is_empty(), "{} connect-loop failures, first: {}", failures.len(), failures[0]);

    // Every idle connection still echoes.
    assert_all_echo(&mut idle, "idle connections after the upgrade", &daemon);
    let end = scrape(metrics);
    assert_not_backwards(&after, &end, &daemon);
    let log = daemon.log();
    assert!(!log.contains("panicked"), "a panic in the log:\n{log}");
    assert!(!log.contains("could not be taken over"), "a connection was lost:\n{log}");

    let status = daemon.stop_within(Duration::from_secs(15));
    assert!(status.success(), "exit after TERM: {status}; log tail:\n{}", tail(&daemon.log(), 20));
    assert!(!daemon.pidfile.exists(), "pidfile removed on exit");
    eprintln!(
        "stalled {stalled} bytes, streams moved {moved:?}, {loops} connect-loop round trips, \
         test took {:?}",
        test_start.elapsed()
    );
}

#[test]
fn an_upgrade_with_two_workers_keeps_each_workers_connections() {
    let echo = patient_echo();
    let (listen, metrics) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let program = copy_binary(dir.path());
    let config = daemon_section(dir.path(), "2s").replace("tick = \"1ms\"", "tick = \"1ms\"\nworkers = 2")
        + &relay_listener("relay", listen, echo.addr, "60s")
        + &format!("[metrics]\nlisten = \"{metrics}\"\n");
    let mut daemon = Daemon::start_program(&program, dir, &config, |_, _| {});
    let pid = daemon.pid();
    let mut idle = open_idle(listen, 200);

    daemon.signal(libc::SIGUSR2);
    let handing = wait_line(&mut daemon, " INFO upgrade: handing over ", 0, UPGRADE_DEADLINE);
    let upgraded = wait_line(&mut daemon, " INFO upgraded ", 0, UPGRADE_DEADLINE);
    assert_eq!(num(&handing, "connections"), 200, "connections handed over");
    assert_eq!(num(&upgraded, "connections"), 200, "connections taken over");
    assert_eq!(num(&upgraded, "listeners"), 1);
    assert!(is_running(pid) && daemon.poll_exit().is_none(), "same process");
    assert_eq!(read_pidfile(&daemon), format!("{pid}\n"));

    assert_all_echo(&mut idle, "idle connections after the upgrade", &daemon);
    let mut fresh = connect(listen);
    assert_echo(&mut fresh, b"a new connection after the upgrade");
    // New connections still reach both workers' sockets: many of them all work.
    let mut more = open_idle(listen, 50);
    assert_all_echo(&mut more, "connections made after the upgrade", &daemon);
    let samples = scrape(metrics);
    assert_eq!(sample(&samples, "idlereaper_upgrades_total{result=\"success\"}"), 1.0);
    assert_eq!(sample(&samples, "idlereaper_connections_active{listener=\"relay\"}"), 251.0);
    let log = daemon.log();
    assert!(!log.contains("panicked") && !log.contains("could not be taken over"), "log:\n{log}");
    let status = daemon.stop_within(Duration::from_secs(15));
    assert!(status.success(), "exit after TERM: {status}");
    assert!(!daemon.pidfile.exists(), "pidfile removed on exit");
    // Each worker of the new image had its share: the stop says how many each one drained.
    let log = daemon.log();
    let drained: Vec<u64> = log
        .lines()
        .filter(|l| l.contains(" INFO stopping worker="))
        .filter_map(|l| l.split_once("draining connections=")?.1.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(drained.len(), 2, "one stopping line per worker; log:\n{log}");
    assert_eq!(drained.iter().sum::<u64>(), 251, "connections open at the stop, by worker: {drained:?}");
    assert!(drained.iter().all(|&n| n > 0), "both workers held connections: {drained:?}");
}

/// A deploy that flips a symbolic link (`current` → the newest release directory) and then
/// upgrades: the daemon, started as `current/idlereaper`, executes what that path points to at
/// the upgrade, not what it pointed to at start, says so in the `upgraded` line, and keeps the
/// path for the next upgrade.
#[test]
fn an_upgrade_executes_the_path_the_daemon_was_started_as_resolved_then() {
    let echo = patient_echo();
    let (listen, metrics) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let release = |v: &str| root.join("releases").join(v);
    for v in ["v1", "v2"] {
        std::fs::create_dir_all(release(v)).unwrap();
        copy_binary(&release(v));
    }
    let current = root.join("current");
    let flip = |to: &str| {
        let fresh = root.join("current.new");
        std::os::unix::fs::symlink(Path::new("releases").join(to), &fresh).unwrap();
        std::fs::rename(&fresh, &current).unwrap();
    };
    flip("v1");
    let program = current.join("idlereaper");
    let config = daemon_section(&root, "1s")
        + &relay_listener("relay", listen, echo.addr, "60s")
        + &format!("[metrics]\nlisten = \"{metrics}\"\n");
    let mut daemon = Daemon::start_program(&program, dir, &config, |_, _| {});
    let pid = daemon.pid();
    let runs = |v: &str| release(v).join("idlereaper").display().to_string();
    assert_eq!(exe_of(pid), runs("v1"), "started through the link");
    let mut client = connect(listen);
    assert_echo(&mut client, b"before the flip");

    for (n, to) in ["v2", "v1"].into_iter().enumerate() {
        flip(to);
        daemon.signal(libc::SIGUSR2);
        let upgraded = wait_line(&mut daemon, " INFO upgraded ", n, UPGRADE_DEADLINE);
        assert_eq!(exe_of(pid), runs(to), "/proc/{pid}/exe after upgrade {n}; log:\n{}", daemon.log());
        let said = |key: &str| upgraded.get(key).cloned().unwrap_or_default();
        assert_eq!(said("binary"), program.display().to_string(), "the path it was started as");
        assert_eq!(said("resolved"), runs(to), "the file that runs");
        assert_echo(&mut client, format!("after upgrade {n}").as_bytes());
    }
    assert_eq!(sample(&scrape(metrics), "idlereaper_upgrades_total{result=\"success\"}"), 2.0);
    let status = daemon.stop_within(Duration::from_secs(15));
    assert!(status.success(), "exit after TERM: {status}");
}

/// When, relative to the USR2, a second signal is sent.
#[derive(Debug, Clone, Copy)]
enum When {
    /// Right after it, from the same thread.
    Together,
    /// Once the daemon logged that it checks the new binary.
    WhileChecking,
    /// Once the daemon logged that it hands over (just before its exec).
    WhileHandingOver,
}

fn wait_for_moment(daemon: &mut Daemon, when: When) {
    match when {
        When::Together => {}
        When::WhileChecking => daemon.wait_log(" INFO upgrade: checking ", UPGRADE_DEADLINE),
        When::WhileHandingOver => daemon.wait_log(" INFO upgrade: handing over ", UPGRADE_DEADLINE),
    }
}

/// A daemon (a copy of the binary, one echo relay listener, metrics) with one open connection.
fn small_daemon(echo: &Upstream) -> (Daemon, SocketAddr, SocketAddr, TcpStream) {
    let (listen, metrics) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let program = copy_binary(dir.path());
    let config = daemon_section(dir.path(), "1s")
        + &relay_listener("relay", listen, echo.addr, "60s")
        + &format!("[metrics]\nlisten = \"{metrics}\"\n");
    let daemon = Daemon::start_program(&program, dir, &config, |_, _| {});
    let mut client = connect(listen);
    assert_echo(&mut client, b"before the signals");
    (daemon, listen, metrics, client)
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

/// USR2, then TERM at `when`: the daemon upgrades (or refuses, or ignores the USR2 if it saw
/// the TERM first) and then stops gracefully: exit 0, pidfile removed, the open connection
/// closed. `Ok` says which of these happened.
fn usr2_then_term(echo: &Upstream, when: When) -> Result<String, String> {
    let (mut daemon, _, _, mut client) = small_daemon(echo);
    let pid = daemon.pid();
    daemon.signal(libc::SIGUSR2);
    wait_for_moment(&mut daemon, when);
    send_signal(pid, libc::SIGTERM);
    let Some(status) = daemon.wait_exit(Duration::from_secs(15)) else {
        return Err(format!("still running 15 s after USR2 and TERM; log:\n{}", daemon.log()));
    };
    let log = daemon.log();
    if !status.success() {
        return Err(format!("exit {status} after USR2 and TERM; log:\n{log}"));
    }
    if log.contains("panicked") {
        return Err(format!("a panic; log:\n{log}"));
    }
    if daemon.pidfile.exists() {
        return Err(format!("the pidfile is left behind; log:\n{log}"));
    }
    let outcome = if log.contains(" INFO upgraded ") {
        "upgraded"
    } else if log.contains("upgrade refused") {
        "refused"
    } else if log.contains("SIGUSR2 while stopping: ignored") {
        "ignored (stopping)"
    } else {
        return Err(format!("the log says nothing of the USR2:\n{log}"));
    };
    if !matches!(when, When::Together) && outcome != "upgraded" {
        // Committed before the TERM came: the new image must be the one that stops.
        return Err(format!("{outcome}, not upgraded; log:\n{log}"));
    }
    // The open connection was closed by the stop (not left hanging).
    let mut buf = [0u8; 16];
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    match client.read(&mut buf) {
        Ok(0) => {}
        other => return Err(format!("the open connection after the exit: {other:?}")),
    }
    Ok(format!("{outcome}, exit {status}"))
}

/// USR2 twice (the second at `when`): ignored with a warning, or performed after the first;
/// the daemon runs on and serves. `Ok` says which.
fn usr2_twice(echo: &Upstream, when: When) -> Result<String, String> {
    let (mut daemon, listen, metrics, mut client) = small_daemon(echo);
    let pid = daemon.pid();
    daemon.signal(libc::SIGUSR2);
    wait_for_moment(&mut daemon, when);
    send_signal(pid, libc::SIGUSR2);
    wait_line(&mut daemon, " INFO upgraded ", 0, UPGRADE_DEADLINE);
    // Settled: every check started has ended in an upgrade, and it stays so a moment.
    let done = |d: &Daemon| {
        let log = d.log();
        count(&log, " INFO upgrade: checking ") == count(&log, " INFO upgraded ")
    };
    let settled = wait_for(Duration::from_secs(30), || {
        if !done(&daemon) {
            return None;
        }
        thread::sleep(Duration::from_millis(500));
        done(&daemon).then_some(())
    });
    let log = daemon.log();
    if settled.is_none() {
        return Err(format!("an upgrade did not finish; log:\n{log}"));
    }
    if daemon.poll_exit().is_some() || !is_running(pid) {
        return Err(format!("the daemon died; log:\n{log}"));
    }
    if log.contains("panicked") || log.contains("upgrade refused") {
        return Err(format!("a panic or a refusal; log:\n{log}"));
    }
    let upgrades = count(&log, " INFO upgraded ");
    let ignored = count(&log, "SIGUSR2 during an upgrade: ignored");
    if !(1..=2).contains(&upgrades) {
        return Err(format!("{upgrades} upgrades; log:\n{log}"));
    }
    assert_echo(&mut client, b"after the signals");
    let mut fresh = connect(listen);
    assert_echo(&mut fresh, b"a new connection");
    let samples = scrape(metrics);
    let counted = sample(&samples, "idlereaper_upgrades_total{result=\"success\"}");
    if counted != upgrades as f64 {
        return Err(format!("upgrades_total success={counted}, {upgrades} upgraded lines; log:\n{log}"));
    }
    let status = daemon.stop_within(Duration::from_secs(15));
    if !status.success() || daemon.pidfile.exists() {
        return Err(format!("after TERM: exit {status}, pidfile left: {}", daemon.pidfile.exists()));
    }
    Ok(format!("{upgrades} upgrade(s), {ignored} ignored"))
}

#[test]
fn signals_during_an_upgrade() {
    let echo = patient_echo();
    let moments = [When::Together, When::WhileChecking, When::WhileHandingOver];
    let mut failures = Vec::new();
    for when in moments {
        match usr2_then_term(&echo, when) {
            Ok(what) => eprintln!("USR2 then TERM {when:?}: {what}"),
            Err(e) => failures.push(format!("USR2 then TERM {when:?}: {e}")),
        }
    }
    for when in moments {
        match usr2_twice(&echo, when) {
            Ok(what) => eprintln!("USR2 twice {when:?}: {what}"),
            Err(e) => failures.push(format!("USR2 twice {when:?}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{} of 6 cases failed:\n\n{}", failures.len(), failures.join("\n\n"));
}
