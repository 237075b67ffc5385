//! Signals while the daemon is busy: TERM in the middle of bulk relaying drains within
//! `shutdown_timeout` (bytes intact, stragglers closed with `reason=shutdown`, exit 0), and a
//! SIGKILLed daemonized instance leaves a stale pidfile that the next start takes over.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::common::*;

const MIB: u64 = 1024 * 1024;

/// One bulk echo through the relay on its own threads: sends `total` bytes of the stream `seed`
/// then shuts down writing, and checks the echo; reports bytes received so far in `progress`.
/// Returns whether every byte came back intact.
fn bulk_echo(
    addr: SocketAddr,
    seed: u64,
    total: u64,
    progress: Arc<AtomicU64>,
) -> (SocketAddr, JoinHandle<Result<(), String>>) {
    let mut client = connect(addr);
    let me = client.local_addr().unwrap();
    let mut writer = client.try_clone().unwrap();
    let handle = thread::spawn(move || {
        let sending = thread::spawn(move || {
            send_stream(&mut writer, seed, total)?;
            writer.shutdown(Shutdown::Write)
        });
        let received = recv_stream(&mut client, seed, total, |got| {
            progress.store(got, Ordering::SeqCst);
            64 * 1024
        });
        let sent = sending.join().unwrap().map_err(|e| format!("send: {e}"));
        received.and(sent)
    });
    (me, handle)
}

/// Injects: SIGTERM while four connections each echo 8 MiB through the relay and a fifth sits
/// idle. Must survive: the listener closes at once (new connects are refused); the transfers
/// that finish within `shutdown_timeout` (all of them, unless the machine is very slow) have
/// every byte intact; the idle one is closed with `reason=shutdown` at `shutdown_timeout`; the
/// daemon exits 0 soon after, pidfile removed.
#[test]
fn term_during_bulk_relaying_drains_within_shutdown_timeout_with_bytes_intact() {
    const SHUTDOWN: Duration = Duration::from_secs(3);
    const STREAMS: u64 = 4;
    const BULK: u64 = 8 * MIB;
    let upstream = Upstream::echo();
    let listen = free_addr();
    let mut daemon = Daemon::start_with("3s", &relay_listener("draining", listen, upstream.addr, "60s"));

    let mut idle = connect(listen);
    assert_echo(&mut idle, b"idle from now on");
    let idle_addr = idle.local_addr().unwrap();
    let transfers: Vec<_> = (0..STREAMS)
        .map(|i| {
            let progress = Arc::new(AtomicU64::new(0));
            let (me, handle) = bulk_echo(listen, 40 + i, BULK, progress.clone());
            (me, handle, progress)
        })
        .collect();
    // Every transfer is under way, none finished.
    let under_way = wait_for(Duration::from_secs(10), || {
        transfers.iter().all(|(_, _, p)| p.load(Ordering::SeqCst) >= MIB / 4).then_some(())
    });
    assert!(under_way.is_some(), "the transfers did not get going");

    let term = Instant::now();
    daemon.signal(libc::SIGTERM);
    let at_term: Vec<u64> = transfers.iter().map(|(_, _, p)| p.load(Ordering::SeqCst)).collect();
    eprintln!("TERM under load: bytes echoed back so far per transfer: {at_term:?} of {BULK}");
    assert!(at_term.iter().any(|&n| n < BULK), "every transfer was over before the TERM");
    let listener_closed = wait_for(Duration::from_secs(2), || {
        match TcpStream::connect_timeout(&listen, Duration::from_millis(500)) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Some(()),
            _ => None,
        }
    });
    assert!(listener_closed.is_some(), "still accepting 2 s after SIGTERM");

    // A transfer the daemon saw through (both FINs relayed) before the deadline is intact and
    // complete; one it had to cut at the deadline is closed with reason=shutdown, and what did
    // arrive of it is intact (the check stops at EOF or a reset, never at a wrong byte).
    let mut completed = 0;
    for (i, (me, handle, _)) in transfers.into_iter().enumerate() {
        let result = handle.join().expect("transfer thread");
        let line = daemon.wait_close_of(me, SHUTDOWN + Duration::from_secs(5));
        match line.reason() {
            "client_closed" => {
                result.unwrap_or_else(|e| panic!("transfer {i}, relayed to the end across the TERM: {e}"));
                assert_eq!(line.num("bytes_from_client"), BULK, "{}", line.raw);
                assert_eq!(line.num("bytes_from_upstream"), BULK, "{}", line.raw);
                completed += 1;
            }
            "shutdown" => {
                if let Err(e) = result {
                    assert!(!e.contains("differs"), "transfer {i}, cut at shutdown_timeout: {e}");
                }
            }
            _ => panic!("transfer {i}: {}", line.raw),
        }
    }
    eprintln!("TERM under load: {completed} of {STREAMS} transfers completed within shutdown_timeout");
    assert!(completed > 0, "no transfer of {BULK} bytes completed within {SHUTDOWN:?} after TERM");

    let closed_at = wait_closed(&mut idle, SHUTDOWN + Duration::from_secs(3));
    let after = closed_at - term;
    assert!(
        after >= SHUTDOWN && after <= SHUTDOWN + Duration::from_secs(2),
        "the idle connection closed {after:?} after TERM; shutdown_timeout is {SHUTDOWN:?}"
    );
    daemon.wait_close_of(idle_addr, Duration::from_secs(5)).assert_reason("shutdown");
    let status = daemon
        .wait_exit(Duration::from_secs(3))
        .unwrap_or_else(|| panic!("still running {:?} after TERM; log:\n{}", term.elapsed(), daemon.log()));
    assert_eq!(status.code(), Some(0), "exit status after TERM; log:\n{}", daemon.log());
    assert!(!daemon.pidfile.exists(), "pidfile removed at stop");
}

/// A config for a daemonized instance in `dir`: log to a file, relay `listen` to `upstream`.
fn daemon_config(dir: &Path, listen: SocketAddr, upstream: SocketAddr) -> std::path::PathBuf {
    let path = dir.join("idlereaper.toml");
    let text = format!(
        "[daemon]\npidfile = \"{}\"\nlog = \"{}\"\ntick = \"1ms\"\nshutdown_timeout = \"2s\"\n\n{}",
        dir.join("idlereaper.pid").display(),
        dir.join("idlereaper.log").display(),
        relay_listener("restarted", listen, upstream, "30s")
    );
    fs::write(&path, text).unwrap();
    path
}

/// Injects: SIGKILL to a daemonized instance while three clients keep echoes going through it.
/// Must survive: the clients see their connections end (not hang); the pidfile is left behind
/// (stale, unlocked) and the next start with the same config takes it over, serves, and stops
/// cleanly on TERM.
#[test]
fn sigkill_under_load_then_restart_takes_over_the_stale_pidfile() {
    become_child_subreaper();
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::echo();
    let listen = free_addr();
    let config = daemon_config(dir.path(), listen, upstream.addr);
    let args = ["-c".as_ref(), config.as_os_str()];
    let pidfile = dir.path().join("idlereaper.pid");

    let first = run_cli(dir.path(), &args, Duration::from_secs(10));
    assert!(first.status.success(), "start: {:?}\n{}", first.status, first.stderr);
    let killed = DetachedDaemon::from_pidfile(&pidfile, &config);

    // Three clients echoing as fast as they can until their connection breaks.
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (stop, rounds) = (stop.clone(), rounds.clone());
            let mut c = connect(listen);
            thread::spawn(move || {
                let msg = [0x5a; 4096];
                let mut back = [0u8; 4096];
                let start = Instant::now();
                while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(20) {
                    if c.write_all(&msg).and_then(|()| c.read_exact(&mut back)).is_err() {
                        return true;
                    }
                    rounds.fetch_add(1, Ordering::Relaxed);
                }
                false
            })
        })
        .collect();
    let busy = wait_for(Duration::from_secs(5), || (rounds.load(Ordering::Relaxed) >= 300).then_some(()));
    assert!(busy.is_some(), "the clients did not get going");

    send_signal(killed.pid, libc::SIGKILL);
    assert_eq!(killed.wait_gone(Duration::from_secs(5)), Some(None), "killed by the signal, reaped");
    let broke = wait_for(Duration::from_secs(5), || clients.iter().all(|c| c.is_finished()).then_some(()));
    stop.store(true, Ordering::Relaxed);
    assert!(broke.is_some(), "clients still relaying 5 s after the daemon was killed");
    for c in clients {
        assert!(c.join().unwrap(), "a client's connection ended with an error, not a hang");
    }
    assert_eq!(
        fs::read_to_string(&pidfile).expect("SIGKILL leaves the pidfile"),
        format!("{}\n", killed.pid)
    );

    let second = run_cli(dir.path(), &args, Duration::from_secs(10));
    assert!(second.status.success(), "restart over a stale pidfile: {:?}\n{}", second.status, second.stderr);
    let restarted = DetachedDaemon::from_pidfile(&pidfile, &config);
    assert_ne!(restarted.pid, killed.pid);
    assert!(is_running(restarted.pid));
    let mut client = connect(listen);
    assert_echo(&mut client, b"served again");
    drop(client);

    send_signal(restarted.pid, libc::SIGTERM);
    let exit = restarted.wait_gone(Duration::from_secs(2) + Duration::from_secs(3));
    assert_eq!(exit, Some(Some(0)), "exit status after TERM");
    assert!(!pidfile.exists(), "pidfile removed at stop");
}
