//! systemd socket activation: a listener with `listen = "systemd:NAME"` relays through the
//! socket systemd passed under that name (`LISTEN_FDS`, `LISTEN_FDNAMES`, `LISTEN_PID`), TCP or
//! Unix, shared by every worker, kept across a reload and a live upgrade; a socket no listener
//! names is closed; a name that was not passed fails the start at its key (exit 1); `--check`
//! does not need the sockets. The daemon is started by `systemd-socket-activate(1)` (Debian's
//! `systemd` package), which binds the sockets and, at the first client, executes the daemon
//! in its own process with the variables set — as a `.socket` unit does, without systemd as
//! PID 1.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::common::*;

const ACTIVATE: &str = "/usr/bin/systemd-socket-activate";

fn have_activate() -> bool {
    require_program(ACTIVATE, "apt install systemd (it runs without systemd as PID 1)")
}

/// The daemon as `systemd-socket-activate` starts it: `sockets` are `(address, name)` pairs
/// (`127.0.0.1:port` or an absolute Unix socket path). It waits for a first client before it
/// executes the daemon, in its own process (so the child's pid is the daemon's).
struct Activated {
    dir: tempfile::TempDir,
    config: PathBuf,
    log: PathBuf,
    child: Child,
}

impl Activated {
    fn spawn(config: &str, sockets: &[(&str, &str)]) -> Activated {
        let dir = tempfile::tempdir().unwrap();
        let (config_path, log) = (dir.path().join("idlereaper.toml"), dir.path().join("stderr.log"));
        fs::write(&config_path, config.replace("@DIR@", &dir.path().display().to_string())).unwrap();
        let mut command = Command::new(ACTIVATE);
        for (address, _) in sockets {
            command.arg(format!("--listen={address}"));
        }
        let names: Vec<&str> = sockets.iter().map(|(_, name)| *name).collect();
        command.arg(format!("--fdname={}", names.join(":"))).args([BIN, "-f", "-c"]).arg(&config_path);
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("spawn systemd-socket-activate");
        let activated = Activated { dir, config: config_path, log, child };
        // Listening before the test's first client connects (it binds before it waits).
        let listening = wait_for(Duration::from_secs(10), || {
            (activated.log().matches("Listening on ").count() >= sockets.len()).then_some(())
        });
        assert!(listening.is_some(), "systemd-socket-activate is not listening:\n{}", activated.log());
        activated
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_log(&self, needle: &str) {
        let seen = wait_for(Duration::from_secs(10), || self.log().contains(needle).then_some(()));
        assert!(seen.is_some(), "no {needle:?} in the log:\n{}", self.log());
    }

    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        wait_for(timeout, || self.child.try_wait().unwrap())
            .unwrap_or_else(|| panic!("still running after {timeout:?}; log:\n{}", self.log()))
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn relay_on(name: &str, listen: &str, upstream: SocketAddr) -> String {
    format!("[[listener]]\nname = \"{name}\"\nlisten = \"{listen}\"\nupstream = \"{upstream}\"\nidle_timeout = \"30s\"\n\n")
}

fn config_with(listeners: &str) -> String {
    daemon_section(Path::new("@DIR@"), "2s") + "workers = 2\n\n" + listeners
}

fn unix_echo(path: &Path, msg: &[u8]) {
    let mut c = UnixStream::connect(path).unwrap_or_else(|e| panic!("connect to {}: {e}", path.display()));
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    c.write_all(msg).unwrap();
    let mut back = vec![0; msg.len()];
    c.read_exact(&mut back).unwrap();
    assert_eq!(back, msg, "through the Unix socket systemd passed");
}

/// The relay works through both passed sockets, with several clients at once on each (the
/// workers share a passed socket).
fn relay_through_both(tcp: SocketAddr, unix: &Path, round: &str) {
    let mut clients: Vec<_> = (0..8).map(|_| connect(tcp)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_echo(c, format!("{round} tcp {i}").as_bytes());
    }
    for i in 0..4 {
        unix_echo(unix, format!("{round} unix {i}").as_bytes());
    }
}

#[test]
fn a_daemon_started_by_systemd_relays_through_the_sockets_it_passes() {
    if !have_activate() {
        return;
    }
    let upstream = Upstream::echo();
    let (tcp, spare) = (free_addr(), free_addr());
    let sockets = tempfile::tempdir().unwrap();
    let unix = sockets.path().join("local.sock");
    let listeners =
        relay_on("web", "systemd:web", upstream.addr) + &relay_on("local", "systemd:local", upstream.addr);
    let (tcp_arg, unix_arg, spare_arg) = (tcp.to_string(), unix.display().to_string(), spare.to_string());
    let mut daemon = Activated::spawn(
        &config_with(&listeners),
        &[(&tcp_arg, "web"), (&unix_arg, "local"), (&spare_arg, "spare")],
    );

    // The first client starts the daemon, and waits in the backlog meanwhile.
    let mut first = connect(tcp);
    assert_echo(&mut first, b"the client that started it");
    daemon.wait_log(" INFO started ");
    let log = daemon.log();
    assert!(log.contains("listeners=\"web=systemd:web->") && log.contains("local=systemd:local->"), "{log}");
    relay_through_both(tcp, &unix, "started");
    let closes = wait_for(Duration::from_secs(5), || {
        let log = daemon.log();
        log.lines()
            .any(|l| l.contains("conn closed") && l.contains(" listener=local client=unix "))
            .then_some(log)
    });
    assert!(closes.is_some(), "close lines name the listener:\n{}", daemon.log());

    // A socket no listener names is closed, with a warning: nobody holds it any more.
    let warning = "systemd passed a socket named \"spare\" (descriptor 5) that no listener takes";
    assert!(daemon.log().contains(warning), "{}", daemon.log());
    assert!(std::net::TcpStream::connect_timeout(&spare, Duration::from_secs(2)).is_err(), "spare closed");

    // A reload keeps both; one that adds a listener on a passed socket is refused, and
    // changes nothing.
    send_signal(daemon.pid(), libc::SIGHUP);
    daemon.wait_log("reloaded ");
    assert!(daemon.log().contains("kept=2 added=0 removed=0"), "{}", daemon.log());
    let added = config_with(&(listeners.clone() + &relay_on("more", "systemd:more", upstream.addr)));
    fs::write(&daemon.config, added.replace("@DIR@", &daemon.dir.path().display().to_string())).unwrap();
    send_signal(daemon.pid(), libc::SIGHUP);
    daemon.wait_log("ERROR reload failed");
    let log = daemon.log();
    let refusal = log.lines().find(|l| l.contains("ERROR reload failed")).unwrap();
    assert!(refusal.contains("listener[2].listen") && refusal.contains("taken only at start"), "{refusal}");
    relay_through_both(tcp, &unix, "reloaded");

    // A live upgrade carries the passed sockets across the exec like any listener; the new
    // image was not given the variables (they were unset once read).
    fs::write(
        &daemon.config,
        config_with(&listeners).replace("@DIR@", &daemon.dir.path().display().to_string()),
    )
    .unwrap();
    send_signal(daemon.pid(), libc::SIGUSR2);
    daemon.wait_log(" INFO upgraded ");
    let environ = fs::read(format!("/proc/{}/environ", daemon.pid())).unwrap();
    let variables: Vec<String> =
        environ.split(|b| *b == 0).map(|v| String::from_utf8_lossy(v).into_owned()).collect();
    assert!(!variables.iter().any(|v| v.starts_with("LISTEN_")), "passed on to the new image: {variables:?}");
    relay_through_both(tcp, &unix, "upgraded");
    assert_echo(&mut first, b"still here after the upgrade");
    drop(first);

    send_signal(daemon.pid(), libc::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)).code(), Some(0), "{}", daemon.log());
    assert!(unix.exists(), "the socket file is systemd's, not removed by the daemon");
}

#[test]
fn a_name_systemd_did_not_pass_fails_the_start_at_its_key() {
    if !have_activate() {
        return;
    }
    let upstream = Upstream::echo();
    let tcp = free_addr();
    let listeners =
        relay_on("web", "systemd:web", upstream.addr) + &relay_on("db", "systemd:db", upstream.addr);
    let tcp_arg = tcp.to_string();
    let mut daemon = Activated::spawn(&config_with(&listeners), &[(&tcp_arg, "web")]);
    let _trigger = connect(tcp);
    let status = daemon.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "the socket unit, not the file, is wrong: exit 1; {}", daemon.log());
    let log = daemon.log();
    let expected = format!(
        "idlereaper: {}:18:10: listener[1].listen: systemd passed no socket named \"db\": it passed \"web\" \
         (descriptor 3)",
        daemon.config.display()
    );
    assert!(log.contains(&expected), "{expected:?} in:\n{log}");
    assert!(!daemon.dir.path().join("idlereaper.pid").exists(), "nothing left behind");
}

#[test]
fn without_systemd_a_passed_socket_is_an_error_at_start_and_nothing_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("idlereaper.toml");
    let text =
        daemon_section(dir.path(), "2s") + &relay_on("web", "systemd:web", "127.0.0.1:1".parse().unwrap());
    fs::write(&config, text).unwrap();
    let args = |a: &[&str]| -> Vec<std::ffi::OsString> {
        a.iter().map(Into::into).chain([config.clone().into_os_string()]).collect()
    };
    let check: Vec<_> = args(&["--check", "-c"]);
    let check = run_cli(dir.path(), &check.iter().map(|a| a.as_os_str()).collect::<Vec<_>>(), IO_TIMEOUT);
    assert_eq!(check.status.code(), Some(0), "{}", check.stderr);
    assert!(
        check.stdout.contains("the socket systemd passes as \"web\", taken at start"),
        "{}",
        check.stdout
    );

    let start: Vec<_> = args(&["-f", "-c"]);
    let start = run_cli(dir.path(), &start.iter().map(|a| a.as_os_str()).collect::<Vec<_>>(), IO_TIMEOUT);
    assert_eq!(start.status.code(), Some(1), "{}", start.stderr);
    assert!(
        start.stderr.contains(
            "listener[0].listen: systemd passed no socket named \"web\": LISTEN_PID and \
                               LISTEN_FDS are not set"
        ),
        "{}",
        start.stderr
    );
    assert!(!dir.path().join("idlereaper.pid").exists(), "nothing left behind");
}
