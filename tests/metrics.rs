//! The Prometheus endpoint: after a scripted workload, a scrape of `/metrics` shows exactly what
//! the workload did; other paths get 404; the daemon's own traffic is not disturbed.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use common::*;

fn scrape(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = connect(addr);
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_string(), body.to_string())
}

/// The value of the sample `name{labels}` in `body`.
fn sample(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in:\n{body}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_scrape_shows_what_a_scripted_workload_did() {
    let upstream = Upstream::echo();
    let (relay, limited, dead, metrics) = (free_addr(), free_addr(), free_addr(), free_addr());
    let closed_port = free_addr(); // nothing listens there
    let listeners = relay_listener("relay", relay, upstream.addr, "30s")
        + &relay_listener("limited", limited, upstream.addr, "300ms")
        + "max_connections = 1\n\n"
        + &relay_listener("dead", dead, closed_port, "30s")
        + &format!("[metrics]\nlisten = \"{metrics}\"\n");
    let daemon = Daemon::start(&listeners);

    // relay: three connections move 1000 bytes each way (echo), then close.
    for _ in 0..3 {
        let mut c = connect(relay);
        c.write_all(&[7u8; 1000]).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap();
        assert_eq!(back.len(), 1000);
    }
    // limited: one is held until its 300 ms idle timeout, a second is refused meanwhile.
    let mut held = connect(limited);
    let mut refused = connect(limited);
    wait_closed(&mut refused, Duration::from_secs(5));
    wait_closed(&mut held, Duration::from_secs(5));
    // dead: the upstream refuses.
    let mut c = connect(dead);
    wait_closed(&mut c, Duration::from_secs(5));
    // Wait until every close is logged, so that every counter is final.
    let settled = wait_for(Duration::from_secs(5), || (daemon.closes().len() >= 5).then_some(()));
    assert!(settled.is_some(), "{}", daemon.log());

    let (head, body) = scrape(metrics, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200") && head.contains("text/plain; version=0.0.4"), "{head}");
    let l = |name: &str, listener: &str| format!("{name}{{listener=\"{listener}\"}}");
    assert_eq!(sample(&body, &l("idlereaper_connections_accepted_total", "relay")), 3.0);
    assert_eq!(sample(&body, &l("idlereaper_connections_active", "relay")), 0.0);
    let reason = |listener: &str, r: &str| {
        format!("idlereaper_connections_closed_total{{listener=\"{listener}\",reason=\"{r}\"}}")
    };
    assert_eq!(sample(&body, &reason("relay", "client_closed")), 3.0);
    let bytes = |d: &str| format!("idlereaper_bytes_total{{listener=\"relay\",direction=\"{d}\"}}");
    assert_eq!(sample(&body, &bytes("from_client")), 3000.0);
    assert_eq!(sample(&body, &bytes("from_upstream")), 3000.0);
    assert_eq!(sample(&body, &l("idlereaper_connection_lifetime_seconds_count", "relay")), 3.0);
    assert_eq!(sample(&body, &reason("limited", "idle")), 1.0);
    let refused = "idlereaper_connections_refused_total{listener=\"limited\",reason=\"limit\"}";
    assert_eq!(sample(&body, refused), 1.0);
    assert_eq!(sample(&body, &reason("dead", "upstream_refused")), 1.0);
    assert_eq!(sample(&body, &l("idlereaper_upstream_connect_errors_total", "dead")), 1.0);
    // The gauge is updated at the end of the loop iteration that closed the last connection,
    // just after its close line: wait for it.
    let timers = wait_for(Duration::from_secs(5), || {
        let (_, body) = scrape(metrics, "/metrics");
        (sample(&body, "idlereaper_timers") == 0.0).then_some(())
    });
    assert!(timers.is_some(), "timers left in the wheel after every connection closed");
    assert!(sample(&body, "idlereaper_open_fds") > 0.0);
    assert!(body.contains("idlereaper_build_info{version=\""), "{body}");

    let (head, _) = scrape(metrics, "/other");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    // A client that says nothing does not hold the endpoint up for the next one.
    let _silent = TcpStream::connect(metrics).unwrap();
    let (head, _) = scrape(metrics, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[test]
fn reloads_are_counted() {
    let listen = free_addr();
    let metrics = free_addr();
    let mut daemon =
        Daemon::start(&(sink_listener("s", listen, "30s") + &format!("[metrics]\nlisten = \"{metrics}\"\n")));
    daemon.signal(libc::SIGHUP);
    daemon.wait_log(" INFO reloaded ", Duration::from_secs(5));
    let (_, body) = scrape(metrics, "/metrics");
    assert_eq!(sample(&body, "idlereaper_reloads_total{result=\"success\"}"), 1.0);
    assert_eq!(sample(&body, "idlereaper_reloads_total{result=\"failure\"}"), 0.0);
}
