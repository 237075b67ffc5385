//! Slow readers are not idle. A client reads a download that never ends at a steady rate, for
//! clearly longer than `idle_timeout`: while it reads, bytes move on the wire every fraction of
//! a second — the kernel drains the daemon's send queue to it, between its window openings in
//! the zero-window persist state, while the daemon itself makes no call for seconds — and the
//! connection must stay open. Once the client stops reading, nothing moves, and it must be
//! reaped as idle no earlier than `idle_timeout` after the last byte moved, and not much later.
//! On loopback at 50, 100 and 200 KB/s, and at 10 and 50 KB/s over an MTU-1500 veth link between
//! two network namespaces the test makes.
//!
//! Each client sets a small receive buffer: the kernel opens a reader's window in steps of its
//! buffer, so with the default one (128 KiB, and 64 KiB segments on loopback) a 10 KB/s reader
//! moves bytes on the wire only every ten seconds or so — idle for real, as far as the wire
//! goes. The test checks that premise (the largest gap between movements its own kernel saw).

use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

const IDLE: Duration = Duration::from_secs(3);
/// How long each client reads: clearly longer than `IDLE`.
const READ_FOR: Duration = Duration::from_secs(7);
/// How often a client looks at its socket (and reads, when its rate allows).
const STEP: Duration = Duration::from_millis(5);
/// What a loaded 2-core machine may add to a close (as in `tests/timeouts.rs`).
const SLACK: Duration = Duration::from_millis(500);
const SEED: u64 = 91;

/// An upstream that sends the stream [`SEED`] without end (for a minute at most).
fn endless_upstream() -> Upstream {
    Upstream::start(|mut s| {
        s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut bytes = ByteStream::new(SEED);
        let mut buf = vec![0u8; 64 * 1024];
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            bytes.fill(&mut buf);
            if s.write_all(&buf).is_err() {
                return;
            }
        }
    })
}

/// What a slow reader saw.
struct Run {
    rate: u64,
    client: SocketAddr,
    read: u64,
    /// The largest time between two movements its kernel saw while it read.
    largest_gap: Duration,
    /// The last movement happened after `.0` and by `.1` (two looks at the socket).
    last_move: (Instant, Instant),
    /// The connection ended while the client still read: when, and how it saw it.
    ended_while_reading: Option<(Duration, String)>,
    /// When the client saw the connection end after it stopped reading.
    ended: Option<Instant>,
}

/// Reads `stream` at `rate` bytes/s for [`READ_FOR`], checking every byte, then stops reading
/// and watches for the end of the connection (for `IDLE` + 10 s at most).
fn read_slowly(stream: TcpStream, rate: u64) -> Run {
    let client = stream.local_addr().unwrap();
    let mut run = Run {
        rate,
        client,
        read: 0,
        largest_gap: Duration::ZERO,
        last_move: (Instant::now(), Instant::now()),
        ended_while_reading: None,
        ended: None,
    };
    let mut expected = ByteStream::new(SEED);
    let mut buf = [0u8; 1024];
    let start = Instant::now();
    let (mut received, mut looked) = (wire_view(&stream).received, start);
    let mut look = |run: &mut Run| {
        let (now, view) = (Instant::now(), wire_view(&stream));
        if view.received != received {
            run.largest_gap = run.largest_gap.max(now - run.last_move.1);
            run.last_move = (looked, now);
            received = view.received;
        }
        looked = now;
        view.ended
    };
    let steps = (READ_FOR.as_millis() / STEP.as_millis()) as usize;
    for _ in 0..steps * 2 {
        let elapsed = start.elapsed();
        if elapsed >= READ_FOR {
            break;
        }
        if expected.offset * 1_000_000 / rate <= elapsed.as_micros() as u64 {
            match (&stream).read(&mut buf) {
                Ok(0) => run.ended_while_reading = Some((elapsed, "EOF".into())),
                Ok(n) => {
                    if let Err(at) = expected.check(&buf[..n]) {
                        panic!("{rate} B/s: byte {at} differs from what the upstream sent");
                    }
                }
                Err(e) => run.ended_while_reading = Some((elapsed, e.to_string())),
            }
        }
        if run.ended_while_reading.is_none() && look(&mut run) {
            run.ended_while_reading =
                Some((start.elapsed(), "the kernel has the peer's FIN or reset".into()));
        }
        if run.ended_while_reading.is_some() {
            break;
        }
        thread::sleep(STEP);
    }
    run.read = expected.offset;
    if run.ended_while_reading.is_some() {
        return run;
    }
    let watch = Instant::now();
    for _ in 0..((IDLE + Duration::from_secs(10)).as_millis() / STEP.as_millis()) {
        if look(&mut run) {
            run.ended = Some(Instant::now());
            break;
        }
        if watch.elapsed() > IDLE + Duration::from_secs(10) {
            break;
        }
        thread::sleep(STEP);
    }
    drop(stream);
    run
}

/// The checks on one slow reader: kept while bytes moved, reaped as idle after it stopped, no
/// earlier than `IDLE` after the last movement and within `SLACK` of it.
fn assert_kept_then_reaped(run: &Run, daemon: &Daemon, link: &str) {
    let rate = run.rate;
    let log = || daemon.closes().into_iter().find(|c| c.get("client") == Some(&run.client.to_string()));
    if let Some((after, how)) = &run.ended_while_reading {
        panic!(
            "{link}, {rate} B/s: the connection ended ({how}) after {after:?} of steady reading, \
             {} bytes read, with bytes moving on the wire at least every {:?}; close line: {:?}",
            run.read,
            run.largest_gap,
            log().map(|c| c.raw)
        );
    }
    assert!(
        run.largest_gap < IDLE - Duration::from_secs(1),
        "{link}, {rate} B/s: the test's premise failed: the wire stood still for {:?} while the \
         client read (its receive buffer is too large for this rate)",
        run.largest_gap
    );
    assert!(
        run.read >= rate * READ_FOR.as_secs() / 2,
        "{link}, {rate} B/s: the client read only {} bytes in {READ_FOR:?}",
        run.read
    );
    let ended = run.ended.unwrap_or_else(|| {
        panic!(
            "{link}, {rate} B/s: not reaped within {:?} after the client stopped reading",
            IDLE + Duration::from_secs(10)
        )
    });
    let (after, by) = run.last_move;
    assert!(
        ended >= after + IDLE,
        "{link}, {rate} B/s: reaped {:?} after the last movement, before idle_timeout ({IDLE:?})",
        ended - after
    );
    assert!(
        ended <= by + IDLE + SLACK + STEP,
        "{link}, {rate} B/s: reaped {:?} after the last movement (idle_timeout {IDLE:?})",
        ended - by
    );
    let line = daemon.wait_close_of(run.client, Duration::from_secs(5));
    line.assert_reason("idle");
    eprintln!(
        "{link}, {rate} B/s: {} bytes read, the wire still at most {:?}; reaped {:?} after the last movement",
        run.read,
        run.largest_gap,
        ended - by
    );
}

#[test]
fn slow_readers_on_loopback_keep_their_connection_while_bytes_move_and_are_reaped_once_they_stop() {
    let upstream = endless_upstream();
    let listen = free_addr();
    let daemon = Daemon::start(&relay_listener("slow", listen, upstream.addr, "3s"));
    let runs: Vec<Run> = thread::scope(|scope| {
        let readers: Vec<_> = [50_000, 100_000, 200_000]
            .into_iter()
            .map(|rate| {
                scope.spawn(move || read_slowly(connect_with_receive_buffer(listen, 32 * 1024), rate))
            })
            .collect();
        readers.into_iter().map(|r| r.join().expect("a reader panicked")).collect()
    });
    for run in &runs {
        assert_kept_then_reaped(run, &daemon, "loopback");
    }
}

#[test]
fn slow_readers_over_an_mtu_1500_link_keep_their_connection_while_bytes_move() {
    let root = nix::unistd::geteuid().is_root();
    let hint = "run as root; apt-get install iproute2";
    if !require("root and ip (network namespaces)", root && std::path::Path::new(IP_COMMAND).exists(), hint) {
        return;
    }
    let pair = match NetnsPair::create(1500) {
        Ok(pair) => pair,
        Err(why) => {
            skip(&format!("cannot make network namespaces here: {why}"));
            assert!(!in_ci(), "CI runs as root with iproute2: {why}");
            return;
        }
    };
    // The daemon and its upstream in the first namespace, the clients in the second.
    let upstream = thread::scope(|scope| {
        scope
            .spawn(|| {
                pair.enter(0).expect("enter the daemon's namespace");
                endless_upstream()
            })
            .join()
            .expect("the upstream")
    });
    let listen = SocketAddr::V4(SocketAddrV4::new(pair.addrs[0], 8000));
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_section(dir.path(), "2s") + &relay_listener("slow", listen, upstream.addr, "3s");
    let daemon = Daemon::start_in_with(dir, &config, |_, command| pair.run_in(0, command));
    let runs: Vec<Run> = thread::scope(|scope| {
        let readers: Vec<_> = [10_000, 50_000]
            .into_iter()
            .map(|rate| {
                let pair = &pair;
                scope.spawn(move || {
                    pair.enter(1).expect("enter the clients' namespace");
                    read_slowly(connect_with_receive_buffer(listen, 4 * 1024), rate)
                })
            })
            .collect();
        readers.into_iter().map(|r| r.join().expect("a reader panicked")).collect()
    });
    for run in &runs {
        assert_kept_then_reaped(run, &daemon, "MTU 1500");
    }
}
