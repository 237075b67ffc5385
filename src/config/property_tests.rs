//! Properties of the config pipeline: whatever the text (arbitrary, TOML-like, or a plausible
//! document built key by key), parsing returns instead of panicking, a config keeps the promises
//! of its docs, and an error names the file and a line that exists; valid listeners round-trip.

use std::net::IpAddr;

use super::tests::{ms, named, ok, parse, PATH};

use proptest::prelude::*;

/// The chance that a generated table has `key`: required keys usually, optional ones often, keys
/// of later versions and unknown keys rarely.
fn chance(key: &str) -> f64 {
    match key {
        "name" | "listen" | "idle_timeout" => 0.95,
        "upstream" => 0.5,
        "user" | "group" => 0.2,
        "workers" | "colour" => 0.03,
        "proxy_protocol" | "idle" => 0.01,
        _ => 0.3,
    }
}

const DAEMON_KEYS: &str = "pidfile log log_level log_format tick shutdown_timeout user group workers colour";
const LISTENER_KEYS: &str = "name listen idle_timeout upstream connect_timeout max_connections max_lifetime \
    half_close_timeout max_connections_per_ip allow deny tcp_keepalive proxy_protocol idle";
/// Other tables and top-level keys, `|`-separated; mostly none.
const EXTRAS: &str = "||||||||||||||||[metrics]\nlisten = \"127.0.0.1:9109\"|[metrics]\nlisten = \"127.0.0.1:9109\"|\
    [metrics]\nlisten = \"127.0.0.1:7000\"|[metrics]\nlisten = \"0.0.0.0:7001\"|[metrics]\n|[metrics]\nport = 1|\
    [other]\nx = 1|x = 1|listener = 5|daemon = \"x\"|[daemon.sub]\nq = 1|metrics = 5";

/// Good values for `key`, and bad ones near the edges that the validation checks; each a
/// `|`-separated list.
fn plausible(key: &str) -> (&'static str, &'static str) {
    const BAD_DURATIONS: &str =
        "\"0s\"|\"2h\"|\"31days\"|\"5\"|5|\"-1s\"|\"1500us\"|\"5x\"|\"\"|\"99999999999999999999y\"";
    const ADDRESSES: &str = "\"127.0.0.1:7000\"|\"127.0.0.1:7001\"|\"127.0.0.1:7002\"|\"[::1]:7000\"";
    const BAD_ADDRESSES: &str =
        "\"0.0.0.0:7000\"|\"127.0.0.1:0\"|\"localhost:7000\"|\"127.0.0.1\"|\"::1:7000\"";
    match key {
        "tick" => ("\"1ms\"|\"10ms\"|\"1s\"", BAD_DURATIONS),
        "shutdown_timeout" => ("\"0s\"|\"10s\"|\"1h\"", BAD_DURATIONS),
        "idle_timeout" | "connect_timeout" => ("\"5s\"|\"1ms\"|\"250ms\"", BAD_DURATIONS),
        "listen" | "upstream" => (ADDRESSES, BAD_ADDRESSES),
        "name" => ("\"a\"|\"b\"|\"c\"", "\"a b\"|\"\"|\"é\""),
        "max_connections" => ("1|10000", "0|-5|1000001|\"10\"|1.5"),
        "log" => ("\"syslog\"|\"stderr\"|\"/var/log/x.log\"", "\"x.log\""),
        "log_level" => ("\"info\"|\"trace\"", "\"INFO\"|\"off\""),
        "log_format" => ("\"text\"|\"json\"", "\"JSON\"|\"\"|1"),
        "pidfile" => ("\"/run/x.pid\"", "\"x.pid\""),
        "user" | "group" => ("\"_idlereaper\"", "\"\"|\"a b\""),
        "max_lifetime" | "half_close_timeout" => ("\"0s\"|\"1ms\"|\"30s\"|\"1h\"", BAD_DURATIONS),
        "tcp_keepalive" => ("\"0s\"|\"1s\"|\"60s\"|\"2h\"", "\"1500ms\"|\"500ms\"|\"3h\"|60|\"60\""),
        "max_connections_per_ip" => ("0|1|10|1000000", "-1|1000001|\"10\"|1.5"),
        "allow" | "deny" => (
            "[]|[\"10.0.0.0/8\"]|[\"127.0.0.1\", \"::1/128\"]|[\"2001:db8::/32\", \"0.0.0.0/0\"]",
            "\"10.0.0.0/8\"|[\"10.0.0.0/33\"]|[\"10.0.0.1/8\"]|[\"::/129\"]|[5]|[\"localhost\"]|[[\"::1\"]]|{}",
        ),
        _ => ("1|[]", "\"x\"|\"0s\""),
    }
}

/// Random values of the type `key` takes: durations with any number and unit, any integer,
/// arrays of random networks; for other keys, any TOML value.
fn random(key: &str) -> BoxedStrategy<String> {
    match key {
        "tick" | "shutdown_timeout" | "idle_timeout" | "connect_timeout" | "max_lifetime"
        | "half_close_timeout" | "tcp_keepalive" => (any::<u32>(), one_of("ns|us|ms|s|m|h|days|y|"))
            .prop_map(|(n, unit)| format!("\"{n}{unit}\""))
            .boxed(),
        "max_connections" | "max_connections_per_ip" | "workers" => {
            prop_oneof![any::<i64>(), -2i64..2_000_000].prop_map(|n| n.to_string()).boxed()
        }
        "allow" | "deny" => {
            prop::collection::vec(network_text(), 0..4).prop_map(|nets| format!("{nets:?}")).boxed()
        }
        _ => toml_value().boxed(),
    }
}

/// A network as text: an address with maybe a prefix length; out of range or with host bits
/// set about half of the time.
pub(super) fn network_text() -> impl Strategy<Value = String> {
    let v4 = (any::<[u8; 4]>(), 0u8..=34).prop_map(|(a, len)| (IpAddr::from(a), len));
    let v6 = (any::<[u16; 8]>(), 0u8..=130).prop_map(|(a, len)| (IpAddr::from(a), len));
    (prop_oneof![v4, v6], 0..4).prop_map(|((addr, len), form)| match (form, ipnet::IpNet::new(addr, len)) {
        (0, _) => addr.to_string(),
        (1, Ok(net)) => net.trunc().to_string(),
        _ => format!("{addr}/{len}"),
    })
}

fn one_of(list: &'static str) -> impl Strategy<Value = String> {
    prop::sample::select(list.split('|').collect::<Vec<_>>()).prop_map(str::to_owned)
}

/// Any TOML value: scalars of every type, and arrays and inline tables of them.
fn toml_value() -> impl Strategy<Value = String> {
    let scalar = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("1979-05-27T07:32:00Z".to_owned()),
        "[a-z0-9:.\\[\\] é-]{0,10}".prop_map(|s| format!("{s:?}")),
    ];
    scalar.prop_recursive(2, 8, 3, |inner| {
        let key = one_of("name|tick|x|\"a b\"");
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::btree_map(key, inner, 0..3).prop_map(|kv| {
                let kv: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", kv.join(", "))
            }),
        ]
    })
}

/// A table: its header, then some of `keys` in any order, mostly with good values, sometimes
/// with bad ones, and now and then with any value at all.
pub(super) fn table(header: &'static str, keys: &'static str) -> impl Strategy<Value = String> {
    let line = |key: &'static str| {
        let (good, bad) = plausible(key);
        let value = prop_oneof![12 => one_of(good), 3 => one_of(bad), 2 => random(key), 1 => toml_value()];
        prop::option::weighted(chance(key), value.prop_map(move |v| format!("{key} = {v}\n")))
    };
    let lines: Vec<_> = keys.split_whitespace().map(line).collect();
    let present = lines.prop_map(|lines| lines.into_iter().flatten().collect::<Vec<_>>());
    present.prop_shuffle().prop_map(move |lines| format!("{header}\n{}", lines.concat()))
}

/// A document of the config's shape: maybe `[daemon]`, zero to three `[[listener]]`s, and maybe
/// another table or key.
fn toml_document() -> impl Strategy<Value = String> {
    let daemon = prop::option::of(table("[daemon]", DAEMON_KEYS));
    let listeners = prop::collection::vec(table("[[listener]]", LISTENER_KEYS), 0..4);
    (one_of(EXTRAS), daemon, listeners).prop_map(|(extra, daemon, listeners)| {
        // A top-level key must come before the first table.
        let (top, end) = if extra.starts_with('[') { (String::new(), extra) } else { (extra, String::new()) };
        format!("{top}\n{}{}{end}\n", daemon.unwrap_or_default(), listeners.concat())
    })
}

/// Whatever the outcome, `parse` returns instead of panicking; a config keeps the promises of
/// its docs, and an error names the file and a line that exists.
pub(super) fn check_outcome(text: &str) {
    match parse(text) {
        Ok(config) => {
            let metrics = config.metrics.as_ref().map(|m| m.listen);
            assert_eq!(config.summary().len(), 1 + config.listeners.len() + usize::from(metrics.is_some()));
            assert!(
                config.listeners.iter().all(|l| l.listen.tcp() != metrics || metrics.is_none()),
                "{config:?}"
            );
            for l in &config.listeners {
                let timers = [l.max_lifetime, l.half_close_timeout, l.tcp_keepalive];
                assert!(timers.iter().flatten().all(|d| *d >= config.daemon.tick), "{l:?}");
                assert!(l.tcp_keepalive.is_none_or(|d| d.subsec_nanos() == 0), "{l:?}");
                assert!(l.allow.iter().chain(&l.deny).all(|n| n.trunc() == *n), "{l:?}");
            }
        }
        Err(e) => {
            assert!(e.to_string().starts_with(PATH), "{e}");
            if let Some(line) = e.line {
                assert!(line >= 1 && line <= text.matches('\n').count() + 1, "{e}");
            }
        }
    }
}

proptest! {
    #[test]
    fn never_panics_on_arbitrary_text(text in any::<String>()) {
        check_outcome(&text);
    }

    #[test]
    fn never_panics_on_toml_like_text(text in "[\\[\\]a-z_=\"' .,{}:0-9\n#-]{0,200}") {
        check_outcome(&text);
    }

    #[test]
    fn never_panics_on_plausible_documents(doc in toml_document()) {
        check_outcome(&doc);
    }

    #[test]
    fn valid_listeners_round_trip(idle in 1u64..=3_600_000, max in 1usize..=1_000_000, port in 1u16..) {
        let more = format!("max_connections = {max}\n");
        let text = named("p", &format!("127.0.0.1:{port}"), &more).replace("\"1s\"", &format!("\"{idle}ms\""));
        let config = ok(&text);
        prop_assert_eq!(config.listeners[0].idle_timeout, ms(idle));
        prop_assert_eq!(config.listeners[0].max_connections, max);
    }
}
