//! The daemon under a service manager that listens (`NOTIFY_SOCKET`, `sd_notify(3)`): `READY=1`
//! once it serves, `RELOADING=1` with `MONOTONIC_USEC` then `READY=1` around a reload and
//! around a live upgrade (the second from the new image),
//! `STOPPING=1` on stop, `STATUS=` with the open connections and the last reload, and
//! `WATCHDOG=1` within the interval `WATCHDOG_USEC` asks for while the loops turn.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::common::*;

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

/// The messages received on `socket` (which passes credentials) until `until` says stop or
/// `limit` passes, each with the pid that sent it; watchdog pings left out, but counted by sender.
fn collect_senders(
    socket: &UnixDatagram,
    limit: Duration,
    mut until: impl FnMut(u32, &str) -> bool,
) -> (Vec<(u32, String)>, std::collections::BTreeMap<u32, usize>) {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixCredentials};
    use std::os::fd::AsRawFd;
    socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let start = Instant::now();
    let (mut got, mut pings) = (Vec::new(), std::collections::BTreeMap::new());
    let mut buf = [0u8; 4096];
    let mut space = nix::cmsg_space!(UnixCredentials);
    while start.elapsed() < limit {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let Ok(msg) = recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty()) else {
            continue;
        };
        let pid = msg.cmsgs().ok().into_iter().flatten().find_map(|c| match c {
            ControlMessageOwned::ScmCredentials(credentials) => Some(credentials.pid() as u32),
            _ => None,
        });
        let n = msg.bytes;
        let (pid, text) = (pid.unwrap_or(0), String::from_utf8_lossy(&buf[..n]).into_owned());
        if text.starts_with("WATCHDOG=1") {
            *pings.entry(pid).or_insert(0) += 1;
            continue;
        }
        let done = until(pid, &text);
        got.push((pid, text));
        if done {
            break;
        }
    }
    (got, pings)
}

/// The pid in a `MAINPID=` message.
fn main_pid(text: &str) -> Option<u32> {
    text.lines().find_map(|l| l.strip_prefix("MAINPID="))?.parse().ok()
}

/// With `NotifyAccess=main`, systemd hears only the main process: during a live upgrade the
/// guardian is the main one (`MAINPID=` from the old image), then the new image again
/// (`MAINPID=` from the guardian, before it exits), which says `READY=1`. When the new image
/// fails, the guardian stays the main process: it says `READY=1` itself, and keeps the watchdog.
#[test]
fn the_main_process_moves_to_the_guardian_and_back_or_stays_there_when_the_upgrade_fails() {
    use std::os::unix::fs::PermissionsExt;
    become_child_subreaper();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::PassCred, &true).unwrap();
    let listen = free_addr();
    let exe = copy_binary(dir.path());
    let config = daemon_section(dir.path(), "1s") + &sink_listener("s", listen, "30s");
    let mut daemon = Daemon::start_program(&exe, dir, &config, |_, command| {
        command.env("NOTIFY_SOCKET", &path).env("WATCHDOG_USEC", "400000");
    });
    let image = daemon.pid();
    let ready = |_: u32, m: &str| m.contains("READY=1");
    let (first, _) = collect_senders(&socket, Duration::from_secs(5), ready);
    assert!(first.iter().any(|(pid, m)| *pid == image && m.starts_with("READY=1")), "{first:?}");

    daemon.signal(libc::SIGUSR2);
    let (upgrade, _) = collect_senders(&socket, Duration::from_secs(20), ready);
    let guardian = upgrade.iter().filter(|(pid, _)| *pid == image).find_map(|(_, m)| main_pid(m));
    let guardian = guardian.unwrap_or_else(|| panic!("no MAINPID= from the old image: {upgrade:?}"));
    assert_ne!(guardian, image);
    let order: Vec<(u32, Option<u32>, bool)> =
        upgrade.iter().map(|(pid, m)| (*pid, main_pid(m), m.contains("READY=1"))).collect();
    let expected = [(image, Some(guardian), false), (guardian, Some(image), false), (image, None, true)];
    let at: Vec<usize> = expected.iter().filter_map(|e| order.iter().position(|o| o == e)).collect();
    assert!(at.len() == 3 && at.windows(2).all(|w| w[0] < w[1]), "{upgrade:?}");

    // A new image that exits: the guardian stays the main process, ready, with the watchdog.
    let script =
        format!("#!/bin/sh\ncase \" $* \" in *\" --handover \"*) exit 1;; esac\nexec {BIN} \"$@\"\n");
    let fresh = exe.with_extension("new");
    std::fs::write(&fresh, script).unwrap();
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&fresh, &exe).unwrap();
    daemon.signal(libc::SIGUSR2);
    let (failed, _) = collect_senders(&socket, Duration::from_secs(20), |_, m| {
        daemon.poll_exit();
        m.contains("READY=1")
    });
    let guardian = failed.iter().filter(|(pid, _)| *pid == image).find_map(|(_, m)| main_pid(m));
    let guardian = guardian.unwrap_or_else(|| panic!("no MAINPID= from the old image: {failed:?}"));
    let (pid, last) = failed.last().cloned().unwrap_or_default();
    assert_eq!(pid, guardian, "READY=1 from the guardian: {failed:?}");
    assert_eq!(main_pid(&last), Some(guardian), "{last:?}");
    assert!(last.contains("STATUS=connections=0; upgrade failed: "), "{last:?}");
    let (_, pings) = collect_senders(&socket, Duration::from_secs(1), |_, _| false);
    assert!(pings.get(&guardian).is_some_and(|&n| n >= 2), "WATCHDOG=1 from the guardian: {pings:?}");

    let running = DetachedDaemon::from_pidfile(&daemon.pidfile, &daemon.config_path);
    assert_eq!(running.pid, guardian, "the pidfile names the guardian");
    send_signal(guardian, libc::SIGTERM);
    let (stop, _) = collect_senders(&socket, Duration::from_secs(5), |_, m| m == "STOPPING=1");
    assert!(stop.iter().any(|(pid, m)| *pid == guardian && m == "STOPPING=1"), "{stop:?}");
    assert_eq!(running.wait_gone(Duration::from_secs(10)), Some(Some(0)));
}
