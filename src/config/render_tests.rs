//! The configuration written back reads back as the same configuration, for every kind of
//! listener and every key set away from its default; it names only keys the file accepts, each
//! table's keys in the struct's order.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::config::{file_keys, Position};

const SAMPLE: &str = include_str!("../../etc/idlereaper.toml");

/// Every key away from its default, on each kind of listener.
const EVERYTHING: &str = r#"
[daemon]
pidfile = "/run/x/x.pid"
log = "/var/log/x/x.log"
log_level = "debug"
log_format = "json"
tick = "5ms"
shutdown_timeout = "1m 30s"
user = "nobody"
group = "nogroup"
workers = 3
resolve_interval = "0s"

[[listener]]
name = "pg"
listen = "127.0.0.1:7000"
upstream = ["127.0.0.1:5432", "[::1]:5433", "db.internal:5432", "unix:/run/pg/.s.PGSQL.5432"]
balance = "round_robin"
idle_timeout = "1d 2h 3m 4s 5ms"
connect_timeout = "2s"
max_connections = 7
max_lifetime = "1h"
half_close_timeout = "0s"
max_connections_per_ip = 3
allow = ["10.0.0.0/8", "::1"]
deny = ["10.1.0.0/16"]
tcp_keepalive = "30s"
proxy_protocol = "v2"
tcp_user_timeout = "20s"
protocol = "postgres"
idle_in_transaction_timeout = "30s"

[[listener]]
name = "redis"
listen = "unix:/run/x/redis.sock"
upstream = "127.0.0.1:6379"
socket_mode = "0600"
idle_timeout = "5m"
protocol = "redis"
subscriber_idle_timeout = "1h"

[[listener]]
name = "sink"
listen = "[::1]:7001"
idle_timeout = "250ms"
idle_close = "rst"

[[listener]]
name = "notice"
listen = "systemd:web"
upstream = "127.0.0.1:8080"
idle_timeout = "10s"
idle_notice = "-ERR idle \"timeout\"\r\n"

[metrics]
listen = "127.0.0.1:9109"

[control]
socket = "/run/x/control.sock"
mode = "0600"
"#;

/// `config` without what is not configuration: the path, the text, the positions.
fn normalized(mut config: Config) -> Config {
    config.path = "/x".into();
    config.text = "".into();
    config.daemon.log_at = None;
    for l in &mut config.listeners {
        l.listen_at = Position { line: 0, column: 0 };
        l.upstream_at.clear();
    }
    config
}

fn parse(text: &str) -> Config {
    Config::parse(text, Path::new("/etc/idlereaper.toml")).unwrap_or_else(|e| panic!("{e}\n---\n{text}"))
}

#[test]
fn what_is_written_reads_back_as_the_same_configuration() {
    for text in
        [SAMPLE, EVERYTHING, "[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nidle_timeout = \"1s\"\n"]
    {
        let config = parse(text);
        let written = config.to_toml();
        let again = parse(&written);
        assert_eq!(normalized(again), normalized(config.clone()), "{written}");
        // Written again, the same text: the form is canonical.
        assert_eq!(parse(&written).to_toml(), written);
    }
}

#[test]
fn only_keys_the_file_accepts_in_the_order_of_its_struct() {
    let config = parse(EVERYTHING);
    let accepted = file_keys();
    for table in tables(&config) {
        let keys = accepted.iter().find(|t| t.table == table.name).expect("a table of the file").keys;
        let positions: Vec<usize> = table
            .keys
            .iter()
            .map(|(k, _)| keys.iter().position(|a| a == k).unwrap_or_else(|| panic!("{}.{k}", table.name)))
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{}: {positions:?}", table.name);
    }
    // Every key of every table is written for some listener of EVERYTHING.
    for table in &accepted {
        for key in table.keys {
            let written = tables(&config).iter().any(|t| t.name == table.table && t.get(key).is_some());
            assert!(written, "{}.{key} is never written", table.table);
        }
    }
}

#[test]
fn durations_are_written_in_the_largest_units() {
    let cases = [(0, "0s"), (250, "250ms"), (1_000, "1s"), (90_000, "1m 30s"), (86_400_001, "1d 1ms")];
    for (ms, text) in cases {
        assert_eq!(duration(Duration::from_millis(ms)), text);
    }
}

#[test]
fn the_json_form_has_the_same_keys_and_values() {
    let config = parse(EVERYTHING);
    let json = config.to_json();
    assert_eq!(json["daemon"]["workers"], 3);
    assert_eq!(json["daemon"]["shutdown_timeout"], "1m 30s");
    assert_eq!(json["listener"][2]["name"], "sink");
    assert_eq!(json["listener"][0]["upstream"][1], "[::1]:5433");
    assert_eq!(json["control"]["mode"], "0600");
    assert_eq!(json["listener"].as_array().map(Vec::len), Some(4));
}
