//! Idle timeouts as a user notices them: a silent connection is closed no earlier than
//! `idle_timeout` and no later than `idle_timeout + tick + slack`; a byte in either direction
//! pushes the deadline; the sink listener reads, discards, and reaps.
//!
//! The window is the product's contract, so it is asserted; the slack is generous (a loaded
//! two-core CI machine) and the lower bound is measured from an instant the daemon cannot have
//! preceded (the last send), so neither bound can flake on scheduling alone.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

const IDLE: Duration = Duration::from_millis(600);
const IDLE_CONFIG: &str = "600ms";
const TICK: Duration = Duration::from_millis(1);
const SLACK: Duration = Duration::from_millis(500);
/// Bytes sent, one per `IDLE / 3`, to show that traffic keeps a connection open: 12 of them span
/// four idle timeouts.
const KEEPALIVE_BYTES: u32 = 12;

/// Asserts that a connection closed within the idle window: no earlier than `IDLE` after
/// `not_before` (an instant the daemon's last activity cannot precede) and no later than
/// `IDLE + TICK + SLACK` after `latest_activity`.
fn assert_idle_window(closed_at: Instant, not_before: Instant, latest_activity: Instant) {
    let after = closed_at.saturating_duration_since(not_before);
    assert!(after >= IDLE, "closed {after:?} after the last activity began, before idle_timeout ({IDLE:?})");
    let late = closed_at.saturating_duration_since(latest_activity);
    assert!(
        late <= IDLE + TICK + SLACK,
        "closed {late:?} after the last activity; idle_timeout is {IDLE:?}, tick {TICK:?}, \
         slack {SLACK:?}"
    );
}

/// Sends one byte every `IDLE / 3`, checking each time that the connection is still open, and
/// returns the instant of the last send.
fn keep_alive_by_sending(client: &mut TcpStream) -> Instant {
    let mut last = Instant::now();
    for i in 0..KEEPALIVE_BYTES {
        thread::sleep(IDLE / 3);
        assert_eq!(
            peer_state(client),
            PeerState::Open,
            "closed before byte {i}, {:?} after the previous one",
            last.elapsed()
        );
        let gap = last.elapsed();
        assert!(
            i == 0 || gap < IDLE - Duration::from_millis(100),
            "the test thread was starved ({gap:?} between sends); the result would mean nothing"
        );
        last = Instant::now();
        client.write_all(b"k").expect("send a keepalive byte");
    }
    last
}

/// The idle upper bound plus a second, for blocking reads that wait for the close.
fn close_wait() -> Duration {
    IDLE + TICK + SLACK + Duration::from_secs(1)
}

/// How an upstream connection ended: bytes received, EOF (or the error), and when.
type Ended = (u64, Result<(), String>, Instant);

/// An upstream that reads and discards, and reports how many bytes it got, whether it ended
/// with EOF (rather than an error or the read timeout), and when.
fn discarding_upstream() -> (Upstream, mpsc::Receiver<Ended>) {
    let (tx, rx) = mpsc::channel();
    let upstream = Upstream::start(move |mut s| {
        let (n, end) = drain(&mut s);
        let _ = tx.send((n, end.map_err(|e| e.to_string()), Instant::now()));
    });
    (upstream, rx)
}

#[test]
fn a_silent_relayed_client_is_closed_within_the_idle_window() {
    let (upstream, ended) = discarding_upstream();
    let listen = free_addr();
    let daemon = Daemon::start(&relay_listener("silent", listen, upstream.addr, IDLE_CONFIG));

    // The daemon's timer starts when it accepts: after `connecting`, and about `connected`.
    let connecting = Instant::now();
    let mut client = connect(listen);
    let connected = Instant::now();
    let me = client.local_addr().unwrap();
    let closed_at = wait_closed(&mut client, close_wait());
    assert_idle_window(closed_at, connecting, connected);

    let line = daemon.wait_close_of(me, Duration::from_secs(5));
    line.assert_reason("idle");
    assert!(line.num("lifetime_ms") >= IDLE.as_millis() as u64, "{}", line.raw);
    assert_eq!(line.num("bytes_from_client"), 0, "{}", line.raw);
    assert_eq!(line.num("bytes_from_upstream"), 0, "{}", line.raw);
    // The upstream side was closed too.
    let (bytes, end, _) = ended.recv_timeout(Duration::from_secs(5)).expect("upstream connection ended");
    assert_eq!(bytes, 0);
    end.expect("upstream saw EOF");
}

#[test]
fn client_traffic_every_third_of_the_timeout_keeps_a_relay_open() {
    let (upstream, ended) = discarding_upstream();
    let listen = free_addr();
    let daemon = Daemon::start(&relay_listener("chatty", listen, upstream.addr, IDLE_CONFIG));

    let mut client = connect(listen);
    let connected = Instant::now();
    let me = client.local_addr().unwrap();
    let last_send = keep_alive_by_sending(&mut client);
    assert!(connected.elapsed() >= 3 * IDLE);
    let closed_at = wait_closed(&mut client, close_wait());
    assert_idle_window(closed_at, last_send, last_send);

    let line = daemon.wait_close_of(me, Duration::from_secs(5));
    line.assert_reason("idle");
    assert_eq!(line.num("bytes_from_client"), u64::from(KEEPALIVE_BYTES));
    assert!(line.num("lifetime_ms") >= (3 * IDLE).as_millis() as u64, "{}", line.raw);
    let (bytes, end, _) = ended.recv_timeout(Duration::from_secs(5)).expect("upstream connection ended");
    assert_eq!(bytes, u64::from(KEEPALIVE_BYTES), "every byte reached the upstream");
    end.expect("upstream saw EOF");
}

#[test]
fn upstream_traffic_alone_keeps_a_relay_open() {
    let (tx, sent) = mpsc::channel();
    // Sends a byte every IDLE / 3, reporting the instant just before each send, then waits for
    // the daemon to close the connection.
    let upstream = Upstream::start(move |mut s| {
        for _ in 0..KEEPALIVE_BYTES {
            thread::sleep(IDLE / 3);
            let _ = tx.send(Instant::now());
            if s.write_all(b"u").is_err() {
                return;
            }
        }
        let _ = drain(&mut s);
    });
    let listen = free_addr();
    let daemon = Daemon::start(&relay_listener("server-push", listen, upstream.addr, IDLE_CONFIG));

    let mut client = connect(listen);
    let connected = Instant::now();
    let me = client.local_addr().unwrap();
    let mut received_last = connected;
    for i in 0..KEEPALIVE_BYTES {
        let mut byte = [0u8; 1];
        client.read_exact(&mut byte).unwrap_or_else(|e| panic!("upstream byte {i} did not arrive: {e}"));
        assert_eq!(&byte, b"u");
        received_last = Instant::now();
    }
    assert!(connected.elapsed() >= 3 * IDLE);
    let closed_at = wait_closed(&mut client, close_wait());
    let sent_at: Vec<Instant> = sent.try_iter().collect();
    assert_eq!(sent_at.len(), KEEPALIVE_BYTES as usize);
    let last_sent = *sent_at.last().unwrap();
    assert_idle_window(closed_at, last_sent, received_last);

    let line = daemon.wait_close_of(me, Duration::from_secs(5));
    line.assert_reason("idle");
    assert_eq!(line.num("bytes_from_client"), 0, "{}", line.raw);
    assert_eq!(line.num("bytes_from_upstream"), u64::from(KEEPALIVE_BYTES), "{}", line.raw);
}

#[test]
fn a_sink_reads_and_discards_and_reaps_idle_clients() {
    const BULK: usize = 1024 * 1024;
    let listen = free_addr();
    let daemon = Daemon::start(&sink_listener("sink", listen, IDLE_CONFIG));

    // A silent client, closed within the idle window.
    let connecting = Instant::now();
    let mut silent = connect(listen);
    let connected = Instant::now();
    let silent_addr = silent.local_addr().unwrap();
    let silent_closer = thread::spawn(move || {
        let closed_at = wait_closed(&mut silent, close_wait());
        assert_idle_window(closed_at, connecting, connected);
    });

    // A talkative one: a megabyte is read and discarded, then a byte every IDLE / 3 keeps the
    // connection open; after the last one, it is reaped in the window.
    let mut talker = connect(listen);
    let talker_addr = talker.local_addr().unwrap();
    send_stream(&mut talker, 1, BULK as u64).expect("the sink reads everything");
    let last_send = keep_alive_by_sending(&mut talker);
    let closed_at = wait_closed(&mut talker, close_wait());
    assert_idle_window(closed_at, last_send, last_send);

    // One that says goodbye.
    let mut polite = connect(listen);
    let polite_addr = polite.local_addr().unwrap();
    polite.write_all(b"bye").unwrap();
    polite.shutdown(Shutdown::Write).unwrap();
    wait_closed(&mut polite, Duration::from_secs(2));

    silent_closer.join().expect("silent sink client");
    let line = daemon.wait_close_of(silent_addr, Duration::from_secs(5));
    line.assert_reason("idle");
    assert_eq!(line.num("bytes_from_client"), 0, "{}", line.raw);
    let line = daemon.wait_close_of(talker_addr, Duration::from_secs(5));
    line.assert_reason("idle");
    assert_eq!(line.num("bytes_from_client"), BULK as u64 + u64::from(KEEPALIVE_BYTES), "{}", line.raw);
    assert_eq!(line.num("bytes_from_upstream"), 0, "{}", line.raw);
    let line = daemon.wait_close_of(polite_addr, Duration::from_secs(5));
    line.assert_reason("client_closed");
    assert_eq!(line.num("bytes_from_client"), 3, "{}", line.raw);
}

/// Many silent connections at once: each is closed in its own window (the wheel files them under
/// different deadlines as they arrive over ~a timeout).
#[test]
fn many_staggered_silent_connections_each_close_in_their_window() {
    const CONNECTIONS: usize = 40;
    let listen = free_addr();
    let daemon = Daemon::start(&sink_listener("many", listen, IDLE_CONFIG));
    let clients: Vec<(TcpStream, Instant, Instant, SocketAddr)> = (0..CONNECTIONS)
        .map(|_| {
            thread::sleep(Duration::from_millis(15));
            let connecting = Instant::now();
            let c = connect(listen);
            let addr = c.local_addr().unwrap();
            (c, connecting, Instant::now(), addr)
        })
        .collect();
    let waiters: Vec<_> = clients
        .into_iter()
        .map(|(mut c, connecting, connected, addr)| {
            thread::spawn(move || {
                let closed_at = wait_closed(&mut c, close_wait() + Duration::from_secs(1));
                assert_idle_window(closed_at, connecting, connected);
                addr
            })
        })
        .collect();
    for w in waiters {
        let addr = w.join().expect("a silent client closed in its window");
        daemon.wait_close_of(addr, Duration::from_secs(5)).assert_reason("idle");
    }
}

#[test]
fn a_burst_of_relays_expiring_together_closes_every_client_and_every_upstream() {
    // Hundreds of deadlines within a few milliseconds: clients are closed first, their
    // upstreams between ticks; every one of both must still end, with EOF.
    const CONNECTIONS: usize = 300;
    let (upstream, ended) = discarding_upstream();
    let listen = free_addr();
    let daemon = Daemon::start(&relay_listener("burst", listen, upstream.addr, IDLE_CONFIG));
    let clients: Vec<(TcpStream, Instant)> = (0..CONNECTIONS)
        .map(|_| {
            let mut c = connect(listen);
            let sent = Instant::now();
            c.write_all(b"b").expect("send a byte");
            (c, sent)
        })
        .collect();
    let last_send = clients.last().map(|(_, sent)| *sent).unwrap();
    let waiters: Vec<_> = clients
        .into_iter()
        .map(|(mut c, sent)| {
            thread::spawn(move || {
                // The byte's arrival is the last activity: no earlier than the send; the upper
                // bound allows for the daemon taking the whole burst before reading it.
                let closed_at = wait_closed(&mut c, close_wait() + Duration::from_secs(2));
                let after = closed_at.saturating_duration_since(sent);
                assert!(after >= IDLE, "closed {after:?} after its byte, before idle_timeout ({IDLE:?})");
                c.local_addr().unwrap()
            })
        })
        .collect();
    for w in waiters {
        let addr = w.join().expect("every client closed, none early");
        daemon.wait_close_of(addr, Duration::from_secs(5)).assert_reason("idle");
    }
    let mut bytes = 0;
    for i in 0..CONNECTIONS {
        let (n, end, at) = ended
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("only {i} of {CONNECTIONS} upstream connections ended"));
        end.unwrap_or_else(|e| panic!("upstream connection {i} ended with {e}, not EOF"));
        let after = at.saturating_duration_since(last_send);
        assert!(
            after < IDLE + SLACK + Duration::from_secs(2),
            "an upstream was closed {after:?} after the burst"
        );
        bytes += n;
    }
    assert_eq!(bytes, CONNECTIONS as u64, "every client's byte reached the upstream");
}
