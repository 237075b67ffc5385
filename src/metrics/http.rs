//! The `GET /metrics` endpoint: a listening socket and a few client connections on the
//! supervisor's poll, answering each client once with [`Metrics::render`] and closing.
//!
//! It must not be a way to hang, crash or busy the daemon, so everything is bounded: a request
//! head is at most [`MAX_HEAD`] bytes (more is answered 431), a client has [`CLIENT_TIMEOUT`]
//! from accept to send its request and take the answer, at most [`MAX_CLIENTS`] are served at
//! once (more are accepted and closed at once, so the backlog keeps moving), and an accept pass
//! takes at most [`ACCEPTS_PER_PASS`] clients; the rest are taken at once on the next loop
//! iteration, through [`Endpoint::next_deadline`] and [`Endpoint::expire`].
//!
//! A client goes through three states: reading the head, writing the answer, and lingering:
//! after the answer it shuts down its sending side and reads (up to [`MAX_LINGER`] bytes) until
//! the client closes, so that unread bytes from the client (a request body, a head too large)
//! do not make the kernel reset the connection and lose the answer on its way.
//!
//! Readiness (mio, edge-triggered): a client is registered for reading and writing once, and
//! every read and write runs until `WouldBlock`; a spurious event, or one meant for the previous
//! client of the same token, costs a call that returns `WouldBlock`. Closing a client is
//! dropping its socket: the descriptor is never duplicated, so that removes it from the poll.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use log::debug;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use super::Metrics;
use crate::net::ACCEPT_PAUSE;

/// Longest request head (request line and headers, with the blank line that ends them).
pub const MAX_HEAD: usize = 8 * 1024;
/// Clients served at once.
pub const MAX_CLIENTS: usize = 32;
/// From accept to the end of the answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Clients accepted per pass; more wait for the next loop iteration.
pub const ACCEPTS_PER_PASS: usize = 64;
/// Bytes read and discarded after the answer before the client is closed anyway.
pub const MAX_LINGER: usize = 64 * 1024;

/// The `GET /metrics` endpoint: a mio listener and its few client connections, driven by the
/// supervisor's poll. It owns tokens `base..=base + MAX_CLIENTS` of that poll: `base` for the
/// listener, `base + 1 + i` for client slot `i`.
pub struct Endpoint {
    listener: TcpListener,
    /// A handle on the poll it is registered with, for accepting from [`Endpoint::expire`].
    registry: Option<Registry>,
    base: Option<Token>,
    clients: Vec<Option<Client>>,
    timeout: Duration,
    /// When to accept again without a new event: the last pass stopped at its budget (then
    /// at once), or on an error such as running out of descriptors (then after a pause).
    accept_again: Option<Instant>,
}

/// What a token of the endpoint stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owned {
    Listener,
    Client(usize),
}

fn owned(base: Token, token: Token) -> Option<Owned> {
    match token.0.checked_sub(base.0)? {
        0 => Some(Owned::Listener),
        n if n <= MAX_CLIENTS => Some(Owned::Client(n - 1)),
        _ => None,
    }
}

fn client_token(base: Token, slot: usize) -> Token {
    Token(base.0 + 1 + slot)
}

impl Endpoint {
    /// A non-blocking listener on `addr`, with the default [`CLIENT_TIMEOUT`].
    pub fn bind(addr: SocketAddr) -> io::Result<Endpoint> {
        Endpoint::with_timeout(addr, CLIENT_TIMEOUT)
    }

    /// As [`Endpoint::bind`], giving each client `timeout` from accept to the end of its answer.
    pub fn with_timeout(addr: SocketAddr, timeout: Duration) -> io::Result<Endpoint> {
        Ok(Endpoint {
            listener: crate::net::listen(addr, false)?,
            registry: None,
            base: None,
            clients: (0..MAX_CLIENTS).map(|_| None).collect(),
            timeout,
            accept_again: None,
        })
    }

    /// The address bound (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Registers the listener as `base`; clients will get the `MAX_CLIENTS` tokens after it.
    pub fn register(&mut self, registry: &Registry, base: Token) -> io::Result<()> {
        if base.0.checked_add(MAX_CLIENTS).is_none() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "metrics: token range overflows"));
        }
        let handle = registry.try_clone()?;
        registry.register(&mut self.listener, base, Interest::READABLE)?;
        (self.registry, self.base) = (Some(handle), Some(base));
        Ok(())
    }

    /// Whether `token` is one of the endpoint's.
    pub fn owns(&self, token: Token) -> bool {
        self.base.and_then(|base| owned(base, token)).is_some()
    }

    /// Handles a readiness event for one of its tokens, answering with `metrics.render()`.
    pub fn handle(&mut self, registry: &Registry, event: &mio::event::Event, metrics: &Metrics) {
        match self.base.and_then(|base| owned(base, event.token())) {
            None => {}
            Some(Owned::Listener) => self.accept(registry, Instant::now()),
            Some(Owned::Client(slot)) => {
                if let Some(client) = self.clients[slot].as_mut() {
                    if client.drive(metrics) == Step::Close {
                        self.clients[slot] = None;
                    }
                }
            }
        }
    }

    /// When the next client deadline passes, or accepting is to resume: the supervisor's poll
    /// timeout. `None` if there is nothing to wait for.
    pub fn next_deadline(&self) -> Option<Instant> {
        let clients = self.clients.iter().flatten().map(|c| c.deadline);
        clients.chain(self.accept_again).min()
    }

    /// Closes clients whose deadline passed, and accepts the clients a pass left waiting.
    pub fn expire(&mut self, now: Instant) {
        for slot in &mut self.clients {
            if slot.as_ref().is_some_and(|c| c.deadline <= now) {
                *slot = None;
            }
        }
        if self.accept_again.is_some_and(|t| t <= now) {
            if let Some(registry) = self.registry.take() {
                self.accept(&registry, now);
                self.registry = Some(registry);
            }
        }
    }

    /// Clients being served.
    pub fn clients(&self) -> usize {
        self.clients.iter().flatten().count()
    }

    /// Accepts until `WouldBlock` or the budget; a client beyond [`MAX_CLIENTS`] is closed at once.
    fn accept(&mut self, registry: &Registry, now: Instant) {
        let Some(base) = self.base else { return };
        self.accept_again = None;
        for _ in 0..ACCEPTS_PER_PASS {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("metrics: accept: {e}; pausing accepts for {ACCEPT_PAUSE:?}");
                    self.accept_again = Some(now + ACCEPT_PAUSE);
                    return;
                }
            };
            let Some(slot) = self.clients.iter().position(Option::is_none) else {
                debug!("metrics: client={peer} closed: {MAX_CLIENTS} clients already");
                continue;
            };
            let interest = Interest::READABLE | Interest::WRITABLE;
            match registry.register(&mut stream, client_token(base, slot), interest) {
                Ok(()) => self.clients[slot] = Some(Client::new(stream, now + self.timeout)),
                Err(e) => debug!("metrics: client={peer} cannot be registered: {e}"),
            }
        }
        self.accept_again = Some(now); // budget spent: more may be waiting, with no event to say so
    }
}

/// What a client needs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Readiness: more of the request, room to write, or the client's close.
    Wait,
    /// Nothing: close it.
    Close,
}

struct Client {
    stream: TcpStream,
    deadline: Instant,
    state: State,
}

enum State {
    /// The request head so far.
    Reading(Vec<u8>),
    /// The answer and how much of it is sent.
    Writing(Vec<u8>, usize),
    /// Answered and shut down for writing; discarded bytes so far.
    Lingering(usize),
}

impl Client {
    fn new(stream: TcpStream, deadline: Instant) -> Client {
        Client { stream, deadline, state: State::Reading(Vec::new()) }
    }

    /// Advances through the states as far as the socket allows.
    fn drive(&mut self, metrics: &Metrics) -> Step {
        if let State::Reading(head) = &mut self.state {
            let answer = match read_head(&mut self.stream, head) {
                Head::Partial => return Step::Wait,
                Head::Closed => return Step::Close,
                Head::Complete(end) => answer(&head[..end], || metrics.render()),
                Head::TooLarge => status_response(Status::TooLarge, false),
            };
            self.state = State::Writing(answer, 0);
        }
        if let State::Writing(answer, sent) = &mut self.state {
            match write_out(&mut self.stream, answer, sent) {
                Step::Wait if *sent < answer.len() => return Step::Wait,
                Step::Wait => {
                    if self.stream.shutdown(Shutdown::Write).is_err() {
                        return Step::Close;
                    }
                    self.state = State::Lingering(0);
                }
                Step::Close => return Step::Close,
            }
        }
        if let State::Lingering(discarded) = &mut self.state {
            return linger(&mut self.stream, discarded);
        }
        Step::Wait
    }
}

/// How reading the request head went.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// Not complete yet; the socket would block.
    Partial,
    /// Complete: the head is `head[..end]`. Bytes after it are ignored.
    Complete(usize),
    /// [`MAX_HEAD`] bytes and no end in sight.
    TooLarge,
    /// End of stream or an error before the head was complete.
    Closed,
}

/// Reads into `head` until its end (a blank line), `WouldBlock`, or [`MAX_HEAD`] bytes.
fn read_head(stream: &mut impl Read, head: &mut Vec<u8>) -> Head {
    let mut chunk = [0u8; 1024];
    loop {
        let room = MAX_HEAD - head.len();
        if room == 0 {
            return Head::TooLarge;
        }
        let want = room.min(chunk.len());
        let n = match stream.read(&mut chunk[..want]) {
            Ok(0) => return Head::Closed,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Head::Partial,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Head::Closed,
        };
        let from = head.len().saturating_sub(3); // the end may straddle two reads
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&head[from..]) {
            return Head::Complete(from + end);
        }
    }
}

/// The length of the head in `bytes` up to and including the blank line that ends it:
/// `\r\n\r\n`, or `\n\n` from a lenient client.
fn head_end(bytes: &[u8]) -> Option<usize> {
    let mut newline = None; // where the last line began after a '\n'
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' {
            if newline.is_some_and(|start| bytes[start..i] == *b"\r" || start == i) {
                return Some(i + 1);
            }
            newline = Some(i + 1);
        }
    }
    None
}

/// Writes `answer[*sent..]` until done (`Wait`, with everything sent) or `WouldBlock` (`Wait`).
fn write_out(stream: &mut impl Write, answer: &[u8], sent: &mut usize) -> Step {
    while *sent < answer.len() {
        match stream.write(&answer[*sent..]) {
            Ok(0) => return Step::Close,
            Ok(n) => *sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Step::Close,
        }
    }
    Step::Wait
}

/// Reads and discards until the client closes (or fails, or sends too much): then `Close`.
fn linger(stream: &mut impl Read, discarded: &mut usize) -> Step {
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Step::Close,
            Ok(n) => *discarded += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Step::Close,
        }
        if *discarded > MAX_LINGER {
            return Step::Close;
        }
    }
}

/// What a request head asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    /// `GET /metrics` or `HEAD /metrics` (`head_only`), with or without a query string.
    Metrics { head_only: bool },
    /// A status other than 200; `head_only` for a `HEAD` request.
    Other(Status, bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    BadRequest,
    NotFound,
    MethodNotAllowed,
    TooLarge,
}

impl Status {
    fn line(self) -> &'static str {
        match self {
            Status::BadRequest => "400 Bad Request",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::TooLarge => "431 Request Header Fields Too Large",
        }
    }
}

/// Reads a request head (`METHOD SP target SP HTTP/1.x CRLF`, then header lines, then a blank
/// line). Only the request line matters; header lines need only look like `name: value`.
fn parse(head: &[u8]) -> Request {
    let bad = Request::Other(Status::BadRequest, false);
    let text = head.strip_prefix(b"\r\n").unwrap_or(head); // one blank line before is allowed
    let mut lines = text.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let Some(request_line) = lines.next() else { return bad };
    let mut parts = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return bad;
    };
    let is_token = |s: &[u8]| {
        !s.is_empty() && s.iter().all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let is_version = version.len() == 8 && version.starts_with(b"HTTP/1.") && version[7].is_ascii_digit();
    let target_ok = !target.is_empty() && target.iter().all(|b| b.is_ascii_graphic());
    if !is_token(method) || !is_version || !target_ok {
        return bad;
    }
    for line in lines.filter(|l| !l.is_empty()) {
        let name = line.split(|&b| b == b':').next().unwrap_or_default();
        if name.len() == line.len()
            || !is_token(name)
            || line.iter().any(|&b| b.is_ascii_control() && b != b'\t')
        {
            return bad;
        }
    }
    let head_only = match method {
        b"GET" => false,
        b"HEAD" => true,
        _ => return Request::Other(Status::MethodNotAllowed, false),
    };
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    match path {
        b"/metrics" => Request::Metrics { head_only },
        _ => Request::Other(Status::NotFound, head_only),
    }
}

/// The whole answer to the request head `head`; `render` is called only for `/metrics`.
fn answer(head: &[u8], render: impl FnOnce() -> String) -> Vec<u8> {
    match parse(head) {
        Request::Metrics { head_only } => {
            let content_type = "text/plain; version=0.0.4; charset=utf-8";
            response("200 OK", content_type, "", render().as_bytes(), head_only)
        }
        Request::Other(status, head_only) => status_response(status, head_only),
    }
}

fn status_response(status: Status, head_only: bool) -> Vec<u8> {
    let allow = if status == Status::MethodNotAllowed { "Allow: GET, HEAD\r\n" } else { "" };
    let body = format!("{}\n", status.line());
    response(status.line(), "text/plain; charset=utf-8", allow, body.as_bytes(), head_only)
}

/// A response with `Content-Length` (the body's length even when `head_only` leaves it out)
/// and `Connection: close`; `extra` is more header lines, each ending in CRLF.
fn response(status: &str, content_type: &str, extra: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}\
         Connection: close\r\n\r\n",
        body.len()
    );
    let mut out = head.into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(head: &str) -> String {
        let answer = String::from_utf8(answer(head.as_bytes(), || "x 1\n".to_owned())).unwrap();
        answer.lines().next().unwrap().to_owned()
    }

    #[test]
    fn requests_and_their_status() {
        let cases = [
            ("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 200 OK"),
            ("GET /metrics HTTP/1.0\r\n\r\n", "HTTP/1.1 200 OK"),
            ("GET /metrics?name[]=x HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK"),
            ("\r\nGET /metrics HTTP/1.1\n\n", "HTTP/1.1 200 OK"),
            ("HEAD /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK"),
            ("GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
            ("GET /metrics/ HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
            ("GET http://a/metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
            ("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "HTTP/1.1 405 Method Not Allowed"),
            ("get /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 405 Method Not Allowed"),
            ("GET /metrics\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            ("GET  /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            ("GET /metrics HTTP/2.0\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            ("GET /metrics HTTP/1.1 x\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            ("GET /métrics HTTP/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            ("G(T /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            ("GET /metrics HTTP/1.1\r\nno colon\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            ("GET /metrics HTTP/1.1\r\n: empty name\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            ("GET /metrics HTTP/1.1\r\nA: \x01\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            ("\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            ("\u{0}\u{0}\n\n", "HTTP/1.1 400 Bad Request"),
        ];
        for (head, status) in cases {
            assert_eq!(status_of(head), status, "{head:?}");
        }
    }

    #[test]
    fn responses_are_complete_and_close() {
        let get = answer(b"GET /metrics HTTP/1.1\r\n\r\n", || "a 1\n".to_owned());
        let expected = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
                        Content-Length: 4\r\nConnection: close\r\n\r\na 1\n";
        assert_eq!(String::from_utf8(get).unwrap(), expected);
        let head = answer(b"HEAD /metrics HTTP/1.1\r\n\r\n", || "a 1\n".to_owned());
        assert_eq!(String::from_utf8(head).unwrap(), expected.strip_suffix("a 1\n").unwrap());
        let not_allowed =
            String::from_utf8(answer(b"PUT /metrics HTTP/1.1\r\n\r\n", || unreachable!())).unwrap();
        assert!(not_allowed.contains("\r\nAllow: GET, HEAD\r\n"), "{not_allowed}");
        assert!(not_allowed.ends_with("\r\n\r\n405 Method Not Allowed\n"), "{not_allowed}");
        let not_found = String::from_utf8(answer(b"HEAD /x HTTP/1.1\r\n\r\n", || unreachable!())).unwrap();
        assert!(not_found.ends_with("Content-Length: 14\r\nConnection: close\r\n\r\n"), "{not_found}");
        let too_large = String::from_utf8(status_response(Status::TooLarge, false)).unwrap();
        assert!(too_large.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{too_large}");
    }

    #[test]
    fn head_end_finds_the_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_end(b"\r\n\r\n"), Some(4));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
        assert_eq!(head_end(b"a\r\r\n"), None);
        assert_eq!(head_end(b""), None);
    }

    /// A reader that hands out its chunks one per call, then `WouldBlock` (or EOF).
    struct Chunks(Vec<Vec<u8>>, bool);

    impl Read for Chunks {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some(chunk) = self.0.first_mut() else {
                return if self.1 { Ok(0) } else { Err(io::ErrorKind::WouldBlock.into()) };
            };
            let n = chunk.len().min(buf.len());
            buf[..n].copy_from_slice(&chunk[..n]);
            chunk.drain(..n);
            if chunk.is_empty() {
                self.0.remove(0);
            }
            Ok(n)
        }
    }

    #[test]
    fn read_head_across_reads_and_its_limits() {
        let mut head = Vec::new();
        let split = vec![b"GET /metrics HTTP/1.1\r\n\r".to_vec()];
        assert_eq!(read_head(&mut Chunks(split, false), &mut head), Head::Partial);
        let rest = vec![b"\nextra".to_vec()];
        assert_eq!(read_head(&mut Chunks(rest, false), &mut head), Head::Complete(25));
        let mut head = Vec::new();
        assert_eq!(read_head(&mut Chunks(vec![b"GET /".to_vec()], true), &mut head), Head::Closed);
        let mut head = Vec::new();
        let flood = vec![vec![b'a'; MAX_HEAD + 100]];
        assert_eq!(read_head(&mut Chunks(flood, false), &mut head), Head::TooLarge);
        assert_eq!(head.len(), MAX_HEAD);
        // A head that ends exactly at the limit is complete.
        let mut exact = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        exact.resize(MAX_HEAD - 4, b'x');
        exact.extend_from_slice(b"\r\n\r\n");
        let mut head = Vec::new();
        assert_eq!(read_head(&mut Chunks(vec![exact], false), &mut head), Head::Complete(MAX_HEAD));
    }

    #[test]
    fn lingering_reads_until_close_or_limit() {
        let mut discarded = 0;
        assert_eq!(linger(&mut Chunks(vec![vec![0; 10]], false), &mut discarded), Step::Wait);
        assert_eq!(linger(&mut Chunks(vec![], true), &mut discarded), Step::Close);
        let mut discarded = 0;
        let flood = (0..40).map(|_| vec![0; 4096]).collect();
        assert_eq!(linger(&mut Chunks(flood, false), &mut discarded), Step::Close);
        assert!(discarded > MAX_LINGER && discarded <= MAX_LINGER + 4096);
    }

    #[test]
    fn tokens() {
        let base = Token(7);
        assert_eq!(owned(base, Token(6)), None);
        assert_eq!(owned(base, Token(7)), Some(Owned::Listener));
        assert_eq!(owned(base, Token(8)), Some(Owned::Client(0)));
        assert_eq!(owned(base, client_token(base, MAX_CLIENTS - 1)), Some(Owned::Client(MAX_CLIENTS - 1)));
        assert_eq!(owned(base, Token(8 + MAX_CLIENTS)), None);
        assert_eq!(owned(Token(usize::MAX), Token(0)), None);
    }
}
