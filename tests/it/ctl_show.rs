//! What `idlereaperctl` tells of the daemon itself: `show info` (version, pid, uptime, the
//! configuration file and when it was loaded, workers, open connections, the last reload and
//! upgrade) and `show config` (the configuration in force, every key written out, as TOML that
//! `idlereaper --check` accepts, with the running value of a setting a reload could not change),
//! each as text and as JSON; and `reload`, which says what changed per listener and key, and
//! which settings wait for a restart.

use std::process::Command;
use std::time::{Duration, SystemTime};

use crate::common::*;

fn now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
}

fn info(socket: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&ctl_stdout(socket, &["show", "info", "--json"])).expect("one JSON object")
}

#[test]
fn show_info_tells_the_daemon_its_configuration_and_the_last_reload_and_upgrade() {
    let upstream = Upstream::echo();
    let listen = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let (control, socket) = control_at(dir.path());
    let base = daemon_section(dir.path(), "2s").replace("tick = \"1ms\"", "tick = \"1ms\"\nworkers = 2");
    let config = base.clone() + &relay_listener("r", listen, upstream.addr, "60s") + &control;
    let started = now();
    let daemon = Daemon::start_in(dir, &config);
    let mut client = connect(listen);
    assert_echo(&mut client, b"one open connection");

    let first = info(&socket);
    assert_eq!(first["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(first["pid"], daemon.pid());
    assert_eq!(first["config"], daemon.config_path.display().to_string());
    assert_eq!((first["workers"].as_u64(), first["listeners"].as_u64()), (Some(2), Some(1)));
    assert_eq!(first["open_connections"], 1);
    let since = first["started"].as_u64().unwrap();
    assert!((started.saturating_sub(1)..=now()).contains(&since), "{first}");
    assert!(first["uptime_s"].as_u64().unwrap() <= now() - started + 1, "{first}");
    assert!(first["last_reload"].is_null() && first["last_upgrade"].is_null(), "{first}");
    let table = ctl_stdout(&socket, &["show", "info"]);
    for row in ["version", "pid", "started", "config", "workers", "listeners", "open connections"] {
        assert!(table.lines().any(|l| l.starts_with(row)), "{row:?} in:\n{table}");
    }
    assert!(table.contains(&format!("pid               {}\n", daemon.pid())), "{table}");
    assert!(table.contains("last reload       none"), "{table}");

    // A reload that fails, then one that succeeds: each is the last one in turn.
    std::fs::write(&daemon.config_path, config.clone() + "[[listener]]\nname = \"broken\"\n").unwrap();
    assert_eq!(ctl_run(&socket, &["reload"]).status.code(), Some(2));
    let failed = info(&socket);
    assert_eq!(failed["last_reload"]["result"], "failed", "{failed}");
    assert!(failed["last_reload"]["detail"].as_str().unwrap().contains("listener[1]"), "{failed}");
    assert_eq!(failed["config_loaded"], first["config_loaded"], "a failed reload loads nothing");
    std::fs::write(&daemon.config_path, &config).unwrap();
    let before = now();
    ctl_stdout(&socket, &["reload"]);
    let reloaded = info(&socket);
    assert_eq!(reloaded["last_reload"]["result"], "ok", "{reloaded}");
    assert_eq!(reloaded["last_reload"]["detail"], "listeners=1 kept=1 added=0 removed=0");
    assert!(reloaded["config_loaded"].as_u64().unwrap() >= before, "{reloaded}");
    assert!(ctl_stdout(&socket, &["show", "info"]).contains("last reload       ok at "));

    // An upgrade in place: the same pid and start, the upgrade's result.
    let answer = ctl_stdout(&socket, &["upgrade"]);
    assert!(answer.starts_with("upgraded from="), "{answer}");
    let upgraded = info(&socket);
    assert_eq!(
        (upgraded["pid"].clone(), upgraded["started"].clone()),
        (first["pid"].clone(), first["started"].clone())
    );
    assert_eq!(upgraded["last_upgrade"]["result"], "success", "{upgraded}");
    assert_eq!(upgraded["open_connections"], 1, "{upgraded}");
    assert_echo(&mut client, b"across the upgrade");
}

#[test]
fn show_config_is_the_configuration_in_force_as_toml_the_daemon_accepts() {
    let upstream = Upstream::echo();
    let (relay, sink, metrics) = (free_addr(), free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let (control, socket) = control_at(dir.path());
    let listeners = relay_listener("relay", relay, upstream.addr, "1m 30s")
        + "max_connections = 7\nallow = [\"127.0.0.0/8\"]\n\n"
        + &sink_listener("sink", sink, "45s");
    let config = daemon_section(dir.path(), "2s") + &listeners + &metrics_at(metrics) + &control;
    let daemon = Daemon::start_in(dir, &config);

    let text = ctl_stdout(&socket, &["show", "config"]);
    assert!(text.starts_with("# The configuration in force in idlereaper "), "{text}");
    for line in ["idle_timeout = \"1m 30s\"", "max_connections = 7", "allow = [\"127.0.0.0/8\"]", "[control]"]
    {
        assert!(text.lines().any(|l| l == line), "{line:?} in:\n{text}");
    }
    // Every key spelled out, the defaults too.
    assert!(
        text.contains("connect_timeout = \"5s\"") && text.contains("shutdown_timeout = \"2s\""),
        "{text}"
    );
    let written = daemon.dir.path().join("shown.toml");
    std::fs::write(&written, &text).unwrap();
    let check = Command::new(BIN).arg("--check").arg("-c").arg(&written).output().unwrap();
    assert!(check.status.success(), "idlereaper --check refuses it: {check:?}\n{text}");

    // The JSON form holds the same values.
    let json: serde_json::Value =
        serde_json::from_str(&ctl_stdout(&socket, &["show", "config", "--json"])).expect("one JSON object");
    let toml: toml::Table = text.parse().expect("TOML");
    assert_eq!(serde_json::to_value(&toml).unwrap(), json);
    assert_eq!(json["listener"][1]["name"], "sink");
    assert!(json["listener"][1].get("upstream").is_none(), "a sink has no upstream key: {json}");

    // A setting a reload cannot change: the file says 5ms, the daemon runs on 1ms.
    let edited = config.replace("tick = \"1ms\"", "tick = \"5ms\"").replace("\"45s\"", "\"50s\"");
    std::fs::write(&daemon.config_path, edited).unwrap();
    ctl_stdout(&socket, &["reload"]);
    let in_force = ctl_stdout(&socket, &["show", "config"]);
    assert!(
        in_force.contains("tick = \"1ms\"\n") && in_force.contains("idle_timeout = \"50s\"\n"),
        "{in_force}"
    );
}

#[test]
fn reload_says_what_changed_per_listener_and_key_and_what_needs_a_restart() {
    let upstream = Upstream::echo();
    let (a, b, c) = (free_addr(), free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let (control, socket) = control_at(dir.path());
    let base = daemon_section(dir.path(), "2s");
    let config = base.clone()
        + &relay_listener("a", a, upstream.addr, "60s")
        + &relay_listener("b", b, upstream.addr, "60s")
        + &control;
    let daemon = Daemon::start_in(dir, &config);

    let unchanged = ctl_stdout(&socket, &["reload"]);
    assert_eq!(unchanged, "reloaded: listeners=2 kept=2 added=0 removed=0\n");

    let edited =
        base.replace("tick = \"1ms\"", "tick = \"5ms\"\nworkers = 2").replace("\"info\"", "\"debug\"")
            + &relay_listener("a", a, upstream.addr, "30s")
            + "max_lifetime = \"1h\"\n\n"
            + &relay_listener("c", c, upstream.addr, "60s")
            + &control.replace("\"0660\"", "\"0600\"");
    std::fs::write(&daemon.config_path, edited).unwrap();
    let answer = ctl_stdout(&socket, &["reload"]);
    assert_eq!(
        answer.lines().collect::<Vec<_>>(),
        [
            "reloaded: listeners=2 kept=1 added=1 removed=1".to_owned(),
            format!("added listener c ({c})"),
            format!("removed listener b ({b}): its open connections run on"),
            "changed listener a: idle_timeout, max_lifetime".to_owned(),
            "changed daemon.log_level".to_owned(),
            "not applied (restart idlereaper to apply; the running values stay): daemon.workers, daemon.tick, control"
                .to_owned(),
        ],
        "{answer}"
    );
    assert_echo(&mut connect(c), b"the added listener serves");
    daemon.wait_log(
        "reload: daemon.workers, daemon.tick, control changed; restart idlereaper to apply",
        Duration::from_secs(5),
    );
}
