//! `idlereaperctl` answers whatever the configuration file holds, and its exit status is the one
//! idlereaperctl(8) states, row by row: a file with a syntax error still names the control
//! socket (a warning says what is wrong), so `ping` and `show conns` work and `reload` reaches
//! the daemon, which refuses it with its reason (exit 2) and counts a failed reload; a `kill`
//! that matches nothing is exit 1; a daemon that cannot be reached is exit 1 with what to do —
//! the socket, its group, `-s`; no answer within the wait is exit 3.

use std::os::unix::net::UnixListener;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts `out` exited with `status` and said `says` (on stderr, or stdout for a success).
fn exits(out: &Output, status: i32, says: &str, what: &str) {
    let said = stdout(out) + &stderr(out);
    assert_eq!(out.status.code(), Some(status), "{what}: {said}");
    assert!(said.contains(says), "{what}: {says:?} not in: {said}");
}

#[test]
fn a_file_with_a_syntax_error_still_names_the_socket_and_reload_is_refused_by_the_daemon() {
    let upstream = Upstream::echo();
    let (listen, metrics) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let (control, _) = control_at(dir.path());
    let config = daemon_section(dir.path(), "2s")
        + &relay_listener("r", listen, upstream.addr, "60s")
        + &metrics_at(metrics)
        + &control;
    let daemon = Daemon::start_in(dir, &config);
    let mut client = connect(listen);
    assert_echo(&mut client, b"before the edit");

    // The edit an operator gets wrong: a duration without its quotes, before [control].
    let broken = config.replace("idle_timeout = \"60s\"", "idle_timeout = 60s");
    assert_ne!(broken, config);
    std::fs::write(&daemon.config_path, &broken).unwrap();
    let path = daemon.config_path.display().to_string();

    let ping = ctl_with_config(&daemon.config_path, &["ping"]);
    exits(&ping, 0, &format!("pong pid={}", daemon.pid()), "ping");
    let warning = stderr(&ping);
    assert!(warning.contains("warning: ") && warning.contains(&format!("{path}:")), "{warning}");
    let conns = ctl_with_config(&daemon.config_path, &["show", "conns"]);
    exits(&conns, 0, "relaying", "show conns");

    let reload = ctl_with_config(&daemon.config_path, &["reload"]);
    exits(&reload, 2, "reload failed, keeping the running configuration: ", "reload");
    assert!(stderr(&reload).contains(&format!("{path}:")), "the daemon's reason names the file: {reload:?}");
    let body = scrape_metrics(metrics);
    assert_eq!(metric(&body, "idlereaper_reloads_total", "result=\"failure\""), Some(1), "{body}");
    assert_eq!(metric(&body, "idlereaper_reloads_total", "result=\"success\""), Some(0), "{body}");
    assert_echo(&mut client, b"the daemon runs on");

    // Fixed, the reload goes through.
    std::fs::write(&daemon.config_path, &config).unwrap();
    exits(&ctl_with_config(&daemon.config_path, &["reload"]), 0, "reloaded: listeners=1", "reload");
}

#[test]
fn kill_that_matches_nothing_and_bad_requests_exit_as_the_manual_says() {
    let upstream = Upstream::echo();
    let listen = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let (control, socket) = control_at(dir.path());
    let config =
        daemon_section(dir.path(), "2s") + &relay_listener("r", listen, upstream.addr, "60s") + &control;
    let _daemon = Daemon::start_in(dir, &config);
    let mut client = connect(listen);
    assert_echo(&mut client, b"hello");
    let id = show_conns(&socket)[0].id.to_string();

    for (args, status, says) in [
        (vec!["ping"], 0, "pong pid="),
        (vec!["show", "listeners", "--json"], 0, "\"name\":\"r\""),
        (vec!["kill", "99999"], 1, "no connection matched id 99999"),
        (vec!["kill", "--listener", "nosuch"], 1, "no connection matched listener \"nosuch\""),
        (vec!["kill", "--client", "10.9.9.9"], 1, "no connection matched client 10.9.9.9"),
        (vec!["kill", "--client", "nowhere"], 2, "expected IP or IP:port"),
        (vec!["show", "conns", "--limit", "0"], 2, "expected a count of at least 1"),
        (vec!["restart"], 2, "unrecognized subcommand"),
        (vec!["kill", &id], 0, "killed 1"),
    ] {
        exits(&ctl_run(&socket, &args), status, says, &args.join(" "));
    }
    assert_eq!(read_to_ending(&mut client).1, StreamEnd::Eof);
}

#[test]
fn a_daemon_that_cannot_be_reached_is_exit_1_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    // No socket.
    let out = ctl_run(&socket, &["show", "info"]);
    exits(&out, 1, &format!("cannot reach the daemon at {}: no such socket", socket.display()), "none");
    assert!(stderr(&out).contains("-s SOCKET"), "{out:?}");
    // A socket file nobody listens on (left by a daemon that did not stop cleanly).
    drop(UnixListener::bind(&socket).unwrap());
    exits(&ctl_run(&socket, &["ping"]), 1, "no daemon listens on it", "stale");
    // A configuration file that does not exist: a warning, then the packaged default.
    let out = ctl_with_config(&dir.path().join("none.toml"), &["ping"]);
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("warning: cannot read ") && said.contains("/run/idlereaper/control.sock"),
        "{said}"
    );
}

#[test]
fn permission_denied_names_the_group_and_how_to_get_in() {
    if !nix::unistd::Uid::effective().is_root() {
        return skip("needs root to run idlereaperctl as another user");
    }
    if !require_program("/usr/bin/setpriv", "apt install util-linux") {
        return;
    }
    let upstream = Upstream::echo();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (control, socket) = control_at(dir.path());
    let config =
        daemon_section(dir.path(), "2s") + &relay_listener("r", free_addr(), upstream.addr, "60s") + &control;
    let _daemon = Daemon::start_in(dir, &config);
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(CTL)
        .arg("-s")
        .arg(&socket)
        .arg("ping")
        .output()
        .unwrap();
    // The daemon runs as root here: the socket is root's group's, mode 0660.
    exits(&out, 1, "permission denied: ", "another user");
    let said = stderr(&out);
    for words in ["belongs to root:root, mode 0660", "you are not in group root", "run as root", "-s SOCKET"]
    {
        assert!(said.contains(words), "{words:?} not in: {said}");
    }
}

#[test]
fn no_answer_within_the_wait_is_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    // A daemon that takes the request and never answers (until the test ends).
    let silent = std::thread::spawn({
        let done = done.clone();
        move || {
            let (client, _) = listener.accept().unwrap();
            hold_until(&done, Duration::from_secs(30));
            drop(client);
        }
    });
    let out = ctl_run(&socket, &["upgrade", "--wait", "1s"]);
    done.store(true, Ordering::SeqCst);
    silent.join().unwrap();
    exits(&out, 3, "gave no answer within 1s", "silent");
}
