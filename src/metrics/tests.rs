//! Tests of the exposition text and, in-process, of the `/metrics` endpoint over loopback.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};

use super::exposition::Seconds;
use super::http::{Endpoint, MAX_CLIENTS, MAX_HEAD};
use super::render::Process;
use super::*;

#[test]
fn reason_slots_match_the_list() {
    for (slot, reason) in REASONS.iter().enumerate() {
        assert_eq!(reason_slot(*reason), slot, "{reason}");
    }
    let refusal = |r: &CloseReason| {
        matches!(
            r,
            CloseReason::Limit
                | CloseReason::PerIpLimit
                | CloseReason::Denied
                | CloseReason::OutOfDescriptors
        )
    };
    assert!(SHOWN[CLOSES..].iter().all(refusal) && !SHOWN[..CLOSES].iter().any(refusal));
    let mut shown = SHOWN.map(reason_slot);
    shown.sort_unstable();
    assert_eq!(shown.to_vec(), (0..REASONS.len()).collect::<Vec<_>>(), "every reason shown once");
}

#[test]
fn seconds_are_exact() {
    let s = |d: Duration| Seconds(d).to_string();
    assert_eq!(s(Duration::ZERO), "0");
    assert_eq!(s(Duration::from_secs(3600)), "3600");
    assert_eq!(s(Duration::from_millis(1500)), "1.5");
    assert_eq!(s(Duration::from_micros(1)), "0.000001");
    assert_eq!(s(Duration::from_nanos(999)), "0"); // below the microsecond
    assert_eq!(s(Duration::from_millis(1_700_000_000_250)), "1700000000.25");
}

#[test]
fn render_one_listener_exactly() {
    let metrics = Metrics::started_at(2, Duration::from_millis(1_700_000_000_250));
    let relay = ListenerMetrics::new("relay");
    metrics.set_listeners(vec![Arc::clone(&relay)]);
    for _ in 0..4 {
        relay.accepted();
        relay.active_add(1);
    }
    relay.closed(CloseReason::ClientClosed, Duration::from_millis(10)); // le 0.01: bounds are inclusive
    relay.closed(CloseReason::ClientClosed, Duration::from_micros(10_001));
    relay.closed(CloseReason::Idle, Duration::from_millis(2500));
    relay.active_add(-3);
    relay.refused(CloseReason::PerIpLimit);
    relay.upstream_connect_error();
    relay.bytes(100, 2000);
    relay.bytes(0, 48);
    metrics.set_worker(0, 4, 1);
    metrics.set_worker(1, 3, 0);
    metrics.reload(true);
    metrics.reload(false);
    metrics.reload(false);
    let text = metrics.render_with(Process { open_fds: Some(12), max_fds: Some(1024) });
    let version = env!("CARGO_PKG_VERSION");
    let expected = format!(
        r#"# HELP idlereaper_connections_accepted_total Connections admitted.
# TYPE idlereaper_connections_accepted_total counter
idlereaper_connections_accepted_total{{listener="relay"}} 4
# HELP idlereaper_connections_active Connections open now.
# TYPE idlereaper_connections_active gauge
idlereaper_connections_active{{listener="relay"}} 1
# HELP idlereaper_connections_closed_total Connections closed, by reason (the reason of the close log line).
# TYPE idlereaper_connections_closed_total counter
idlereaper_connections_closed_total{{listener="relay",reason="client_closed"}} 2
idlereaper_connections_closed_total{{listener="relay",reason="upstream_closed"}} 0
idlereaper_connections_closed_total{{listener="relay",reason="client_reset"}} 0
idlereaper_connections_closed_total{{listener="relay",reason="upstream_reset"}} 0
idlereaper_connections_closed_total{{listener="relay",reason="idle"}} 1
idlereaper_connections_closed_total{{listener="relay",reason="idle_in_transaction"}} 0
idlereaper_connections_closed_total{{listener="relay",reason="subscriber_idle"}} 0
idlereaper_connections_closed_total{{listener="relay",reason="max_lifetime"}} 0
idlereaper_connections_closed_total{{listener="relay",reason="half_close_timeout"}} 0
idlereaper_connections_closed_total{{listener="relay",reason="connect_timeout"}} 0
idlereaper_connections_closed_total{{listener="relay",reason="upstream_refused"}} 0
idlereaper_connections_closed_total{{listener="relay",reason="error"}} 0
idlereaper_connections_closed_total{{listener="relay",reason="shutdown"}} 0
idlereaper_connections_closed_total{{listener="relay",reason="killed"}} 0
# HELP idlereaper_connections_refused_total Clients closed at accept, by reason (limit, per_ip_limit, denied, out_of_descriptors).
# TYPE idlereaper_connections_refused_total counter
idlereaper_connections_refused_total{{listener="relay",reason="limit"}} 0
idlereaper_connections_refused_total{{listener="relay",reason="per_ip_limit"}} 1
idlereaper_connections_refused_total{{listener="relay",reason="denied"}} 0
idlereaper_connections_refused_total{{listener="relay",reason="out_of_descriptors"}} 0
# HELP idlereaper_protocol_opaque_total Connections a protocol observer stopped following (byte idleness from then on), by cause.
# TYPE idlereaper_protocol_opaque_total counter
idlereaper_protocol_opaque_total{{listener="relay",cause="tls"}} 0
idlereaper_protocol_opaque_total{{listener="relay",cause="gss"}} 0
idlereaper_protocol_opaque_total{{listener="relay",cause="replication"}} 0
idlereaper_protocol_opaque_total{{listener="relay",cause="reply_off"}} 0
idlereaper_protocol_opaque_total{{listener="relay",cause="unparsable"}} 0
# HELP idlereaper_upstream_connect_errors_total Upstream connections that failed or timed out.
# TYPE idlereaper_upstream_connect_errors_total counter
idlereaper_upstream_connect_errors_total{{listener="relay"}} 1
# HELP idlereaper_bytes_total Bytes relayed, by direction.
# TYPE idlereaper_bytes_total counter
idlereaper_bytes_total{{listener="relay",direction="from_client"}} 100
idlereaper_bytes_total{{listener="relay",direction="from_upstream"}} 2048
# HELP idlereaper_connection_lifetime_seconds Time from accept to close of closed connections.
# TYPE idlereaper_connection_lifetime_seconds histogram
idlereaper_connection_lifetime_seconds_bucket{{listener="relay",le="0.01"}} 1
idlereaper_connection_lifetime_seconds_bucket{{listener="relay",le="0.1"}} 2
idlereaper_connection_lifetime_seconds_bucket{{listener="relay",le="1"}} 2
idlereaper_connection_lifetime_seconds_bucket{{listener="relay",le="10"}} 3
idlereaper_connection_lifetime_seconds_bucket{{listener="relay",le="60"}} 3
idlereaper_connection_lifetime_seconds_bucket{{listener="relay",le="300"}} 3
idlereaper_connection_lifetime_seconds_bucket{{listener="relay",le="3600"}} 3
idlereaper_connection_lifetime_seconds_bucket{{listener="relay",le="86400"}} 3
idlereaper_connection_lifetime_seconds_bucket{{listener="relay",le="+Inf"}} 3
idlereaper_connection_lifetime_seconds_sum{{listener="relay"}} 2.520001
idlereaper_connection_lifetime_seconds_count{{listener="relay"}} 3
# HELP idlereaper_timers Timers live in the timing wheels of all workers.
# TYPE idlereaper_timers gauge
idlereaper_timers 7
# HELP idlereaper_reloads_total Configuration reloads, by result.
# TYPE idlereaper_reloads_total counter
idlereaper_reloads_total{{result="success"}} 1
idlereaper_reloads_total{{result="failure"}} 2
# HELP idlereaper_upgrades_total Live upgrades (SIGUSR2), by result.
# TYPE idlereaper_upgrades_total counter
idlereaper_upgrades_total{{result="success"}} 0
idlereaper_upgrades_total{{result="refused"}} 0
idlereaper_upgrades_total{{result="failed"}} 0
# HELP idlereaper_open_fds Open file descriptors.
# TYPE idlereaper_open_fds gauge
idlereaper_open_fds 12
# HELP idlereaper_max_fds Most file descriptors the process may open.
# TYPE idlereaper_max_fds gauge
idlereaper_max_fds 1024
# HELP idlereaper_build_info Always 1; the version of idlereaper is a label.
# TYPE idlereaper_build_info gauge
idlereaper_build_info{{version="{version}"}} 1
# HELP idlereaper_start_time_seconds Start time of the process since the Unix epoch.
# TYPE idlereaper_start_time_seconds gauge
idlereaper_start_time_seconds 1700000000.25
"#
    );
    assert_eq!(text, expected);
}

#[test]
fn families_group_listeners_in_order_and_escape_labels() {
    let metrics = Metrics::new(1);
    let (a, b) = (ListenerMetrics::new("a"), ListenerMetrics::new("we\"ird\\name\nx"));
    metrics.set_listeners(vec![Arc::clone(&b), Arc::clone(&a)]);
    a.accepted();
    b.closed(CloseReason::Denied, Duration::from_secs(100_000)); // a misuse, still shown
    let text = metrics.render();
    let b_label = r#"listener="we\"ird\\name\nx""#;
    let accepted = format!(
        "# TYPE idlereaper_connections_accepted_total counter\n\
         idlereaper_connections_accepted_total{{{b_label}}} 0\n\
         idlereaper_connections_accepted_total{{listener=\"a\"}} 1\n# HELP "
    );
    assert!(text.contains(&accepted), "{text}");
    let denied = format!("idlereaper_connections_closed_total{{{b_label},reason=\"denied\"}} 1\n");
    assert!(text.contains(&denied), "{text}");
    assert!(!text.contains("closed_total{listener=\"a\",reason=\"denied\"}"), "{text}");
    let beyond = format!(
        "le=\"86400\"}} 0\nidlereaper_connection_lifetime_seconds_bucket{{{b_label},le=\"+Inf\"}} 1\n"
    );
    assert!(text.contains(&beyond), "{text}");
    // Every family's samples directly follow its HELP and TYPE, and no family appears twice.
    let mut families = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            families.push(rest.split(' ').next().unwrap().to_owned());
        } else if !line.starts_with('#') {
            let family = families.last().expect("a sample before any TYPE");
            assert!(line.starts_with(family.as_str()), "{line} outside {family}");
        }
    }
    let count = families.len();
    families.sort();
    families.dedup();
    assert_eq!(families.len(), count, "a family appears twice");
    // The process numbers come from the process.
    let fds = text.lines().find_map(|l| l.strip_prefix("idlereaper_open_fds ")).expect("open_fds");
    assert!(fds.parse::<u64>().unwrap() >= 3, "{fds}");
}

#[test]
fn without_listeners_only_process_families() {
    let text = Metrics::new(1).render();
    assert!(!text.contains("listener="), "{text}");
    assert!(text.contains("\nidlereaper_timers 0\n"), "{text}");
}

#[test]
fn a_listener_kept_across_reload_keeps_its_counters() {
    let metrics = Metrics::new(1);
    let a = ListenerMetrics::new("a");
    metrics.set_listeners(vec![Arc::clone(&a)]);
    assert!(Arc::ptr_eq(&metrics.listener("a"), &a));
    assert!(!Arc::ptr_eq(&metrics.listener("b"), &a));
}

// ---- The endpoint, in-process --------------------------------------------------------------------

/// An endpoint on 127.0.0.1:0 driven by a poll loop in a thread, as the supervisor drives it.
/// Dropping it stops the thread, and fails the test if the thread panicked.
struct Running {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

const WAKER: Token = Token(0);
const BASE: Token = Token(5);
/// No test takes longer; the loop ends then whatever happens.
const TEST_LIMIT: Duration = Duration::from_secs(60);

fn start(timeout: Duration) -> Running {
    let mut endpoint = Endpoint::with_timeout("127.0.0.1:0".parse().unwrap(), timeout).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let mut poll = Poll::new().unwrap();
    let waker = Arc::new(Waker::new(poll.registry(), WAKER).unwrap());
    endpoint.register(poll.registry(), BASE).unwrap();
    let metrics = Metrics::new(1);
    metrics.set_listeners(vec![ListenerMetrics::new("a")]);
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = Arc::clone(&stop);
    let thread = std::thread::spawn(move || {
        let mut events = Events::with_capacity(64);
        let limit = Instant::now() + TEST_LIMIT;
        while !stopping.load(Ordering::Relaxed) && Instant::now() < limit {
            let now = Instant::now();
            let timeout = endpoint.next_deadline().unwrap_or(limit).min(limit).saturating_duration_since(now);
            poll.poll(&mut events, Some(timeout)).unwrap();
            for event in events.iter() {
                assert!(event.token() == WAKER || endpoint.owns(event.token()), "{event:?}");
                if endpoint.owns(event.token()) {
                    endpoint.handle(poll.registry(), event, &metrics);
                }
            }
            endpoint.expire(Instant::now());
            assert!(endpoint.clients() <= MAX_CLIENTS);
        }
    });
    Running { addr, stop, waker, thread: Some(thread) }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.waker.wake();
        let joined = self.thread.take().unwrap().join();
        if !std::thread::panicking() {
            assert!(joined.is_ok(), "the endpoint's loop panicked");
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

/// Sends `request` and reads until the server closes.
fn exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = connect(addr);
    stream.write_all(request)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    Ok(answer)
}

/// Status line, headers and body of a complete response; the body's length is checked against
/// `Content-Length` unless `head_only`.
fn split(answer: &[u8], head_only: bool) -> (String, String, String) {
    let text = String::from_utf8(answer.to_vec()).expect("UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete head");
    let (status, headers) = head.split_once("\r\n").expect("headers");
    let length = headers.lines().find_map(|l| l.strip_prefix("Content-Length: ")).expect("Content-Length");
    let expected = if head_only { 0 } else { length.parse().unwrap() };
    assert_eq!(body.len(), expected, "{text}");
    assert!(headers.contains("Connection: close"), "{text}");
    (status.to_owned(), headers.to_owned(), body.to_owned())
}

#[test]
fn endpoint_answers_each_kind_of_request() {
    let server = start(Duration::from_secs(5));
    let get = |request: &str| exchange(server.addr, request.as_bytes()).unwrap();

    let (status, headers, body) = split(&get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), false);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(headers.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"), "{headers}");
    assert!(body.contains("\nidlereaper_connections_accepted_total{listener=\"a\"} 0\n"), "{body}");
    assert!(body.contains("idlereaper_build_info{version="), "{body}");
    let (status, _, _) = split(&get("GET /metrics?x=1 HTTP/1.0\r\n\r\n"), false);
    assert_eq!(status, "HTTP/1.1 200 OK");
    let (status, headers, body) = split(&get("HEAD /metrics HTTP/1.1\r\n\r\n"), true);
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", ""));
    assert!(!headers.contains("Content-Length: 0\r\n"), "{headers}");
    assert_eq!(split(&get("GET / HTTP/1.1\r\n\r\n"), false).0, "HTTP/1.1 404 Not Found");
    assert_eq!(split(&get("DELETE /metrics HTTP/1.1\r\n\r\n"), false).0, "HTTP/1.1 405 Method Not Allowed");
    assert_eq!(split(&get("hello\r\n\r\n"), false).0, "HTTP/1.1 400 Bad Request");
    // A body after the head is read and discarded, not a reason to reset the answer away.
    let with_body = format!("GET /metrics HTTP/1.1\r\nContent-Length: 50000\r\n\r\n{}", "b".repeat(50_000));
    assert_eq!(split(&get(&with_body), false).0, "HTTP/1.1 200 OK");
}

#[test]
fn oversized_heads_get_431_and_floods_are_cut_off() {
    let server = start(Duration::from_secs(5));
    let answer = exchange(server.addr, &vec![b'a'; MAX_HEAD + 1000]).unwrap();
    assert_eq!(split(&answer, false).0, "HTTP/1.1 431 Request Header Fields Too Large");

    // A client that never stops sending is closed once the linger limit is passed.
    let mut flood = connect(server.addr);
    let chunk = vec![b'a'; 64 * 1024];
    let mut sent = 0;
    let result = loop {
        if let Err(e) = flood.write_all(&chunk) {
            break Err(e);
        }
        sent += chunk.len();
        if sent > 64 * 1024 * 1024 {
            break Ok(());
        }
    };
    assert!(result.is_err(), "64 MiB accepted without the connection being closed");
    // And the endpoint still answers.
    let answer = exchange(server.addr, b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(split(&answer, false).0, "HTTP/1.1 200 OK");
}

#[test]
fn slow_and_silent_clients_are_closed_at_their_deadline() {
    let timeout = Duration::from_millis(300);
    let server = start(timeout);
    for request in [&b"GET /metr"[..], b""] {
        let started = Instant::now(); // before connect, so before the server's accept
        let mut stream = connect(server.addr);
        stream.write_all(request).unwrap();
        let mut answer = Vec::new();
        let read = stream.read_to_end(&mut answer);
        assert!(read.is_ok() && answer.is_empty(), "{read:?} {answer:?}");
        assert!(started.elapsed() >= timeout, "closed after {:?}", started.elapsed());
    }
}

#[test]
fn clients_beyond_the_limit_are_closed_at_once() {
    let server = start(Duration::from_secs(30));
    let held: Vec<TcpStream> = (0..MAX_CLIENTS).map(|_| connect(server.addr)).collect();
    // Accepted after the ones before it in the backlog, when every slot is taken.
    let mut extra = connect(server.addr);
    let mut buf = [0u8; 16];
    match extra.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected the extra client to be closed, got {other:?}"),
    }
    drop(held);
    // The slots free up as the server sees the held clients go.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(answer) = exchange(server.addr, b"GET /metrics HTTP/1.1\r\n\r\n") {
            if !answer.is_empty() {
                assert_eq!(split(&answer, false).0, "HTTP/1.1 200 OK");
                break;
            }
        }
        assert!(Instant::now() < deadline, "no slot freed up");
        std::thread::yield_now();
    }
}

#[test]
fn forty_concurrent_clients_do_not_break_it() {
    let server = start(Duration::from_secs(5));
    let addr = server.addr;
    let clients: Vec<_> = (0..40)
        .map(|_| {
            std::thread::spawn(move || {
                let mut served = 0;
                for _ in 0..5 {
                    match exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n") {
                        // Closed without an answer: over the limit.
                        Ok(answer) if answer.is_empty() => {}
                        Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {}
                        Ok(answer) => {
                            assert_eq!(split(&answer, false).0, "HTTP/1.1 200 OK");
                            served += 1;
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                served
            })
        })
        .collect();
    let served: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert!(served >= MAX_CLIENTS, "only {served} of 200 requests served");
    let answer = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(split(&answer, false).0, "HTTP/1.1 200 OK");
}

#[test]
fn counters_carried_by_an_upgrade_keep_their_places_across_versions() {
    let old = ListenerMetrics::new("pg");
    old.accepted();
    old.closed(CloseReason::Idle, Duration::from_millis(5));
    old.refused(CloseReason::Limit);
    old.closed(CloseReason::IdleInTransaction, Duration::from_secs(2));
    old.protocol_opaque(Cause::Tls);
    let carried = old.counters();
    // A binary from before the protocol observers carried the first 46 of them.
    let before = 5 + 2 * REASONS_BEFORE_PROTOCOLS + LIFETIME_BUCKETS.len() + 1;
    let from_older = ListenerMetrics::new("pg");
    from_older.restore(&carried[..before]);
    let shown = |m: &ListenerMetrics| {
        let mut row = crate::report::ListenerRow {
            name: String::new(),
            listen: String::new(),
            upstream: String::new(),
            open: 0,
            accepted: 0,
            closed: Vec::new(),
            refused: 0,
            idle_timeout_ms: 0,
            bytes_from_client: 0,
            bytes_from_upstream: 0,
        };
        m.fill(&mut row);
        (row.accepted, row.closed, row.refused)
    };
    let idle = ("idle".to_owned(), 1);
    assert_eq!(shown(&from_older), (1, vec![idle.clone()], 1), "the older counters in their places");
    let same = ListenerMetrics::new("pg");
    same.restore(&carried);
    assert_eq!(shown(&same), (1, vec![idle, ("idle_in_transaction".to_owned(), 1)], 1));
    assert_eq!(same.opaque[Cause::Tls.index()].load(Relaxed), 1);
}
