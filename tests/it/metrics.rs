//! The Prometheus endpoint: after a scripted workload, a scrape of `/metrics` shows exactly what
//! the workload did, and passes `promtool check metrics`; other paths get 404; the daemon's own
//! traffic is not disturbed. `/healthz` and `/readyz`: healthy while the loops turn, ready until
//! a graceful stop begins.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

fn scrape(addr: SocketAddr, path: &str) -> (String, String) {
    http_get(addr, path)
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
    let bytes = |d: &str| format!("idlereaper_relayed_bytes_total{{listener=\"relay\",direction=\"{d}\"}}");
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
    assert!(body.contains("idlereaper_build_info{version=\""), "{body}");
    // The process family, as the Prometheus client libraries export it.
    let pid = daemon.pid();
    // Counted during the scrape, whose own connection is one more than the census after it.
    let (scraped, census) = (sample(&body, "process_open_fds") as usize, fd_census(pid).unwrap().total());
    assert!((census..=census + 2).contains(&scraped), "{scraped} open, the census after: {census}");
    assert!(sample(&body, "process_max_fds") >= sample(&body, "process_open_fds"));
    let rss = sample(&body, "process_resident_memory_bytes");
    assert!(rss > 1e6 && sample(&body, "process_virtual_memory_bytes") >= rss, "{body}");
    let cpu = sample(&body, "process_cpu_seconds_total");
    assert!(cpu > 0.0 && cpu <= cpu_time(pid).unwrap().as_secs_f64() + 0.05, "{cpu} s of CPU");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let started = sample(&body, "process_start_time_seconds");
    assert!(started <= now && started > now - 600.0, "started at {started}, now {now}");

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

#[test]
fn a_real_scrape_passes_promtool_check_metrics() {
    let Some(promtool) = promtool() else { return };
    let body = busy_scrape();
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    check.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {:?}\n{said}\n{body}",
        out.status
    );
}

#[test]
fn healthz_and_readyz_follow_the_loops_and_a_graceful_stop() {
    let upstream = Upstream::echo();
    let (relay, metrics) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_section(dir.path(), "30s").replace("[daemon]\n", "[daemon]\nworkers = 2\n")
        + &relay_listener("relay", relay, upstream.addr, "60s")
        + &format!("[metrics]\nlisten = \"{metrics}\"\n");
    let mut daemon = Daemon::start_in(dir, &config);
    let ok = |path: &str| {
        let (head, body) = scrape(metrics, path);
        assert!(head.starts_with("HTTP/1.1 200 OK") && body == "ok\n", "{path}: {head}\n{body}");
    };
    // Idle loops sleep in epoll: /healthz wakes them, and each turns.
    for _ in 0..3 {
        ok("/healthz");
        ok("/readyz");
    }
    let mut held = connect(relay);
    assert_echo(&mut held, b"before the stop");

    // TERM begins a graceful stop: the held connection keeps the daemon draining.
    daemon.signal(libc::SIGTERM);
    let unready = wait_for(Duration::from_secs(5), || {
        let (head, body) = scrape(metrics, "/readyz");
        head.starts_with("HTTP/1.1 503 Service Unavailable").then_some(body)
    });
    assert_eq!(unready.as_deref(), Some("stopping\n"), "{}", daemon.log());
    daemon.wait_log("draining connections=1", Duration::from_secs(5));
    ok("/healthz"); // draining loops still turn
    let (head, _) = scrape(metrics, "/readyz");
    assert!(head.starts_with("HTTP/1.1 503"), "ready again during the drain: {head}");
    assert_echo(&mut held, b"during the drain");
    assert!(daemon.poll_exit().is_none(), "exited with a connection open: {}", daemon.log());

    drop(held);
    let status = daemon.wait_exit(Duration::from_secs(10)).expect("exit once the last connection closed");
    assert!(status.success(), "{status:?}\n{}", daemon.log());
}
