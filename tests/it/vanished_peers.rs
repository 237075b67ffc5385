//! A peer whose host vanishes: its packets dropped (iptables, in a network namespace of the
//! test's own), no FIN and no reset from it. `tcp_user_timeout` ends the connection instead of
//! the kernel's quarter of an hour of retransmissions, and the peer still there is told by a
//! reset, also when the daemon was holding bytes for the vanished one (the kernel reports a
//! socket's error once, and a read of that socket afterwards looks like an end of stream).

use std::io::{ErrorKind, Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

/// Moves the calling thread into a network namespace of its own with its loopback up, and
/// reports whether it could (root, `ip` and a firewall tool are needed); processes and threads
/// it starts from then on share that namespace, which nothing else on the machine sees.
fn private_network() -> bool {
    // SAFETY: unshare(2) with CLONE_NEWNET changes only the calling thread's network namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return false;
    }
    let up = std::process::Command::new("ip").args(["link", "set", "lo", "up"]).status();
    up.is_ok_and(|s| s.success())
}

/// Runs `scenario` on a thread of its own in a private network namespace, with the path of
/// iptables; `None` when this machine cannot (the test is skipped, or fails under CI).
fn in_private_network<T, F>(scenario: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce(&str) -> Result<T, String> + Send + 'static,
{
    let tool =
        ["/usr/sbin/iptables", "/sbin/iptables"].into_iter().find(|p| std::path::Path::new(p).exists());
    let root = nix::unistd::geteuid().is_root();
    if !require("iptables (and root)", tool.is_some() && root, "apt-get install iptables; run as root") {
        return None;
    }
    let iptables = tool.unwrap().to_owned();
    let outcome = thread::spawn(move || {
        if !private_network() {
            return Err("no network namespace".to_owned());
        }
        scenario(&iptables)
    })
    .join()
    .expect("the namespace thread");
    match outcome {
        Ok(found) => Some(found),
        Err(why) => {
            skip(&format!("cannot run in a private network namespace here: {why}"));
            assert!(!in_ci(), "CI runs as root with iptables: {why}");
            None
        }
    }
}

/// From now on every packet to `port` is dropped: its listener's host has vanished.
fn vanish(iptables: &str, port: u16) -> Result<(), String> {
    let port = port.to_string();
    let rule = ["-A", "INPUT", "-p", "tcp", "--dport", &port, "-j", "DROP"];
    let dropped = std::process::Command::new(iptables).args(rule).status().map_err(|e| e.to_string())?;
    if !dropped.success() {
        return Err(format!("iptables failed: {dropped}"));
    }
    Ok(())
}

#[test]
fn tcp_user_timeout_drops_a_peer_that_stops_acknowledging() {
    let outcome = in_private_network(|iptables| {
        let upstream = Upstream::echo();
        let listen = free_addr();
        let config = relay_listener("uto", listen, upstream.addr, "30s") + "tcp_user_timeout = \"1s\"\n";
        let daemon = Daemon::start(&config);
        let mut c = connect(listen);
        assert_echo(&mut c, b"before the path goes dark");
        let me = c.local_addr().unwrap();
        // From now on nothing reaches the upstream's port: the relay's bytes stay unacknowledged.
        vanish(iptables, upstream.addr.port())?;
        let sent = Instant::now();
        c.write_all(b"into the void").unwrap();
        let line = daemon.wait_close_of(me, Duration::from_secs(10));
        Ok((line, sent.elapsed()))
    });
    let Some((line, after)) = outcome else { return };
    assert!(line.get("error").is_some_and(|e| e.contains("timed out")), "{}", line.raw);
    assert!(
        after < Duration::from_secs(2) + Duration::from_millis(500),
        "closed {after:?} after the send, tcp_user_timeout 1s"
    );
    line.assert_reason("error");
}

/// Injects: the upstream vanishes while the client pours bytes at it, so that the daemon holds
/// bytes for the upstream (its socket's send buffer full) when `tcp_user_timeout` fails that
/// socket. The write that meets the error takes it; the other direction must not then read the
/// same socket, see an end of stream and pass a FIN to the client ahead of the reset.
/// Must survive: the client's first read after the failure is a reset, never an end of stream.
#[test]
fn an_upstream_that_times_out_with_bytes_held_for_it_resets_the_client_without_a_fin_first() {
    let outcome = in_private_network(|iptables| {
        // The upstream answers a first request, then reads whatever comes.
        let upstream = Upstream::start(|mut s| {
            let mut request = [0u8; 5];
            if s.read_exact(&mut request).is_ok() && s.write_all(b"ok").is_ok() {
                let _ = drain(&mut s);
            }
        });
        let listen = free_addr();
        let config = relay_listener("uto", listen, upstream.addr, "30s") + "tcp_user_timeout = \"1s\"\n";
        let daemon = Daemon::start(&config);
        let mut c = connect(listen);
        c.write_all(b"hello").unwrap();
        assert_eq!(read_n(&mut c, 2), b"ok", "the upstream's answer, before it vanishes");
        let me = c.local_addr().unwrap();
        vanish(iptables, upstream.addr.port())?;
        // Pour until every buffer on the way is full (loopback fills them in milliseconds; 0.4 s,
        // well inside the user timeout), then stop writing: a write racing the reset would take
        // its error, and the read below would not see it.
        c.set_nonblocking(true).unwrap();
        let chunk = vec![0x5a_u8; 64 * 1024];
        let until = Instant::now() + Duration::from_millis(400);
        let mut poured = 0usize;
        while Instant::now() < until {
            match c.write(&chunk) {
                Ok(n) => poured += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("the client's write failed within 0.4 s of a 1 s user timeout: {e}"),
            }
        }
        c.set_nonblocking(false).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut byte = [0u8; 1];
        let first = c.read(&mut byte);
        let line = daemon.wait_close_of(me, Duration::from_secs(10));
        Ok((first.map_err(|e| e.kind()), line, poured))
    });
    let Some((first, line, poured)) = outcome else { return };
    line.assert_reason("error");
    assert!(line.get("error").is_some_and(|e| e.contains("timed out")), "{}", line.raw);
    assert_eq!(
        first,
        Err(ErrorKind::ConnectionReset),
        "the client's first read after the upstream failed ({poured} bytes poured); close line: {}",
        line.raw
    );
}
