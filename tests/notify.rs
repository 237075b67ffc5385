//! The daemon under a service manager that listens (`NOTIFY_SOCKET`, `sd_notify(3)`): `READY=1`
//! once it serves, `RELOADING=1` with `MONOTONIC_USEC` then `READY=1` around a reload and
//! around a live upgrade (the second from the new image),
//! `STOPPING=1` on stop, `STATUS=` with the open connections and the last reload, and
//! `WATCHDOG=1` within the interval `WATCHDOG_USEC` asks for while the loops turn.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::*;

/// The messages received on `socket` until `until` says stop or `limit` passes, each with when.
fn collect(
    socket: &UnixDatagram,
    limit: Duration,
    mut until: impl FnMut(&str) -> bool,
) -> Vec<(Instant, String)> {
    socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        if let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = until(&text);
            got.push((Instant::now(), text));
            if done {
                break;
            }
        }
    }
    got
}

#[test]
fn the_service_manager_hears_ready_reloading_upgrade_watchdog_and_stopping_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let listen = free_addr();
    let config = daemon_section(dir.path(), "1s") + &sink_listener("s", listen, "30s");
    let mut daemon = Daemon::start_in_with(dir, &config, |_, command| {
        command.env("NOTIFY_SOCKET", &path).env("WATCHDOG_USEC", "400000");
    });
    let _client = connect(listen);

    let ready = collect(&socket, Duration::from_secs(5), |m| m.starts_with("READY=1"));
    let first = ready.last().map(|(_, m)| m.clone()).unwrap_or_default();
    assert!(first.starts_with("READY=1\nSTATUS=connections="), "{ready:?}");

    // The watchdog: WATCHDOG=1 keeps coming, each within the 400 ms asked for.
    let pings = collect(&socket, Duration::from_secs(2), |_| false);
    let times: Vec<Instant> =
        pings.iter().filter(|(_, m)| m.starts_with("WATCHDOG=1")).map(|(t, _)| *t).collect();
    assert!(times.len() >= 4, "WATCHDOG=1 {} times in 2 s: {pings:?}", times.len());
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().all(|g| *g < Duration::from_millis(400)), "gaps {gaps:?}");
    assert!(pings.iter().any(|(_, m)| m.contains("STATUS=connections=1;")), "the open connection: {pings:?}");

    daemon.signal(libc::SIGHUP);
    let reload = collect(&socket, Duration::from_secs(5), |m| m.starts_with("READY=1"));
    let texts: Vec<&str> =
        reload.iter().map(|(_, m)| m.as_str()).filter(|m| !m.starts_with("WATCHDOG")).collect();
    assert!(texts.len() >= 2, "{texts:?}");
    assert!(texts[0].starts_with("RELOADING=1\nMONOTONIC_USEC="), "{texts:?}");
    assert!(texts[texts.len() - 1].contains("STATUS=connections=1; reloaded "), "{texts:?}");

    // A live upgrade: RELOADING=1, then READY=1 from the new image, which keeps the watchdog.
    daemon.signal(libc::SIGUSR2);
    let upgrade = collect(&socket, Duration::from_secs(10), |m| m.starts_with("READY=1"));
    let texts: Vec<&str> =
        upgrade.iter().map(|(_, m)| m.as_str()).filter(|m| !m.starts_with("WATCHDOG")).collect();
    assert!(texts.len() >= 2, "{texts:?}");
    assert!(texts[0].starts_with("RELOADING=1\nMONOTONIC_USEC="), "{texts:?}");
    assert!(texts[texts.len() - 1].contains("STATUS=connections=1; upgraded from="), "{texts:?}");
    let pings = collect(&socket, Duration::from_secs(1), |_| false);
    assert!(pings.iter().any(|(_, m)| m.starts_with("WATCHDOG=1")), "after the upgrade: {pings:?}");

    daemon.signal(libc::SIGTERM);
    let stop = collect(&socket, Duration::from_secs(5), |m| m == "STOPPING=1");
    assert!(stop.iter().any(|(_, m)| m == "STOPPING=1"), "{stop:?}");
    assert!(daemon.wait_exit(Duration::from_secs(10)).is_some());
}
