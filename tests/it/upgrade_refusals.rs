//! A live upgrade (SIGUSR2) that cannot happen is refused, and the running daemon keeps every
//! connection: a missing binary, a binary that rejects the configuration, one that cannot read
//! this version's handover state, and an `execve` that fails after every check passed (then
//! the old code takes its own state back). Each refusal is logged with its reason and counted
//! in `/metrics`; a later USR2 with a good binary succeeds.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::common::*;

/// Replaces the file at `path` by `contents` (a new inode, as a package upgrade does).
fn replace(path: &Path, contents: &[u8], executable: bool) {
    let tmp = path.with_extension("new");
    fs::write(&tmp, contents).unwrap();
    let mode = if executable { 0o755 } else { 0o644 };
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).unwrap();
    fs::rename(&tmp, path).unwrap();
}

/// A shell script standing in for a new binary: `case` answers the pre-flight questions its
/// own way; anything else runs the real binary.
fn script(case: &str) -> Vec<u8> {
    format!("#!/bin/sh\ncase \"$1\" in\n{case}\nesac\nexec {BIN} \"$@\"\n").into_bytes()
}

/// Every connection still relays.
fn all_echo(conns: &mut [TcpStream], round: usize) {
    for (i, c) in conns.iter_mut().enumerate() {
        assert_echo(c, format!("round {round} conn {i}").as_bytes());
    }
}

/// The `/metrics` sample `name` (with its labels), as a number.
fn sample(metrics: std::net::SocketAddr, name: &str) -> u64 {
    let mut s = connect(metrics);
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn a_refused_upgrade_keeps_every_connection_and_a_later_one_succeeds() {
    let upstream = Upstream::echo();
    let (listen, metrics) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("idlereaper");
    fs::copy(BIN, &exe).unwrap();
    let config = daemon_section(dir.path(), "2s")
        + &relay_listener("r", listen, upstream.addr, "60s")
        + &format!("[metrics]\nlisten = \"{metrics}\"\n");
    let mut daemon = Daemon::start_program(&exe, dir, &config, |_, _| {});
    let mut conns: Vec<TcpStream> = (0..20).map(|_| connect(listen)).collect();
    all_echo(&mut conns, 0);

    /// What the refusal says, and how the file is spoiled for it.
    type Refusal<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let refusals: [Refusal; 5] = [
        ("No such file", Box::new(|| fs::remove_file(&exe).unwrap())),
        (
            "rejects the configuration: exit status: 2: this build rejects it",
            Box::new(|| replace(&exe, &script("--check) echo 'this build rejects it' >&2; exit 2;;"), true)),
        ),
        (
            "reads handover state versions [99], not this one's (",
            Box::new(|| replace(&exe, &script("--handover-versions) echo 99; exit 0;;"), true)),
        ),
        // One that says it reads this version but cannot restore the state (a format changed
        // without a new version number): the sample state shows it before anything is frozen.
        (
            "cannot restore this version's state",
            Box::new(|| {
                let case =
                    "--handover-check) echo 'handover state: a list is longer than the state' >&2; exit 1;;";
                replace(&exe, &script(case), true)
            }),
        ),
        // Every check passes (the last one renames the file), then the file is gone when the
        // exec comes: the old code carries on from the state it had already written.
        (
            "cannot execute",
            Box::new(|| {
                let case = format!("--handover-check) mv \"$0\" \"$0.gone\"; exec {BIN} \"$@\";;");
                replace(&exe, &script(&case), true)
            }),
        ),
    ];
    for (round, (reason, prepare)) in refusals.iter().enumerate() {
        prepare();
        daemon.signal(libc::SIGUSR2);
        let line = wait_for(Duration::from_secs(20), || {
            daemon.log().lines().filter(|l| l.contains("upgrade refused: ")).nth(round).map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("no refusal {round}; log:\n{}", daemon.log()));
        assert!(line.contains(reason), "refusal {round} should say {reason:?}: {line}");
        assert!(daemon.poll_exit().is_none(), "the daemon stopped; log:\n{}", daemon.log());
        all_echo(&mut conns, round + 1);
        let mut new = connect(listen);
        assert_echo(&mut new, b"a new client is served");
        conns.push(new);
    }
    assert_eq!(sample(metrics, "idlereaper_upgrades_total{result=\"refused\"}"), 5);
    assert!(!daemon.log().contains("upgraded from="), "{}", daemon.log());

    let _ = fs::remove_file(exe.with_extension("gone"));
    replace(&exe, &fs::read(BIN).unwrap(), true);
    daemon.signal(libc::SIGUSR2);
    daemon.wait_log("upgraded from=", Duration::from_secs(20));
    all_echo(&mut conns, 9);
    assert_eq!(sample(metrics, "idlereaper_upgrades_total{result=\"success\"}"), 1);
    assert_eq!(sample(metrics, "idlereaper_upgrades_total{result=\"refused\"}"), 5, "carried over");
    assert_eq!(sample(metrics, "idlereaper_connections_active{listener=\"r\"}"), conns.len() as u64);
    drop(conns);
    assert!(daemon.stop().success(), "{}", daemon.log());
}
