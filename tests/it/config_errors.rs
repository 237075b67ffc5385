//! Bad configurations and command lines: exit status 2, a message on stderr that names the file
//! and the offending key, and nothing left behind (no process, no pidfile, nothing bound).
//! Also `--check` on a good config. (`--help` and `--version`: `cli.rs`.)
//!
//! The exact wording of config errors is the config module's to choose: these tests look for the
//! key and the path in the message, not for sentences.

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use crate::common::*;

/// One run of the command against a config file in its own temp dir.
struct Outcome {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Outcome {
    fn pidfile(&self) -> PathBuf {
        self.dir.path().join("idlereaper.pid")
    }
}

/// Runs `idlereaper <args> -c <config>` (daemon mode unless `args` say otherwise) on a config
/// file in a new temp dir (`@DIR@` in the text stands for that dir; `None`: no file at all). If a
/// bad config was wrongly accepted, the daemon it started is killed here so that the failing test
/// leaves nothing behind either.
fn run_with(args: &[&str], config_text: Option<&str>) -> Outcome {
    run_on(args, config_text.map(str::as_bytes))
}

/// [`run_with`] on a file of any bytes.
fn run_on(args: &[&str], config_bytes: Option<&[u8]>) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("idlereaper.toml");
    if let Some(bytes) = config_bytes {
        // Replaced byte by byte: the file need not be UTF-8.
        let (from, to) = (b"@DIR@", dir.path().as_os_str().as_encoded_bytes());
        let mut text = Vec::with_capacity(bytes.len());
        let mut rest = bytes;
        while let Some((&first, after)) = rest.split_first() {
            match rest.strip_prefix(from) {
                Some(after_dir) => {
                    text.extend_from_slice(to);
                    rest = after_dir;
                }
                None => {
                    text.push(first);
                    rest = after;
                }
            }
        }
        fs::write(&config, text).unwrap();
    }
    let mut argv: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    argv.push("-c".as_ref());
    argv.push(config.as_os_str());
    let CliRun { status, stdout, stderr } = run_cli(dir.path(), &argv, Duration::from_secs(10));
    for pid in processes_with_arg(config.to_str().unwrap()) {
        send_signal(pid, libc::SIGKILL);
    }
    Outcome { status, stdout, stderr, dir, config }
}

/// A config whose `[daemon]` section is valid (pidfile in the temp dir) followed by `listeners`.
fn config_with(listeners: &str) -> String {
    format!("[daemon]\npidfile = \"@DIR@/idlereaper.pid\"\nlog = \"stderr\"\ntick = \"1ms\"\n\n{listeners}")
}

/// Asserts the contract for a rejected config: exit 2, stderr names the file and every one of
/// `mentions`, no pidfile, no process, and `listen` (if any) still free.
fn assert_rejected(outcome: &Outcome, mentions: &[&str], listen: Option<SocketAddr>) {
    assert_eq!(outcome.status.code(), Some(2), "exit status for a bad config; stderr: {}", outcome.stderr);
    let path = outcome.config.display().to_string();
    assert!(outcome.stderr.contains(&path), "stderr names the file {path}: {:?}", outcome.stderr);
    for m in mentions {
        assert!(outcome.stderr.contains(m), "stderr mentions {m:?}: {:?}", outcome.stderr);
    }
    assert!(!outcome.pidfile().exists(), "no pidfile left");
    assert_eq!(processes_with_arg(&path), Vec::<u32>::new(), "no process left");
    if let Some(addr) = listen {
        assert!(is_bindable(addr), "{addr} is not bound");
    }
}

#[test]
fn an_unknown_key_in_a_listener_is_rejected() {
    let listen = free_addr();
    let text = config_with(&format!(
        "[[listener]]\nname = \"a\"\nlisten = \"{listen}\"\nidle_timeout = \"5s\"\nidle_timout = \"5s\"\n"
    ));
    assert_rejected(&run_with(&[], Some(&text)), &["idle_timout"], Some(listen));
}

#[test]
fn an_unknown_key_in_daemon_is_rejected() {
    let listen = free_addr();
    let text = config_with(&sink_listener("a", listen, "5s"))
        .replace("tick = \"1ms\"\n", "tick = \"1ms\"\npid_file = \"/tmp/x.pid\"\n");
    assert_rejected(&run_with(&[], Some(&text)), &["pid_file"], Some(listen));
}

#[test]
fn a_log_format_other_than_text_or_json_is_rejected_and_check_prints_the_format() {
    let listen = free_addr();
    let with = |format: &str| {
        config_with(&sink_listener("a", listen, "5s"))
            .replace("tick = \"1ms\"\n", &format!("tick = \"1ms\"\nlog_format = \"{format}\"\n"))
    };
    for args in [&["--check"][..], &["--foreground"][..]] {
        let outcome = run_with(args, Some(&with("logfmt")));
        assert_rejected(&outcome, &["\"text\" or \"json\", got \"logfmt\""], Some(listen));
        assert_at(&outcome, 5, "daemon.log_format");
    }
    let check = run_with(&["--check"], Some(&with("json")));
    assert_eq!(check.status.code(), Some(0), "{}", check.stderr);
    assert!(check.stdout.contains(", log stderr (info, json), "), "{}", check.stdout);
}

#[test]
fn a_duration_with_a_bad_unit_is_rejected() {
    let listen = free_addr();
    let text = config_with(&sink_listener("a", listen, "5x"));
    assert_rejected(&run_with(&[], Some(&text)), &["idle_timeout"], Some(listen));
}

#[test]
fn a_zero_idle_timeout_is_rejected() {
    let listen = free_addr();
    let text = config_with(&sink_listener("a", listen, "0s"));
    assert_rejected(&run_with(&[], Some(&text)), &["idle_timeout"], Some(listen));
}

#[test]
fn a_bad_listen_address_is_rejected() {
    let text =
        config_with("[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:notaport\"\nidle_timeout = \"5s\"\n");
    assert_rejected(&run_with(&[], Some(&text)), &["listen"], None);
}

#[test]
fn a_bad_upstream_address_is_rejected() {
    let listen = free_addr();
    let text = config_with(&format!(
        "[[listener]]\nname = \"a\"\nlisten = \"{listen}\"\nupstream = \"127.0.0.1\"\nidle_timeout = \"5s\"\n"
    ));
    assert_rejected(&run_with(&[], Some(&text)), &["upstream"], Some(listen));
}

#[test]
fn a_missing_file_is_rejected() {
    let outcome = run_with(&[], None);
    assert_rejected(&outcome, &[], None);
}

#[test]
fn a_duplicate_listener_name_is_rejected() {
    let (a, b) = (free_addr(), free_addr());
    let text = config_with(&(sink_listener("twin", a, "5s") + &sink_listener("twin", b, "5s")));
    assert_rejected(&run_with(&[], Some(&text)), &["name", "twin"], Some(a));
    assert!(is_bindable(b));
}

#[test]
fn a_duplicate_listen_address_is_rejected() {
    let listen = free_addr();
    let text = config_with(&(sink_listener("one", listen, "5s") + &sink_listener("two", listen, "5s")));
    assert_rejected(&run_with(&[], Some(&text)), &["listen"], Some(listen));
}

#[test]
fn a_missing_idle_timeout_is_rejected() {
    let listen = free_addr();
    let text = config_with(&format!("[[listener]]\nname = \"a\"\nlisten = \"{listen}\"\n"));
    assert_rejected(&run_with(&[], Some(&text)), &["idle_timeout"], Some(listen));
}

/// Asserts that stderr points at `line` of the config file (`<file>:<line>:<col>: <key>: `).
fn assert_at(outcome: &Outcome, line: usize, key: &str) {
    let at = format!("{}:{line}:", outcome.config.display());
    let shown = outcome.stderr.lines().find(|l| l.contains(&at));
    let rest = shown.and_then(|l| l.split_once(&at)).map(|(_, rest)| rest);
    let column = rest.and_then(|r| r.split_once(':')).map(|(col, rest)| (col.parse::<usize>(), rest));
    assert!(
        matches!(column, Some((Ok(_), rest)) if rest.starts_with(&format!(" {key}: "))),
        "stderr points at {at}<col>: {key}: {:?}",
        outcome.stderr
    );
}

/// What the daemon would refuse at start, `--check` refuses too, and so does the start itself:
/// exit 2 and the position of the key, before anything is bound.
#[test]
fn users_groups_and_directories_that_do_not_exist_are_config_errors() {
    let listen = free_addr();
    let sink = sink_listener("a", listen, "5s");
    // The key in question is on line `at`; the log goes to stderr unless the case sets it.
    let cases = [
        ("group = \"root\"", 3, "daemon.group", "without daemon.user"),
        ("user = \"no-such-user-idlereaper\"", 3, "daemon.user", "no such user"),
        ("user = \"root\"\ngroup = \"no-such-group-idlereaper\"", 4, "daemon.group", "no such group"),
        ("log = \"@DIR@/no/such/dir/x.log\"", 3, "daemon.log", "does not exist"),
    ];
    for (lines, at, key, fragment) in cases {
        let log = if key == "daemon.log" { "" } else { "log = \"stderr\"\n" };
        let text = format!("[daemon]\npidfile = \"@DIR@/idlereaper.pid\"\n{lines}\n{log}\n{sink}");
        for args in [&["--check"][..], &["--foreground"][..], &[][..]] {
            let outcome = run_with(args, Some(&text));
            assert_rejected(&outcome, &[key, fragment], Some(listen));
            assert_at(&outcome, at, key);
        }
    }
    let text = config_with(&sink).replace("@DIR@/idlereaper.pid", "@DIR@/a/b/idlereaper.pid");
    let outcome = run_with(&["--check"], Some(&text));
    assert_rejected(&outcome, &["daemon.pidfile", "does not exist"], Some(listen));
    assert_at(&outcome, 2, "daemon.pidfile");
}

/// Errors in the text itself point into it too: an empty file, one that is not UTF-8, a TOML
/// syntax error (with the key being read), and a bad duration (saying what is accepted).
#[test]
fn every_error_in_the_text_has_a_position_and_a_key() {
    let outcome = run_on(&["--check"], Some(b""));
    assert_rejected(&outcome, &["the file is empty"], None);
    assert_at(&outcome, 1, "listener");

    let listen = free_addr();
    let mut latin1 = config_with("[[listener]]\nname = \"caf").into_bytes();
    latin1.push(0xe9);
    latin1.extend_from_slice(format!("\"\nlisten = \"{listen}\"\nidle_timeout = \"5s\"\n").as_bytes());
    let outcome = run_on(&["--check"], Some(&latin1));
    assert_rejected(&outcome, &["byte 0xE9 is not valid UTF-8"], Some(listen));
    assert_at(&outcome, 7, "listener[0].name");

    let unquoted =
        config_with(&format!("[[listener]]\nname = \"a\"\nlisten = \"{listen}\"\nidle_timeout = 5s\n"));
    let outcome = run_with(&["--check"], Some(&unquoted));
    assert_rejected(&outcome, &["must be quoted"], Some(listen));
    assert_at(&outcome, 9, "listener[0].idle_timeout");

    let outcome = run_with(&[], Some(&config_with(&sink_listener("a", listen, "5 weeks"))));
    assert_rejected(
        &outcome,
        &["\"weeks\" is not a unit", "units: ms, s, m, h, d", "allowed: 1ms to 30days"],
        Some(listen),
    );
    assert_at(&outcome, 9, "listener[0].idle_timeout");
}

#[test]
fn an_unknown_option_is_a_usage_error() {
    let outcome = run_with(&["--no-such-option"], None);
    assert_eq!(outcome.status.code(), Some(2), "{}", outcome.stderr);
    assert!(outcome.stderr.contains("--no-such-option"), "{}", outcome.stderr);
}

#[test]
fn check_validates_prints_one_line_per_listener_and_binds_nothing() {
    let (relay, sink, upstream) = (free_addr(), free_addr(), free_addr());
    let text = config_with(
        &(relay_listener("relay-one", relay, upstream, "5s") + &sink_listener("sink-two", sink, "5s")),
    );
    let outcome = run_with(&["--check"], Some(&text));
    assert_eq!(outcome.status.code(), Some(0), "{}", outcome.stderr);
    for name in ["relay-one", "sink-two"] {
        let lines = outcome.stdout.lines().filter(|l| l.contains(name)).count();
        assert_eq!(lines, 1, "one line for listener {name}: {:?}", outcome.stdout);
    }
    assert!(is_bindable(relay) && is_bindable(sink), "--check binds nothing");
    assert!(!outcome.pidfile().exists(), "--check writes no pidfile");
    assert_eq!(processes_with_arg(outcome.config.to_str().unwrap()), Vec::<u32>::new());

    let short = run_with(&["-t"], Some(&text));
    assert_eq!(short.status.code(), Some(0), "{}", short.stderr);
}

#[test]
fn check_rejects_a_bad_config_with_status_2() {
    let text = config_with(&sink_listener("a", free_addr(), "5x"));
    let outcome = run_with(&["--check"], Some(&text));
    assert_rejected(&outcome, &["idle_timeout"], None);
}

#[test]
fn protocol_keys_where_they_do_not_apply_are_rejected_at_the_key() {
    let (listen, upstream) = (free_addr(), free_addr());
    let relay = |more: &str| config_with(&(relay_listener("db", listen, upstream, "5s") + more));
    let cases = [
        ("protocol = \"mysql\"\n", "listener[0].protocol"),
        ("idle_in_transaction_timeout = \"30s\"\n", "listener[0].idle_in_transaction_timeout"),
        (
            "protocol = \"postgres\"\nsubscriber_idle_timeout = \"1h\"\n",
            "listener[0].subscriber_idle_timeout",
        ),
        ("protocol = \"redis\"\nidle_notice = \"-ERR idle\\r\\n\"\n", "listener[0].idle_notice"),
        ("protocol = \"postgres\"\nidle_close = \"rst\"\n", "listener[0].idle_close"),
    ];
    for (more, key) in cases {
        assert_rejected(&run_with(&[], Some(&relay(more))), &[key], Some(listen));
    }
    let sink = config_with(&(sink_listener("tarpit", listen, "5s") + "protocol = \"redis\"\n"));
    assert_rejected(&run_with(&["--check"], Some(&sink)), &["listener[0].protocol"], None);
}

#[test]
fn check_prints_each_relays_protocol() {
    let (pg, cache, upstream) = (free_addr(), free_addr(), free_addr());
    let text = config_with(
        &(relay_listener("pg", pg, upstream, "10m")
            + "protocol = \"postgres\"\nidle_in_transaction_timeout = \"30s\"\n\n"
            + &relay_listener("cache", cache, upstream, "5m")
            + "protocol = \"redis\"\nsubscriber_idle_timeout = \"1h\"\n"),
    );
    let outcome = run_with(&["--check"], Some(&text));
    assert_eq!(outcome.status.code(), Some(0), "{}", outcome.stderr);
    let line =
        |name: &str| outcome.stdout.lines().find(|l| l.starts_with(&format!("listener {name}:"))).unwrap();
    assert!(
        line("pg").contains("relay, protocol postgres, idle_timeout 10m, idle_in_transaction_timeout 30s")
    );
    assert!(line("cache").contains("relay, protocol redis, idle_timeout 5m, subscriber_idle_timeout 1h"));
}
