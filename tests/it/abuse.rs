//! Hostile clients one at a time: slowloris trickles defeated by `max_lifetime`, and admission
//! control by source address (`allow` / `deny`, IPv4 and IPv6), which must refuse a client
//! before any upstream connection is made. Each test says what it injects and what must survive.
//! (The floods and the mass expiry, which load the machine, are in `floods.rs`.)

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

const LIFETIME: Duration = Duration::from_millis(2000);
const LIFETIME_SLACK: Duration = Duration::from_millis(1000);
const SLOWLORIS_IDLE: Duration = Duration::from_millis(1000);

/// One slowloris client: sends one byte every `idle_timeout / 2` until the daemon closes it;
/// returns (its address, the instant before its connect, the instant after, when it saw the
/// close, the bytes it trickled).
fn trickle(addr: SocketAddr) -> (SocketAddr, Instant, Instant, Instant, u32) {
    let connecting = Instant::now();
    let mut s = connect(addr);
    let connected = Instant::now();
    let me = s.local_addr().unwrap();
    s.set_read_timeout(Some(SLOWLORIS_IDLE / 2)).unwrap();
    let mut sent = 0;
    let mut buf = [0u8; 16];
    // At most 4 lifetimes of trickling: a daemon that never closes fails the test below.
    let rounds = 4 * LIFETIME.as_millis() / (SLOWLORIS_IDLE / 2).as_millis();
    for _ in 0..rounds {
        match s.read(&mut buf) {
            Ok(0) => return (me, connecting, connected, Instant::now(), sent),
            Ok(n) => panic!("{me}: {n} unexpected bytes"),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                // Half an idle timeout of silence: one more byte.
                if s.write_all(b"x").is_ok() {
                    sent += 1;
                }
            }
            Err(_) => return (me, connecting, connected, Instant::now(), sent),
        }
    }
    panic!("{me}: still open after {:?} of trickling", connecting.elapsed());
}

/// Injects: 50 clients (25 on a sink, 25 on a relay) each trickling one byte per
/// `idle_timeout / 2`, so the idle timer never fires. Must survive: every one is closed with
/// `reason=max_lifetime` at `max_lifetime` after its accept — none earlier, none much later.
#[test]
fn slowloris_clients_are_closed_at_max_lifetime_and_not_before() {
    const PER_LISTENER: usize = 25;
    let upstream = Upstream::start(|mut s| {
        let _ = drain(&mut s);
    });
    let sink = free_addr();
    let relay = free_addr();
    let extra = "max_lifetime = \"2s\"\n";
    let daemon = Daemon::start(
        &(sink_listener("loris-sink", sink, "1s")
            + extra
            + "\n"
            + &relay_listener("loris-relay", relay, upstream.addr, "1s")
            + extra),
    );

    let clients: Vec<_> = (0..2 * PER_LISTENER)
        .map(|i| {
            let (name, addr) = if i % 2 == 0 { ("loris-sink", sink) } else { ("loris-relay", relay) };
            (name, thread::spawn(move || trickle(addr)))
        })
        .collect();
    for (listener, client) in clients {
        let (me, connecting, connected, closed_at, sent) = client.join().expect("slowloris client");
        let after = closed_at.saturating_duration_since(connecting);
        assert!(
            after >= LIFETIME,
            "{me} closed {after:?} after connecting, before max_lifetime {LIFETIME:?}"
        );
        let late = closed_at.saturating_duration_since(connected);
        assert!(late <= LIFETIME + LIFETIME_SLACK, "{me} closed {late:?} after connecting");
        assert!(sent >= 3, "{me} trickled only {sent} bytes: the test did not play slowloris");
        let line = daemon.wait_close_on(listener, me, Duration::from_secs(5));
        line.assert_reason("max_lifetime");
        assert!(line.num("lifetime_ms") >= LIFETIME.as_millis() as u64, "{}", line.raw);
        assert!(line.num("bytes_from_client") >= u64::from(sent.saturating_sub(1)), "{}", line.raw);
    }
}

// ---------------------------------------------------------------------------------------------
// allow / deny
// ---------------------------------------------------------------------------------------------

/// A client from `source` to a listener that refuses it: the connect itself succeeds (the kernel
/// completes it), then the daemon closes it at once. Returns the client's address.
fn assert_closed_at_accept(source: IpAddr, addr: SocketAddr) -> SocketAddr {
    let mut client = connect_from(source, addr).expect("connect");
    let me = client.local_addr().unwrap();
    let start = Instant::now();
    let closed_at = wait_closed(&mut client, Duration::from_secs(2));
    assert!(closed_at - start < Duration::from_secs(2));
    me
}

/// The `conn refused` lines of `listener` so far, and how many refusals they account for
/// (each line is one, plus its `refused_unlogged=N`).
fn refusals_logged(daemon: &Daemon, listener: &str) -> (usize, u64) {
    let needle = format!(" conn refused listener={listener} ");
    let lines: Vec<String> = daemon.log().lines().filter(|l| l.contains(&needle)).map(String::from).collect();
    let accounted = lines
        .iter()
        .map(|l| 1 + parse_fields(l).get("refused_unlogged").map_or(0, |n| n.parse::<u64>().unwrap()))
        .sum();
    (lines.len(), accounted)
}

/// Injects: clients from a source outside `allow`, and from a source in `deny`. Must survive:
/// each is closed at accept, logged `reason=denied`, and its upstream never sees a connection;
/// clients from an admitted source are relayed.
#[test]
fn denied_sources_are_closed_at_accept_before_any_upstream_connection() {
    let (allow_upstream, allow_accepted) = counting_echo_upstream();
    let (deny_upstream, deny_accepted) = counting_echo_upstream();
    let good = IpAddr::V4(fresh_ip());
    let bad = IpAddr::V4(fresh_ip());
    let allow_listen = free_addr();
    let deny_listen = free_addr();
    let daemon = Daemon::start(
        &(relay_listener("allow-only", allow_listen, allow_upstream.addr, "30s")
            + &format!("allow = [\"{good}/32\"]\n\n")
            + &relay_listener("deny-one", deny_listen, deny_upstream.addr, "30s")
            + &format!("deny = [\"{bad}/32\"]\n")),
    );

    const ROUNDS: u32 = 3;
    for round in 0..ROUNDS {
        let refused = assert_closed_at_accept(bad, allow_listen);
        if round == 0 {
            let line = format!(" conn refused listener=allow-only client={refused} reason=denied");
            daemon.wait_log(&line, Duration::from_secs(5));
        }
        let refused = assert_closed_at_accept(bad, deny_listen);
        if round == 0 {
            let line = format!(" conn refused listener=deny-one client={refused} reason=denied");
            daemon.wait_log(&line, Duration::from_secs(5));
        }
        // The admitted source gets through both (accepted after the refused one, so its relayed
        // echo proves the daemon already dealt with the refused one).
        for addr in [allow_listen, deny_listen] {
            let mut client = connect_from(good, addr).expect("connect");
            assert_echo(&mut client, format!("admitted {round}").as_bytes());
        }
        // One upstream connection per admitted client, none for the refused ones.
        let expected = round + 1;
        for (name, accepted) in [("allow-only", &allow_accepted), ("deny-one", &deny_accepted)] {
            let got = wait_for(Duration::from_secs(2), || {
                let n = accepted.load(Ordering::SeqCst);
                (n >= expected).then_some(n)
            });
            assert_eq!(got, Some(expected), "{name}: upstream connections after {expected} admitted clients");
        }
    }
    // Give a belated upstream connect time to show, then count again.
    thread::sleep(Duration::from_millis(200));
    assert_eq!(allow_accepted.load(Ordering::SeqCst), ROUNDS);
    assert_eq!(deny_accepted.load(Ordering::SeqCst), ROUNDS);

    // Refusals within a second of a logged one are held back and counted on the next line.
    thread::sleep(Duration::from_millis(1100));
    for (name, addr) in [("allow-only", allow_listen), ("deny-one", deny_listen)] {
        assert_closed_at_accept(bad, addr);
        let all = wait_for(Duration::from_secs(5), || {
            let (lines, accounted) = refusals_logged(&daemon, name);
            (accounted == u64::from(ROUNDS) + 1).then_some(lines)
        });
        let lines = all.unwrap_or_else(|| {
            panic!(
                "{name}: the refused lines do not account for {} refusals; log:\n{}",
                ROUNDS + 1,
                daemon.log()
            )
        });
        assert!(
            lines < ROUNDS as usize + 1,
            "{name}: {lines} lines for {} refusals: not rate limited",
            ROUNDS + 1
        );
    }
    assert!(
        !daemon.closes().iter().any(|c| c.get("client").is_some_and(|a| a.starts_with(&format!("{bad}:")))),
        "a refused client has no `conn closed` line (it never was a connection); log:\n{}",
        daemon.log()
    );
}

/// A port on ::1 that nobody listens on now.
fn free_v6_addr() -> SocketAddr {
    let probe = TcpListener::bind("[::1]:0").expect("bind [::1]:0");
    let addr = probe.local_addr().unwrap();
    drop(probe);
    addr
}

/// Injects: nothing hostile — an IPv6 listener relaying to an IPv6 upstream, and an IPv6 `deny`.
/// Must survive: bytes go end to end over [::1]; a denied ::1 client is refused without an
/// upstream connection.
#[test]
fn ipv6_listener_relays_to_an_ipv6_upstream_and_applies_ipv6_acls() {
    if !ipv6_loopback_available() {
        skip("::1 is not available on this machine");
        return;
    }
    let (upstream, accepted) = {
        let listener = TcpListener::bind("[::1]:0").expect("bind the IPv6 upstream");
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = accepted.clone();
        let upstream = Upstream::start_on(listener, move |mut s| {
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = echo_until_eof(&mut s);
        });
        (upstream, accepted)
    };
    let open = free_v6_addr();
    let closed = free_v6_addr();
    let daemon = Daemon::start(
        &(relay_listener("v6", open, upstream.addr, "30s")
            + "allow = [\"::1/128\"]\n\n"
            + &relay_listener("v6-denied", closed, upstream.addr, "30s")
            + "deny = [\"::1\"]\n"),
    );
    let loopback = IpAddr::V6(Ipv6Addr::LOCALHOST);

    let refused = assert_closed_at_accept(loopback, closed);
    daemon.wait_log(
        &format!(" conn refused listener=v6-denied client={refused} reason=denied"),
        Duration::from_secs(5),
    );
    let mut client = connect(open);
    let me = client.local_addr().unwrap();
    assert!(me.is_ipv6());
    let mut writer = client.try_clone().unwrap();
    let sending = thread::spawn(move || {
        send_stream(&mut writer, 6, 1 << 20)?;
        writer.shutdown(std::net::Shutdown::Write)
    });
    recv_stream(&mut client, 6, 1 << 20, full_speed).expect("1 MiB echoed over IPv6 intact");
    sending.join().unwrap().expect("sent over IPv6");
    drop(client);
    let line = daemon.wait_close_of(me, Duration::from_secs(5));
    line.assert_reason("client_closed");
    assert_eq!(line.num("bytes_from_client"), 1 << 20, "{}", line.raw);
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "only the admitted client reached the upstream");
}
