//! The `GET /metrics` endpoint: a listening socket and a few client connections on the
//! supervisor's poll, answering each client once with [`Metrics::render`], or with the
//! daemon's liveness (`/healthz`) or readiness (`/readyz`, see [`super::health`]), and closing.
//!
//! It must not be a way to hang, crash or busy the daemon, so everything is bounded, on the
//! skeleton of [`crate::bounded`]: a request head is at most [`MAX_HEAD`] bytes (more is answered
//! 431), a client has [`CLIENT_TIMEOUT`] from accept to send its request and take the answer, at
//! most [`MAX_CLIENTS`] are served at once (more are accepted and closed at once, so the backlog
//! keeps moving), and an accept pass takes at most
//! [`ACCEPTS_PER_PASS`](crate::bounded::ACCEPTS_PER_PASS) clients; the rest are taken at once on
//! the next loop iteration, through [`Endpoint::next_deadline`] and [`Endpoint::expire`].
//!
//! A client goes through three states: reading the head, writing the answer, and lingering:
//! after the answer it shuts down its sending side and reads (up to [`MAX_LINGER`] bytes) until
//! the client closes, so that unread bytes from the client (a request body, a head too large)
//! do not make the kernel reset the connection and lose the answer on its way. A `/healthz`
//! request waits between reading and writing while the loops are checked: the endpoint looks
//! at the check again at its [`Check::next`], through [`Endpoint::next_deadline`].

use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use log::debug;
use mio::net::{TcpListener, TcpStream};
use mio::{Registry, Token};

use super::health::{Check, Vitals};
use super::request::{metrics_response, parse, probe_response, status_response, Page, Request, Status};
use super::Metrics;
use crate::bounded::{self, Accepted, BoundedServer, Owned, Received, Sent};
use crate::client_table::Timed;

/// Longest request head (request line and headers, with the blank line that ends them).
pub const MAX_HEAD: usize = 8 * 1024;
/// Clients served at once.
pub const MAX_CLIENTS: usize = 32;
/// From accept to the end of the answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes read and discarded after the answer before the client is closed anyway.
pub const MAX_LINGER: usize = 64 * 1024;

/// The `GET /metrics` endpoint: a mio listener and its few client connections, driven by the
/// supervisor's poll. It owns tokens `base..=base + MAX_CLIENTS` of that poll: `base` for the
/// listener, `base + 1 + i` for the client at index `i`.
pub struct Endpoint {
    bounded: BoundedServer<TcpListener, Client>,
    timeout: Duration,
    /// When a `/healthz` check is to be looked at again (the earliest, if several).
    recheck: Option<Instant>,
}

impl Endpoint {
    /// A non-blocking listener on `addr`, with the default [`CLIENT_TIMEOUT`].
    pub fn bind(addr: SocketAddr) -> io::Result<Endpoint> {
        Endpoint::with_timeout(addr, CLIENT_TIMEOUT)
    }

    /// As [`Endpoint::bind`], giving each client `timeout` from accept to the end of its answer.
    pub fn with_timeout(addr: SocketAddr, timeout: Duration) -> io::Result<Endpoint> {
        Ok(Endpoint::on(crate::os::net::listen(addr, false)?, timeout))
    }

    fn on(listener: TcpListener, timeout: Duration) -> Endpoint {
        let bounded = BoundedServer::new("metrics", listener, MAX_CLIENTS, |c: &mut Client| &mut c.stream);
        Endpoint { bounded, timeout, recheck: None }
    }

    /// The address bound (useful with port 0).
    #[cfg(test)]
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.bounded.listener().local_addr()
    }

    /// Gives up the listening socket for a live upgrade, open, by its number (clients are
    /// closed: a scrape retries).
    pub fn freeze(self, registry: &Registry) -> std::os::fd::RawFd {
        let (listener, _closed) = self.bounded.shut(registry);
        std::os::fd::IntoRawFd::into_raw_fd(listener)
    }

    /// The endpoint whose listening socket a live upgrade handed over.
    pub fn adopt(fd: std::os::fd::RawFd) -> io::Result<Endpoint> {
        Ok(Endpoint::on(TcpListener::from(crate::os::sys::adopt(fd)?), CLIENT_TIMEOUT))
    }

    /// Registers the listener as `base`; clients will get the `MAX_CLIENTS` tokens after it.
    pub fn register(&mut self, registry: &Registry, base: Token) -> io::Result<()> {
        self.bounded.register(registry, base)
    }

    /// Whether `token` is one of the endpoint's.
    pub fn owns(&self, token: Token) -> bool {
        self.bounded.owned(token).is_some()
    }

    /// Handles a readiness event for one of its tokens, answering from `metrics` and `vitals`.
    pub fn handle(&mut self, event: &mio::event::Event, metrics: &Metrics, vitals: &dyn Vitals) {
        match self.bounded.owned(event.token()) {
            None => {}
            Some(Owned::Listener) => self.accept(Instant::now()),
            Some(Owned::Client(index)) => {
                let clients = self.bounded.clients_mut();
                if let Some(client) = clients.get_mut(index) {
                    if client.drive(metrics, vitals, Instant::now()) == Step::Close {
                        clients.take(index);
                    } else if let Some(at) = client.recheck() {
                        self.recheck = Some(self.recheck.map_or(at, |r| r.min(at)));
                    }
                }
            }
        }
    }

    /// When the next client deadline passes, a health check is to be looked at, or accepting
    /// is to resume: the supervisor's poll timeout. `None` if there is nothing to wait for.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.bounded.next_deadline().into_iter().chain(self.recheck).min()
    }

    /// Answers the health checks that are due, closes clients whose deadline passed, and
    /// accepts the clients a pass left waiting.
    pub fn expire(&mut self, now: Instant, metrics: &Metrics, vitals: &dyn Vitals) {
        if self.recheck.is_some_and(|at| at <= now) {
            let mut next: Option<Instant> = None;
            self.bounded.clients_mut().retain(|client| {
                if client.recheck().is_some_and(|at| at <= now)
                    && client.drive(metrics, vitals, now) == Step::Close
                {
                    return false;
                }
                next = next.into_iter().chain(client.recheck()).min();
                true
            });
            self.recheck = next;
        }
        let deadline = now + self.timeout;
        self.bounded.expire(now, |new| admit(new, deadline));
    }

    /// Clients being served.
    #[cfg(test)]
    pub fn clients(&self) -> usize {
        self.bounded.clients().len()
    }

    /// Accepts what waits, within a pass's budget.
    fn accept(&mut self, now: Instant) {
        let deadline = now + self.timeout;
        self.bounded.accept(now, |new| admit(new, deadline));
    }
}

/// The client just accepted, to be served until `deadline`; one beyond [`MAX_CLIENTS`] is
/// closed at once.
fn admit(new: Accepted<TcpStream, SocketAddr>, deadline: Instant) -> Option<Client> {
    if !new.room {
        debug!("metrics: client={} closed: {MAX_CLIENTS} clients already", new.peer);
        return None;
    }
    Some(Client::new(new.stream, deadline))
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
    /// A `/healthz` request (`HEAD` if true) whose loops are being checked.
    Checking(Check, bool),
    /// The answer and how much of it is sent.
    Writing(Vec<u8>, usize),
    /// Answered and shut down for writing; discarded bytes so far.
    Lingering(usize),
}

impl Timed for Client {
    fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl Client {
    fn new(stream: TcpStream, deadline: Instant) -> Client {
        Client { stream, deadline, state: State::Reading(Vec::new()) }
    }

    /// When its health check is to be looked at again, if it is waiting for one.
    fn recheck(&self) -> Option<Instant> {
        match &self.state {
            State::Checking(check, _) => Some(check.next),
            _ => None,
        }
    }

    /// Advances through the states as far as the socket (and a health check) allows.
    fn drive(&mut self, metrics: &Metrics, vitals: &dyn Vitals, now: Instant) -> Step {
        if let State::Reading(head) = &mut self.state {
            self.state = match read_head(&mut self.stream, head) {
                Received::Partial => return Step::Wait,
                Received::Closed => return Step::Close,
                Received::Complete(end) => match parse(&head[..end]) {
                    Request::Get { page: Page::Metrics, head_only } => {
                        State::Writing(metrics_response(&metrics.render(), head_only), 0)
                    }
                    Request::Get { page: Page::Ready, head_only } => {
                        let verdict = if vitals.ready() { Ok(()) } else { Err("stopping".to_owned()) };
                        State::Writing(probe_response(verdict, head_only), 0)
                    }
                    Request::Get { page: Page::Health, head_only } => {
                        State::Checking(Check::start(metrics, vitals, now), head_only)
                    }
                    Request::Other(status, head_only) => {
                        State::Writing(status_response(status, head_only), 0)
                    }
                },
                Received::TooLarge => State::Writing(status_response(Status::TooLarge, false), 0),
            };
        }
        if let State::Checking(check, head_only) = &mut self.state {
            match check.verdict(metrics, vitals, now) {
                None => return Step::Wait,
                Some(verdict) => self.state = State::Writing(probe_response(verdict, *head_only), 0),
            }
        }
        if let State::Writing(answer, sent) = &mut self.state {
            match bounded::write_out(&mut self.stream, answer, sent) {
                Sent::Blocked => return Step::Wait,
                Sent::All => {
                    if self.stream.shutdown(Shutdown::Write).is_err() {
                        return Step::Close;
                    }
                    self.state = State::Lingering(0);
                }
                Sent::Failed => return Step::Close,
            }
        }
        if let State::Lingering(discarded) = &mut self.state {
            return linger(&mut self.stream, discarded);
        }
        Step::Wait
    }
}

/// Reads the request head into `head`, until its end (a blank line), `WouldBlock`, or
/// [`MAX_HEAD`] bytes.
fn read_head(stream: &mut impl Read, head: &mut Vec<u8>) -> Received {
    bounded::read_request(stream, head, MAX_HEAD, head_end)
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

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
