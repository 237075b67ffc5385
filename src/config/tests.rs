//! Tests of the config pipeline: the sample file, defaults and the errors of validation
//! (properties are in `property_tests.rs`). The listener keys that guard against abuse are tested in `listener/tests.rs`, and
//! positions, syntax errors and reading the file in `locate.rs`, with the helpers from here.

use super::duration::MAX_TIMEOUT;
use super::*;

pub(super) const SAMPLE: &str = include_str!("../../etc/idlereaper.toml");
pub(super) const PATH: &str = "/etc/idlereaper-test.toml";

/// One valid listener, on lines 1 to 4.
pub(super) const LISTENER: &str =
    "[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:7000\"\nidle_timeout = \"1s\"\n";

pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new(PATH))
}

pub(super) fn ok(text: &str) -> Config {
    parse(text).unwrap_or_else(|e| panic!("rejected: {e}\n---\n{text}"))
}

/// Asserts that `text` is rejected for `key` on `line`, with `fragment` in the message, and that
/// the error is displayed as `PATH:line:col: key: message`.
pub(super) fn rejected(text: &str, key: &str, line: usize, fragment: &str) -> ConfigError {
    let e = parse(text).expect_err(text);
    let shown = e.to_string();
    assert_eq!((e.key.as_deref(), e.line), (Some(key), Some(line)), "{shown}");
    let column = e.column.expect("a column with the line");
    assert!(shown.starts_with(&format!("{PATH}:{line}:{column}: {key}: ")), "{shown}");
    assert!(e.message.contains(fragment), "{fragment:?} not in: {shown}");
    e
}

/// `[daemon]` on line 1, `line` on line 2, then a valid listener.
pub(super) fn daemon(line: &str) -> String {
    format!("[daemon]\n{line}\n{LISTENER}")
}

/// A listener with name and listen on lines 2 and 3, then `lines` from line 4 on.
fn listener(lines: &str) -> String {
    format!("[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:7000\"\n{lines}\n")
}

/// A valid listener `name` on `listen` (lines 1 to 4), then `more` from line 5 on.
pub(super) fn named(name: &str, listen: &str, more: &str) -> String {
    format!("[[listener]]\nname = \"{name}\"\nlisten = \"{listen}\"\nidle_timeout = \"1s\"\n{more}")
}

/// The 1-based number of the line of `text` that is `line`.
fn line_of(text: &str, line: &str) -> usize {
    text.lines().position(|l| l == line).unwrap_or_else(|| panic!("no line {line:?}")) + 1
}

pub(super) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn sample_parses_to_what_it_says() {
    let config = ok(SAMPLE);
    let listener = |name: &str, listen: &str, upstream: Option<&str>, idle| ListenerConfig {
        name: name.into(),
        listen: Listen::Tcp(listen.parse().unwrap()),
        socket_mode: 0o660,
        listen_at: Position { line: line_of(SAMPLE, &format!("listen = \"{listen}\"")), column: 10 },
        upstream: upstream.map(|u| Upstream::Ip(u.parse().unwrap())).into_iter().collect(),
        upstream_at: upstream
            .map(|u| Position { line: line_of(SAMPLE, &format!("upstream = \"{u}\"")), column: 12 })
            .into_iter()
            .collect(),
        balance: Balance::First,
        idle_timeout: Duration::from_secs(idle),
        connect_timeout: Duration::from_secs(5),
        upstream_backoff: Some(Backoff::default()),
        max_connections: 10_000,
        max_lifetime: None,
        half_close_timeout: Some(Duration::from_secs(30)),
        max_connections_per_ip: 0,
        allow: Vec::new(),
        deny: Vec::new(),
        tcp_keepalive: None,
        proxy_protocol: None,
        tcp_user_timeout: None,
        idle_close: IdleClose::Fin,
        idle_notice: None,
        protocol: Protocol::Tcp,
        idle_in_transaction_timeout: Duration::from_secs(idle),
        subscriber_idle_timeout: None,
    };
    let expected = Config {
        path: PathBuf::from(PATH),
        control: None,
        text: SAMPLE.into(),
        daemon: DaemonConfig {
            pidfile: PathBuf::from("/run/idlereaper/idlereaper.pid"),
            log: LogTarget::Syslog,
            log_at: Some(Position { line: line_of(SAMPLE, "log = \"syslog\""), column: 7 }),
            log_level: log::LevelFilter::Info,
            log_format: LogFormat::Text,
            tick: ms(1),
            shutdown_timeout: Duration::from_secs(10),
            user: None,
            group: None,
            workers: 1,
            resolve_interval: Some(Duration::from_secs(30)),
        },
        listeners: vec![
            listener("example-relay", "127.0.0.1:16380", Some("127.0.0.1:16379"), 300),
            listener("tarpit", "127.0.0.1:16390", None, 30),
        ],
        metrics: None,
    };
    assert_eq!(config, expected);
    let summary = [
        "daemon: pidfile /run/idlereaper/idlereaper.pid, log syslog (info, text), tick 1ms, shutdown_timeout 10s, \
         workers 1, resolve_interval 30s",
        "listener example-relay: 127.0.0.1:16380 -> 127.0.0.1:16379 relay, protocol tcp, idle_timeout 5m, \
         connect_timeout 5s, max_connections 10000, half_close_timeout 30s",
        "listener tarpit: 127.0.0.1:16390 sink, idle_timeout 30s, max_connections 10000",
    ];
    assert_eq!(config.summary(), summary);
}

#[test]
fn sample_shows_the_defaults_of_its_commented_keys() {
    // Uncommenting these lines of the relay listener changes nothing: each shows its default.
    let keys =
        "balance max_lifetime half_close_timeout max_connections_per_ip allow deny tcp_keepalive proxy_protocol \
         tcp_user_timeout idle_close idle_notice";
    let mut uncommented = SAMPLE.to_owned();
    for key in keys.split_whitespace() {
        let line = format!("\n#{key} = ");
        assert_eq!(SAMPLE.matches(&line).count(), 1, "{key}");
        uncommented = uncommented.replace(&line, &line.replace('#', ""));
    }
    let (mut got, expected) = (ok(&uncommented), ok(SAMPLE));
    got.text = expected.text.clone(); // the texts differ by the comment signs, and only by them
    assert_eq!(got, expected);
}

#[test]
fn packaged_variant_with_user_group_and_control_parses() {
    // What the Debian package does to the sample: uncomment exactly these four lines.
    let lines = [
        "\n#user = \"_idlereaper\"\n",
        "\n#group = \"_idlereaper\"\n",
        "\n#[control]\n",
        "\n#socket = \"/run/idlereaper/control.sock\"\n",
    ];
    let mut packaged = SAMPLE.to_owned();
    for line in lines {
        assert_eq!(SAMPLE.matches(line).count(), 1, "{line}");
        packaged = packaged.replace(line, &line.replacen('#', "", 1));
    }
    let config = ok(&packaged);
    assert_eq!(config.daemon.user.as_deref(), Some("_idlereaper"));
    assert_eq!(config.daemon.group.as_deref(), Some("_idlereaper"));
    let control = ControlConfig { socket: "/run/idlereaper/control.sock".into(), mode: 0o660 };
    assert_eq!(config.control, Some(control));
}

#[test]
fn a_control_table_needs_an_absolute_socket_of_its_own_and_an_octal_mode() {
    let with = |table: &str| format!("{LISTENER}[control]\n{table}\n");
    let config = ok(&with("socket = \"/run/x/control.sock\"\nmode = \"0600\""));
    assert_eq!(config.control, Some(ControlConfig { socket: "/run/x/control.sock".into(), mode: 0o600 }));
    rejected(&with("mode = \"0600\""), "control.socket", 5, "required");
    rejected(&with("socket = \"control.sock\""), "control.socket", 6, "relative path");
    rejected(&with("socket = \"/run/c.sock\"\nmode = \"rw\""), "control.mode", 7, "octal");
    rejected(&with("socket = \"/run/c.sock\"\nowner = \"x\""), "control.owner", 7, "unknown field");
    let clash = "[[listener]]\nname = \"u\"\nlisten = \"unix:/run/c.sock\"\nidle_timeout = \"1s\"\n[control]\nsocket = \"/run/c.sock\"\n";
    rejected(clash, "control.socket", 6, "is the socket of listener[0]");
}

#[test]
fn sample_metrics_block_parses_when_uncommented() {
    let (table, listen) = ("\n#[metrics]\n", "\n#listen = \"127.0.0.1:9109\"\n");
    assert_eq!((SAMPLE.matches(table).count(), SAMPLE.matches(listen).count()), (1, 1));
    let on = SAMPLE.replace(table, &table.replace('#', "")).replace(listen, &listen.replace('#', ""));
    assert_eq!(ok(&on).metrics, Some(MetricsConfig { listen: "127.0.0.1:9109".parse().unwrap() }));
}

#[test]
fn listen_positions_are_kept_for_later_errors() {
    let config = ok(&(named("a", "127.0.0.1:7000", "") + &named("b", "[::1]:7000", "")));
    let at: Vec<_> = config.listeners.iter().map(|l| l.listen_at).collect();
    assert_eq!(at, [Position { line: 3, column: 10 }, Position { line: 7, column: 10 }]);
    let e = config.error_at("listener[1].listen", Some(at[1]), "cannot listen");
    assert_eq!(e.to_string(), format!("{PATH}:7:10: listener[1].listen: cannot listen"));
}

#[test]
fn defaults() {
    let config = ok(LISTENER);
    let d = &config.daemon;
    assert_eq!(d.pidfile, PathBuf::from("/run/idlereaper/idlereaper.pid"));
    assert_eq!((&d.log, d.log_level), (&LogTarget::Syslog, log::LevelFilter::Info));
    assert_eq!((d.tick, d.shutdown_timeout), (ms(1), Duration::from_secs(10)));
    assert_eq!((d.user.as_deref(), d.group.as_deref()), (None, None));
    let l = &config.listeners[0];
    assert_eq!((l.upstream.is_empty(), l.idle_timeout), (true, Duration::from_secs(1)));
    assert_eq!((l.connect_timeout, l.max_connections), (Duration::from_secs(5), 10_000));
    assert_eq!((l.max_lifetime, l.half_close_timeout), (None, Some(Duration::from_secs(30))));
    assert_eq!((l.max_connections_per_ip, l.tcp_keepalive), (0, None));
    assert_eq!((l.allow.len(), l.deny.len()), (0, 0));
    assert_eq!(ok(&format!("[daemon]\n{LISTENER}")).daemon, *d);
}

#[test]
fn proxy_protocol_is_off_v1_or_v2_on_a_relay() {
    use crate::proxy_protocol::Version;
    let relay = |value: &str| {
        named("a", "127.0.0.1:7000", &format!("upstream = \"127.0.0.1:7001\"\nproxy_protocol = {value}\n"))
    };
    let version = |value: &str| ok(&relay(value)).listeners[0].proxy_protocol;
    assert_eq!(
        ok(&named("a", "127.0.0.1:7000", "upstream = \"127.0.0.1:7001\"\n")).listeners[0].proxy_protocol,
        None
    );
    assert_eq!(version("\"off\""), None);
    assert_eq!(version("\"v1\""), Some(Version::V1));
    assert_eq!(version("\"v2\""), Some(Version::V2));
    rejected(&relay("\"v3\""), "listener[0].proxy_protocol", 6, "expected \"off\", \"v1\" or \"v2\"");
    rejected(&relay("2"), "listener[0].proxy_protocol", 6, "\"off\", \"v1\" or \"v2\"");
    let sink = listener("idle_timeout = \"1s\"\nproxy_protocol = \"v1\"");
    rejected(&sink, "listener[0].proxy_protocol", 5, "only applies to a relay listener");
}

#[test]
fn required_listener_keys() {
    let text = format!("{LISTENER}\n[[listener]]\nname = \"b\"\nlisten = \"127.0.0.1:7001\"\n");
    rejected(&text, "listener[1].idle_timeout", 6, "required");
    let text = "[[listener]]\nlisten = \"127.0.0.1:7000\"\nidle_timeout = \"1s\"\n";
    rejected(text, "listener[0].name", 1, "required");
    let text = "[[listener]]\nname = \"a\"\nidle_timeout = \"1s\"\n";
    rejected(text, "listener[0].listen", 1, "required");
}

#[test]
fn at_least_one_listener() {
    // An empty file: at its start.
    for text in ["", "\n  \n", "# only\n  # comments\n"] {
        let e = rejected(text, "listener", 1, "the file is empty (blank lines and comments at most)");
        assert_eq!(e.column, Some(1));
        assert!(e.message.ends_with("at least one [[listener]] table, with name, listen and idle_timeout"));
    }
    // Otherwise at its end, where one would be added.
    for (text, line) in [("[daemon]\n", 2), ("listener = []\n", 2), ("[daemon]\ntick = \"1ms\"", 2)] {
        rejected(text, "listener", line, "no listener defined: add at least one [[listener]] table");
    }
    let single = "[listener]\nname = \"a\"\n";
    rejected(single, "listener", 1, "expected a sequence; write each listener as a [[listener]] table");
}

#[test]
fn duplicates_are_reported_at_the_second_occurrence() {
    let text = format!("{LISTENER}{}", named("a", "127.0.0.1:7001", ""));
    let msg = "duplicate name \"a\": already used by listener[0] at line 2";
    rejected(&text, "listener[1].name", 6, msg);
    let text = format!("{LISTENER}{}", named("b", "127.0.0.1:7000", ""));
    let msg = "duplicate address 127.0.0.1:7000: already used by listener[0] (\"a\") at line 3";
    rejected(&text, "listener[1].listen", 7, msg);
}

#[test]
fn relay_loops_are_errors() {
    let key = "listener[0].upstream";
    let own = named("a", "127.0.0.1:7000", "upstream = \"127.0.0.1:7000\"\n");
    rejected(&own, key, 5, "127.0.0.1:7000 is this listener's own address; connections would loop");
    let wildcard = named("a", "0.0.0.0:7000", "upstream = \"127.0.0.1:7000\"\n");
    let msg = "127.0.0.1:7000 reaches this listener's own address 0.0.0.0:7000; connections would loop";
    rejected(&wildcard, key, 5, msg);
    let a = named("a", "127.0.0.1:7000", "upstream = \"127.0.0.1:7001\"\n");
    let b = named("b", "127.0.0.1:7001", "upstream = \"127.0.0.1:7000\"\n");
    let msg = "127.0.0.1:7001 leads back to this listener: a -> b -> a; connections would loop";
    rejected(&format!("{a}{b}"), key, 5, msg);
    // A chain that ends in a sink is fine, and so is another port or the other address family.
    let sink = named("b", "127.0.0.1:7001", "");
    assert_eq!(ok(&format!("{a}{sink}")).listeners.len(), 2);
    let to_7000 = "upstream = \"127.0.0.1:7000\"\n";
    ok(&named("a", "0.0.0.0:7001", to_7000));
    ok(&named("a", "[::]:7000", to_7000));
}

#[test]
fn addresses() {
    let v6 = ok(&named("a", "[::1]:7000", "upstream = \"[2001:db8::1]:6379\"\n"));
    let l = &v6.listeners[0];
    assert_eq!(l.listen, Listen::Tcp(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 7000))));
    assert_eq!(l.upstream, vec![Upstream::Ip("[2001:db8::1]:6379".parse().unwrap())]);
    let summary = "listener a: [::1]:7000 -> [2001:db8::1]:6379 relay, protocol tcp, idle_timeout 1s, \
                   connect_timeout 5s, max_connections 10000, half_close_timeout 30s";
    assert_eq!(v6.summary()[1..], [summary]);
    let listen = |addr: &str, fragment: &str| {
        rejected(&named("a", addr, ""), "listener[0].listen", 3, fragment);
    };
    listen("localhost:7000", "\"localhost:7000\" is not an address to listen on: expected \"IP:port\"");
    listen("127.0.0.1", "\"127.0.0.1\" is not an address to listen on");
    listen("::1:7000", "\"[IPv6]:port\"");
    listen("127.0.0.1:0", "\"127.0.0.1:0\" port 0 is not allowed");
    listen("127.0.0.1:65536", "\"127.0.0.1:65536\" is not an address to listen on");
    listen("unix:run/a.sock", "relative path");
    ok(&named("a", "0.0.0.0:7000", ""));
    let upstream = |addr: &str, fragment: &str| {
        let text = named("a", "127.0.0.1:7000", &format!("upstream = \"{addr}\"\n"));
        rejected(&text, "listener[0].upstream", 5, fragment);
    };
    upstream("127.0.0.1:0", "port 0");
    upstream("0.0.0.0:80", "\"0.0.0.0:80\" is not an address to connect to");
    upstream("[::]:80", "not an address to connect to");
}

#[test]
fn names() {
    let with = |name: &str| named(name, "127.0.0.1:7000", "");
    for good in ["Redis_6.2-main", &"n".repeat(64)] {
        assert_eq!(ok(&with(good)).listeners[0].name, good);
    }
    let msg = "is not a valid name: use 1 to 64 of A-Z a-z 0-9 _.-";
    for bad in ["", "my redis", "a=b", "ü", &"n".repeat(65)] {
        rejected(&with(bad), "listener[0].name", 2, msg);
    }
}

#[test]
fn max_connections() {
    let with = |n: &str| named("a", "127.0.0.1:7000", &format!("max_connections = {n}\n"));
    assert_eq!(ok(&with("1")).listeners[0].max_connections, 1);
    assert_eq!(ok(&with("1_000_000")).listeners[0].max_connections, 1_000_000);
    let key = "listener[0].max_connections";
    for n in ["0", "-1", "1000001", "9223372036854775807"] {
        rejected(&with(n), key, 5, &format!("{n} is out of range: allowed 1 to 1000000"));
    }
    rejected(&with("\"10\""), key, 5, "expected an integer, got string \"10\"");
    rejected(&with("1.5"), key, 5, "expected an integer, got float 1.5");
}

#[test]
fn duration_syntax() {
    let idle = |v: &str| listener(&format!("idle_timeout = {v}"));
    let get = |v: &str| ok(&idle(v)).listeners[0].idle_timeout;
    assert_eq!(get("\"250ms\""), ms(250));
    assert_eq!(get("\"1h 30m\""), Duration::from_secs(5400));
    assert_eq!(get("\"1.5s\""), ms(1500));
    assert_eq!(get("\"2000ms\""), ms(2000));
    assert_eq!(get("\"30days\""), MAX_TIMEOUT);
    let bad = |v: &str, fragment: &str| rejected(&idle(v), "listener[0].idle_timeout", 4, fragment);
    bad("5", "expected a duration string with a unit, such as \"30s\" or \"250ms\", got integer 5");
    bad("2.5", "got float 2.5");
    bad("true", "got boolean true");
    bad("[\"5s\"]", "got array");
    bad("{ s = 5 }", "got table");
    bad("\"5\"", "\"5\" has no unit: write \"5s\" or \"5ms\"");
    bad("\"0\"", "\"0\" has no unit");
    bad("\"-5s\"", "\"-5s\" is negative");
    let msg = "\"5x\" is not a duration: \"x\" is not a unit; write a number and a unit, such as \
               \"250ms\", \"30s\", \"5m\", \"1h\" or \"2d\" (\"1h 30m\" combines them; units: ms, s, m, h, \
               d, or sec, second, min, minute, hour, day, also with a final s); allowed: 1ms to 30days \
               (the minimum is daemon.tick)";
    assert_eq!(bad("\"5x\"", "\"5x\" is not a duration").message, msg);
    bad("\"2000us\"", "\"us\" is not a unit");
    bad("\"\"", "\"\" is not a duration");
    bad("\"1500.5ms\"", "\"1500.5ms\" is not a whole number of milliseconds");
    bad("\"0.5ms\"", "\"0.5ms\" is not a whole number of milliseconds");
    bad("\"99999999999999999999y\"", "is not a duration");
}

#[test]
fn duration_ranges() {
    let key = "listener[0].idle_timeout";
    let idle = |v: &str| listener(&format!("idle_timeout = \"{v}\""));
    let msg = "\"0s\" is out of range: allowed 1ms to 30days (the minimum is daemon.tick)";
    rejected(&idle("0s"), key, 4, msg);
    rejected(&idle("31days"), key, 4, "allowed 1ms to 30days");
    let tick_idle = |tick: &str, v: &str| format!("[daemon]\ntick = \"{tick}\"\n{}", idle(v));
    let msg = "allowed 10ms to 30days (the minimum is daemon.tick)";
    rejected(&tick_idle("10ms", "5ms"), key, 6, msg);
    assert_eq!(ok(&tick_idle("10ms", "10ms")).listeners[0].idle_timeout, ms(10));

    let tick = |v: &str| daemon(&format!("tick = \"{v}\""));
    rejected(&tick("0s"), "daemon.tick", 2, "\"0s\" is out of range: allowed 1ms to 1s");
    rejected(&tick("2s"), "daemon.tick", 2, "\"2s\" is out of range: allowed 1ms to 1s");
    assert_eq!(ok(&tick("1s")).daemon.tick, ms(1000));
    let shutdown = |v: &str| daemon(&format!("shutdown_timeout = \"{v}\""));
    rejected(&shutdown("61m"), "daemon.shutdown_timeout", 2, "allowed 0s to 1h");
    assert_eq!(ok(&shutdown("1h")).daemon.shutdown_timeout, HOUR);

    let key = "listener[0].connect_timeout";
    let relay = |v: &str| {
        named("a", "127.0.0.1:7000", &format!("upstream = \"127.0.0.1:6379\"\nconnect_timeout = \"{v}\"\n"))
    };
    assert_eq!(ok(&relay("250ms")).listeners[0].connect_timeout, ms(250));
    rejected(&relay("0s"), key, 6, "allowed 1ms to 1h");
    rejected(&relay("2h"), key, 6, "allowed 1ms to 1h");
    let sink = named("a", "127.0.0.1:7000", "connect_timeout = \"5s\"\n");
    rejected(&sink, key, 5, "only applies to a relay listener (one with an `upstream`)");
}
