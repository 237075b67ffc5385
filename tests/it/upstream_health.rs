//! The health of upstream addresses as an operator sees it: a dead address passed over for a
//! backoff that grows while clients are still relayed through the others, and used again once
//! it is back; one that does not answer passed over after its connect timeout;
//! `idlereaperctl upstream disable|enable` (a drain: no new connection, the open
//! ones relaying on, byte for byte), its errors, and every address disabled; the state kept by
//! a reload and by a live upgrade.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

/// A relay listener `name` on `listen` to every address of `upstreams`, in that order.
fn relay_to(name: &str, listen: SocketAddr, upstreams: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = upstreams.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "[[listener]]\nname = \"{name}\"\nlisten = \"{listen}\"\nupstream = [{}]\nidle_timeout = \"60s\"\n{extra}\n",
        list.join(", ")
    )
}

/// One client relayed: it connects, is echoed, and closes. Panics if it is not served.
fn one_client(listen: SocketAddr, what: &str) {
    let mut c = connect(listen);
    assert_echo(&mut c, what.as_bytes());
}

/// `idlereaperctl -s SOCKET args…`, which must fail with exit status 2 saying `says`.
fn refused(socket: &Path, args: &[&str], says: &str) {
    let out = ctl_run(socket, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains(says), "{args:?}: {stderr}");
}

/// The state, failures and backoff left of upstream `address` of listener `name`.
fn state_of(socket: &Path, name: &str, address: SocketAddr) -> (String, u32, Option<u64>) {
    let row = upstream_row(socket, name, address).unwrap_or_else(|| panic!("{name} lists no {address}"));
    (row.state, row.failures, row.backoff_left_ms)
}

#[test]
fn a_dead_upstream_is_passed_over_for_a_growing_backoff_and_serves_again_once_back() {
    let (a, _) = counting_echo_upstream();
    let (b, _) = counting_echo_upstream();
    let dead = free_addr();
    let (c, _) = counting_echo_upstream_on(TcpListener::bind(dead).unwrap());
    let listen = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let (control, socket) = control_at(dir.path());
    let backoff =
        "balance = \"round_robin\"\nupstream_backoff = \"200ms\"\nupstream_backoff_max = \"1600ms\"\n";
    let config = daemon_section(dir.path(), "2s")
        + &control
        + &relay_to("r", listen, &[a.addr, b.addr, dead], backoff);
    let daemon = Daemon::start_in(dir, &config);
    for i in 0..3 {
        one_client(listen, &format!("all three up {i}"));
    }
    assert_eq!(state_of(&socket, "r", dead), ("up".to_owned(), 0, None));

    drop(c); // the third address now refuses every connect
    let (mut clients, mut failures_seen, mut backoff_seen) = (0, Vec::new(), false);
    let deadline = Instant::now() + Duration::from_secs(20);
    // Clients one after another until the backoff has doubled to its cap (1.6 s: after the
    // fourth failed connect); every one is served by the other two.
    while !daemon.log().contains("passed over for 1s 600ms") {
        assert!(Instant::now() < deadline, "the backoff did not reach its cap:\n{}", daemon.log());
        one_client(listen, &format!("while one is dead {clients}"));
        clients += 1;
        if clients % 4 == 0 {
            let (state, failures, left) = state_of(&socket, "r", dead);
            if state == "backoff" {
                backoff_seen = true;
                assert!(left.is_some_and(|ms| ms <= 1600), "backoff left {left:?}");
            }
            failures_seen.push(failures);
        }
        thread::sleep(Duration::from_millis(20));
    }
    let log = daemon.log();
    let lengths = ["for 200ms", "for 400ms", "for 800ms", "for 1s 600ms"];
    let at: Vec<usize> =
        lengths.iter().map(|l| log.find(l).unwrap_or_else(|| panic!("no {l}:\n{log}"))).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "the backoff doubles, in order:\n{log}");
    assert!(backoff_seen, "show listeners said backoff at least once: {failures_seen:?}");
    assert!(failures_seen.windows(2).all(|w| w[0] <= w[1]), "failures only grow: {failures_seen:?}");
    let table = ctl_stdout(&socket, &["show", "listeners"]);
    assert!(table.lines().any(|l| l.contains(&dead.to_string()) && l.contains("r ")), "{table}");
    let (_, failures, _) = state_of(&socket, "r", dead);
    // Tried in turn it would have failed for every third client; passed over, once a backoff.
    assert!((4..=5).contains(&failures), "{failures} failures for {clients} clients");
    assert!(clients >= 3 * failures as usize, "{failures} failures for {clients} clients");
    let served_by_dead =
        daemon.closes().iter().filter(|l| l.get("upstream") == Some(&dead.to_string()[..])).count();
    assert_eq!(served_by_dead, 1, "only the client before it died");

    // Back on the same address: used again once its backoff ends (1.6 s at most).
    let (_c, back) = counting_echo_upstream_on(TcpListener::bind(dead).unwrap());
    let used = wait_for(Duration::from_secs(10), || {
        one_client(listen, "after the restart");
        (back.load(Ordering::SeqCst) > 0).then_some(())
    });
    assert!(used.is_some(), "the restarted upstream was not used again:\n{}", daemon.log());
    assert_eq!(state_of(&socket, "r", dead), ("up".to_owned(), 0, None));
    daemon.wait_log(&format!("upstream {dead} connects again"), Duration::from_secs(5));
}

#[test]
fn an_upstream_that_does_not_answer_is_passed_over_once_its_connect_timeout_has_passed() {
    let (unanswering, _fillers) = unanswering_upstream();
    let silent = unanswering.local_addr().unwrap();
    let live = Upstream::echo();
    let listen = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let (control, socket) = control_at(dir.path());
    let extra = "connect_timeout = \"300ms\"\nupstream_backoff = \"1m\"\n";
    let config =
        daemon_section(dir.path(), "2s") + &control + &relay_to("t", listen, &[silent, live.addr], extra);
    let daemon = Daemon::start_in(dir, &config);
    // The first client waits out the connect timeout of the first address; the second serves it.
    let mut c = connect(listen);
    assert_echo(&mut c, b"after a timeout");
    let me = c.local_addr().unwrap();
    drop(c);
    let line = daemon.wait_close_of(me, Duration::from_secs(5));
    assert_eq!(line.get("upstream"), Some(&live.addr.to_string()[..]), "{}", line.raw);
    let (state, failures, _) = state_of(&socket, "t", silent);
    assert_eq!((state.as_str(), failures), ("backoff", 1));
    daemon.wait_log(
        &format!("upstream {silent} failed to connect (no answer within connect_timeout)"),
        Duration::from_secs(5),
    );
    // The next ones go straight to the second address: the first is not tried (it would time
    // out, and count, again).
    for i in 0..3 {
        one_client(listen, &format!("no wait {i}"));
    }
    assert_eq!(state_of(&socket, "t", silent).1, 1, "the silent address was passed over");
}

#[test]
fn a_disabled_upstream_is_drained_and_takes_new_connections_again_once_enabled() {
    let (a, count_a) = counting_echo_upstream();
    let (b, count_b) = counting_echo_upstream();
    let (c, count_c) = counting_echo_upstream();
    let (listen, sink, endpoint) = (free_addr(), free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let (control, socket) = control_at(dir.path());
    let config = daemon_section(dir.path(), "2s")
        + &control
        + &metrics_at(endpoint)
        + &relay_to("r", listen, &[a.addr, b.addr, c.addr], "")
        + &sink_listener("s", sink, "60s");
    let daemon = Daemon::start_in(dir, &config);

    // `first`: the stream goes to the first address.
    let stream = EchoStream::start(listen, 41);
    assert!(wait_for(Duration::from_secs(5), || (stream.received() > 0).then_some(())).is_some());
    assert_eq!(count_a.load(Ordering::SeqCst), 1);
    let a_text = a.addr.to_string();
    let out = ctl_stdout(&socket, &["upstream", "disable", "r", &a_text]);
    assert_eq!(out, format!("listener=r upstream={a_text} state=disabled\n"));
    assert_eq!(state_of(&socket, "r", a.addr), ("disabled".to_owned(), 0, None));
    let table = ctl_stdout(&socket, &["show", "listeners"]);
    assert!(table.lines().any(|l| l.contains(&a_text) && l.contains("disabled")), "{table}");
    let up = |body: &str, u: &Upstream| {
        metric(body, "idlereaper_upstream_up", &format!("listener=\"r\",upstream=\"{}\"", u.addr))
    };
    let body = scrape_metrics(endpoint);
    assert_eq!((up(&body, &a), up(&body, &b), up(&body, &c)), (Some(0), Some(1), Some(1)), "{body}");

    let at_disable = stream.received();
    for i in 0..5 {
        one_client(listen, &format!("while the first is disabled {i}"));
    }
    assert_eq!(count_a.load(Ordering::SeqCst), 1, "no new connection reaches a disabled address");
    assert_eq!((count_b.load(Ordering::SeqCst), count_c.load(Ordering::SeqCst)), (5, 0), "the next in order");
    let moved =
        wait_for(Duration::from_secs(10), || (stream.received() > at_disable + 256 * 1024).then_some(()));
    assert!(moved.is_some(), "the open connection relays on after the disable");

    let out = ctl_stdout(&socket, &["upstream", "enable", "r", &a_text]);
    assert_eq!(out, format!("listener=r upstream={a_text} state=up\n"));
    one_client(listen, "enabled again");
    assert_eq!(count_a.load(Ordering::SeqCst), 2, "new connections reach it again");
    assert_eq!(up(&scrape_metrics(endpoint), &a), Some(1));
    let sent = stream.finish(0);
    assert!(sent > at_disable, "every byte back, in order");

    // Mistakes are refused (exit status 2) and say why.
    refused(&socket, &["upstream", "enable", "r", "127.0.0.1:1"], "has no upstream 127.0.0.1:1");
    refused(&socket, &["upstream", "disable", "nosuch", &a_text], "no listener \"nosuch\"");
    refused(&socket, &["upstream", "disable", "s", &a_text], "sink");
    refused(&socket, &["upstream", "drain", "r", &a_text], "drain");

    // Every address disabled: a client is closed at once, and the close line says why.
    for u in [&a, &b, &c] {
        ctl_stdout(&socket, &["upstream", "disable", "r", &u.addr.to_string()]);
    }
    let mut c1 = connect(listen);
    let me = c1.local_addr().unwrap();
    wait_closed(&mut c1, Duration::from_secs(5));
    let line = daemon.wait_close_of(me, Duration::from_secs(5));
    line.assert_reason("upstream_refused");
    assert!(line.get("error").is_some_and(|e| e.contains("disabled")), "{}", line.raw);
    assert_eq!(line.get("upstreams_tried"), Some("0"), "{}", line.raw);
}

#[test]
fn disabled_and_backoff_states_survive_a_reload_and_a_live_upgrade() {
    let (a, _) = counting_echo_upstream();
    let (b, count_b) = counting_echo_upstream();
    let (d, count_d) = counting_echo_upstream();
    let dead = free_addr(); // nothing listens there
    let listen = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let (control, socket) = control_at(dir.path());
    let base = daemon_section(dir.path(), "2s") + &control;
    let extra = "balance = \"round_robin\"\nupstream_backoff = \"1m\"\n";
    let daemon =
        Daemon::start_in(dir, &(base.clone() + &relay_to("r", listen, &[a.addr, b.addr, dead], extra)));
    ctl_stdout(&socket, &["upstream", "disable", "r", &b.addr.to_string()]);
    for i in 0..3 {
        one_client(listen, &format!("before the reload {i}"));
    }
    let (state, failures, left) = state_of(&socket, "r", dead);
    assert_eq!((state.as_str(), failures), ("backoff", 1), "the dead address failed once");
    assert!(left.is_some_and(|ms| ms > 50_000), "{left:?}");

    // A reload that keeps the listener, drops the first address and adds another.
    std::fs::write(&daemon.config_path, base + &relay_to("r", listen, &[b.addr, dead, d.addr], extra))
        .unwrap();
    let out = ctl_stdout(&socket, &["reload"]);
    assert!(out.starts_with("reloaded:"), "{out}");
    let listed: Vec<String> =
        show_listeners(&socket)[0].upstreams.iter().map(|u| u.address.clone()).collect();
    assert_eq!(listed, [b.addr.to_string(), dead.to_string(), d.addr.to_string()]);
    assert_eq!(state_of(&socket, "r", b.addr), ("disabled".to_owned(), 0, None));
    let (state, failures, after_reload) = state_of(&socket, "r", dead);
    assert_eq!((state.as_str(), failures), ("backoff", 1), "kept through the reload");
    assert!(after_reload <= left, "the same backoff: {after_reload:?} after {left:?}");
    for i in 0..4 {
        one_client(listen, &format!("after the reload {i}"));
    }
    assert_eq!(count_b.load(Ordering::SeqCst), 0, "still disabled");
    assert_eq!(count_d.load(Ordering::SeqCst), 4, "the added address serves every client");

    let out = ctl_stdout(&socket, &["upgrade"]);
    assert!(out.starts_with("upgraded from="), "{out}");
    assert_eq!(state_of(&socket, "r", b.addr), ("disabled".to_owned(), 0, None));
    let (state, failures, after_upgrade) = state_of(&socket, "r", dead);
    assert_eq!((state.as_str(), failures), ("backoff", 1), "kept through the upgrade");
    assert!(
        after_upgrade <= after_reload && after_upgrade.is_some_and(|ms| ms > 30_000),
        "{after_upgrade:?}"
    );
    for i in 0..4 {
        one_client(listen, &format!("after the upgrade {i}"));
    }
    assert_eq!(count_b.load(Ordering::SeqCst), 0, "still disabled");
    assert_eq!(count_d.load(Ordering::SeqCst), 8);
    ctl_stdout(&socket, &["upstream", "enable", "r", &b.addr.to_string()]);
    // Round robin: one of three clients in a row starts at it.
    for i in 0..3 {
        one_client(listen, &format!("enabled {i}"));
    }
    assert!(count_b.load(Ordering::SeqCst) > 0, "enabled in the new image:\n{}", daemon.log());
}
