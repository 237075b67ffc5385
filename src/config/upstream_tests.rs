//! Tests of the keys that put idlereaper in front of real services: upstreams as host names,
//! Unix sockets and lists, `balance`, Unix listeners and `socket_mode`, sockets systemd passes,
//! `tcp_user_timeout`,
//! `idle_close`, `idle_notice` and `daemon.resolve_interval`.

use super::tests::{daemon, named, ok, rejected};
use super::*;

/// A relay listener (name and listen on lines 2 and 3) with `lines` from line 4 on.
fn relay(lines: &str) -> String {
    named("a", "127.0.0.1:7000", lines)
}

#[test]
fn upstreams_take_four_forms_and_lists() {
    let one = |text: &str| ok(&relay(&format!("upstream = \"{text}\"\n"))).listeners[0].upstream.clone();
    assert_eq!(one("db1.internal:5432"), vec![Upstream::Host { host: "db1.internal".into(), port: 5432 }]);
    assert_eq!(one("unix:/run/pg/.s.PGSQL.5432"), vec![Upstream::Unix("/run/pg/.s.PGSQL.5432".into())]);
    let list = ok(&relay("upstream = [\"127.0.0.1:7001\", \"localhost:7002\"]\nbalance = \"round_robin\"\n"));
    let l = &list.listeners[0];
    assert_eq!(l.upstream.len(), 2);
    assert_eq!(l.balance, Balance::RoundRobin);
    assert_eq!(l.upstream_at.iter().map(|p| p.line).collect::<Vec<_>>(), [5, 5]);
    assert!(list.summary()[1].contains("-> 127.0.0.1:7001, localhost:7002 relay"), "{:?}", list.summary());
    assert!(list.summary()[1].contains("balance round_robin"), "{:?}", list.summary());
}

#[test]
fn bad_upstreams_are_reported_at_the_entry() {
    let bad = |value: &str, key: &str, fragment: &str| {
        rejected(&relay(&format!("upstream = {value}\n")), key, 5, fragment);
    };
    bad("\"unix:run/app.sock\"", "listener[0].upstream", "relative path");
    bad("\"unix:\"", "listener[0].upstream", "no path after \"unix:\"");
    bad(&format!("\"unix:/{}\"", "a".repeat(120)), "listener[0].upstream", "at most 107");
    bad("[]", "listener[0].upstream", "empty list");
    bad("[\"a.example:1\", \"a.example:1\"]", "listener[0].upstream[1]", "already upstream[0]");
    bad("[\"a.example:1\", \"a.example:0\"]", "listener[0].upstream[1]", "port 0");
    bad("[\"a.example:1\", 7]", "listener[0].upstream[1]", "expected an address string");
    bad("7", "listener[0].upstream", "an address string or an array of them");
    rejected(
        &relay("upstream = \"127.0.0.1:7001\"\nbalance = \"random\"\n"),
        "listener[0].balance",
        6,
        "\"first\" or \"round_robin\"",
    );
    rejected(&relay("balance = \"first\"\n"), "listener[0].balance", 5, "only applies to a relay");
}

#[test]
fn unix_listeners_have_a_mode_and_no_address_rules() {
    let unix = |lines: &str| named("a", "unix:/run/a.sock", lines);
    let l = &ok(&unix("socket_mode = \"0600\"\n")).listeners[0];
    assert_eq!((l.listen.clone(), l.socket_mode), (Listen::Unix("/run/a.sock".into()), 0o600));
    assert_eq!(ok(&unix("")).listeners[0].socket_mode, 0o660);
    for (key, line) in [
        ("allow", "allow = [\"10.0.0.0/8\"]"),
        ("deny", "deny = []"),
        ("max_connections_per_ip", "max_connections_per_ip = 2"),
    ] {
        rejected(
            &unix(&format!("{line}\n")),
            &format!("listener[0].{key}"),
            5,
            "does not apply to a Unix socket listener",
        );
    }
    for bad in ["\"660\"9", "\"66\"", "\"06600\"", "\"0668\"", "660"] {
        let text = unix(&format!("socket_mode = {bad}\n"));
        if toml::from_str::<toml::Value>(&text).is_ok() {
            rejected(&text, "listener[0].socket_mode", 5, "octal mode");
        }
    }
    rejected(
        &unix("socket_mode = \"0660\"\n").replace("unix:/run/a.sock", "127.0.0.1:7000"),
        "listener[0].socket_mode",
        5,
        "only applies to a Unix socket listener",
    );
}

#[test]
fn a_listener_on_a_socket_systemd_passes_is_checked_without_it() {
    let passed = |lines: &str| named("web", "systemd:web", lines);
    let config = ok(&passed("upstream = \"127.0.0.1:7001\"\nallow = [\"10.0.0.0/8\"]\n"));
    assert_eq!(config.listeners[0].listen, Listen::Systemd("web".into()));
    let summary = &config.summary()[1];
    assert!(summary.starts_with("listener web: systemd:web -> 127.0.0.1:7001 relay"), "{summary}");
    assert!(summary.contains(", the socket systemd passes as \"web\", taken at start,"), "{summary}");
    rejected(&passed("socket_mode = \"0600\"\n"), "listener[0].socket_mode", 5, "SocketMode=");
    rejected(&named("web", "systemd:", ""), "listener[0].listen", 3, "no name after \"systemd:\"");
    let twice = passed("") + &named("again", "systemd:web", "");
    if let Err(e) = Config::parse(&twice, Path::new("/etc/idlereaper.toml")) {
        assert!(e.to_string().contains("duplicate address systemd:web"), "{e}");
    } else {
        panic!("two listeners on one passed socket were accepted");
    }
}

#[test]
fn user_timeout_idle_close_and_notice() {
    let with =
        |lines: &str| ok(&relay(&format!("upstream = \"127.0.0.1:7001\"\n{lines}"))).listeners.remove(0);
    assert_eq!(with("").tcp_user_timeout, None);
    assert_eq!(with("tcp_user_timeout = \"0s\"\n").tcp_user_timeout, None);
    assert_eq!(with("tcp_user_timeout = \"30s\"\n").tcp_user_timeout, Some(Duration::from_secs(30)));
    for bad in ["500ms", "2h"] {
        let text = relay(&format!("upstream = \"127.0.0.1:7001\"\ntcp_user_timeout = \"{bad}\"\n"));
        rejected(&text, "listener[0].tcp_user_timeout", 6, "out of range");
    }
    assert_eq!(with("").idle_close, IdleClose::Fin);
    assert_eq!(with("idle_close = \"rst\"\n").idle_close, IdleClose::Rst);
    let notice = with("idle_notice = \"-ERR idle timeout\\r\\n\"\n").idle_notice;
    assert_eq!(notice.as_deref(), Some(&b"-ERR idle timeout\r\n"[..]));
    let both = relay("upstream = \"127.0.0.1:7001\"\nidle_close = \"rst\"\nidle_notice = \"bye\"\n");
    rejected(&both, "listener[0].idle_notice", 7, "a reset discards it");
    rejected(&relay("idle_close = \"abort\"\n"), "listener[0].idle_close", 5, "\"fin\" or \"rst\"");
}

#[test]
fn resolve_interval_defaults_to_30s_and_0s_means_only_at_start() {
    assert_eq!(ok(&daemon("")).daemon.resolve_interval, Some(Duration::from_secs(30)));
    assert_eq!(ok(&daemon("resolve_interval = \"0s\"")).daemon.resolve_interval, None);
    assert_eq!(
        ok(&daemon("resolve_interval = \"5s\"")).daemon.resolve_interval,
        Some(Duration::from_secs(5))
    );
    rejected(&daemon("resolve_interval = \"10ms\""), "daemon.resolve_interval", 2, "out of range");
}

#[test]
fn unix_loops_are_errors() {
    let text = "[[listener]]\nname = \"a\"\nlisten = \"unix:/run/a.sock\"\nupstream = \"unix:/run/a.sock\"\nidle_timeout = \"1s\"\n";
    rejected(text, "listener[0].upstream", 4, "is this listener's own address; connections would loop");
}
