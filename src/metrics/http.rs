//! The `GET /metrics` endpoint: a listening socket and a few client connections on the
//! supervisor's poll, answering each client once with [`Metrics::render`], or with the
//! daemon's liveness (`/healthz`) or readiness (`/readyz`, see [`super::health`]), and closing.
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
//! do not make the kernel reset the connection and lose the answer on its way. A `/healthz`
//! request waits between reading and writing while the loops are checked: the endpoint looks
//! at the check again at its [`Check::next`], through [`Endpoint::next_deadline`].
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

use super::health::{Check, Vitals};
use super::request::{metrics_response, parse, probe_response, status_response, Page, Request, Status};
use super::Metrics;
use crate::net::ACCEPT_PAUSE;
use crate::slots::{Slots, Timed};

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
    clients: Slots<Client>,
    timeout: Duration,
    /// When a `/healthz` check is to be looked at again (the earliest, if several).
    recheck: Option<Instant>,
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
        Ok(Endpoint::on(crate::net::listen(addr, false)?, timeout))
    }

    fn on(listener: TcpListener, timeout: Duration) -> Endpoint {
        let clients = Slots::new(MAX_CLIENTS);
        Endpoint { listener, registry: None, base: None, clients, timeout, recheck: None }
    }

    /// The address bound (useful with port 0).
    #[cfg(test)]
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Gives up the listening socket for a live upgrade, open, by its number (clients are
    /// closed: a scrape retries).
    pub fn freeze(mut self, registry: &Registry) -> std::os::fd::RawFd {
        let _ = registry.deregister(&mut self.listener);
        std::os::fd::IntoRawFd::into_raw_fd(self.listener)
    }

    /// The endpoint whose listening socket a live upgrade handed over.
    pub fn adopt(fd: std::os::fd::RawFd) -> io::Result<Endpoint> {
        Ok(Endpoint::on(TcpListener::from(crate::sys::adopt(fd)?), CLIENT_TIMEOUT))
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

    /// Handles a readiness event for one of its tokens, answering from `metrics` and `vitals`.
    pub fn handle(
        &mut self,
        registry: &Registry,
        event: &mio::event::Event,
        metrics: &Metrics,
        vitals: &dyn Vitals,
    ) {
        match self.base.and_then(|base| owned(base, event.token())) {
            None => {}
            Some(Owned::Listener) => self.accept(registry, Instant::now()),
            Some(Owned::Client(slot)) => {
                if let Some(client) = self.clients.get_mut(slot) {
                    if client.drive(metrics, vitals, Instant::now()) == Step::Close {
                        self.clients.take(slot);
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
        self.clients.next_deadline().into_iter().chain(self.recheck).min()
    }

    /// Answers the health checks that are due, closes clients whose deadline passed, and
    /// accepts the clients a pass left waiting.
    pub fn expire(&mut self, now: Instant, metrics: &Metrics, vitals: &dyn Vitals) {
        if self.recheck.is_some_and(|at| at <= now) {
            let mut next: Option<Instant> = None;
            self.clients.retain(|client| {
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
        if self.clients.expire(now) {
            if let Some(registry) = self.registry.take() {
                self.accept(&registry, now);
                self.registry = Some(registry);
            }
        }
    }

    /// Clients being served.
    #[cfg(test)]
    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// Accepts until `WouldBlock` or the budget; a client beyond [`MAX_CLIENTS`] is closed at once.
    fn accept(&mut self, registry: &Registry, now: Instant) {
        let Some(base) = self.base else { return };
        self.clients.accept_again(None);
        for _ in 0..ACCEPTS_PER_PASS {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("metrics: accept: {e}; pausing accepts for {ACCEPT_PAUSE:?}");
                    self.clients.accept_again(Some(now + ACCEPT_PAUSE));
                    return;
                }
            };
            let Some(slot) = self.clients.free() else {
                debug!("metrics: client={peer} closed: {MAX_CLIENTS} clients already");
                continue;
            };
            let interest = Interest::READABLE | Interest::WRITABLE;
            match registry.register(&mut stream, client_token(base, slot), interest) {
                Ok(()) => self.clients.put(slot, Client::new(stream, now + self.timeout)),
                Err(e) => debug!("metrics: client={peer} cannot be registered: {e}"),
            }
        }
        self.clients.accept_again(Some(now)); // budget spent: more may be waiting, with no event to say so
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
                Head::Partial => return Step::Wait,
                Head::Closed => return Step::Close,
                Head::Complete(end) => match parse(&head[..end]) {
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
                Head::TooLarge => State::Writing(status_response(Status::TooLarge, false), 0),
            };
        }
        if let State::Checking(check, head_only) = &mut self.state {
            match check.verdict(metrics, vitals, now) {
                None => return Step::Wait,
                Some(verdict) => self.state = State::Writing(probe_response(verdict, *head_only), 0),
            }
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

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
