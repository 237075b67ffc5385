//! The relay as a client and its upstream see it: bulk data both ways at once, intact;
//! backpressure with bounded daemon memory; half-close; an upstream that refuses or does not
//! answer; and `max_connections`.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::common::*;

const MIB: u64 = 1024 * 1024;
const BULK: u64 = 32 * MIB;
const SEED_UP: u64 = 0x1d1e_4ea9;
const SEED_DOWN: u64 = 0xd0_f00d;
/// How long a test waits for results from its upstream's threads.
const RESULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The result an upstream thread reports: what it received, and whether its sending succeeded.
type Report = (Result<(), String>, Result<(), String>);

/// An upstream that sends `BULK` bytes of `SEED_DOWN` while it receives and checks `BULK` bytes
/// of `SEED_UP`; each direction reads at the pace `pace` gives (see [`recv_stream`]).
fn bulk_upstream(
    pace: impl Fn() -> Box<dyn FnMut(u64) -> usize + Send> + Send + Sync + 'static,
) -> (Upstream, mpsc::Receiver<Report>) {
    let (tx, rx) = mpsc::channel();
    let upstream = Upstream::start(move |stream| {
        let mut writer = stream.try_clone().expect("clone upstream socket");
        let sending = thread::spawn(move || {
            send_stream(&mut writer, SEED_DOWN, BULK)
                .and_then(|()| writer.shutdown(Shutdown::Write))
                .map_err(|e| format!("upstream send: {e}"))
        });
        let mut reader = stream;
        let received =
            recv_stream(&mut reader, SEED_UP, BULK, pace()).map_err(|e| format!("upstream received: {e}"));
        let sent = sending.join().expect("upstream sender thread");
        let _ = tx.send((received, sent));
    });
    (upstream, rx)
}

/// Sends `BULK` bytes of `SEED_UP` on a clone of `client`, then shuts down writing.
fn send_bulk(client: &TcpStream) -> JoinHandle<io::Result<()>> {
    let mut writer = client.try_clone().expect("clone client socket");
    thread::spawn(move || {
        send_stream(&mut writer, SEED_UP, BULK)?;
        writer.shutdown(Shutdown::Write)
    })
}

/// A reader that takes 4 KiB every 10 ms for `slow_for` after its first read, then reads at full
/// speed.
fn slow_then_fast(slow_for: Duration) -> Box<dyn FnMut(u64) -> usize + Send> {
    let mut start = None;
    Box::new(move |_| {
        let start = *start.get_or_insert_with(Instant::now);
        if start.elapsed() < slow_for {
            thread::sleep(Duration::from_millis(10));
            4096
        } else {
            64 * 1024
        }
    })
}

/// Asserts the close line of a finished bulk transfer.
fn assert_bulk_close(daemon: &Daemon, client: SocketAddr) {
    let line = daemon.wait_close_of(client, Duration::from_secs(5));
    assert!(line.get("listener").is_some_and(|l| ["bulk", "slow"].contains(&l)), "{}", line.raw);
    assert!(
        matches!(line.reason(), "client_closed" | "upstream_closed"),
        "both sides finished with FIN: {}",
        line.raw
    );
    assert_eq!(line.num("bytes_from_client"), BULK, "{}", line.raw);
    assert_eq!(line.num("bytes_from_upstream"), BULK, "{}", line.raw);
    assert!(line.get("error").is_none(), "{}", line.raw);
}

#[test]
fn relays_32_mib_each_way_at_once_intact() {
    let (upstream, reports) = bulk_upstream(|| Box::new(full_speed));
    let listen = free_addr();
    let daemon = Daemon::start(&relay_listener("bulk", listen, upstream.addr, "30s"));

    let mut client = connect(listen);
    let me = client.local_addr().unwrap();
    let sending = send_bulk(&client);
    let received = recv_stream(&mut client, SEED_DOWN, BULK, full_speed);
    let sent = sending.join().expect("client sender thread");

    received.expect("client received the upstream's 32 MiB intact");
    sent.expect("client sent its 32 MiB");
    let (upstream_received, upstream_sent) = reports.recv_timeout(RESULT_TIMEOUT).expect("upstream reports");
    upstream_received.expect("upstream received the client's 32 MiB intact");
    upstream_sent.expect("upstream sent its 32 MiB");
    assert_bulk_close(&daemon, me);
}

#[test]
fn slow_readers_get_backpressure_and_daemon_memory_stays_bounded() {
    // Both readers dawdle for the first 1.5 s while both writers push as fast as they can: a relay
    // that buffered instead of pushing back would soak up tens of MiB in that time.
    const SLOW_FOR: Duration = Duration::from_millis(1500);
    // One 64 KiB buffer per direction plus a small pool is what the design allows; 16 MiB of
    // growth leaves room for allocator noise and is still half of what one direction would hold.
    const MAX_GROWTH_KIB: u64 = 16 * 1024;
    const MAX_RSS_KIB: u64 = 64 * 1024;

    let (upstream, reports) = bulk_upstream(|| slow_then_fast(SLOW_FOR));
    let listen = free_addr();
    let daemon = Daemon::start(&relay_listener("slow", listen, upstream.addr, "30s"));
    let baseline = daemon.rss_kib();
    let sampler = PeakRss::start(daemon.pid());

    let mut client = connect(listen);
    let me = client.local_addr().unwrap();
    let sending = send_bulk(&client);
    let received = recv_stream(&mut client, SEED_DOWN, BULK, slow_then_fast(SLOW_FOR));
    let sent = sending.join().expect("client sender thread");
    let reported = reports.recv_timeout(RESULT_TIMEOUT);
    let max_rss = sampler.finish();

    received.expect("client received the upstream's 32 MiB intact");
    sent.expect("client sent its 32 MiB");
    let (upstream_received, upstream_sent) = reported.expect("upstream reports");
    upstream_received.expect("upstream received the client's 32 MiB intact");
    upstream_sent.expect("upstream sent its 32 MiB");
    assert_bulk_close(&daemon, me);
    eprintln!("daemon RSS: {baseline} KiB before, at most {max_rss} KiB during the transfer");
    assert!(
        max_rss < MAX_RSS_KIB && max_rss.saturating_sub(baseline) < MAX_GROWTH_KIB,
        "daemon RSS went from {baseline} KiB to {max_rss} KiB while 2 × 32 MiB flowed to slow \
         readers: relay buffers are not bounded"
    );
}

#[test]
fn half_close_delivers_the_whole_reply_after_the_client_finished_sending() {
    const REQUEST: u64 = 100 * 1024;
    const REPLY: u64 = MIB;
    const SEED_REQUEST: u64 = 7;
    const SEED_REPLY: u64 = 8;
    let (tx, rx) = mpsc::channel();
    // Reads the request to EOF (which arrives only if the client's FIN was propagated), then
    // replies and closes.
    let upstream = Upstream::start(move |mut stream| {
        let request = recv_stream(&mut stream, SEED_REQUEST, REQUEST, full_speed);
        let reply = match &request {
            Ok(()) => send_stream(&mut stream, SEED_REPLY, REPLY).map_err(|e| e.to_string()),
            Err(_) => Err("not replying to a bad request".to_string()),
        };
        drop(stream);
        let _ = tx.send((request, reply));
    });
    let listen = free_addr();
    let daemon = Daemon::start(&relay_listener("halfclose", listen, upstream.addr, "30s"));

    let mut client = connect(listen);
    let me = client.local_addr().unwrap();
    send_stream(&mut client, SEED_REQUEST, REQUEST).expect("send the request");
    client.shutdown(Shutdown::Write).expect("shutdown(Write)");
    let reply = recv_stream(&mut client, SEED_REPLY, REPLY, full_speed);

    let (request, sent) = rx.recv_timeout(RESULT_TIMEOUT).expect("upstream reports");
    request.expect("upstream got the whole request, then EOF");
    sent.expect("upstream sent its reply");
    reply.expect("client got the whole 1 MiB reply after its own shutdown(Write)");
    let line = daemon.wait_close_of(me, Duration::from_secs(5));
    line.assert_reason("client_closed");
    assert_eq!(line.num("bytes_from_client"), REQUEST, "{}", line.raw);
    assert_eq!(line.num("bytes_from_upstream"), REPLY, "{}", line.raw);
}

#[test]
fn refused_upstream_closes_the_client_promptly_and_logs_why() {
    let closed = free_addr(); // nothing listens there
    let listen = free_addr();
    let daemon = Daemon::start(&relay_listener("refused", listen, closed, "30s"));

    for _ in 0..2 {
        let mut client = connect(listen);
        let me = client.local_addr().unwrap();
        let start = Instant::now();
        let closed_at = wait_closed(&mut client, Duration::from_secs(2));
        assert!(closed_at - start < Duration::from_secs(2));
        let line = daemon.wait_close_of(me, Duration::from_secs(5));
        line.assert_reason("upstream_refused");
        assert!(
            line.get("error").is_some_and(|e| !e.is_empty()),
            "an error= field says what failed: {}",
            line.raw
        );
        assert_eq!(line.num("bytes_from_client"), 0, "{}", line.raw);
        assert_eq!(line.num("bytes_from_upstream"), 0, "{}", line.raw);
    }
}

#[test]
fn unanswering_upstream_closes_the_client_at_connect_timeout() {
    const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
    let (upstream, _fillers) = unanswering_upstream();
    let listen = free_addr();
    let listener = relay_listener("blackhole", listen, upstream.local_addr().unwrap(), "30s")
        + "connect_timeout = \"500ms\"\n";
    let daemon = Daemon::start(&listener);

    let mut client = connect(listen);
    let me = client.local_addr().unwrap();
    let start = Instant::now();
    let closed_at = wait_closed(&mut client, Duration::from_secs(5));
    let waited = closed_at - start;
    assert!(
        waited >= CONNECT_TIMEOUT && waited <= CONNECT_TIMEOUT + Duration::from_millis(1000),
        "closed {waited:?} after connecting; connect_timeout is {CONNECT_TIMEOUT:?}"
    );
    let line = daemon.wait_close_of(me, Duration::from_secs(5));
    line.assert_reason("connect_timeout");
}

#[test]
fn max_connections_refuses_the_surplus_and_keeps_serving_the_rest() {
    let upstream = Upstream::echo();
    let listen = free_addr();
    let daemon =
        Daemon::start(&(relay_listener("limited", listen, upstream.addr, "30s") + "max_connections = 3\n"));

    let mut held: Vec<TcpStream> = (0..3).map(|_| connect(listen)).collect();
    for (i, c) in held.iter_mut().enumerate() {
        assert_echo(c, format!("hello {i}").as_bytes());
    }

    // The fourth is accepted and closed at once.
    let mut surplus = connect(listen);
    let surplus_addr = surplus.local_addr().unwrap();
    let start = Instant::now();
    let closed_at = wait_closed(&mut surplus, Duration::from_secs(2));
    assert!(closed_at - start < Duration::from_secs(2));
    // Refusals are logged as such (rate-limited under a flood; this is the first).
    daemon.wait_log(
        &format!(" conn refused listener=limited client={surplus_addr} reason=limit"),
        Duration::from_secs(5),
    );

    // The three still relay.
    for (i, c) in held.iter_mut().enumerate() {
        assert_eq!(peer_state(c), PeerState::Open, "connection {i}");
        assert_echo(c, format!("still here {i}").as_bytes());
    }

    // Once one ends, a new client is served.
    let first = held.remove(0);
    let first_addr = first.local_addr().unwrap();
    first.shutdown(Shutdown::Both).unwrap();
    drop(first);
    daemon.wait_close_of(first_addr, Duration::from_secs(5)).assert_reason("client_closed");
    let mut next = connect(listen);
    assert_echo(&mut next, b"a free slot");
    for c in held.iter_mut() {
        assert_echo(c, b"and the others");
    }
}
