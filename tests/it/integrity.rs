//! The relay's contract, one scenario per way it was once broken: every byte one peer sends
//! reaches the other in order, or the receiving peer sees a reset — never a clean EOF after
//! missing bytes. Urgent data on both paths (copy and splice), a slow reader that keeps
//! reading, a response that outlasts `half_close_timeout` although both peers finished in time,
//! resets passed on as resets (also while backpressured and during the upstream connect), and
//! a forced close with bytes undelivered. Each test asserts what the peers observe and the close
//! reason in the log.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

const MIB: u64 = 1024 * 1024;

/// The inline bytes sent around an urgent byte in the copy-path tests: one segment each side.
const BEFORE: &[u8] = b"AAAAAAAAAA";
const AFTER: &[u8] = b"BBBBBBBBBB";

/// Writes `BEFORE`, the urgent `!`, `AFTER` back to back on `s` (they usually share a segment).
fn send_with_urgent(s: &TcpStream) {
    let mut w = s;
    w.write_all(BEFORE).unwrap();
    send_urgent(s, b'!');
    w.write_all(AFTER).unwrap();
}

/// Waits until an urgent byte has arrived (as a program woken by SIGURG or `select`'s
/// exception set would), then reads exactly `n` inline bytes, taking urgent bytes out of band
/// at their mark.
fn read_inline(s: &mut TcpStream, n: usize) -> (Vec<u8>, Vec<(usize, u8)>) {
    assert!(wait_urgent(s, Duration::from_secs(10)), "no urgent byte arrived");
    let mut got = Vec::new();
    let mut urgent = Vec::new();
    let mut buf = [0u8; 64];
    for _ in 0..1000 {
        if got.len() == n {
            return (got, urgent);
        }
        if at_urgent_mark(s) {
            if let Ok(byte) = recv_urgent(s) {
                urgent.push((got.len(), byte));
            }
        }
        let want = (n - got.len()).min(buf.len());
        match s.read(&mut buf[..want]) {
            Ok(0) => panic!("EOF after {got:?}"),
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(e) => panic!("after {} of {n} inline bytes ({got:?}): {e}", got.len()),
        }
    }
    panic!("1000 reads for {n} bytes");
}

/// Injects: `AAAAAAAAAA` + urgent `!` + `BBBBBBBBBB` from the client, then the same from the
/// upstream, each peer then waiting without sending more. Must survive: each receiver gets all
/// 20 inline bytes at once (the B's are not stuck behind the mark) and the `!` out of band at
/// offset 10, as on a direct connection.
#[test]
fn urgent_bytes_in_small_writes_are_forwarded_out_of_band_both_ways() {
    let (tx, from_client) = mpsc::channel();
    let upstream = Upstream::start(move |mut s| {
        let _ = tx.send(read_inline(&mut s, BEFORE.len() + AFTER.len()));
        send_with_urgent(&s);
        let _ = drain(&mut s);
    });
    let listen = free_addr();
    let daemon = Daemon::start(&relay_listener("urgent", listen, upstream.addr, "30s"));
    let mut client = connect(listen);
    send_with_urgent(&client);
    let (inline, urgent) = from_client.recv_timeout(Duration::from_secs(10)).expect("upstream reads");
    assert_eq!(inline, [BEFORE, AFTER].concat(), "the upstream's inline bytes");
    assert_eq!(urgent, vec![(BEFORE.len(), b'!')], "the upstream's urgent byte, at its mark");
    let (inline, urgent) = read_inline(&mut client, BEFORE.len() + AFTER.len());
    assert_eq!(inline, [BEFORE, AFTER].concat(), "the client's inline bytes");
    assert_eq!(urgent, vec![(BEFORE.len(), b'!')], "the client's urgent byte, at its mark");
    let me = client.local_addr().unwrap();
    drop(client);
    daemon.wait_close_of(me, Duration::from_secs(5)).assert_reason("client_closed");
}

/// Injects: 1 MiB, one urgent byte, 1 MiB, FIN from the client — a bulk transfer, so the
/// relay splices. Must survive: the upstream reads all 2 MiB inline and intact, then a clean
/// EOF, with the urgent byte out of band at offset 1 MiB; `reason=client_closed`.
#[test]
fn an_urgent_byte_in_a_bulk_transfer_loses_nothing_after_it() {
    let (tx, received) = mpsc::channel();
    let upstream = Upstream::start(move |mut s| {
        // The first MiB; then, like a program woken by SIGURG, wait for the urgent byte (a
        // plain read that reaches the mark before the byte arrives would read past it).
        let first = read_n(&mut s, MIB as usize);
        assert!(wait_urgent(&s, Duration::from_secs(10)), "no urgent byte arrived");
        let (rest, mut urgent, ending) = read_with_urgent(&mut s);
        urgent.iter_mut().for_each(|(at, _)| *at += first.len());
        let _ = tx.send(([first, rest].concat(), urgent, ending));
    });
    let listen = free_addr();
    let daemon = Daemon::start(&relay_listener("urgent-bulk", listen, upstream.addr, "30s"));
    let client = connect(listen);
    let me = client.local_addr().unwrap();
    let mut expected = vec![0u8; 2 * MIB as usize];
    ByteStream::new(21).fill(&mut expected);
    let mut w = &client;
    w.write_all(&expected[..MIB as usize]).unwrap();
    send_urgent(&client, b'U');
    w.write_all(&expected[MIB as usize..]).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let (inline, urgent, ending) = received.recv_timeout(Duration::from_secs(20)).expect("upstream reads");
    assert_eq!(ending, StreamEnd::Eof);
    assert_eq!(inline.len(), expected.len(), "inline bytes through the relay");
    assert!(inline == expected, "the 2 MiB arrived, but not intact");
    assert_eq!(urgent, vec![(MIB as usize, b'U')], "the urgent byte, at its mark");
    daemon.wait_close_of(me, Duration::from_secs(5)).assert_reason("client_closed");
}

/// Injects: `idle_timeout = "1s"`; the client sends 8 MiB to an upstream that reads 64 KiB
/// every 50 ms (about 1.3 MB/s, never pausing long). The daemon's sockets stay unwritable for
/// seconds while the kernel drains its buffers. Must survive: all 8 MiB arrive intact — bytes
/// moved on the wire all along, so the connection was never idle — and the pair closes
/// normally.
#[test]
fn a_steady_slow_reader_is_not_reaped_as_idle() {
    const TOTAL: u64 = 8 * MIB;
    let (tx, received) = mpsc::channel();
    let upstream = Upstream::start(move |mut s| {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let slow = |_| {
            thread::sleep(Duration::from_millis(50));
            64 * 1024
        };
        let _ = tx.send(recv_stream(&mut s, 22, TOTAL, slow));
    });
    let listen = free_addr();
    let daemon = Daemon::start(&relay_listener("slow-reader", listen, upstream.addr, "1s"));
    let client = connect(listen);
    client.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    let me = client.local_addr().unwrap();
    let start = Instant::now();
    let mut w = &client;
    send_stream(&mut w, 22, TOTAL).expect("the client's 8 MiB go through");
    client.shutdown(Shutdown::Write).unwrap();
    let result = received.recv_timeout(Duration::from_secs(40)).expect("upstream reports");
    let took = start.elapsed();
    eprintln!("8 MiB to a slow reader took {took:?} through a 1 s idle timeout");
    result.unwrap_or_else(|e| panic!("after {took:?}: {e}; log:\n{}", daemon.log()));
    drop(client);
    let line = daemon.wait_close_of(me, Duration::from_secs(5));
    assert_ne!(line.reason(), "idle", "{}", line.raw);
    assert_eq!(line.num("bytes_from_client"), TOTAL, "{}", line.raw);
}

/// Injects: `half_close_timeout = "1s"`; the client sends a request and shuts down writing; the
/// upstream answers 8 MiB and closes at once; the client reads about 2 MB/s (4 s). Both peers
/// finished in time; only delivery is slow. Must survive: the client receives all 8 MiB, then a
/// clean EOF.
#[test]
fn a_response_both_peers_finished_is_delivered_past_half_close_timeout() {
    const TOTAL: u64 = 8 * MIB;
    let upstream = Upstream::start(move |mut s| {
        let mut request = [0u8; 7];
        if s.read_exact(&mut request).is_ok() {
            let _ = send_stream(&mut s, 23, TOTAL);
        }
    });
    let listen = free_addr();
    let config =
        relay_listener("half-close-slow", listen, upstream.addr, "30s") + "half_close_timeout = \"1s\"\n";
    let daemon = Daemon::start(&config);
    let mut client = connect(listen);
    client.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let me = client.local_addr().unwrap();
    client.write_all(b"request").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let slow = |_| {
        thread::sleep(Duration::from_millis(30));
        64 * 1024
    };
    let result = recv_stream(&mut client, 23, TOTAL, slow);
    result.unwrap_or_else(|e| panic!("{e}; log:\n{}", daemon.log()));
    let line = daemon.wait_close_of(me, Duration::from_secs(5));
    assert_eq!(line.num("bytes_from_upstream"), TOTAL, "{}", line.raw);
    assert_ne!(line.reason(), "half_close_timeout", "{}", line.raw);
}

/// Injects: a client that sends 1,000 bytes and resets; then an upstream that sends 1,000 bytes
/// and resets. Must survive: the other peer reads the 1,000 bytes and then a reset, not EOF;
/// `reason=client_reset` / `reason=upstream_reset`. Each peer resets only once the other has read
/// the bytes: a reset may overtake bytes still on their way, which is a different scenario.
#[test]
fn a_reset_is_passed_on_as_a_reset_both_ways() {
    let (arrived_tx, arrived) = mpsc::channel();
    let (tx, seen) = mpsc::channel();
    let client_has_them = Arc::new(AtomicBool::new(false));
    let upstream = {
        let client_has_them = client_has_them.clone();
        Upstream::start(move |mut s| {
            let mut first = [0u8; 1];
            if s.read_exact(&mut first).is_err() {
                return;
            }
            if first[0] == b'u' {
                // The second connection: the upstream is the one that resets.
                s.write_all(&[b'u'; 1000]).unwrap();
                hold_until(&client_has_them, Duration::from_secs(10));
                close_with_reset(s);
                return;
            }
            let mut rest = [0u8; 999];
            let read = s.read_exact(&mut rest).map_err(|e| e.to_string());
            let _ = arrived_tx.send(read.clone());
            if read.is_ok() {
                let (more, ending) = read_to_ending(&mut s);
                let _ = tx.send((1000 + more.len(), ending));
            }
        })
    };
    let listen = free_addr();
    let daemon = Daemon::start(&relay_listener("resets", listen, upstream.addr, "30s"));

    let mut client = connect(listen);
    let me = client.local_addr().unwrap();
    client.write_all(&[b'c'; 1000]).unwrap();
    let read = arrived.recv_timeout(Duration::from_secs(10)).expect("the upstream reads");
    read.unwrap_or_else(|e| panic!("the client's 1,000 bytes did not reach the upstream: {e}"));
    close_with_reset(client);
    let (got, ending) = seen.recv_timeout(Duration::from_secs(10)).expect("upstream reads");
    assert_eq!((got, ending), (1000, StreamEnd::Reset), "what the upstream saw");
    daemon.wait_close_of(me, Duration::from_secs(5)).assert_reason("client_reset");

    let mut client = connect(listen);
    let me = client.local_addr().unwrap();
    client.write_all(b"u").unwrap();
    let mut bytes = [0u8; 1000];
    client.read_exact(&mut bytes).unwrap_or_else(|e| panic!("the upstream's 1,000 bytes: {e}"));
    client_has_them.store(true, Ordering::SeqCst);
    let (more, ending) = read_to_ending(&mut client);
    assert_eq!((bytes.len() + more.len(), ending), (1000, StreamEnd::Reset), "what the client saw");
    daemon.wait_close_of(me, Duration::from_secs(5)).assert_reason("upstream_reset");
}

/// An upstream that reads nothing until `release` is set, then reads to the end and reports how
/// many bytes it got and how the stream ended.
fn held_upstream() -> (Upstream, Arc<AtomicBool>, mpsc::Receiver<(usize, StreamEnd)>) {
    let release = Arc::new(AtomicBool::new(false));
    let (tx, seen) = mpsc::channel();
    let held = release.clone();
    let upstream = Upstream::start(move |mut s| {
        hold_until(&held, Duration::from_secs(20));
        let (got, ending) = read_to_ending(&mut s);
        let _ = tx.send((got.len(), ending));
    });
    (upstream, release, seen)
}

/// Injects: an upstream that reads nothing while the client sends until every buffer is full;
/// then the client resets. Must survive: the reset is seen at once although the daemon is not
/// reading the client (backpressure): the pair closes within a few seconds, not at the 30 s
/// idle timeout, with `reason=client_reset`, and the upstream, when it reads, sees a reset.
#[test]
fn a_reset_is_seen_while_its_direction_is_backed_up() {
    let (upstream, release, seen) = held_upstream();
    let listen = free_addr();
    let daemon = Daemon::start(&relay_listener("reset-backed-up", listen, upstream.addr, "30s"));
    let client = connect(listen);
    let me = client.local_addr().unwrap();
    client.set_nonblocking(true).unwrap();
    let chunk = vec![7u8; 64 * 1024];
    let mut sent = 0usize;
    let mut last_progress = Instant::now();
    while last_progress.elapsed() < Duration::from_millis(500) && sent < 256 * MIB as usize {
        match (&client).write(&chunk) {
            Ok(n) => {
                sent += n;
                last_progress = Instant::now();
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
    assert!(sent > 0 && sent < 256 * MIB as usize, "sent {sent} bytes to a stalled upstream");
    let reset_at = Instant::now();
    close_with_reset(client);
    let line = daemon.wait_close_of(me, Duration::from_secs(5));
    line.assert_reason("client_reset");
    eprintln!("closed {:?} after the client's reset", reset_at.elapsed());
    release.store(true, Ordering::SeqCst);
    let (got, ending) = seen.recv_timeout(Duration::from_secs(20)).expect("upstream reads");
    assert_eq!(ending, StreamEnd::Reset, "the upstream read {got} of {sent} bytes and then a clean EOF");
}

/// Injects: a client that connects while the upstream connect hangs (a full backlog), then
/// resets. Must survive: the pair closes at once with `reason=client_reset`, not at the 10 s
/// `connect_timeout`.
#[test]
fn a_client_reset_during_the_upstream_connect_ends_it_at_once() {
    let (hanging, _fillers) = unanswering_upstream();
    let listen = free_addr();
    let config = relay_listener("reset-connecting", listen, hanging.local_addr().unwrap(), "30s")
        + "connect_timeout = \"10s\"\n";
    let mut daemon = Daemon::start(&config);
    let client = connect(listen);
    let me = client.local_addr().unwrap();
    // Accepted, so connecting: the reset must find the daemon waiting for the upstream.
    daemon.wait_stat("accepted", 1, Duration::from_secs(5));
    close_with_reset(client);
    let line = daemon.wait_close_of(me, Duration::from_secs(5));
    line.assert_reason("client_reset");
}

/// Injects: `idle_timeout = "1s"`, an upstream that reads nothing while the client sends until
/// every buffer is full, and then nothing moves. Must survive: the idle close resets the
/// upstream, which has bytes undelivered — when it reads, it gets what arrived and then a
/// reset, never a clean EOF.
#[test]
fn an_idle_close_with_bytes_undelivered_resets_that_peer() {
    let (upstream, release, seen) = held_upstream();
    let listen = free_addr();
    let daemon = Daemon::start(&relay_listener("idle-undelivered", listen, upstream.addr, "1s"));
    let client = connect(listen);
    let me = client.local_addr().unwrap();
    let mut writer = client.try_clone().unwrap();
    let sending = thread::spawn(move || send_stream(&mut writer, 24, 256 * MIB));
    let line = daemon.wait_close_of(me, Duration::from_secs(10));
    line.assert_reason("idle");
    assert!(sending.join().unwrap().is_err(), "256 MiB went to an upstream that reads nothing");
    release.store(true, Ordering::SeqCst);
    let (got, ending) = seen.recv_timeout(Duration::from_secs(20)).expect("upstream reads");
    assert_eq!(ending, StreamEnd::Reset, "the upstream read {got} bytes of an interrupted stream, then EOF");
}
