//! Tests of the protocol keys: their defaults and values, every error naming its key, and the
//! `--check` line.

use super::super::tests::{named, ok, parse, rejected, PATH};
use super::*;
use crate::config::ListenerConfig;

/// A relay listener `a` with `lines` from line 6 on.
fn relay(lines: &str) -> String {
    named("a", "127.0.0.1:7000", &format!("upstream = \"127.0.0.1:5432\"\n{lines}\n"))
}

fn first(text: &str) -> ListenerConfig {
    ok(text).listeners.remove(0)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn a_listener_is_tcp_unless_it_says_otherwise() {
    let l = first(&relay(""));
    assert_eq!(
        (l.protocol, l.idle_in_transaction_timeout, l.subscriber_idle_timeout),
        (Protocol::Tcp, secs(1), None)
    );
    let l = first(&relay("protocol = \"postgres\"\nidle_in_transaction_timeout = \"30s\""));
    assert_eq!((l.protocol, l.idle_in_transaction_timeout), (Protocol::Postgres, secs(30)));
    assert_eq!(
        first(&relay("protocol = \"postgres\"")).idle_in_transaction_timeout,
        secs(1),
        "idle_timeout's"
    );
    let l = first(&relay("protocol = \"redis\"\nsubscriber_idle_timeout = \"1h\""));
    assert_eq!((l.protocol, l.subscriber_idle_timeout), (Protocol::Redis, Some(secs(3600))));
    let l = first(&relay("protocol = \"redis\"\nsubscriber_idle_timeout = \"0s\""));
    assert_eq!(l.subscriber_idle_timeout, None, "0s: never");
    assert_eq!(first(&relay("protocol = \"tcp\"\nidle_close = \"rst\"")).protocol, Protocol::Tcp);
}

#[test]
fn every_misplaced_key_is_an_error_at_that_key() {
    let at = |lines: &str, key: &str, fragment: &str| {
        rejected(&relay(lines), &format!("listener[0].{key}"), 6, fragment);
    };
    at("protocol = \"mysql\"", "protocol", "expected \"tcp\", \"postgres\" or \"redis\", got \"mysql\"");
    at("protocol = 5", "protocol", "expected \"tcp\", \"postgres\" or \"redis\", got integer 5");
    at(
        "idle_in_transaction_timeout = \"5s\"",
        "idle_in_transaction_timeout",
        "only applies to protocol = \"postgres\" (this listener's protocol is \"tcp\")",
    );
    at("subscriber_idle_timeout = \"5s\"", "subscriber_idle_timeout", "only applies to protocol = \"redis\"");
    let key = "listener[0].subscriber_idle_timeout";
    rejected(
        &relay("protocol = \"postgres\"\nsubscriber_idle_timeout = \"1h\""),
        key,
        7,
        "(this listener's protocol is \"postgres\")",
    );
    let key = "listener[0].idle_in_transaction_timeout";
    rejected(
        &relay("protocol = \"redis\"\nidle_in_transaction_timeout = \"1h\""),
        key,
        7,
        "only applies to protocol = \"postgres\"",
    );
    rejected(
        &relay("protocol = \"postgres\"\nidle_in_transaction_timeout = \"31days\""),
        key,
        7,
        "out of range: allowed 1ms to 30days",
    );
    let key = "listener[0].idle_notice";
    rejected(
        &relay("protocol = \"postgres\"\nidle_notice = \"bye\\n\""),
        key,
        7,
        "PostgreSQL's own words (FATAL 57P05 or 25P03)",
    );
    rejected(
        &relay("protocol = \"redis\"\nidle_notice = \"-ERR idle\\r\\n\""),
        key,
        7,
        "a reaped Redis client is sent nothing",
    );
    assert_eq!(first(&relay("protocol = \"redis\"\nidle_notice = \"\"")).idle_notice, None, "empty is none");
    let key = "listener[0].idle_close";
    rejected(
        &relay("protocol = \"redis\"\nidle_close = \"rst\""),
        key,
        7,
        "cannot be \"rst\" with protocol = \"redis\"",
    );
    rejected(&relay("protocol = \"postgres\"\nidle_close = \"rst\""), key, 7, "which a reset would discard");
    assert_eq!(first(&relay("protocol = \"postgres\"\nidle_close = \"fin\"")).protocol, Protocol::Postgres);
    // A sink has no protocol to speak.
    let sink = named("a", "127.0.0.1:7000", "protocol = \"redis\"\n");
    rejected(&sink, "listener[0].protocol", 5, "only applies to a relay listener");
    let e = parse(&sink).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{PATH}:5:")), "{e}");
}

#[test]
fn check_says_each_relays_protocol_and_its_timers() {
    let line = |lines: &str| first(&relay(lines)).summary();
    let head = "listener a: 127.0.0.1:7000 -> 127.0.0.1:5432 relay, protocol";
    assert!(
        line("").starts_with(&format!("{head} tcp, idle_timeout 1s, connect_timeout 5s")),
        "{}",
        line("")
    );
    let pg = line("protocol = \"postgres\"\nidle_in_transaction_timeout = \"30s\"");
    assert!(
        pg.starts_with(&format!(
            "{head} postgres, idle_timeout 1s, idle_in_transaction_timeout 30s, connect_timeout"
        )),
        "{pg}"
    );
    let redis = line("protocol = \"redis\"");
    assert!(
        redis.starts_with(&format!("{head} redis, idle_timeout 1s, subscriber_idle_timeout never, connect")),
        "{redis}"
    );
    let redis = line("protocol = \"redis\"\nsubscriber_idle_timeout = \"1h\"");
    assert!(redis.contains("subscriber_idle_timeout 1h,"), "{redis}");
}
