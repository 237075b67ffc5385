//! Broken peers and a starved process: descriptor exhaustion (a low `RLIMIT_NOFILE` and a connect
//! flood), resets from either side, an upstream that closes before reading, an upstream port that
//! refuses, and one that never answers. Each test says what it injects and what must survive:
//! the right close reason, the relayed bytes, and the daemon's descriptors (none leaked).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

const MIB: u64 = 1024 * 1024;

/// How many times each reset/error scenario runs on one daemon: a descriptor leaked per
/// connection then shows as more than the one connection's worth of pooled pipes.
const ROUNDS: usize = 3;

/// Waits (up to 5 s) for the daemon's descriptors to come back to `baseline` once the
/// connections of a scenario are closed: exactly as many sockets and other descriptors, and at
/// most one connection's pipes more (a connection that finished cleanly returns its splice pipes
/// to a bounded pool that keeps them open for reuse — not a leak; a leak per connection shows
/// after [`ROUNDS`] connections).
fn assert_no_fd_leak(daemon: &Daemon, baseline: FdCensus) {
    const PIPES_OF_ONE_CONNECTION: usize = 4;
    let back = |c: &FdCensus| {
        c.sockets == baseline.sockets
            && c.other == baseline.other
            && c.pipes <= baseline.pipes + PIPES_OF_ONE_CONNECTION
    };
    let last = wait_for(Duration::from_secs(5), || {
        let now = daemon.fds();
        back(&now).then_some(now)
    });
    assert!(
        last.is_some(),
        "descriptors before: {baseline:?}; 5 s after the connections closed: {:?}; log:\n{}",
        daemon.fds(),
        daemon.log()
    );
}

// ---------------------------------------------------------------------------------------------
// Descriptor exhaustion
// ---------------------------------------------------------------------------------------------

/// Injects: `RLIMIT_NOFILE` = 128 and a flood of 400 connects held open on a sink listener of
/// the same daemon, far more than it can hold descriptors for.
/// Must survive: the daemon does not spin (its CPU time over 2 s of flood stays well under one
/// core); the relayed connections it already had keep relaying 1 MiB each way intact during the
/// flood; with the table full and nobody waiting it stays quiet (one warning for the episode,
/// no retry every 100 ms); once the flood's sockets close, a new client is accepted and
/// relayed, and the end of the episode is logged with the count of clients refused.
#[test]
fn descriptor_exhaustion_neither_spins_nor_stops_relaying_and_recovers() {
    const NOFILE: u64 = 128;
    const FLOOD: usize = 400;
    const ESTABLISHED: usize = 4;
    const MEASURE: Duration = Duration::from_secs(2);
    const QUIET: Duration = Duration::from_millis(1500);

    let upstream = Upstream::echo();
    let relay_addr = free_addr();
    let sink_addr = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_section(dir.path(), "2s")
        + &relay_listener("relay", relay_addr, upstream.addr, "60s")
        + &sink_listener("flooded", sink_addr, "60s");
    let daemon = Daemon::start_in_with(dir, &config, |_, cmd| limit_open_files(cmd, NOFILE));

    let mut established: Vec<TcpStream> = (0..ESTABLISHED).map(|_| connect(relay_addr)).collect();
    for (i, c) in established.iter_mut().enumerate() {
        assert_echo(c, format!("before the flood {i}").as_bytes());
    }

    // The flood: every connect completes in the kernel (the backlog is large), whether or not
    // the daemon can accept it.
    let mut flood = Vec::with_capacity(FLOOD);
    for i in 0..FLOOD {
        match TcpStream::connect_timeout(&sink_addr, Duration::from_secs(2)) {
            Ok(s) => flood.push(s),
            Err(e) => panic!("flood connect {i} of {FLOOD}: {e}"),
        }
    }
    // Out of descriptors: the daemon holds (almost) as many as it may.
    let exhausted =
        wait_for(Duration::from_secs(5), || (daemon.fds().total() + 4 >= NOFILE as usize).then_some(()));
    assert!(exhausted.is_some(), "the flood did not exhaust descriptors: {:?}", daemon.fds());

    // Over the flood: measure CPU while the established connections relay 1 MiB each way.
    let wall = Instant::now();
    let cpu_before = daemon.cpu_time();
    let runtime_before = cpu_runtime(daemon.pid());
    let transfers: Vec<_> = established
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut reader = c.try_clone().unwrap();
            let mut writer = c.try_clone().unwrap();
            let seed = 100 + i as u64;
            thread::spawn(move || {
                let sending = thread::spawn(move || send_stream(&mut writer, seed, MIB));
                let mut expected = ByteStream::new(seed);
                let mut buf = vec![0u8; 64 * 1024];
                while expected.offset < MIB {
                    let want = (MIB - expected.offset).min(buf.len() as u64) as usize;
                    let n = reader.read(&mut buf[..want]).map_err(|e| format!("read: {e}"))?;
                    if n == 0 {
                        return Err(format!("EOF after {} bytes", expected.offset));
                    }
                    expected.check(&buf[..n]).map_err(|at| format!("byte {at} differs"))?;
                }
                sending.join().unwrap().map_err(|e| format!("send: {e}"))
            })
        })
        .collect();
    for (i, t) in transfers.into_iter().enumerate() {
        t.join().unwrap().unwrap_or_else(|e| panic!("established connection {i} during the flood: {e}"));
    }
    let left = MEASURE.saturating_sub(wall.elapsed());
    thread::sleep(left);
    let cpu = daemon.cpu_time() - cpu_before;
    let runtime = cpu_runtime(daemon.pid()).zip(runtime_before).map(|(after, before)| after - before);
    let elapsed = wall.elapsed();
    let share = cpu.as_secs_f64() / elapsed.as_secs_f64();
    eprintln!(
        "EMFILE flood: daemon CPU (utime+stime) {cpu:?} over {elapsed:?} ({:.1}% of one core; \
         schedstat runtime {runtime:?}), descriptors {:?}",
        share * 100.0,
        daemon.fds()
    );
    assert!(
        share < 0.5,
        "the daemon used {cpu:?} of CPU in {elapsed:?} while out of descriptors: it spins; log tail:\n{}",
        tail(&daemon.log(), 20)
    );
    for (i, c) in established.iter_mut().enumerate() {
        assert_echo(c, format!("after the flood {i}").as_bytes());
    }
    // The table is full and nobody waits: quiet, without a line or a wake-up every 100 ms —
    // one warning for the whole episode so far.
    thread::sleep(QUIET);
    let warnings = daemon.log().matches("out of descriptors").count();
    assert_eq!(
        warnings,
        1,
        "one warning per episode, not one per retry; log tail:\n{}",
        tail(&daemon.log(), 20)
    );

    // The flood goes away: descriptors free up and a new client is served.
    drop(flood);
    let served = wait_for(Duration::from_secs(10), || {
        let mut c = TcpStream::connect_timeout(&relay_addr, Duration::from_secs(1)).ok()?;
        with_timeouts(&c);
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        c.write_all(b"a new client").ok()?;
        let mut back = [0u8; 12];
        c.read_exact(&mut back).ok()?;
        (&back == b"a new client").then_some(())
    });
    assert!(served.is_some(), "no new client relayed 10 s after the flood ended; log:\n{}", daemon.log());
    // The end of the episode is logged once, with how many clients were refused meanwhile.
    let end = daemon.log().lines().find(|l| l.contains("descriptors available again:")).map(str::to_owned);
    let fields = end.as_deref().map(|l| parse_fields(&l[l.find("starved_ms").unwrap_or(0)..]));
    let refused = fields.and_then(|f| f.get("refused").and_then(|n| n.parse::<u64>().ok()));
    assert!(refused.is_some_and(|n| n > 0), "episode end with a count of refusals: {end:?}");
    for (i, c) in established.iter_mut().enumerate() {
        assert_echo(c, format!("still relaying {i}").as_bytes());
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// Resets and errors
// ---------------------------------------------------------------------------------------------

/// Injects: the client resets its connection (SO_LINGER 0, close) in the middle of a 4 MiB
/// transfer toward an echo upstream. Must survive: the pair is closed with
/// `reason=client_reset`, the upstream sees its side end, and no descriptor is left behind.
#[test]
fn a_client_reset_mid_transfer_closes_the_pair_without_leaks() {
    let upstream = Upstream::echo();
    let listen = free_addr();
    let daemon = Daemon::start(&relay_listener("client-rst", listen, upstream.addr, "30s"));
    let baseline = warm_up(&daemon, listen);

    for round in 0..ROUNDS {
        let mut client = connect(listen);
        let me = client.local_addr().unwrap();
        let mut writer = client.try_clone().unwrap();
        let sending = thread::spawn(move || send_stream(&mut writer, 5, 4 * MIB));
        // Half a megabyte of the echo has come back: the transfer is in full swing.
        let mut got = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        while got < 512 * 1024 {
            let n = client.read(&mut buf).expect("echo while the transfer runs");
            assert!(n > 0, "round {round}: EOF in the middle of the transfer");
            got += n;
        }
        close_with_reset(client);
        // The sender's clone is the same socket: its writes now fail.
        let _ = sending.join();
        let line = daemon.wait_close_of(me, Duration::from_secs(5));
        line.assert_reason("client_reset");
        assert!(
            line.get("error").is_some_and(|e| e.contains("client")),
            "names the client side: {}",
            line.raw
        );
        assert!(line.num("bytes_from_client") >= got as u64, "{}", line.raw);
    }
    assert_no_fd_leak(&daemon, baseline);
}

/// One 2 MiB echo through `listen`, then waits for its close: the pools are warm, and the
/// census returned is the daemon's resting state.
fn warm_up(daemon: &Daemon, listen: SocketAddr) -> FdCensus {
    const WARM: u64 = 2 * MIB;
    let mut client = connect(listen);
    let me = client.local_addr().unwrap();
    let mut writer = client.try_clone().unwrap();
    let sending = thread::spawn(move || {
        send_stream(&mut writer, 1, WARM)?;
        writer.shutdown(Shutdown::Write)
    });
    recv_stream(&mut client, 1, WARM, full_speed).expect("warm-up echo intact");
    sending.join().unwrap().expect("warm-up send");
    drop(client);
    daemon.wait_close_of(me, Duration::from_secs(5));
    daemon.fds()
}

/// Injects: the upstream resets (SO_LINGER 0, close) after reading part of the request while
/// the client keeps sending. Must survive: `reason=upstream_reset` naming the upstream, the
/// client's connection closed, no descriptor left behind.
#[test]
fn an_upstream_reset_closes_the_pair_without_leaks() {
    // The first connection is the warm-up: echo it. Every later one is reset after 256 KiB.
    let (tx, resets) = mpsc::channel();
    let seen = AtomicU32::new(0);
    let upstream = Upstream::start(move |mut s| {
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            let _ = echo_until_eof(&mut s);
            return;
        }
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0usize;
        while got < 256 * 1024 {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        close_with_reset(s);
        let _ = tx.send(got);
    });
    let listen = free_addr();
    let daemon = Daemon::start(&relay_listener("upstream-rst", listen, upstream.addr, "30s"));
    let baseline = warm_up(&daemon, listen);

    for round in 0..ROUNDS {
        let mut client = connect(listen);
        let me = client.local_addr().unwrap();
        let mut writer = client.try_clone().unwrap();
        let sending = thread::spawn(move || send_stream(&mut writer, 6, 8 * MIB));
        resets.recv_timeout(Duration::from_secs(10)).expect("the upstream read and reset");
        // The client's connection is closed (reset or EOF), and its sender stops with an error.
        wait_closed(&mut client, Duration::from_secs(5));
        let sent = sending.join().unwrap();
        assert!(sent.is_err(), "round {round}: 8 MiB went into a connection whose upstream reset");
        let line = daemon.wait_close_of(me, Duration::from_secs(5));
        line.assert_reason("upstream_reset");
        assert!(
            line.get("error").is_some_and(|e| e.contains("upstream")),
            "names the upstream: {}",
            line.raw
        );
    }
    assert_no_fd_leak(&daemon, baseline);
}

/// Injects: an upstream that accepts and closes at once, before the client's request arrives.
/// Must survive: the client gets EOF, and the pair is closed when the client, told so, sends
/// its request and closes: `reason=upstream_closed`, or `upstream_reset` when the upstream's
/// kernel answered the request it can no longer take with a reset before the pair was done
/// (as it would answer the client on a direct connection); no descriptor left behind.
#[test]
fn an_upstream_that_closes_before_reading_closes_the_pair() {
    let (tx, closed) = mpsc::channel();
    let seen = AtomicU32::new(0);
    let upstream = Upstream::start(move |mut s| {
        // The first connection is the warm-up: echo it. Every later one is closed at once.
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            let _ = echo_until_eof(&mut s);
        } else {
            drop(s);
            let _ = tx.send(());
        }
    });
    let listen = free_addr();
    let daemon = Daemon::start(&relay_listener("upstream-early", listen, upstream.addr, "30s"));
    let baseline = warm_up(&daemon, listen);

    for round in 0..ROUNDS {
        let mut client = connect(listen);
        let me = client.local_addr().unwrap();
        closed.recv_timeout(Duration::from_secs(5)).expect("the upstream accepted and closed");
        // The upstream's FIN is passed on: the client reads EOF.
        let mut buf = [0u8; 16];
        assert_eq!(client.read(&mut buf).unwrap_or(0), 0, "round {round}: EOF from the relay");
        // The request is sent anyway, then the client closes.
        let _ = client.write_all(b"GET / HTTP/1.0\r\n\r\n");
        drop(client);
        let line = daemon.wait_close_of(me, Duration::from_secs(5));
        assert!(["upstream_closed", "upstream_reset"].contains(&line.reason()), "{}", line.raw);
        assert_eq!(line.num("bytes_from_upstream"), 0, "{}", line.raw);
    }
    assert_no_fd_leak(&daemon, baseline);
}

/// Injects: the upstream address refuses connections (nothing listens there). Must survive:
/// every client is closed promptly with `reason=upstream_refused`; no descriptor left behind.
#[test]
fn a_refused_upstream_closes_each_client_without_leaks() {
    let closed_port = free_addr();
    let listen = free_addr();
    let daemon = Daemon::start(&relay_listener("refused", listen, closed_port, "30s"));
    let baseline = daemon.fds();
    for _ in 0..ROUNDS {
        let mut client = connect(listen);
        let me = client.local_addr().unwrap();
        wait_closed(&mut client, Duration::from_secs(5));
        daemon.wait_close_of(me, Duration::from_secs(5)).assert_reason("upstream_refused");
    }
    assert_no_fd_leak(&daemon, baseline);
}

/// Injects: an upstream whose connect never completes (a full backlog of 0 drops the SYNs).
/// Must survive: each client is closed at `connect_timeout` with `reason=connect_timeout`, the
/// half-open upstream sockets are closed too (no descriptor left behind).
#[test]
fn an_unanswering_upstream_closes_each_client_at_connect_timeout_without_leaks() {
    let (unanswering, _fillers) = unanswering_upstream();
    let listen = free_addr();
    let daemon = Daemon::start(
        &(relay_listener("blackhole", listen, unanswering.local_addr().unwrap(), "30s")
            + "connect_timeout = \"300ms\"\n"),
    );
    let baseline = daemon.fds();
    // The rounds run at once: three connects pending together.
    let clients: Vec<TcpStream> = (0..ROUNDS).map(|_| connect(listen)).collect();
    let start = Instant::now();
    for mut client in clients {
        let me = client.local_addr().unwrap();
        let closed_at = wait_closed(&mut client, Duration::from_secs(5));
        assert!(closed_at - start >= Duration::from_millis(300) - Duration::from_millis(50));
        daemon.wait_close_of(me, Duration::from_secs(5)).assert_reason("connect_timeout");
    }
    assert_no_fd_leak(&daemon, baseline);
}

/// An I/O error in one connection is that connection's only: a reset pair next to a healthy one
/// leaves the healthy one relaying.
#[test]
fn a_reset_connection_does_not_disturb_its_neighbour() {
    let upstream = Upstream::echo();
    let listen = free_addr();
    let daemon = Daemon::start(&relay_listener("neighbours", listen, upstream.addr, "30s"));
    let mut healthy = connect(listen);
    assert_echo(&mut healthy, b"hello");
    for _ in 0..ROUNDS {
        let mut doomed = connect(listen);
        assert_echo(&mut doomed, b"about to reset");
        let me = doomed.local_addr().unwrap();
        close_with_reset(doomed);
        let line = daemon.wait_close_of(me, Duration::from_secs(5));
        line.assert_reason("client_reset");
        assert_echo(&mut healthy, b"still fine");
    }
}
