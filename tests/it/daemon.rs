//! The daemon's life as an operator sees it: daemonizing and the pidfile, a second instance,
//! a stale pidfile, startup failures that leave nothing behind, and stopping with signals
//! (graceful drain, second TERM, INT).
//!
//! Daemonized processes are orphans: this test process makes itself a child subreaper so that
//! they are re-parented to it, can be reaped (PID 1 here does not reap), and their exit status
//! checked.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::*;

/// Runs `idlereaper args...` (see [`run_cli`]), waiting at most 10 s for the command to return.
fn run(dir: &Path, args: &[&str]) -> CliRun {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    run_cli(dir, &args, Duration::from_secs(10))
}

/// A config in `dir` that logs to a file (the daemon's stderr is /dev/null) and relays `listen`
/// to `upstream`.
fn write_config(dir: &Path, listen: SocketAddr, upstream: SocketAddr) -> PathBuf {
    let path = dir.join("idlereaper.toml");
    let text = format!(
        "[daemon]\npidfile = \"{}\"\nlog = \"{}\"\ntick = \"1ms\"\nshutdown_timeout = \"2s\"\n\n{}",
        dir.join("idlereaper.pid").display(),
        dir.join("idlereaper.log").display(),
        relay_listener("relay", listen, upstream, "30s")
    );
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn daemonizes_writes_a_pidfile_refuses_a_second_instance_and_stops_on_term() {
    become_child_subreaper();
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::echo();
    let listen = free_addr();
    let config = write_config(dir.path(), listen, upstream.addr);
    let config_arg = config.to_str().unwrap();
    let pidfile = dir.path().join("idlereaper.pid");

    let started = Instant::now();
    let first = run(dir.path(), &["-c", config_arg]);
    assert!(first.status.success(), "start: {:?}\n{}", first.status, first.stderr);
    assert!(started.elapsed() < Duration::from_secs(10));

    // The pidfile names a live process that is not the command we ran, mode 0644.
    let daemon = DetachedDaemon::from_pidfile(&pidfile, &config);
    assert!(is_running(daemon.pid), "pid {} is running", daemon.pid);
    let mode = fs::metadata(&pidfile).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "pidfile mode");

    // It serves (ready means bound: no waiting here).
    let mut client = connect(listen);
    assert_echo(&mut client, b"through the daemon");
    client.shutdown(Shutdown::Both).unwrap();
    drop(client);

    // A second instance is refused and names the running one.
    let second = run(dir.path(), &["-c", config_arg]);
    assert_eq!(second.status.code(), Some(1), "second instance: {}", second.stderr);
    let expected = format!("already running (pid {})", daemon.pid);
    assert!(
        second.stderr.contains(&expected),
        "stderr names the running pid ({expected:?}): {:?}",
        second.stderr
    );
    assert!(is_running(daemon.pid), "the first instance survives");
    assert_eq!(
        fs::read_to_string(&pidfile).unwrap(),
        format!("{}\n", daemon.pid),
        "the pidfile is untouched"
    );

    // kill -TERM $(cat pidfile): gone within shutdown_timeout (2 s) plus slack, pidfile removed.
    send_signal(daemon.pid, libc::SIGTERM);
    let exit = daemon
        .wait_gone(Duration::from_secs(2) + Duration::from_secs(3))
        .expect("the daemon stops after SIGTERM");
    assert_eq!(exit, Some(0), "exit status after SIGTERM");
    assert!(!pidfile.exists(), "pidfile removed at stop");
    let log = fs::read_to_string(dir.path().join("idlereaper.log")).unwrap();
    assert!(
        log.contains(&format!(" INFO started version={} pid={}", env!("CARGO_PKG_VERSION"), daemon.pid)),
        "startup line in the log file: {log}"
    );
}

/// Nothing is written to the terminal of the start command once it has returned: without a
/// syslog socket, a daemon logging to "syslog" (the default) would have had to, so the start is
/// refused (exit 2, naming `daemon.log`, before anything is bound or written). `--check` warns.
#[test]
fn without_a_syslog_socket_daemonizing_with_syslog_is_refused() {
    if Path::new("/dev/log").exists() {
        skip("this machine has a syslog socket, /dev/log");
        return;
    }
    become_child_subreaper();
    let listen = free_addr();
    for (log, position) in
        [("", ": daemon.log: not set, so \"syslog\" needs "), ("log = \"syslog\"\n", ":3:7: daemon.log: ")]
    {
        let dir = tempfile::tempdir().unwrap();
        let (config, pidfile) = (dir.path().join("idlereaper.toml"), dir.path().join("idlereaper.pid"));
        let text = format!(
            "[daemon]\npidfile = \"{}\"\n{log}\n{}",
            pidfile.display(),
            sink_listener("a", listen, "5s")
        );
        fs::write(&config, text).unwrap();
        let out = run(dir.path(), &["-c", config.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
        let at = format!("{}{position}", config.display());
        assert!(out.stderr.contains(&at), "names the file and key ({at}): {}", out.stderr);
        for words in ["/dev/log", "a file path", "--foreground"] {
            assert!(out.stderr.contains(words), "{words:?} in {}", out.stderr);
        }
        assert!(!pidfile.exists() && is_bindable(listen), "nothing written, nothing bound");
        assert_eq!(processes_with_arg(config.to_str().unwrap()), Vec::<u32>::new(), "no process left");
        let check = run(dir.path(), &["--check", "-c", config.to_str().unwrap()]);
        assert_eq!(check.status.code(), Some(0), "{}", check.stderr);
        assert!(check.stderr.contains("warning: without --foreground"), "{}", check.stderr);
    }
}

#[test]
fn a_stale_pidfile_left_by_a_killed_daemon_is_taken_over() {
    become_child_subreaper();
    let listen = free_addr();
    let mut killed = Daemon::start(&sink_listener("stale", listen, "30s"));
    let old_pid = killed.pid();
    assert_eq!(
        fs::read_to_string(&killed.pidfile).unwrap(),
        format!("{old_pid}\n"),
        "--foreground writes the pidfile too"
    );
    killed.kill();
    assert!(killed.pidfile.exists(), "SIGKILL leaves the pidfile behind");

    // Same config, daemonized this time.
    let config = killed.config_path.to_str().unwrap().to_string();
    let next = run(killed.dir.path(), &["-c", &config]);
    assert!(next.status.success(), "start over a stale pidfile: {:?}\n{}", next.status, next.stderr);
    let daemon = DetachedDaemon::from_pidfile(&killed.pidfile, &killed.config_path);
    assert_ne!(daemon.pid, old_pid);
    assert!(is_running(daemon.pid));
    let mut client = connect(listen);
    client.write_all(b"into the sink").unwrap();
    assert_eq!(peer_state(&client), PeerState::Open);

    send_signal(daemon.pid, libc::SIGTERM);
    daemon.wait_gone(Duration::from_secs(5)).expect("the daemon stops after SIGTERM");
    assert!(!killed.pidfile.exists(), "pidfile removed at stop");
}

#[test]
fn a_pidfile_naming_a_dead_pid_does_not_prevent_a_start() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("idlereaper.pid"), "999999\n").unwrap();
    let listen = free_addr();
    let text = daemon_section(dir.path(), "2s") + &sink_listener("dead", listen, "30s");
    let mut daemon = Daemon::start_in(dir, &text);
    assert_eq!(fs::read_to_string(&daemon.pidfile).unwrap(), format!("{}\n", daemon.pid()));
    assert!(daemon.stop().success());
    assert!(!daemon.pidfile.exists());
}

#[test]
fn pidfile_option_overrides_the_config() {
    become_child_subreaper();
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::echo();
    let config = write_config(dir.path(), free_addr(), upstream.addr);
    let other = dir.path().join("other.pid");
    let started =
        run(dir.path(), &["--config", config.to_str().unwrap(), "--pidfile", other.to_str().unwrap()]);
    assert!(started.status.success(), "{}", started.stderr);
    let daemon = DetachedDaemon::from_pidfile(&other, &config);
    assert!(is_running(daemon.pid));
    assert!(!dir.path().join("idlereaper.pid").exists());
    send_signal(daemon.pid, libc::SIGTERM);
    daemon.wait_gone(Duration::from_secs(5)).expect("the daemon stops after SIGTERM");
    assert!(!other.exists());
}

#[test]
fn a_listen_address_in_use_fails_the_start_and_leaves_nothing_behind() {
    become_child_subreaper();
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind(free_addr()).unwrap();
    let listen = taken.local_addr().unwrap();
    let upstream = Upstream::echo();
    let config = write_config(dir.path(), listen, upstream.addr);
    let failed = run(dir.path(), &["-c", config.to_str().unwrap()]);
    assert_eq!(failed.status.code(), Some(1), "stderr: {}", failed.stderr);
    assert!(failed.stderr.contains(&listen.to_string()), "the error names the address: {:?}", failed.stderr);
    assert!(!dir.path().join("idlereaper.pid").exists(), "no pidfile left");
    assert_eq!(processes_with_arg(config.to_str().unwrap()), Vec::<u32>::new(), "no process left");
}

/// Connects until refused (the listener is closed), with a deadline.
fn wait_refused(addr: SocketAddr, timeout: Duration) {
    let refused = wait_for(timeout, || {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Some(()),
            _ => None, // still accepting (or slow): the stream, if any, is dropped at once
        }
    });
    assert!(refused.is_some(), "{addr} still accepts {timeout:?} after SIGTERM");
}

#[test]
fn term_closes_listeners_drains_then_closes_at_shutdown_timeout() {
    const SHUTDOWN: Duration = Duration::from_secs(1);
    let upstream = Upstream::echo();
    let listen = free_addr();
    let mut daemon = Daemon::start_with("1s", &relay_listener("drain", listen, upstream.addr, "30s"));
    let mut client = connect(listen);
    let me = client.local_addr().unwrap();
    assert_echo(&mut client, b"before");

    let term = Instant::now();
    daemon.signal(libc::SIGTERM);
    wait_refused(listen, Duration::from_millis(900));
    assert_echo(&mut client, b"still relayed while draining");

    let closed_at = wait_closed(&mut client, SHUTDOWN + Duration::from_secs(2));
    let after = closed_at - term;
    assert!(
        after >= SHUTDOWN && after <= SHUTDOWN + Duration::from_secs(1),
        "open connection closed {after:?} after SIGTERM; shutdown_timeout is {SHUTDOWN:?}"
    );
    let status = daemon.wait_exit(Duration::from_secs(3)).expect("exits after draining");
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log());
    daemon.wait_close_of(me, Duration::from_secs(1)).assert_reason("shutdown");
    assert!(!daemon.pidfile.exists(), "pidfile removed");
}

#[test]
fn term_exits_as_soon_as_the_last_connection_ends() {
    let upstream = Upstream::echo();
    let listen = free_addr();
    let mut daemon = Daemon::start_with("30s", &relay_listener("early", listen, upstream.addr, "30s"));
    let mut client = connect(listen);
    let me = client.local_addr().unwrap();
    assert_echo(&mut client, b"hi");
    daemon.signal(libc::SIGTERM);
    daemon.wait_log(" INFO stopping", Duration::from_secs(5));
    assert_echo(&mut client, b"draining");
    client.shutdown(Shutdown::Write).unwrap();
    wait_closed(&mut client, Duration::from_secs(2));
    let status = daemon
        .wait_exit(Duration::from_secs(3))
        .expect("exits once its last connection ended, long before shutdown_timeout");
    assert_eq!(status.code(), Some(0));
    daemon.wait_close_of(me, Duration::from_secs(1)).assert_reason("client_closed");
    assert!(!daemon.pidfile.exists());
}

#[test]
fn a_second_term_stops_at_once() {
    let upstream = Upstream::echo();
    let listen = free_addr();
    let mut daemon = Daemon::start_with("30s", &relay_listener("twice", listen, upstream.addr, "30s"));
    let mut client = connect(listen);
    let me = client.local_addr().unwrap();
    assert_echo(&mut client, b"hi");
    daemon.signal(libc::SIGTERM);
    daemon.wait_log(" INFO stopping", Duration::from_secs(5));
    let second = Instant::now();
    daemon.signal(libc::SIGTERM);
    let status = daemon
        .wait_exit(Duration::from_secs(3))
        .expect("a second SIGTERM stops at once, not after shutdown_timeout (30 s)");
    assert!(second.elapsed() < Duration::from_secs(3));
    assert_eq!(status.code(), Some(0));
    wait_closed(&mut client, Duration::from_secs(1));
    daemon.wait_close_of(me, Duration::from_secs(1)).assert_reason("shutdown");
    assert!(!daemon.pidfile.exists());
}

#[test]
fn sigint_stops_like_term() {
    let mut daemon = Daemon::start(&sink_listener("int", free_addr(), "30s"));
    assert_eq!(
        fs::read_to_string(&daemon.pidfile).unwrap(),
        format!("{}\n", daemon.pid()),
        "--foreground writes the pidfile"
    );
    let started = format!(
        " INFO started version={} pid={} workers=1 listeners=\"",
        env!("CARGO_PKG_VERSION"),
        daemon.pid()
    );
    let log = daemon.log();
    let line = log.lines().find(|l| l.contains(&started));
    assert!(line.is_some_and(|l| l.contains("int")), "startup line {started:?}...: {log}");
    daemon.signal(libc::SIGINT);
    let status = daemon.wait_exit(Duration::from_secs(5)).expect("SIGINT stops the daemon");
    assert_eq!(status.code(), Some(0));
    assert!(!daemon.pidfile.exists());
}

#[test]
fn daemonized_unix_socket_files_stay_until_the_daemon_stops() {
    become_child_subreaper();
    let dir = tempfile::tempdir().unwrap();
    let (unix, control) = (dir.path().join("relay.sock"), dir.path().join("control.sock"));
    let config = dir.path().join("idlereaper.toml");
    let text = format!(
        "[daemon]\npidfile = \"{}\"\nlog = \"{}\"\nshutdown_timeout = \"2s\"\n\n\
         [[listener]]\nname = \"u\"\nlisten = \"unix:{}\"\nidle_timeout = \"30s\"\n\n\
         [control]\nsocket = \"{}\"\n",
        dir.path().join("idlereaper.pid").display(),
        dir.path().join("idlereaper.log").display(),
        unix.display(),
        control.display()
    );
    fs::write(&config, text).unwrap();
    let started = run(dir.path(), &["-c", config.to_str().unwrap()]);
    assert!(started.status.success(), "start: {:?}\n{}", started.status, started.stderr);
    let daemon = DetachedDaemon::from_pidfile(&dir.path().join("idlereaper.pid"), &config);
    // The starter has exited: the files it bound are still there, and answer.
    assert!(std::os::unix::net::UnixStream::connect(&unix).is_ok(), "{} is served", unix.display());
    let mut ctl = std::os::unix::net::UnixStream::connect(&control).expect("the control socket is served");
    ctl.write_all(b"show listeners\n").unwrap();
    let mut answer = String::new();
    io::Read::read_to_string(&mut ctl, &mut answer).unwrap();
    assert!(answer.contains("unix:"), "{answer}");
    send_signal(daemon.pid, libc::SIGTERM);
    assert_eq!(daemon.wait_gone(Duration::from_secs(10)), Some(Some(0)));
    assert!(!unix.exists() && !control.exists(), "both files are removed on stop");
}
