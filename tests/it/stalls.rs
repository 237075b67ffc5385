//! Slow and stalled peers: an upstream that stops reading while the client sends 64 MiB, a
//! client that stops reading a 64 MiB reply, and half-closed pairs whose other side never
//! finishes. Each test says what it injects and what must survive: bounded daemon memory
//! (backpressure instead of buffering), every byte once the reader resumes in time, and the
//! idle or half-close timer firing when nothing moves.

use std::io::{self, Read};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

const MIB: u64 = 1024 * 1024;
const BIG: u64 = 64 * MIB;
/// How long a stalled reader stalls in the tests where it resumes: well under the sockets'
/// write timeouts ([`IO_TIMEOUT`]) and the listener's idle timeout.
const STALL: Duration = Duration::from_secs(2);
/// Daemon memory bounds while 64 MiB push against a stalled reader: each direction may hold one
/// 64 KiB buffer (the pipes' bytes are kernel memory); 16 MiB of growth leaves room for
/// allocator noise and is a quarter of what buffering the transfer would take.
const MAX_RSS_KIB: u64 = 64 * 1024;
const MAX_GROWTH_KIB: u64 = 16 * 1024;
/// The idle timeout of the tests where nothing moves.
const IDLE: Duration = Duration::from_millis(1000);

fn assert_rss_bounded(what: &str, baseline: u64, peak: u64) {
    eprintln!("{what}: daemon RSS {baseline} KiB before, at most {peak} KiB during");
    assert!(
        peak < MAX_RSS_KIB && peak.saturating_sub(baseline) < MAX_GROWTH_KIB,
        "{what}: daemon RSS went from {baseline} KiB to {peak} KiB: the relay buffers what it should \
         push back on"
    );
}

/// Injects: an upstream that reads nothing for 2 s while the client sends 64 MiB as fast as it
/// can. Must survive: daemon RSS stays bounded during the stall; once the upstream reads, all
/// 64 MiB arrive intact and the pair closes normally.
#[test]
fn a_stalled_upstream_gets_backpressure_and_every_byte_when_it_resumes() {
    let go = Arc::new(AtomicBool::new(false));
    let (tx, received) = mpsc::channel();
    let upstream = {
        let go = go.clone();
        Upstream::start(move |mut s| {
            hold_until(&go, Duration::from_secs(30));
            let _ = tx.send(recv_stream(&mut s, 11, BIG, full_speed));
        })
    };
    let listen = free_addr();
    let daemon = Daemon::start(&relay_listener("stalled-up", listen, upstream.addr, "30s"));
    let baseline = daemon.rss_kib();
    let peak = PeakRss::start(daemon.pid());

    let client = connect(listen);
    let me = client.local_addr().unwrap();
    let mut writer = client.try_clone().unwrap();
    let sending = thread::spawn(move || {
        send_stream(&mut writer, 11, BIG)?;
        writer.shutdown(Shutdown::Write)
    });
    thread::sleep(STALL);
    let stalled_peak = peak.peak_kib();
    assert!(!sending.is_finished(), "64 MiB went through while the upstream read nothing");
    go.store(true, Ordering::SeqCst);

    sending.join().unwrap().expect("the client sent its 64 MiB once the upstream read");
    received.recv_timeout(Duration::from_secs(60)).expect("upstream reports").expect("64 MiB intact");
    let overall_peak = peak.finish();
    assert_rss_bounded("stalled upstream", baseline, stalled_peak.max(overall_peak));
    drop(client);
    let line = daemon.wait_close_of(me, Duration::from_secs(5));
    line.assert_reason("client_closed");
    assert_eq!(line.num("bytes_from_client"), BIG, "{}", line.raw);
}

/// Injects: an upstream that never reads while the client sends until it blocks; then nothing
/// moves. Must survive: bounded RSS, and the idle timer fires (`reason=idle`) although bytes are
/// stuck in the daemon's buffers and pipes; both sockets are closed.
#[test]
fn a_stalled_upstream_with_bytes_in_flight_is_still_reaped_at_idle_timeout() {
    let release = Arc::new(AtomicBool::new(false));
    let (tx, upstream_end) = mpsc::channel();
    let upstream = {
        let release = release.clone();
        Upstream::start(move |mut s| {
            // Reads nothing until the test is over; then reports how the socket ended.
            hold_until(&release, Duration::from_secs(30));
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let _ = tx.send(drain(&mut s));
        })
    };
    let listen = free_addr();
    let daemon = Daemon::start(&relay_listener("stuck-up", listen, upstream.addr, "1s"));
    let baseline = daemon.rss_kib();
    let peak = PeakRss::start(daemon.pid());

    let client = connect(listen);
    let me = client.local_addr().unwrap();
    let mut writer = client.try_clone().unwrap();
    let start = Instant::now();
    // Blocks once every buffer on the way is full, and fails when the daemon closes.
    let sending = thread::spawn(move || send_stream(&mut writer, 12, BIG).map(|()| Instant::now()));
    let mut reader = client;
    let closed_at = wait_closed(&mut reader, IDLE + Duration::from_secs(5));
    let sent = sending.join().unwrap();
    assert!(sent.is_err(), "the client's 64 MiB all went through a relay whose upstream reads nothing");
    assert_rss_bounded("stuck upstream", baseline, peak.finish());

    let line = daemon.wait_close_of(me, Duration::from_secs(5));
    line.assert_reason("idle");
    let relayed = line.num("bytes_from_client");
    assert!(relayed > 0 && relayed < BIG, "some bytes moved, then none: {}", line.raw);
    assert!(line.num("lifetime_ms") >= IDLE.as_millis() as u64, "{}", line.raw);
    assert!(closed_at - start >= IDLE, "closed {:?} after the transfer began", closed_at - start);
    // The upstream socket was closed too: reading what is there ends.
    release.store(true, Ordering::SeqCst);
    let (_, end) = upstream_end.recv_timeout(Duration::from_secs(10)).expect("upstream reports");
    assert!(!matches!(&end, Err(e) if e.kind() == io::ErrorKind::WouldBlock), "upstream still open: {end:?}");
}

/// Injects: a client that reads nothing for 2 s while the upstream sends a 64 MiB reply.
/// Must survive: bounded RSS during the stall; once the client reads, all 64 MiB arrive intact.
#[test]
fn a_client_that_stops_reading_a_large_reply_gets_it_all_when_it_resumes() {
    let (tx, sent) = mpsc::channel();
    let upstream = Upstream::start(move |mut s| {
        let result = send_stream(&mut s, 13, BIG).and_then(|()| s.shutdown(Shutdown::Write));
        let _ = tx.send(result);
        let _ = drain(&mut s);
    });
    let listen = free_addr();
    let daemon = Daemon::start(&relay_listener("stalled-client", listen, upstream.addr, "30s"));
    let baseline = daemon.rss_kib();
    let peak = PeakRss::start(daemon.pid());

    let mut client = connect(listen);
    let me = client.local_addr().unwrap();
    thread::sleep(STALL);
    let stalled_peak = peak.peak_kib();
    assert!(sent.try_recv().is_err(), "the upstream sent 64 MiB to a client that read nothing");
    recv_stream(&mut client, 13, BIG, full_speed).expect("the 64 MiB reply intact");
    sent.recv_timeout(Duration::from_secs(30)).expect("upstream reports").expect("upstream sent it all");
    assert_rss_bounded("stalled client", baseline, stalled_peak.max(peak.finish()));
    drop(client);
    let line = daemon.wait_close_of(me, Duration::from_secs(5));
    line.assert_reason("upstream_closed");
    assert_eq!(line.num("bytes_from_upstream"), BIG, "{}", line.raw);
}

/// Injects: a client that never reads a 64 MiB reply and sends nothing; nothing moves once the
/// buffers are full. Must survive: bounded RSS, `reason=idle` at the idle timeout, the
/// upstream's sending fails (its socket was closed).
#[test]
fn a_client_that_never_reads_is_reaped_at_idle_timeout() {
    let (tx, sent) = mpsc::channel();
    let upstream = Upstream::start(move |mut s| {
        let _ = tx.send(send_stream(&mut s, 14, BIG));
    });
    let listen = free_addr();
    let daemon = Daemon::start(&relay_listener("deaf-client", listen, upstream.addr, "1s"));
    let baseline = daemon.rss_kib();
    let peak = PeakRss::start(daemon.pid());

    let client = connect(listen);
    let me = client.local_addr().unwrap();
    let start = Instant::now();
    let line = daemon.wait_close_of(me, IDLE + Duration::from_secs(5));
    line.assert_reason("idle");
    assert!(start.elapsed() >= IDLE);
    let relayed = line.num("bytes_from_upstream");
    assert!(relayed > 0 && relayed < BIG, "some bytes moved, then none: {}", line.raw);
    let result = sent.recv_timeout(Duration::from_secs(10)).expect("the upstream's send ended");
    assert!(result.is_err(), "the upstream sent 64 MiB to a client that read nothing");
    assert_rss_bounded("deaf client", baseline, peak.finish());
    // The client's socket was closed: after what was delivered, EOF or a reset.
    let mut client = client;
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (_, end) = drain(&mut client);
    assert!(
        !matches!(&end, Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)),
        "client socket still open: {end:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// half_close_timeout
// ---------------------------------------------------------------------------------------------

const HALF_CLOSE: Duration = Duration::from_millis(800);
const HALF_CLOSE_SLACK: Duration = Duration::from_millis(1000);

fn half_close_listener(name: &str, upstream: std::net::SocketAddr) -> (String, std::net::SocketAddr) {
    let listen = free_addr();
    let text = relay_listener(name, listen, upstream, "30s") + "half_close_timeout = \"800ms\"\n";
    (text, listen)
}

/// Injects: the client sends a request and shuts down writing; the upstream reads it to EOF and
/// then neither answers nor closes. Must survive: the pair is closed with
/// `reason=half_close_timeout` `half_close_timeout` after the client's FIN — not at the (30 s)
/// idle timeout.
#[test]
fn a_pair_half_closed_by_the_client_is_closed_at_half_close_timeout() {
    let release = Arc::new(AtomicBool::new(false));
    let (tx, got) = mpsc::channel();
    let upstream = {
        let release = release.clone();
        Upstream::start(move |mut s| {
            let mut request = Vec::new();
            let read = s.read_to_end(&mut request).map(|_| request);
            let _ = tx.send(read);
            // Silent and open until the test is done.
            hold_until(&release, Duration::from_secs(30));
        })
    };
    let (listener, listen) = half_close_listener("half-client", upstream.addr);
    let daemon = Daemon::start(&listener);

    let mut client = connect(listen);
    let me = client.local_addr().unwrap();
    io::Write::write_all(&mut client, b"request").unwrap();
    let fin = Instant::now();
    client.shutdown(Shutdown::Write).unwrap();
    let request = got.recv_timeout(Duration::from_secs(5)).expect("the upstream got the request and EOF");
    assert_eq!(request.expect("read to EOF"), b"request");
    let closed_at = wait_closed(&mut client, HALF_CLOSE + HALF_CLOSE_SLACK + Duration::from_secs(2));
    release.store(true, Ordering::SeqCst);
    let after = closed_at - fin;
    assert!(
        after >= HALF_CLOSE && after <= HALF_CLOSE + HALF_CLOSE_SLACK,
        "closed {after:?} after the client's FIN; half_close_timeout is {HALF_CLOSE:?}"
    );
    let line = daemon.wait_close_of(me, Duration::from_secs(5));
    line.assert_reason("half_close_timeout");
    assert_eq!(line.num("bytes_from_client"), 7, "{}", line.raw);
}

/// Injects: the upstream answers and shuts down writing; the client reads the answer and then
/// neither sends nor closes. Must survive: `reason=half_close_timeout` after
/// `half_close_timeout`, the upstream's socket closed too.
#[test]
fn a_pair_half_closed_by_the_upstream_is_closed_at_half_close_timeout() {
    let (tx, upstream_end) = mpsc::channel();
    let upstream = Upstream::start(move |mut s| {
        let fin = Instant::now();
        let _ = io::Write::write_all(&mut s, b"banner").and_then(|()| s.shutdown(Shutdown::Write));
        // Waits for the daemon to close its side.
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let (_, end) = drain(&mut s);
        let _ = tx.send((fin, Instant::now(), end.map_err(|e| e.to_string())));
    });
    let (listener, listen) = half_close_listener("half-upstream", upstream.addr);
    let daemon = Daemon::start(&listener);

    let mut client = connect(listen);
    let me = client.local_addr().unwrap();
    assert_eq!(read_n(&mut client, 6), b"banner");
    let mut byte = [0u8; 1];
    assert_eq!(client.read(&mut byte).expect("EOF after the banner"), 0, "the upstream's FIN arrives");
    // Silent, writing side open: the daemon must close on its own.
    let (fin, closed_at, end) =
        upstream_end.recv_timeout(HALF_CLOSE + HALF_CLOSE_SLACK + Duration::from_secs(5)).expect("closed");
    end.expect("the upstream sees EOF");
    let after = closed_at - fin;
    assert!(
        after >= HALF_CLOSE && after <= HALF_CLOSE + HALF_CLOSE_SLACK,
        "closed {after:?} after the upstream's FIN; half_close_timeout is {HALF_CLOSE:?}"
    );
    let line = daemon.wait_close_of(me, Duration::from_secs(5));
    line.assert_reason("half_close_timeout");
    assert_eq!(line.num("bytes_from_upstream"), 6, "{}", line.raw);
    drop(client);
}
