//! Tests of the listener keys that guard against abuse: `max_lifetime`, `half_close_timeout`,
//! `max_connections_per_ip`, `allow`, `deny` and `tcp_keepalive`; their defaults, values,
//! errors and summary. The helpers are those of the pipeline's tests.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use proptest::prelude::*;

use super::super::property_tests::{check_outcome, network_text, table};
use super::super::tests::{ms, named, ok, parse, rejected, PATH};
use super::*;

/// A sink listener `a` with `lines` from line 5 on.
fn sink(lines: &str) -> String {
    named("a", "127.0.0.1:7000", &format!("{lines}\n"))
}

/// A relay listener `a` with `lines` from line 6 on.
fn relay(lines: &str) -> String {
    named("a", "127.0.0.1:7000", &format!("upstream = \"127.0.0.1:6379\"\n{lines}\n"))
}

/// `text` with `[daemon]` and `tick` on lines 1 and 2 in front.
fn with_tick(tick: &str, text: &str) -> String {
    format!("[daemon]\ntick = \"{tick}\"\n{text}")
}

fn first(text: &str) -> ListenerConfig {
    ok(text).listeners.remove(0)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn net(text: &str) -> IpNet {
    text.parse().unwrap()
}

#[test]
fn protections_default_to_off_except_half_close() {
    for text in [sink(""), relay("")] {
        let l = first(&text);
        assert_eq!((l.max_lifetime, l.half_close_timeout, l.tcp_keepalive), (None, Some(secs(30)), None));
        assert_eq!((l.max_connections_per_ip, l.allow, l.deny), (0, vec![], vec![]));
    }
}

#[test]
fn max_lifetime() {
    let get = |v: &str| first(&sink(&format!("max_lifetime = \"{v}\""))).max_lifetime;
    assert_eq!(get("1h"), Some(HOUR));
    assert_eq!(get("1ms"), Some(ms(1)));
    assert_eq!(get("30days"), Some(MAX_TIMEOUT));
    assert_eq!((get("0s"), get("0ms")), (None, None));
    assert_eq!(first(&relay("max_lifetime = \"90s\"")).max_lifetime, Some(secs(90)));

    let key = "listener[0].max_lifetime";
    let bad = |v: &str, fragment: &str| rejected(&sink(&format!("max_lifetime = {v}")), key, 5, fragment);
    let range =
        "\"31days\" is out of range: allowed 0s (unlimited) or 1ms to 30days (the minimum is daemon.tick)";
    assert_eq!(bad("\"31days\"", range).message, range);
    bad("3600", "expected a duration string with a unit, such as \"30s\" or \"250ms\", got integer 3600");
    bad("\"-1s\"", "\"-1s\" is negative");
    bad("\"1500.5ms\"", "is not a whole number of milliseconds");
    bad("\"1w\"", "\"1w\" is not a duration: \"w\" is not a unit; write a number and a unit");
    let tick = with_tick("10ms", &sink("max_lifetime = \"5ms\""));
    rejected(&tick, key, 7, "allowed 0s (unlimited) or 10ms to 30days (the minimum is daemon.tick)");
    assert_eq!(first(&with_tick("10ms", &sink("max_lifetime = \"0s\""))).max_lifetime, None);
}

#[test]
fn half_close_timeout() {
    let get = |v: &str| first(&relay(&format!("half_close_timeout = \"{v}\""))).half_close_timeout;
    assert_eq!(get("10s"), Some(secs(10)));
    assert_eq!(get("1ms"), Some(ms(1)));
    assert_eq!(get("30days"), Some(MAX_TIMEOUT));
    assert_eq!(get("0s"), None);

    let key = "listener[0].half_close_timeout";
    let bad =
        |v: &str, fragment: &str| rejected(&relay(&format!("half_close_timeout = {v}")), key, 6, fragment);
    let range = "\"31days\" is out of range: allowed 0s (off) or 1ms to 30days (the minimum is daemon.tick)";
    assert_eq!(bad("\"31days\"", range).message, range);
    bad("30", "expected a duration string with a unit");
    bad("\"30\"", "\"30\" has no unit: write \"30s\" or \"30ms\"");
    let tick = with_tick("1s", &relay("half_close_timeout = \"500ms\""));
    rejected(&tick, key, 8, "allowed 0s (off) or 1s to 30days (the minimum is daemon.tick)");
    // A sink closes at the client's FIN: the key would have no effect there, whatever its value.
    for v in ["10s", "0s"] {
        let text = sink(&format!("half_close_timeout = \"{v}\""));
        rejected(&text, key, 5, "only applies to a relay listener (one with an `upstream`)");
    }
}

#[test]
fn max_connections_per_ip() {
    let with = |v: &str| relay(&format!("max_connections_per_ip = {v}"));
    let get = |v: &str| first(&with(v)).max_connections_per_ip;
    assert_eq!((get("0"), get("1"), get("1_000_000")), (0, 1, 1_000_000));
    // More than max_connections is allowed, with or without an allow list: the smaller limit wins.
    let more = "max_connections = 5\nmax_connections_per_ip = 10\nallow = [\"10.0.0.0/8\"]";
    let l = first(&relay(more));
    assert_eq!((l.max_connections, l.max_connections_per_ip), (5, 10));
    assert_eq!(first(&sink("max_connections_per_ip = 3")).max_connections_per_ip, 3);

    let key = "listener[0].max_connections_per_ip";
    for n in ["-1", "1000001", "9223372036854775807"] {
        rejected(&with(n), key, 6, &format!("{n} is out of range: allowed 0 to 1000000"));
    }
    rejected(&with("\"10\""), key, 6, "expected an integer, got string \"10\"");
    rejected(&with("1.5"), key, 6, "expected an integer, got float 1.5");
    rejected(&with("[1]"), key, 6, "expected an integer, got array");
}

#[test]
fn allow_and_deny_take_networks_and_bare_addresses() {
    let list = "[\"10.0.0.0/8\", \"192.168.1.0/24\", \"127.0.0.1\", \"0.0.0.0/0\", \
                \"2001:db8::/32\", \"::1/128\", \"::1\", \"fe80::/10\", \"::/0\", \"::ffff:10.0.0.0/104\"]";
    let expected: Vec<IpNet> = [
        "10.0.0.0/8",
        "192.168.1.0/24",
        "127.0.0.1/32",
        "0.0.0.0/0",
        "2001:db8::/32",
        "::1/128",
        "::1/128",
        "fe80::/10",
        "::/0",
        "::ffff:10.0.0.0/104",
    ]
    .map(net)
    .into();
    let l = first(&relay(&format!("allow = {list}\ndeny = {list}")));
    assert_eq!((&l.allow, &l.deny), (&expected, &expected));
    assert_eq!(l.allow[2], IpNet::from(IpAddr::from(Ipv4Addr::LOCALHOST)));
    assert_eq!(l.allow[6], IpNet::from(IpAddr::from(Ipv6Addr::LOCALHOST)));
    let l = first(&sink("allow = []\ndeny = [\"10.1.2.3\"]"));
    assert_eq!((l.allow, l.deny), (vec![], vec![net("10.1.2.3/32")]));
    // An array over several lines, with comments and a trailing comma.
    let multi = sink("allow = [\n  \"10.0.0.0/8\",  # office\n  \"::1\",\n]");
    assert_eq!(first(&multi).allow, [net("10.0.0.0/8"), net("::1/128")]);
}

#[test]
fn allow_and_deny_must_be_arrays_of_strings() {
    let bad = |key: &str, v: &str, fragment: &str| {
        let text = sink(&format!("{key} = {v}"));
        rejected(&text, &format!("listener[0].{key}"), 5, fragment)
    };
    let msg = "expected an array of address or network strings, such as [\"10.0.0.0/8\", \"::1\"], \
               got string \"10.0.0.0/8\"; write [\"10.0.0.0/8\"]";
    assert_eq!(bad("allow", "\"10.0.0.0/8\"", msg).message, msg);
    bad(
        "deny",
        "5",
        "expected an array of address or network strings, such as [\"10.0.0.0/8\", \"::1\"], got integer 5",
    );
    bad("allow", "{ net = \"10.0.0.0/8\" }", "got table");
    bad("deny", "true", "got boolean true");

    let element = "expected an address or network string such as \"10.0.0.0/8\", got";
    let e = rejected(&sink("allow = [\"10.0.0.0/8\", 5]"), "listener[0].allow[1]", 5, element);
    assert_eq!((e.column, e.message.ends_with("got integer 5")), (Some(24), true), "{e}");
    let e = rejected(&sink("deny = [[\"10.0.0.0/8\"]]"), "listener[0].deny[0]", 5, element);
    assert_eq!((e.column, e.message.ends_with("got array")), (Some(9), true), "{e}");
    // An array of tables instead of an inline array: no span per element, but the key is right.
    let tables = format!("{}[[listener.allow]]\nnet = \"10.0.0.0/8\"\n", sink(""));
    let e = parse(&tables).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("listener[0].allow[0]"), "{e}");
    assert!(e.message.ends_with("got table") && e.line.is_some(), "{e}");
}

#[test]
fn a_bad_network_is_named_by_its_index_and_position() {
    let text = sink("allow = [\n  \"10.0.0.0/8\",   # office\n  \"10.0.0.0/33\",\n]");
    let e = rejected(&text, "listener[0].allow[1]", 7, "\"10.0.0.0/33\" is not an address or network");
    let shown = format!(
        "{PATH}:7:3: listener[0].allow[1]: \"10.0.0.0/33\" is not an address or network: \
         the prefix length of an IPv4 network is 0 to 32, got \"33\""
    );
    assert_eq!(e.to_string(), shown);
    let e = rejected(&sink("deny = [\"::1\", \"10.0.0.1/8\"]"), "listener[0].deny[1]", 5, "host bits");
    assert_eq!(e.column, Some(16), "{e}");
}

#[test]
fn network_errors() {
    let bad = |text: &str, fragment: &str| {
        let line = format!("allow = [\"127.0.0.1\", {text:?}]");
        let e = rejected(&sink(&line), "listener[0].allow[1]", 5, fragment);
        assert!(e.message.starts_with(&format!("{text:?} ")), "{e}");
        e.message
    };
    let syntax = "is not an address or network: expected an IPv4 or IPv6 address with an optional \
                  /prefix length, such as \"10.0.0.0/8\", \"2001:db8::/32\" or \"::1\" (no host names)";
    for text in
        ["localhost", "", "10.0.0", "10.0.0.0.0", "010.0.0.0/8", " 10.0.0.0/8", "10.0.0.0 /8", "fe80::1%eth0"]
    {
        bad(text, syntax);
    }
    let v4 = "is not an address or network: the prefix length of an IPv4 network is 0 to 32, got";
    for (text, len) in
        [("10.0.0.0/33", "33"), ("10.0.0.0/", ""), ("10.0.0.0/+8", "+8"), ("10.0.0.0/8/8", "8/8")]
    {
        bad(text, &format!("{v4} {len:?}"));
    }
    bad("10.0.0.0/256", "got \"256\"");
    bad(
        "::/129",
        "is not an address or network: the prefix length of an IPv6 network is 0 to 128, got \"129\"",
    );
    let msg = "\"10.0.0.1/8\" has host bits set after the /8: did you mean \"10.0.0.0/8\"? \
               (a single address is written \"10.0.0.1\")";
    assert_eq!(bad("10.0.0.1/8", "host bits"), msg);
    bad("2001:db8::1/32", "did you mean \"2001:db8::/32\"? (a single address is written \"2001:db8::1\")");
    bad("192.168.1.1/0", "did you mean \"0.0.0.0/0\"?");
}

#[test]
fn tcp_keepalive() {
    let with = |v: &str| sink(&format!("tcp_keepalive = {v}"));
    let get = |v: &str| first(&with(&format!("\"{v}\""))).tcp_keepalive;
    assert_eq!((get("60s"), get("1s"), get("2h")), (Some(secs(60)), Some(secs(1)), Some(2 * HOUR)));
    assert_eq!((get("1m 30s"), get("2000ms")), (Some(secs(90)), Some(secs(2))));
    assert_eq!(get("0s"), None);
    assert_eq!(first(&relay("tcp_keepalive = \"10s\"")).tcp_keepalive, Some(secs(10)));
    // Not bounded by the tick: the kernel times keepalive.
    assert_eq!(first(&with_tick("1s", &with("\"1s\""))).tcp_keepalive, Some(secs(1)));

    let key = "listener[0].tcp_keepalive";
    let msg = "\"1500ms\" is not a whole number of seconds, which is what TCP keepalive counts: \
               write \"1s\" or \"2s\"";
    assert_eq!(rejected(&with("\"1500ms\""), key, 5, msg).message, msg);
    rejected(&with("\"1m 0.5s\""), key, 5, "write \"60s\" or \"61s\"");
    rejected(&with("\"500ms\""), key, 5, "\"500ms\" is out of range: allowed 0s (off) or 1s to 2h");
    rejected(&with("\"3h\""), key, 5, "\"3h\" is out of range: allowed 0s (off) or 1s to 2h");
    rejected(
        &with("60"),
        key,
        5,
        "expected a duration string with a unit, such as \"30s\" or \"250ms\", got integer 60",
    );
    rejected(&with("\"60\""), key, 5, "\"60\" has no unit");
}

#[test]
fn summary_mentions_what_is_set() {
    let all = "max_lifetime = \"1h\"\nmax_connections_per_ip = 10\nallow = [\"10.0.0.0/8\", \"::1\"]\n\
               deny = [\"10.9.0.0/16\"]\ntcp_keepalive = \"60s\"";
    let line = "listener a: 127.0.0.1:7000 -> 127.0.0.1:6379 relay, protocol tcp, idle_timeout 1s, connect_timeout 5s, \
                max_connections 10000, max_lifetime 1h, half_close_timeout 30s, max_connections_per_ip 10, \
                allow 2 networks, deny 1 network, tcp_keepalive 1m";
    assert_eq!(first(&relay(all)).summary(), line);
    let line = "listener a: 127.0.0.1:7000 -> 127.0.0.1:6379 relay, protocol tcp, idle_timeout 1s, connect_timeout 5s, \
                max_connections 10000, half_close_timeout off";
    assert_eq!(first(&relay("half_close_timeout = \"0s\"")).summary(), line);
    // A sink has no half-close: it closes at the client's FIN.
    let text = sink("max_lifetime = \"90s\"\nallow = [\"127.0.0.1\"]\ndeny = []");
    let line = "listener a: 127.0.0.1:7000 sink, idle_timeout 1s, max_connections 10000, \
                max_lifetime 1m 30s, allow 1 network";
    assert_eq!(ok(&text).summary()[1..], [line]);
}

/// A valid listener, and the keys that add protections to it: most documents of this shape get
/// as far as validating those keys.
const PROTECTED_LISTENER: &str =
    "[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:7000\"\nidle_timeout = \"5s\"";
const PROTECTION_KEYS: &str =
    "upstream max_lifetime half_close_timeout max_connections_per_ip allow deny tcp_keepalive";
proptest! {
    #[test]
    fn never_panics_on_plausible_protections(doc in table(PROTECTED_LISTENER, PROTECTION_KEYS)) {
        check_outcome(&doc);
    }

    #[test]
    fn network_accepts_exactly_network_addresses(text in network_text()) {
        match network(&text) {
            Ok(net) => {
                prop_assert_eq!(net.trunc(), net);
                let bare = text.parse::<IpAddr>().map(IpNet::from).ok();
                prop_assert_eq!(Some(net), bare.or_else(|| text.parse::<IpNet>().ok()));
            }
            Err(msg) => {
                let (addr, len) = text.split_once('/').expect("a bare address is a network");
                let addr: IpAddr = addr.parse().unwrap();
                let max = if addr.is_ipv4() { 32 } else { 128 };
                let len: u8 = len.parse().unwrap();
                prop_assert!(len > max || IpNet::new(addr, len).unwrap().trunc().addr() != addr, "{}", msg);
            }
        }
    }

    #[test]
    fn network_never_panics(text in "[0-9a-f:./%+ ]{0,45}") {
        if let Ok(net) = network(&text) {
            prop_assert_eq!(net.trunc(), net);
        }
    }

    #[test]
    fn protections_round_trip(
        lifetime in 0u64..=3_600_000,
        keepalive in 0u64..=7200,
        per_ip in 0usize..=1_000_000,
        nets in prop::collection::vec(network_text(), 0..4),
    ) {
        let nets: Vec<String> = nets.into_iter().filter(|n| network(n).is_ok()).collect();
        let text = relay(&format!(
            "max_lifetime = \"{lifetime}ms\"\ntcp_keepalive = \"{keepalive}s\"\n\
             max_connections_per_ip = {per_ip}\nallow = {nets:?}\ndeny = {nets:?}"
        ));
        let l = first(&text);
        prop_assert_eq!(l.max_lifetime, (lifetime > 0).then(|| ms(lifetime)));
        prop_assert_eq!(l.tcp_keepalive, (keepalive > 0).then(|| secs(keepalive)));
        prop_assert_eq!(l.max_connections_per_ip, per_ip);
        let expected: Vec<IpNet> = nets.iter().map(|n| network(n).unwrap()).collect();
        prop_assert_eq!(&l.allow, &expected);
        prop_assert_eq!(&l.deny, &expected);
    }
}
