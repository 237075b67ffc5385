//! The metrics endpoint seen from outside: one HTTP request answered, the families of a scrape,
//! a scrape of a daemon that has relayed something, the families the renderer can write (its
//! own list, `FAMILIES` in `src/metrics/render.rs`), and `promtool`, the Prometheus tool that
//! checks expositions and rules.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::Duration;

use super::{connect, free_addr, relay_listener, require_program, sink_listener, wait_for, Daemon, Upstream};

/// Where Debian's `prometheus` package installs `promtool`.
pub const PROMTOOL: &str = "/usr/bin/promtool";

/// `promtool`'s path if it is installed; otherwise the test is skipped, or failed in CI.
pub fn promtool() -> Option<&'static str> {
    require_program(PROMTOOL, "apt-get install prometheus").then_some(PROMTOOL)
}

/// `GET path` on the endpoint at `addr`: the response head (status line and headers) and body.
pub fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = connect(addr);
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_string(), body.to_string())
}

/// The families of an exposition, from its `# TYPE` lines.
pub fn families(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
        .map(str::to_owned)
        .collect()
}

/// Every family the renderer can write: the list `FAMILIES` in `src/metrics/render.rs`, which
/// a unit test holds the renderer to (and which a debug build asserts on every family written).
pub fn exported_families() -> BTreeSet<String> {
    let source = include_str!("../../../src/metrics/render.rs");
    let start = source.find("pub const FAMILIES").expect("FAMILIES in src/metrics/render.rs");
    let list = &source[start..];
    let list = &list[list.find('=').unwrap()..list.find("];").expect("the end of FAMILIES")];
    let names: BTreeSet<String> = list.split('"').skip(1).step_by(2).map(str::to_owned).collect();
    assert!(names.len() > 10, "FAMILIES read from render.rs: {names:?}");
    names
}

/// The label values of `label` in the samples of `family` in `exposition`.
pub fn label_values(exposition: &str, family: &str, label: &str) -> BTreeSet<String> {
    let needle = format!("{label}=\"");
    exposition
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter_map(|l| {
            let rest = &l[l.find(&needle)? + needle.len()..];
            Some(rest[..rest.find('"')?].to_owned())
        })
        .collect()
}

/// A scrape of a daemon that has relayed and closed a connection, refused one and failed to
/// reach an upstream once, so that every counter a scrape can show has moved.
pub fn busy_scrape() -> String {
    let upstream = Upstream::echo();
    let (relay, limited, dead, metrics) = (free_addr(), free_addr(), free_addr(), free_addr());
    let config = relay_listener("relay", relay, upstream.addr, "30s")
        + &sink_listener("limited", limited, "30s")
        + "max_connections = 1\n\n"
        + &relay_listener("dead", dead, free_addr(), "30s")
        + &format!("[metrics]\nlisten = \"{metrics}\"\n");
    let daemon = Daemon::start(&config);
    let mut c = connect(relay);
    c.write_all(b"hello").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"hello");
    let _held = connect(limited);
    let mut refused = connect(limited);
    let mut dead_client = connect(dead);
    for c in [&mut refused, &mut dead_client] {
        let _ = c.read(&mut [0u8; 1]); // closed by the daemon: EOF or a reset
    }
    let settled = wait_for(Duration::from_secs(5), || (daemon.closes().len() >= 2).then_some(()));
    assert!(settled.is_some(), "{}", daemon.log());
    let (head, body) = http_get(metrics, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body
}
