//! Live reload (SIGHUP): a valid file is applied without dropping anything — kept listeners keep
//! their sockets, removed ones stop accepting while their connections run on, added ones serve,
//! new timeouts apply — and an invalid one changes nothing.

use std::fs;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

/// Rewrites the daemon's config file with `listeners`, sends HUP and waits for the `reloaded`
/// (or `reload failed`) line number `n` (1-based).
fn reload(daemon: &mut Daemon, listeners: &str, n: usize, expect_ok: bool) {
    let text = daemon_section(daemon.dir.path(), "2s") + listeners;
    fs::write(&daemon.config_path, text).unwrap();
    daemon.signal(libc::SIGHUP);
    let needle = if expect_ok { " INFO reloaded " } else { " ERROR reload failed" };
    let seen = wait_for(Duration::from_secs(5), || (daemon.log().matches(needle).count() >= n).then_some(()));
    assert!(seen.is_some(), "reload {n} ({needle}) not logged; log:\n{}", daemon.log());
}

#[test]
fn a_connecting_client_sees_no_refusal_across_ten_reloads() {
    let upstream = Upstream::echo();
    let listen = free_addr();
    let mut daemon = Daemon::start(&relay_listener("steady", listen, upstream.addr, "30s"));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let client = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        thread::spawn(move || {
            let start = Instant::now();
            // Bounded: stops when told, or after 60 s, or 100k connections.
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) || start.elapsed() > Duration::from_secs(60) {
                    break;
                }
                match TcpStream::connect_timeout(&listen, Duration::from_secs(5)) {
                    Ok(mut s) => {
                        with_timeouts(&s);
                        assert_echo(&mut s, b"ping");
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("connect failed: {e}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    for n in 1..=10 {
        // Alternate the idle timeout so that every reload really changes something.
        let idle = if n % 2 == 0 { "30s" } else { "20s" };
        reload(&mut daemon, &relay_listener("steady", listen, upstream.addr, idle), n, true);
    }
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    assert!(ok.load(Ordering::Relaxed) > 10, "the client connected throughout");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no refusal during reloads");
}

#[test]
fn listeners_are_added_and_removed_and_open_connections_run_on() {
    let upstream = Upstream::echo();
    let (old, new) = (free_addr(), free_addr());
    let mut daemon = Daemon::start(&relay_listener("old", old, upstream.addr, "30s"));
    let mut held = connect(old);
    assert_echo(&mut held, b"before");

    reload(&mut daemon, &relay_listener("new", new, upstream.addr, "30s"), 1, true);
    assert!(daemon.log().contains("listeners=1 kept=0 added=1 removed=1"), "{}", daemon.log());
    let mut fresh = connect(new);
    assert_echo(&mut fresh, b"added listener serves");
    let refused = wait_for(Duration::from_secs(5), || TcpStream::connect(old).err());
    assert!(refused.is_some(), "the removed listener no longer accepts");
    assert_echo(&mut held, b"the open connection runs on");
    let me = held.local_addr().unwrap();
    held.shutdown(Shutdown::Write).unwrap();
    daemon.wait_close_of(me, Duration::from_secs(5)).assert_reason("client_closed");
}

#[test]
fn an_invalid_file_changes_nothing_and_is_reported_with_its_key() {
    let upstream = Upstream::echo();
    let listen = free_addr();
    let mut daemon = Daemon::start(&relay_listener("keep", listen, upstream.addr, "30s"));
    let bad = relay_listener("keep", listen, upstream.addr, "5x");
    reload(&mut daemon, &bad, 1, false);
    let log = daemon.log();
    let line = log.lines().find(|l| l.contains("reload failed")).unwrap();
    assert!(line.contains("idle_timeout") && line.contains(":"), "names the key and place: {line}");
    let mut client = connect(listen);
    assert_echo(&mut client, b"still serving");
    assert!(daemon.poll_exit().is_none(), "still running");
}

#[test]
fn a_new_idle_timeout_applies_to_new_connections() {
    let listen = free_addr();
    let mut daemon = Daemon::start(&sink_listener("sink", listen, "30s"));
    reload(&mut daemon, &sink_listener("sink", listen, "300ms"), 1, true);
    let start = Instant::now();
    let mut client = connect(listen);
    let me = client.local_addr().unwrap();
    let closed = wait_closed(&mut client, Duration::from_secs(5));
    assert!(closed - start >= Duration::from_millis(300), "not before the new timeout");
    daemon.wait_close_of(me, Duration::from_secs(5)).assert_reason("idle");
}

#[test]
fn settings_that_need_a_restart_are_reported_and_kept() {
    let listen = free_addr();
    let mut daemon = Daemon::start(&sink_listener("sink", listen, "30s"));
    let text = daemon_section(daemon.dir.path(), "2s")
        .replace("tick = \"1ms\"", "tick = \"5ms\"\nworkers = 2")
        + &sink_listener("sink", listen, "30s");
    fs::write(&daemon.config_path, text).unwrap();
    daemon.signal(libc::SIGHUP);
    daemon
        .wait_log("daemon.workers, daemon.tick changed; restart idlereaper to apply", Duration::from_secs(5));
    daemon.wait_log(" INFO reloaded ", Duration::from_secs(5));
    let _client = connect(listen);
}

#[test]
fn an_address_that_cannot_be_bound_is_reported_at_its_key_and_warns_of_nothing_else() {
    let listen = free_addr();
    let mut daemon = Daemon::start(&sink_listener("sink", listen, "30s"));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    // A setting that needs a restart, and a new listener whose address is taken.
    let text = daemon_section(daemon.dir.path(), "2s").replace("tick = \"1ms\"", "tick = \"5ms\"")
        + &sink_listener("sink", listen, "30s")
        + &sink_listener("busy", busy, "30s");
    let line = text.lines().position(|l| l == format!("listen = \"{busy}\"")).unwrap() + 1;
    fs::write(&daemon.config_path, text).unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_log(" ERROR reload failed", Duration::from_secs(5));
    let log = daemon.log();
    let failed = log.lines().find(|l| l.contains("reload failed")).unwrap();
    let at =
        format!("{}:{line}:10: listener[1].listen: cannot listen on {busy}", daemon.config_path.display());
    assert!(failed.contains(&at), "names the file, line, column and key ({at}): {failed}");
    assert!(!log.contains("restart idlereaper to apply"), "no restart warning for a failed reload:\n{log}");
    let _client = connect(listen);
    assert!(daemon.poll_exit().is_none(), "still running");
}
