//! Log files: one `key=value` line per event, and SIGUSR1 reopens the file after `logrotate` moved
//! it (and logs a statistics line); `log_format = "json"`: one JSON object a line with the same
//! fields, typed, in a file and on stderr, and a reload that switches between the two.

use std::fs;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

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

/// The `[daemon]` section with `log_format = "json"`, logging to `log` (`None`: stderr).
fn json_daemon(dir: &Path, log: Option<&Path>) -> String {
    let section = daemon_section(dir, "2s").replace("log_level", "log_format = \"json\"\nlog_level");
    match log {
        None => section,
        Some(path) => section.replace("log = \"stderr\"", &format!("log = \"{}\"", path.display())),
    }
}

/// Every line of `text` parsed as one JSON object, or a panic naming the line that is not one.
fn json_lines(text: &str) -> Vec<serde_json::Map<String, Value>> {
    text.lines()
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(object)) => object,
            other => panic!("not a JSON object ({other:?}): {line:?}\nlog:\n{text}"),
        })
        .collect()
}

/// The first object whose `msg` is `msg` and whose fields include `with`.
fn find<'a>(
    lines: &'a [serde_json::Map<String, Value>],
    msg: &str,
    with: &[(&str, Value)],
) -> Option<&'a serde_json::Map<String, Value>> {
    lines.iter().find(|l| l["msg"] == msg && with.iter().all(|(k, v)| l.get(*k) == Some(v)))
}

/// Relays a few bytes through `relay`, is refused by `denied`, asks for the statistics line and
/// stops the daemon; returns the relayed client's address.
fn json_workload(daemon: &mut Daemon, relay: SocketAddr, denied: SocketAddr) -> (SocketAddr, SocketAddr) {
    let mut client = connect(relay);
    assert_echo(&mut client, b"hello");
    let me = client.local_addr().unwrap();
    drop(client);
    let mut refused = connect(denied);
    let refused_addr = refused.local_addr().unwrap();
    let _ = refused.read(&mut [0; 1]); // closed at once
    let closed = format!(r#""client":"{me}","reason":"client_closed""#);
    let seen = wait_for(Duration::from_secs(5), || daemon.log().contains(&closed).then_some(()));
    assert!(seen.is_some(), "a JSON close line for {me}:\n{}", daemon.log());
    daemon.signal(libc::SIGUSR1);
    let stats = wait_for(Duration::from_secs(5), || daemon.log().contains(r#""msg":"stats""#).then_some(()));
    assert!(stats.is_some(), "a JSON stats line:\n{}", daemon.log());
    assert_eq!(daemon.stop().code(), Some(0));
    (me, refused_addr)
}

/// What every JSON log must show: each line an object with time, level and message; the
/// structured lines with their fields as JSON members of the right types.
fn assert_json_log(text: &str, me: SocketAddr, refused: SocketAddr, upstream: SocketAddr) {
    let lines = json_lines(text);
    for line in &lines {
        assert!(line["time"].as_str().is_some_and(looks_rfc3339), "time: {line:?}");
        assert!(["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&line["level"].as_str().unwrap_or("")));
        assert!(line["msg"].is_string(), "msg: {line:?}");
    }
    let started = find(&lines, "started", &[]).expect("a started line");
    assert_eq!(started["version"], env!("CARGO_PKG_VERSION"));
    assert!(started["pid"].is_u64() && started["workers"] == 1, "{started:?}");
    assert!(started["listeners"].as_str().is_some_and(|l| l.contains("relay=")), "{started:?}");

    let close = find(&lines, "conn closed", &[("client", me.to_string().into())]).expect("the close line");
    assert_eq!(close["level"], "INFO");
    assert_eq!(
        (close["listener"].as_str(), close["reason"].as_str()),
        (Some("relay"), Some("client_closed"))
    );
    assert_eq!(
        (close["bytes_from_client"].as_u64(), close["bytes_from_upstream"].as_u64()),
        (Some(5), Some(5))
    );
    assert!(close["id"].is_u64() && close["lifetime_ms"].is_u64(), "numbers are numbers: {close:?}");
    assert_eq!(close["upstream"], upstream.to_string(), "the address that served it");
    assert!(!close.contains_key("error") && !close.contains_key("upstreams_tried"), "{close:?}");

    let refusal = find(&lines, "conn refused", &[("client", refused.to_string().into())]).expect("a refusal");
    assert_eq!((refusal["listener"].as_str(), refusal["reason"].as_str()), (Some("denied"), Some("denied")));
    assert!(!refusal.contains_key("refused_unlogged"), "absent when none was held back: {refusal:?}");

    let stats = find(&lines, "stats", &[]).expect("the stats line");
    for (key, value) in [("accepted", 1), ("closed", 1), ("refused", 1), ("connections", 0)] {
        assert_eq!(stats[key].as_i64(), Some(value), "stats {key}: {stats:?}");
    }
    assert!(stats["timers"].is_number() && stats["buffers_in_use"].is_number(), "{stats:?}");
    assert!(find(&lines, "stopped", &[]).is_some(), "the last line: {text}");
}

#[test]
fn json_logs_are_one_object_a_line_with_typed_fields_on_stderr_and_in_a_file() {
    let upstream = Upstream::echo();
    for to_file in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("idlereaper.log");
        let (relay, denied) = (free_addr(), free_addr());
        let config = json_daemon(dir.path(), to_file.then_some(log.as_path()))
            + &relay_listener("relay", relay, upstream.addr, "30s")
            + &sink_listener("denied", denied, "30s")
            + "deny = [\"127.0.0.0/8\"]\n";
        let mut daemon = match to_file {
            false => Daemon::start_in(dir, &config),
            true => Daemon::start_logging_to(std::path::Path::new(BIN), dir, &config, &log, |_, _| {}),
        };
        let (me, refused) = json_workload(&mut daemon, relay, denied);
        assert_json_log(&daemon.log(), me, refused, upstream.addr);
        if to_file {
            let stderr = fs::read_to_string(daemon.dir.path().join("stderr.log")).unwrap();
            assert!(stderr.is_empty(), "nothing on stderr with a log file: {stderr}");
        }
    }
}

#[test]
fn a_reload_switches_the_log_between_text_and_json() {
    let upstream = Upstream::echo();
    let dir = tempfile::tempdir().unwrap();
    let relay = free_addr();
    let listeners = relay_listener("relay", relay, upstream.addr, "30s");
    let text_config = daemon_section(dir.path(), "2s") + &listeners;
    let json_config = json_daemon(dir.path(), None) + &listeners;
    let mut daemon = Daemon::start_in(dir, &text_config);
    let close_one = |daemon: &Daemon| {
        let mut client = connect(relay);
        assert_echo(&mut client, b"abc");
        let me = client.local_addr().unwrap();
        drop(client);
        let seen = wait_for(Duration::from_secs(5), || {
            daemon
                .log()
                .lines()
                .find(|l| l.contains(&me.to_string()) && l.contains("conn closed"))
                .map(str::to_owned)
        });
        seen.unwrap_or_else(|| panic!("no close line for {me}:\n{}", daemon.log()))
    };
    let text = close_one(&daemon);
    assert!(text.contains(" INFO conn closed id=") && text.contains(&format!(" upstream={}", upstream.addr)));
    for (config, json) in [(&json_config, true), (&text_config, false)] {
        fs::write(&daemon.config_path, config).unwrap();
        let reloads = daemon.log().matches("reloaded ").count();
        daemon.signal(libc::SIGHUP);
        let done = wait_for(Duration::from_secs(5), || {
            (daemon.log().matches("reloaded ").count() > reloads).then_some(())
        });
        assert!(done.is_some(), "reloaded:\n{}", daemon.log());
        let line = close_one(&daemon);
        match json {
            true => {
                let object: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
                assert_eq!(
                    (object["msg"].as_str(), object["bytes_from_client"].as_u64()),
                    (Some("conn closed"), Some(3))
                );
            }
            false => assert!(
                line.contains(" INFO conn closed id=") && line.contains(" bytes_from_client=3 "),
                "{line}"
            ),
        }
    }
    assert_eq!(daemon.stop().code(), Some(0));
}

/// `kill(2)` through nix, so that the test needs no `unsafe`.
fn send(pid: u32, signal: i32) {
    let signal = nix::sys::signal::Signal::try_from(signal).unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
}
