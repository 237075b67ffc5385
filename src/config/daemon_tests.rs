//! Tests of the `[daemon]` and `[metrics]` tables: values, errors, reading the file, and the
//! worker count.

use crate::config::tests::*;
use crate::config::*;

#[test]
fn daemon_values() {
    let text = daemon(
        "pidfile = \"/tmp/x.pid\"\nlog = \"/var/log/idlereaper.log\"\nlog_level = \"trace\"\n\
         tick = \"10ms\"\nshutdown_timeout = \"0s\"\nuser = \"nobody\"\ngroup = \"nogroup\"",
    );
    let d = ok(&text).daemon;
    assert_eq!(d.pidfile, PathBuf::from("/tmp/x.pid"));
    assert_eq!(d.log, LogTarget::File("/var/log/idlereaper.log".into()));
    assert_eq!(d.log_level, log::LevelFilter::Trace);
    assert_eq!((d.tick, d.shutdown_timeout), (ms(10), Duration::ZERO));
    assert_eq!((d.user.unwrap(), d.group.unwrap()), ("nobody".into(), "nogroup".into()));
    assert_eq!(ok(&daemon("log = \"stderr\"")).daemon.log, LogTarget::Stderr);
    assert_eq!(d.log_format, LogFormat::Text, "text unless json is asked for");
    assert_eq!(ok(&daemon("log_format = \"json\"")).daemon.log_format, LogFormat::Json);
    assert_eq!(ok(&daemon("log_format = \"text\"")).daemon.log_format, LogFormat::Text);
    for (text, level) in [("error", log::LevelFilter::Error), ("debug", log::LevelFilter::Debug)] {
        assert_eq!(ok(&daemon(&format!("log_level = \"{text}\""))).daemon.log_level, level);
    }
}

#[test]
fn daemon_errors() {
    let bad = |line: &str, key: &str, fragment: &str| rejected(&daemon(line), key, 2, fragment);
    bad("pidfile = \"run/x.pid\"", "daemon.pidfile", "must be an absolute path, got \"run/x.pid\"");
    bad("pidfile = 5", "daemon.pidfile", "invalid type: integer `5`, expected a string");
    bad("log = \"file.log\"", "daemon.log", "\"stderr\" or an absolute path, got \"file.log\"");
    bad("log_level = \"INFO\"", "daemon.log_level", "error, warn, info, debug or trace, got \"INFO\"");
    bad("log_level = \"off\"", "daemon.log_level", "got \"off\"");
    bad("log_format = \"JSON\"", "daemon.log_format", "expected \"text\" or \"json\", got \"JSON\"");
    bad("log_format = \"logfmt\"", "daemon.log_format", "got \"logfmt\"");
    bad("log_format = 1", "daemon.log_format", "invalid type: integer `1`, expected a string");
    bad("user = \"\"", "daemon.user", "must be a non-empty name");
    bad("group = \"a b\"", "daemon.group", "without spaces, got \"a b\"");
    bad("group = \"nogroup\"", "daemon.group", "is set without daemon.user");
    rejected("daemon = 5\n", "daemon", 1, "invalid type");
}

#[test]
fn load_reads_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idlereaper.toml");
    std::fs::write(&path, SAMPLE).unwrap();
    assert_eq!(Config::load(&path, None).unwrap().path, path);
    std::fs::write(&path, daemon("tick = \"0s\"")).unwrap();
    let shown = Config::load(&path, None).unwrap_err().to_string();
    assert!(shown.starts_with(&format!("{}:2:8: daemon.tick: ", path.display())), "{shown}");
}

#[test]
fn workers_default_to_one_and_zero_means_one_per_core() {
    let path = Path::new("/etc/idlereaper.toml");
    let parse = |text: &str| Config::parse(text, path).map(|c| c.daemon.workers);
    assert_eq!(parse(LISTENER).unwrap(), 1);
    assert_eq!(parse(&daemon("workers = 3")).unwrap(), 3);
    let cores = std::thread::available_parallelism().unwrap().get().min(64);
    assert_eq!(parse(&daemon("workers = 0")).unwrap(), cores);
    rejected(&daemon("workers = 65"), "daemon.workers", 2, "out of range: allowed 0 to 64");
    rejected(&daemon("workers = \"2\""), "daemon.workers", 2, "integer");
}

/// `[metrics]` from line 5 on, after a valid listener on 127.0.0.1:7000.
fn metrics(lines: &str) -> String {
    format!("{LISTENER}[metrics]\n{lines}\n")
}

#[test]
fn metrics_listen_address() {
    assert_eq!(ok(LISTENER).metrics, None);
    let config = ok(&metrics("listen = \"127.0.0.1:9109\""));
    assert_eq!(config.metrics, Some(MetricsConfig { listen: "127.0.0.1:9109".parse().unwrap() }));
    assert_eq!(config.summary().last().unwrap(), "metrics: http://127.0.0.1:9109/metrics");
    let v6 = ok(&metrics("listen = \"[::1]:9109\"")).metrics.unwrap();
    assert_eq!(v6.listen, SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 9109)));
    // The listener's port on another address, or on the other family's wildcard, is fine.
    ok(&metrics("listen = \"127.0.0.2:7000\""));
    ok(&metrics("listen = \"[::]:7000\""));
    // The table may come before the listeners.
    let first = format!("[metrics]\nlisten = \"127.0.0.1:9109\"\n{LISTENER}");
    assert_eq!(ok(&first).metrics, config.metrics);
}

#[test]
fn metrics_errors() {
    let key = "metrics.listen";
    rejected(&metrics(""), key, 5, "required: the address to serve GET /metrics on");
    let bad =
        |value: &str, fragment: &str| rejected(&metrics(&format!("listen = {value}")), key, 6, fragment);
    bad("\"localhost:9109\"", "\"IP:port\" or \"[IPv6]:port\" (no host names), got \"localhost:9109\"");
    bad("\"9109\"", "got \"9109\"");
    bad("\"127.0.0.1:0\"", "\"127.0.0.1:0\": port 0 is not allowed");
    bad("9109", "invalid type: integer `9109`, expected a string");
    bad("\"127.0.0.1:7000\"", "duplicate address 127.0.0.1:7000: already used by listener[0] (\"a\")");
    bad(
        "\"0.0.0.0:7000\"",
        "0.0.0.0:7000 overlaps 127.0.0.1:7000 of listener[0] (\"a\"): both cannot be bound",
    );
    let wildcard = format!("{}[metrics]\nlisten = \"127.0.0.1:7000\"\n", named("w", "0.0.0.0:7000", ""));
    rejected(&wildcard, key, 6, "127.0.0.1:7000 overlaps 0.0.0.0:7000 of listener[0] (\"w\")");
    let unknown = metrics("listen = \"127.0.0.1:9109\"\npath = \"/m\"");
    let e = rejected(&unknown, "metrics.path", 7, "unknown field `path`, expected `listen`");
    assert_eq!(e.column, Some(1));
    rejected(&format!("metrics = 5\n{LISTENER}"), "metrics", 1, "invalid type");
    // An array of tables: serde reads it as a sequence of fields, hence the odd message.
    let array = format!("{LISTENER}[[metrics]]\nlisten = \"127.0.0.1:9109\"\n");
    rejected(&array, "metrics[0]", 5, "invalid type: map, expected a string");
}
