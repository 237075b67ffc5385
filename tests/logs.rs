//! Log files: one `key=value` line per event, and SIGUSR1 reopens the file after `logrotate` moved
//! it (and logs a statistics line).

mod common;

use std::fs;
use std::io::Write;
use std::time::Duration;

use common::*;

#[test]
fn usr1_reopens_a_moved_log_file_and_logs_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("idlereaper.log");
    let listen = free_addr();
    let config = daemon_section(dir.path(), "2s")
        .replace("log = \"stderr\"", &format!("log = \"{}\"", log.display()))
        + &sink_listener("sink", listen, "30s");
    // The harness waits for `started` on stderr; with a log file, wait on the file instead.
    let config_path = dir.path().join("idlereaper.toml");
    fs::write(&config_path, config).unwrap();
    let mut child = std::process::Command::new(BIN)
        .args(["-f", "-c"])
        .arg(&config_path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = wait_for(Duration::from_secs(10), || {
        fs::read_to_string(&log).ok().filter(|t| t.contains(" INFO started ")).map(|_| ())
    });
    assert!(started.is_some(), "no startup line in {}", log.display());

    let mut client = connect(listen);
    client.write_all(b"abc").unwrap();
    let me = client.local_addr().unwrap();
    drop(client);
    let closed = wait_for(Duration::from_secs(5), || {
        fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains(&format!("client={me} reason=client_closed")))
            .map(|_| ())
    });
    assert!(closed.is_some(), "close line in the log file");

    // logrotate: move the file away, then SIGUSR1.
    let rotated = dir.path().join("idlereaper.log.1");
    fs::rename(&log, &rotated).unwrap();
    send(child.id(), libc::SIGUSR1);
    let stats = wait_for(Duration::from_secs(5), || {
        fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains(" INFO stats connections=0 accepted=1 closed=1"))
            .map(|_| ())
    });
    assert!(stats.is_some(), "a new file with the statistics line: {:?}", fs::read_to_string(&log));
    let old = fs::read_to_string(&rotated).unwrap();
    assert!(
        old.contains(&format!("client={me}")) && !old.contains(" stats "),
        "old lines stay in the rotated file"
    );
    for line in old.lines().chain(fs::read_to_string(&log).unwrap().lines()) {
        let (_, rest) = line.split_once(" INFO ").expect("time, level, message");
        assert!(!rest.contains('\n'), "one line each");
    }
    send(child.id(), libc::SIGTERM);
    let status = wait_for(Duration::from_secs(10), || child.try_wait().ok().flatten());
    assert_eq!(status.and_then(|s| s.code()), Some(0));
}

/// `kill(2)` through nix, so that the test needs no `unsafe`.
fn send(pid: u32, signal: i32) {
    let signal = nix::sys::signal::Signal::try_from(signal).unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
}
