//! The `/metrics`, `/healthz` and `/readyz` endpoint in-process: served over loopback by a poll
//! loop in a thread, as the supervisor serves it, with the daemon's vitals faked.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};

use super::http::{Endpoint, MAX_CLIENTS, MAX_HEAD};
use super::*;

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

/// The daemon as the in-process endpoint sees it: readiness a test switches, and loops that
/// turn when woken unless a test has stuck them.
#[derive(Clone)]
struct Daemon {
    metrics: Metrics,
    ready: Arc<AtomicBool>,
    stuck: Arc<AtomicBool>,
}

impl health::Vitals for Daemon {
    fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
    fn wake_loops(&self) {
        if !self.stuck.load(Ordering::Relaxed) {
            self.metrics.set_worker(0, 0, 0);
        }
    }
    fn loop_ended(&self, _worker: usize) -> bool {
        false
    }
}

fn start(timeout: Duration) -> Running {
    start_with(timeout).0
}

fn start_with(timeout: Duration) -> (Running, Daemon) {
    let mut endpoint = Endpoint::with_timeout("127.0.0.1:0".parse().unwrap(), timeout).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let mut poll = Poll::new().unwrap();
    let waker = Arc::new(Waker::new(poll.registry(), WAKER).unwrap());
    endpoint.register(poll.registry(), BASE).unwrap();
    let metrics = Metrics::new(1);
    metrics.set_listeners(vec![ListenerMetrics::new("a")]);
    let daemon = Daemon {
        metrics: metrics.clone(),
        ready: Arc::new(AtomicBool::new(true)),
        stuck: Arc::new(AtomicBool::new(false)),
    };
    let vitals = daemon.clone();
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
                    endpoint.handle(event, &metrics, &vitals);
                }
            }
            endpoint.expire(Instant::now(), &metrics, &vitals);
            assert!(endpoint.clients() <= MAX_CLIENTS);
        }
    });
    (Running { addr, stop, waker, thread: Some(thread) }, daemon)
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
    // Accepted after the ones before it in the backlog, when the client table is full.
    let mut extra = connect(server.addr);
    let mut buf = [0u8; 16];
    match extra.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected the extra client to be closed, got {other:?}"),
    }
    drop(held);
    // Places in the table free up as the server sees the held clients go.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(answer) = exchange(server.addr, b"GET /metrics HTTP/1.1\r\n\r\n") {
            if !answer.is_empty() {
                assert_eq!(split(&answer, false).0, "HTTP/1.1 200 OK");
                break;
            }
        }
        assert!(Instant::now() < deadline, "no place freed up");
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
fn probes_answer_from_the_loops_and_the_readiness() {
    let (server, daemon) = start_with(Duration::from_secs(5));
    let get = |path: &str| {
        let answer = exchange(server.addr, format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes()).unwrap();
        let (status, _, body) = split(&answer, false);
        (status, body)
    };
    let ok = ("HTTP/1.1 200 OK".to_owned(), "ok\n".to_owned());
    assert_eq!(get("/healthz"), ok);
    assert_eq!(get("/readyz"), ok);
    daemon.ready.store(false, Ordering::Relaxed);
    assert_eq!(get("/readyz"), ("HTTP/1.1 503 Service Unavailable".to_owned(), "stopping\n".to_owned()));
    assert_eq!(get("/healthz"), ok, "a stop does not make the loops unhealthy");

    // A loop that does not turn: 503 once the wait is over (well within the client's time),
    // and the endpoint serves other clients meanwhile.
    daemon.stuck.store(true, Ordering::Relaxed);
    let addr = server.addr;
    let asked = Instant::now();
    let waiting = std::thread::spawn(move || {
        let mut stream = connect(addr);
        stream.write_all(b"HEAD /healthz HTTP/1.1\r\n\r\n").unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        (answer, asked.elapsed())
    });
    assert_eq!(get("/metrics").0, "HTTP/1.1 200 OK");
    let (answer, took) = waiting.join().unwrap();
    let (status, headers, _) = split(&answer, true);
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable", "{headers}");
    assert!(took >= health::HEALTH_WAIT && took < Duration::from_secs(5), "answered after {took:?}");
    daemon.stuck.store(false, Ordering::Relaxed);
    assert_eq!(get("/healthz"), ok, "healthy again once the loop turns");
}
