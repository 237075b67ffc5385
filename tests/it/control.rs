//! The control socket and `idlereaperctl`, as an operator uses them: `show conns` tells what the
//! test did to each connection (state, bytes, idle time, time to reap); `kill` closes exactly
//! the connections it names; `reload` answers with the result or the error; a peer that is
//! not root, the daemon's user or in its group is refused; hostile clients neither disturb
//! the relay nor leave descriptors behind.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use idlereaper::rows::{ConnRow, ListenerRow};

#[test]
fn show_conns_tells_what_each_connection_did() {
    // An echo that, at the client's FIN, keeps its own side open a while: a half-closed pair.
    let upstream = Upstream::start(|mut s| {
        let mut buf = [0u8; 4096];
        for _ in 0..10_000 {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) if s.write_all(&buf[..n]).is_ok() => {}
                Ok(_) => return,
            }
        }
        std::thread::sleep(Duration::from_secs(15));
    });
    let (unanswering, _fillers) = unanswering_upstream();
    let (relay, sink, stuck) = (free_addr(), free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let (control, socket) = control_at(dir.path());
    let config = daemon_section(dir.path(), "2s")
        + &relay_listener("relay", relay, upstream.addr, "60s")
        + &sink_listener("sink", sink, "60s")
        + &relay_listener("stuck", stuck, unanswering.local_addr().unwrap(), "60s")
        + "connect_timeout = \"30s\"\n\n"
        + &control;
    let daemon = Daemon::start_in(dir, &config);

    let mut relaying = connect(relay);
    assert_echo(&mut relaying, &[7u8; 1000]);
    // The relaying connection's last movement was before this instant: its idle time is
    // measured against it below.
    let last_activity = Instant::now();
    let mut half = connect(relay);
    assert_echo(&mut half, b"12345");
    half.shutdown(Shutdown::Write).unwrap();
    let mut sinking = connect(sink);
    sinking.write_all(&[1u8; 300]).unwrap();
    let _connecting = connect(stuck);

    let rows = wait_for(Duration::from_secs(5), || {
        let rows = show_conns(&socket);
        let settled = rows.len() == 4
            && rows.iter().any(|r| r.state == "half_closed")
            && rows.iter().any(|r| r.listener == "sink" && r.bytes_from_client == 300);
        settled.then_some(rows)
    })
    .unwrap_or_else(|| panic!("{:?}\n{}", show_conns(&socket), daemon.log()));
    let asked_after = last_activity.elapsed();
    let by_state =
        |state: &str| rows.iter().find(|r| r.state == state).unwrap_or_else(|| panic!("{state}: {rows:?}"));
    let r = by_state("relaying");
    assert_eq!((r.listener.as_str(), r.bytes_from_client, r.bytes_from_upstream), ("relay", 1000, 1000));
    assert_eq!(r.client, relaying.local_addr().unwrap().to_string());
    assert_eq!(r.upstream, upstream.addr.to_string());
    assert_eq!((r.reap_reason.as_str(), r.idle_timeout_ms), ("idle", 60_000));
    let h = by_state("half_closed");
    assert_eq!((h.bytes_from_client, h.bytes_from_upstream, h.reap_reason.as_str()), (5, 5, "half_close"));
    let s = by_state("sink");
    assert_eq!((s.listener.as_str(), s.upstream.as_str(), s.bytes_from_client), ("sink", "-", 300));
    let c = by_state("connecting");
    assert_eq!((c.listener.as_str(), c.reap_reason.as_str()), ("stuck", "connect"));
    assert_eq!(c.upstream, unanswering.local_addr().unwrap().to_string(), "the address being tried");
    // Idle time as the test's clock sees it, to within a tick (1 ms) and the time to ask.
    let idle = Duration::from_millis(r.idle_ms);
    assert!(idle <= asked_after + Duration::from_millis(2), "idle {idle:?}, asked {asked_after:?} after");
    let reap_in = |r: &ConnRow| r.reap_in_ms.expect("a deadline");
    assert!(reap_in(r) <= 60_000 && reap_in(r) + r.idle_ms >= 59_990, "{r:?}");
    // Soonest to be reaped first: the connect (30 s) and the half-close (30 s) before the idle ones.
    assert!(rows.windows(2).all(|w| reap_in(&w[0]) <= reap_in(&w[1])), "{rows:?}");
    let ids: Vec<u64> = rows.iter().map(|r| r.id).collect();
    assert_eq!(ids.iter().collect::<std::collections::BTreeSet<_>>().len(), 4, "ids are unique: {ids:?}");

    // Time to reap goes down while nothing moves, and traffic resets it.
    std::thread::sleep(Duration::from_millis(300));
    let later = show_conns(&socket).into_iter().find(|x| x.id == r.id).unwrap();
    assert!(reap_in(&later) + 250 <= reap_in(r), "{later:?} after {r:?}");
    assert_echo(&mut relaying, b"again");
    let reset = show_conns(&socket).into_iter().find(|x| x.id == r.id).unwrap();
    assert!(reap_in(&reset) > reap_in(&later) + 200 && reset.idle_ms < 100, "{reset:?} after {later:?}");
    assert_eq!(reset.bytes_from_client, 1005);

    // The filters, and the table a person reads.
    let only_sink: Vec<ConnRow> =
        serde_json::from_str(&ctl_stdout(&socket, &["show", "conns", "--listener", "sink", "--json"]))
            .unwrap();
    assert_eq!(only_sink.iter().map(|r| r.id).collect::<Vec<_>>(), vec![s.id]);
    let idle_long: Vec<ConnRow> =
        serde_json::from_str(&ctl_stdout(&socket, &["show", "conns", "--idle-over", "1h", "--json"]))
            .unwrap();
    assert!(idle_long.is_empty(), "{idle_long:?}");
    // A limit keeps the soonest to be reaped (nothing moves between the two questions).
    let everything: Vec<u64> = show_conns(&socket).iter().map(|r| r.id).collect();
    let first_two: Vec<ConnRow> =
        serde_json::from_str(&ctl_stdout(&socket, &["show", "conns", "--limit", "2", "--json"])).unwrap();
    assert_eq!(first_two.iter().map(|r| r.id).collect::<Vec<_>>(), everything[..2], "{first_two:?}");
    let soonest_relayed: Vec<ConnRow> = serde_json::from_str(&ctl_stdout(
        &socket,
        &["show", "conns", "--listener", "relay", "--limit", "1", "--json"],
    ))
    .unwrap();
    assert_eq!(
        soonest_relayed.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![h.id],
        "half-close is due first"
    );
    let zero = ctl_run(&socket, &["show", "conns", "--limit", "0"]);
    assert_eq!(zero.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&zero.stderr).contains("expected a count of at least 1"), "{zero:?}");
    let table = ctl_stdout(&socket, &["show", "conns"]);
    assert!(table.starts_with("id ") && table.lines().count() == 5, "{table}");
    let listeners: Vec<ListenerRow> =
        serde_json::from_str(&ctl_stdout(&socket, &["show", "listeners", "--json"])).unwrap();
    let names: Vec<(&str, u64)> = listeners.iter().map(|l| (l.name.as_str(), l.open)).collect();
    assert_eq!(names, vec![("relay", 2), ("sink", 1), ("stuck", 1)]);
}

#[test]
fn kill_closes_exactly_the_connections_it_names() {
    let upstream = Upstream::echo();
    let (a, b, metrics) = (free_addr(), free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let (control, socket) = control_at(dir.path());
    let config = daemon_section(dir.path(), "2s")
        + &relay_listener("a", a, upstream.addr, "60s")
        + &relay_listener("b", b, upstream.addr, "60s")
        + &format!("[metrics]\nlisten = \"{metrics}\"\n\n")
        + &control;
    let daemon = Daemon::start_in(dir, &config);
    let mut on_a: Vec<TcpStream> = (0..4).map(|_| connect(a)).collect();
    let mut on_b: Vec<TcpStream> = (0..3).map(|_| connect(b)).collect();
    for c in on_a.iter_mut().chain(on_b.iter_mut()) {
        assert_echo(c, b"hello");
    }
    let rows = show_conns(&socket);
    let id_of =
        |s: &TcpStream| rows.iter().find(|r| r.client == s.local_addr().unwrap().to_string()).unwrap().id;

    // By id: the first of `a`.
    let victim = id_of(&on_a[0]);
    assert_eq!(ctl_stdout(&socket, &["kill", &victim.to_string()]), "killed 1\n");
    let (_, end) = read_to_ending(&mut on_a[0]);
    assert_eq!(end, StreamEnd::Eof);
    let line = daemon.wait_close_of(on_a[0].local_addr().unwrap(), Duration::from_secs(5));
    assert_eq!(line.reason(), "killed");
    assert!(daemon.log().contains(&format!("conn closed id={victim} ")), "{}", daemon.log());
    // By client address and port: the second of `a`.
    let client = on_a[1].local_addr().unwrap().to_string();
    assert_eq!(ctl_stdout(&socket, &["kill", "--client", &client]), "killed 1\n");
    assert_eq!(read_to_ending(&mut on_a[1]).1, StreamEnd::Eof);
    // By listener: all of `b`.
    assert_eq!(ctl_stdout(&socket, &["kill", "--listener", "b"]), "killed 3\n");
    for c in &mut on_b {
        assert_eq!(read_to_ending(c).1, StreamEnd::Eof);
    }
    // The others relay on.
    for c in &mut on_a[2..] {
        assert_echo(c, b"still here");
    }
    // A kill that closes nothing is a failure, so that a typo does not pass.
    let none = ctl_run(&socket, &["kill", "999999"]);
    assert_eq!(none.status.code(), Some(1), "{none:?}");
    assert!(String::from_utf8_lossy(&none.stderr).contains("no connection matched id 999999"), "{none:?}");
    let killed: u64 =
        daemon.log().lines().filter(|l| l.contains("conn closed") && l.contains("reason=killed")).count()
            as u64;
    assert_eq!(killed, 5);
    let scrape = {
        let mut s = connect(metrics);
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    };
    for (listener, n) in [("a", 2), ("b", 3)] {
        let sample =
            format!("idlereaper_connections_closed_total{{listener=\"{listener}\",reason=\"killed\"}} {n}\n");
        assert!(scrape.contains(&sample), "{sample} in\n{scrape}");
    }
    let out = ctl_run(&socket, &["kill", "--client", "nowhere"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn reload_answers_with_the_result_or_the_error() {
    let upstream = Upstream::echo();
    let (first, second) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let (control, socket) = control_at(dir.path());
    let base = daemon_section(dir.path(), "2s") + &control;
    let mut daemon =
        Daemon::start_in(dir, &(base.clone() + &relay_listener("first", first, upstream.addr, "60s")));

    let good = base.clone()
        + &relay_listener("first", first, upstream.addr, "60s")
        + &relay_listener("second", second, upstream.addr, "60s");
    std::fs::write(&daemon.config_path, &good).unwrap();
    assert_eq!(
        ctl_stdout(&socket, &["reload"]),
        format!("reloaded: listeners=2 kept=1 added=1 removed=0\nadded listener second ({second})\n")
    );
    assert_echo(&mut connect(second), b"added");

    std::fs::write(&daemon.config_path, good.clone() + "[[listener]]\nname = \"broken\"\n").unwrap();
    let out = ctl_run(&socket, &["reload"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        err.contains("reload failed") && err.contains(&format!("{}:", daemon.config_path.display())),
        "{err}"
    );
    assert!(err.contains("listener[2]"), "the key: {err}");
    assert_echo(&mut connect(first), b"the old listeners serve");
    assert_echo(&mut connect(second), b"both of them");

    // No daemon: exit 1, naming the socket.
    daemon.stop();
    let out = ctl_run(&socket, &["reload"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&socket.display().to_string()));
}

#[test]
fn a_peer_that_is_not_root_the_user_or_in_the_group_is_refused() {
    if !nix::unistd::Uid::effective().is_root() {
        return skip("needs root to run idlereaperctl as another user");
    }
    if !require_program("/usr/bin/setpriv", "apt install util-linux") {
        return;
    }
    let upstream = Upstream::echo();
    let listen = free_addr();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // A socket anyone may connect to: only the daemon's own check stands in the way.
    let (control, socket) = control_with_mode(dir.path(), "0666");
    let config =
        daemon_section(dir.path(), "2s") + &relay_listener("r", listen, upstream.addr, "60s") + &control;
    let _daemon = Daemon::start_in(dir, &config);
    let ctl_copy = tempfile::tempdir().unwrap();
    std::fs::set_permissions(ctl_copy.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let bin = ctl_copy.path().join("idlereaperctl");
    std::fs::copy(CTL, &bin).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .arg("-s")
        .arg(&socket)
        .args(["show", "conns"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(err.contains("permission denied: uid 65534"), "{err}");
    // Root is served.
    assert!(ctl_stdout(&socket, &["show", "listeners"]).contains("r "));
}

#[test]
fn hostile_control_clients_do_not_disturb_the_relay_or_leak() {
    let upstream = Upstream::echo();
    let listen = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let (control, socket) = control_at(dir.path());
    let config =
        daemon_section(dir.path(), "2s") + &relay_listener("r", listen, upstream.addr, "60s") + &control;
    let daemon = Daemon::start_in(dir, &config);
    let mut relayed = connect(listen);
    assert_echo(&mut relayed, b"before");
    let baseline = daemon.fds().total();

    let answer_of = |bytes: &[u8]| control_answer(&socket, bytes);
    let long = answer_of(&vec![b'a'; 10_000]);
    assert!(long.starts_with("error: request line longer than 4096 bytes"), "{long}");
    let garbage = answer_of(b"\xff\xfe\x00\x01\n");
    assert!(garbage.starts_with("error: "), "{garbage}");
    let unknown = answer_of(b"shutdown everything\n");
    assert!(unknown.starts_with("error: unknown command \"shutdown\""), "{unknown}");

    // 500 clients that connect and say nothing: the relay keeps relaying meanwhile.
    let idle: Vec<UnixStream> = (0..500).map(|_| UnixStream::connect(&socket).unwrap()).collect();
    for round in 0..20 {
        assert_echo(&mut relayed, format!("ping {round}").as_bytes());
    }
    assert!(ctl_run(&socket, &["show", "listeners"]).status.code().is_some());
    drop(idle);
    // One that stays silent is closed by the daemon at its deadline (5 s).
    let mut silent = UnixStream::connect(&socket).unwrap();
    silent.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let since = Instant::now();
    let mut answer = Vec::new();
    assert!(silent.read_to_end(&mut answer).is_ok(), "closed, not timed out");
    assert!(since.elapsed() >= Duration::from_secs(4), "closed after {:?}", since.elapsed());
    // The descriptors come back.
    let back = wait_for(Duration::from_secs(10), || (daemon.fds().total() <= baseline).then_some(()));
    assert!(back.is_some(), "descriptors: {} now, {baseline} before", daemon.fds().total());
    assert_echo(&mut relayed, b"after");
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
}
