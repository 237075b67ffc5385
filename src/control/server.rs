//! Serving the control socket. Everything is bounded, as for the metrics endpoint: a request
//! line is at most [`MAX_LINE`] bytes, a client has [`REQUEST_TIMEOUT`] from accept to send it
//! and [`ANSWER_TIMEOUT`] to take the answer, at most [`MAX_CLIENTS`] are served at once (more
//! are told so and closed), and an accept pass takes at most [`ACCEPTS_PER_PASS`].
//!
//! Only a peer whose uid is root or the daemon's, or who is in the daemon's group, is served:
//! others get one error line and are closed (`SO_PEERCRED`, read at accept).

use std::io::{self, Read, Write};
use std::os::fd::{IntoRawFd, RawFd};
use std::time::{Duration, Instant};

use log::debug;
use mio::net::UnixStream;
use mio::{Interest, Registry, Token};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::{Gid, Group, Uid, User};

use super::request::{self, Request};
use crate::config::ControlConfig;
use crate::net::{UnixPath, ACCEPT_PAUSE};
use crate::slots::{Slots, Timed};

/// Longest request line.
pub const MAX_LINE: usize = 4096;
/// Clients served at once.
pub const MAX_CLIENTS: usize = 32;
/// From accept to the end of the request line.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// From the request to the end of the answer (a `show conns` of many connections is long).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Clients accepted per pass.
pub const ACCEPTS_PER_PASS: usize = 64;

/// The control socket and its clients. It owns tokens `base..=base + MAX_CLIENTS` of the
/// supervisor's poll: `base` for the listener, `base + 1 + i` for client slot `i`.
pub struct Server {
    listener: mio::net::UnixListener,
    /// The socket file, removed when the server is dropped (a stop).
    path: UnixPath,
    registry: Option<Registry>,
    base: Option<Token>,
    clients: Slots<Client>,
}

struct Client {
    stream: UnixStream,
    deadline: Instant,
    state: State,
}

enum State {
    /// The request line so far.
    Reading(Vec<u8>),
    /// Handed to the supervisor; the answer is coming.
    Asked,
    /// The answer and how much of it is sent.
    Writing(Vec<u8>, usize),
}

impl Server {
    /// Creates the socket file (replacing a stale one) with `config.mode`, owned by `owner`.
    pub fn bind(config: &ControlConfig, owner: Option<(u32, u32)>) -> io::Result<Server> {
        let (listener, path) = crate::net::listen_unix(&config.socket, config.mode, owner)?;
        Ok(Server::on(listener, path))
    }

    /// The control socket a live upgrade handed over.
    pub fn adopt(fd: RawFd, path: &std::path::Path) -> io::Result<Server> {
        Server::adopt_with(fd, UnixPath::adopt(path.to_path_buf()))
    }

    /// [`Server::adopt`], with the guard of the socket file made by the caller (who may keep a
    /// clone of it, so that the file stays while the guardian of an upgrade may still need it).
    pub fn adopt_with(fd: RawFd, path: UnixPath) -> io::Result<Server> {
        let listener = mio::net::UnixListener::from(crate::sys::adopt(fd)?);
        Ok(Server::on(listener, path))
    }

    fn on(listener: mio::net::UnixListener, path: UnixPath) -> Server {
        Server { listener, path, registry: None, base: None, clients: Slots::new(MAX_CLIENTS) }
    }

    /// Gives up the listening socket for a live upgrade, open, by its number; the file stays.
    /// Clients are closed, but `keep` (the one that asked for the upgrade) is handed over too.
    pub fn freeze(mut self, registry: &Registry, keep: Option<usize>) -> (RawFd, Option<RawFd>) {
        let _ = registry.deregister(&mut self.listener);
        let kept = keep.and_then(|slot| self.clients.take(slot)).map(|mut c| {
            let _ = registry.deregister(&mut c.stream);
            c.stream.into_raw_fd()
        });
        let Server { listener, path, .. } = self;
        std::mem::forget(path); // the new image listens on it
        (listener.into_raw_fd(), kept)
    }

    /// Registers the listener as `base`; clients get the `MAX_CLIENTS` tokens after it.
    pub fn register(&mut self, registry: &Registry, base: Token) -> io::Result<()> {
        let handle = registry.try_clone()?;
        registry.register(&mut self.listener, base, Interest::READABLE)?;
        (self.registry, self.base) = (Some(handle), Some(base));
        Ok(())
    }

    /// Whether `token` is one of the server's.
    pub fn owns(&self, token: Token) -> bool {
        self.base.is_some_and(|base| token.0 >= base.0 && token.0 <= base.0 + MAX_CLIENTS)
    }

    /// Handles a readiness event for one of its tokens. Returns a client's complete request
    /// (or why it is not one), to be answered with [`Server::answer`].
    pub fn handle(&mut self, event: &mio::event::Event) -> Option<(usize, Result<Request, String>)> {
        let base = self.base?;
        match event.token().0 - base.0 {
            0 => {
                self.accept(Instant::now());
                None
            }
            n => {
                let slot = n - 1;
                let client = self.clients.get_mut(slot)?;
                match client.drive() {
                    Step::Wait => None,
                    Step::Close => {
                        self.clients.take(slot);
                        None
                    }
                    Step::Asked(request) => Some((slot, request)),
                }
            }
        }
    }

    /// Sends `answer` to the client in `slot` (then closes it).
    pub fn answer(&mut self, slot: usize, answer: String) {
        if let Some(client) = self.clients.get_mut(slot) {
            client.state = State::Writing(answer.into_bytes(), 0);
            client.deadline = Instant::now() + ANSWER_TIMEOUT;
            if client.drive() == Step::Close {
                self.clients.take(slot);
            }
        }
    }

    /// When the next client deadline passes, or accepting is to resume.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.clients.next_deadline()
    }

    /// Closes clients whose deadline passed, and accepts the clients a pass left waiting.
    pub fn expire(&mut self, now: Instant) {
        if self.clients.expire(now) {
            self.accept(now);
        }
    }

    /// Accepts until `WouldBlock` or the budget. A client beyond [`MAX_CLIENTS`], or one that may
    /// not ask, gets one error line and is closed.
    fn accept(&mut self, now: Instant) {
        let (Some(base), Some(registry)) = (self.base, self.registry.as_ref()) else { return };
        self.clients.accept_again(None);
        for _ in 0..ACCEPTS_PER_PASS {
            let mut stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted) =>
                {
                    continue
                }
                Err(e) => {
                    debug!("control: accept: {e}; pausing accepts for {ACCEPT_PAUSE:?}");
                    self.clients.accept_again(Some(now + ACCEPT_PAUSE));
                    return;
                }
            };
            if let Err(why) = may_ask(&stream) {
                let _ = stream.write(format!("error: {why}\n").as_bytes());
                continue;
            }
            let Some(slot) = self.clients.free() else {
                let _ = stream.write(format!("error: busy: {MAX_CLIENTS} clients already\n").as_bytes());
                continue;
            };
            let token = Token(base.0 + 1 + slot);
            match registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE) {
                Ok(()) => {
                    let client =
                        Client { stream, deadline: now + REQUEST_TIMEOUT, state: State::Reading(Vec::new()) };
                    self.clients.put(slot, client);
                }
                Err(e) => debug!("control: a client cannot be registered: {e}"),
            }
        }
        self.clients.accept_again(Some(now)); // budget spent: more may be waiting, with no event to say so
    }
}

/// Whether the peer of `stream` may use the control socket: root, the daemon's user, or a
/// member of the daemon's group. `Err` says why not.
fn may_ask(stream: &UnixStream) -> Result<(), String> {
    let cred = getsockopt(stream, PeerCredentials).map_err(|e| format!("cannot tell who is asking: {e}"))?;
    let (uid, gid) = (Uid::from_raw(cred.uid()), Gid::from_raw(cred.gid()));
    let (our_uid, our_gid) = (Uid::effective(), Gid::effective());
    if uid.is_root() || uid == our_uid || gid == our_gid {
        return Ok(());
    }
    let name = User::from_uid(uid).ok().flatten().map(|u| u.name);
    let group = Group::from_gid(our_gid).ok().flatten();
    if let (Some(name), Some(group)) = (&name, &group) {
        if group.mem.contains(name) {
            return Ok(());
        }
    }
    Err(format!(
        "permission denied: uid {} is neither root, the daemon's user nor in its group{}",
        uid,
        group.map(|g| format!(" ({})", g.name)).unwrap_or_default()
    ))
}

#[derive(Debug, PartialEq, Eq)]
enum Step {
    Wait,
    Close,
    Asked(Result<Request, String>),
}

impl Timed for Client {
    fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl Client {
    /// Reads the request line, or writes the answer, as far as the socket allows.
    fn drive(&mut self) -> Step {
        match &mut self.state {
            State::Reading(line) => {
                let mut buf = [0u8; 1024];
                loop {
                    match self.stream.read(&mut buf) {
                        Ok(0) => return Step::Close,
                        Ok(n) => {
                            line.extend_from_slice(&buf[..n]);
                            if let Some(end) = line.iter().position(|&b| b == b'\n') {
                                let request = match std::str::from_utf8(&line[..end]) {
                                    Ok(text) => request::parse(text.trim_end_matches('\r')),
                                    Err(_) => Err("the request is not UTF-8 text".to_owned()),
                                };
                                self.state = State::Asked;
                                return Step::Asked(request);
                            }
                            if line.len() > MAX_LINE {
                                self.state = State::Asked;
                                return Step::Asked(Err(format!(
                                    "request line longer than {MAX_LINE} bytes"
                                )));
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return Step::Close,
                    }
                }
            }
            State::Asked => Step::Wait,
            State::Writing(answer, sent) => {
                while *sent < answer.len() {
                    match self.stream.write(&answer[*sent..]) {
                        Ok(0) => return Step::Close,
                        Ok(n) => *sent += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return Step::Close,
                    }
                }
                Step::Close
            }
        }
    }
}
