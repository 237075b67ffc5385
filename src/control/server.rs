//! Serving the control socket. Everything is bounded, as for the metrics endpoint: a request
//! line is at most [`MAX_LINE`](super::client::MAX_LINE) bytes, a client has
//! [`REQUEST_TIMEOUT`] from accept to send it and [`ANSWER_TIMEOUT`] to take the answer, at most
//! [`MAX_CLIENTS`] are served at once (more are told so and closed), and an accept pass takes at
//! most [`ACCEPTS_PER_PASS`](crate::bounded::ACCEPTS_PER_PASS) (the skeleton of
//! [`crate::bounded`]). Every answer ends with an empty line ([`END`]); a client the server
//! gives up on is closed without it, so the client can tell.
//!
//! Only a peer whose uid is root or the daemon's, or who is in the daemon's group, is served:
//! others get one error line and are closed (`SO_PEERCRED`, read at accept).
//!
//! Across a live upgrade every client goes on ([`Server::freeze`], [`Server::adopt_with`]): one
//! still sending its request, one whose answer is not all sent, and those waiting for the
//! upgrade's result; clients not accepted yet wait in the socket's backlog, which the image that
//! carries on accepts from (the new one, the old one after a failed exec, or the guardian).

use std::io::{self, Write};
use std::os::fd::{IntoRawFd, RawFd};
use std::time::{Duration, Instant};

use log::debug;
use std::os::unix::net::SocketAddr;

use mio::net::{UnixListener, UnixStream};
use mio::{Registry, Token};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::{Gid, Group, Uid, User};

pub use super::client::END;
use super::client::{Client, State, Step};
use super::request::Request;
use crate::bounded::{Accepted, BoundedServer, Owned};
use crate::config::ControlConfig;
use crate::handover::state::ControlClientState;
use crate::os::net::UnixPath;

/// Clients served at once.
pub const MAX_CLIENTS: usize = 32;
/// From accept to the end of the request line.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// From the request to the end of the answer (a `show conns` of many connections is long).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// A client, as the supervisor names it while answering: its index in the client table, and
/// which of the clients at that index it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientId {
    index: usize,
    serial: u64,
}

/// The control socket and its clients. It owns tokens `base..=base + MAX_CLIENTS` of the
/// supervisor's poll: `base` for the listener, `base + 1 + i` for the client at index `i`.
pub struct Server {
    bounded: BoundedServer<UnixListener, Client>,
    /// The socket file, removed when the server is dropped (a stop).
    path: UnixPath,
    next_serial: u64,
}

impl Server {
    /// Creates the socket file (replacing a stale one) with `config.mode`, owned by `owner`.
    pub fn bind(config: &ControlConfig, owner: Option<(u32, u32)>) -> io::Result<Server> {
        let (listener, path) = crate::os::net::listen_unix(&config.socket, config.mode, owner)?;
        Ok(Server::on(listener, path))
    }

    /// The control socket a live upgrade handed over, with its clients (their deadlines
    /// counted from `frozen`, the freeze instant). A client that cannot be taken over is
    /// closed.
    pub fn adopt(
        fd: RawFd,
        path: &std::path::Path,
        clients: &[ControlClientState],
        frozen: Instant,
    ) -> io::Result<Server> {
        Server::adopt_with(fd, UnixPath::adopt(path.to_path_buf()), clients, frozen)
    }

    /// [`Server::adopt`], with the guard of the socket file made by the caller (who may keep a
    /// clone of it, so that the file stays while the guardian of an upgrade may still need it).
    /// No client's socket is read or written here: the guardian may still take them back.
    pub fn adopt_with(
        fd: RawFd,
        path: UnixPath,
        clients: &[ControlClientState],
        frozen: Instant,
    ) -> io::Result<Server> {
        let listener = UnixListener::from(crate::os::sys::adopt(fd)?);
        let mut server = Server::on(listener, path);
        for (index, state) in clients.iter().enumerate().take(MAX_CLIENTS) {
            match Client::thaw(state, frozen, server.serial()) {
                Ok(client) => server.bounded.clients_mut().put(index, client),
                Err(e) => debug!("control: a client handed over is lost: {e}"),
            }
        }
        Ok(server)
    }

    fn on(listener: UnixListener, path: UnixPath) -> Server {
        let path = path.named("control socket");
        let bounded = BoundedServer::new("control", listener, MAX_CLIENTS, |c: &mut Client| &mut c.stream);
        Server { bounded, path, next_serial: 0 }
    }

    fn serial(&mut self) -> u64 {
        self.next_serial += 1;
        self.next_serial
    }

    /// Gives up the listening socket and every client for a live upgrade, open, by number, the
    /// clients' deadlines as time left after `at`; the file stays. A client whose answer is
    /// not complete is closed instead (it sees the answer cut short).
    pub fn freeze(self, registry: &Registry, at: Instant) -> (RawFd, Vec<ControlClientState>) {
        let Server { bounded, path, .. } = self;
        std::mem::forget(path); // the new image listens on it
        let (listener, clients) = bounded.shut(registry);
        let clients = clients.into_iter().filter_map(|client| client.freeze(at)).collect();
        (listener.into_raw_fd(), clients)
    }

    /// Registers the listener as `base`, and the clients it has; clients get the `MAX_CLIENTS`
    /// tokens after it (a client handed over hears of its socket's readiness from the
    /// registration).
    pub fn register(&mut self, registry: &Registry, base: Token) -> io::Result<()> {
        self.bounded.register(registry, base)
    }

    /// Whether `token` is one of the server's.
    pub fn owns(&self, token: Token) -> bool {
        self.bounded.owned(token).is_some()
    }

    /// Handles a readiness event for one of its tokens. Returns a client's complete request
    /// (or why it is not one), to be answered with [`Server::answer`] or [`Server::send`].
    pub fn handle(&mut self, event: &mio::event::Event) -> Option<(ClientId, Result<Request, String>)> {
        match self.bounded.owned(event.token())? {
            Owned::Listener => {
                self.accept(Instant::now());
                None
            }
            Owned::Client(index) => self.drive(index),
        }
    }

    /// Takes in what waits, before a live upgrade: the clients in the backlog (one pass), and
    /// every request that has arrived. Returns the complete ones, to be answered.
    pub fn take_in(&mut self) -> Vec<(ClientId, Result<Request, String>)> {
        self.accept(Instant::now());
        (0..MAX_CLIENTS).filter_map(|index| self.drive(index)).collect()
    }

    fn drive(&mut self, index: usize) -> Option<(ClientId, Result<Request, String>)> {
        let client = self.bounded.clients_mut().get_mut(index)?;
        match client.drive(ANSWER_TIMEOUT) {
            Step::Wait => None,
            Step::Close => {
                self.bounded.clients_mut().take(index);
                None
            }
            Step::Asked(request) => Some((ClientId { index, serial: client.serial }, request)),
        }
    }

    fn client(&mut self, id: ClientId) -> Option<&mut Client> {
        self.bounded.clients_mut().get_mut(id.index).filter(|c| c.serial == id.serial)
    }

    /// Sends `answer`, whole, to the client (then closes it).
    pub fn answer(&mut self, id: ClientId, answer: &str) {
        self.send(id, answer.as_bytes(), true);
    }

    /// Sends part of an answer (`end`: the last part). False if the client is gone: the rest
    /// of the answer is not wanted.
    pub fn send(&mut self, id: ClientId, bytes: &[u8], end: bool) -> bool {
        if !self.client(id).is_some_and(|client| client.push(bytes, end)) {
            return false;
        }
        self.drive(id.index); // answering: it writes, and asks nothing
        self.client(id).is_some()
    }

    /// Bytes of the client's answer not sent yet (`None`: the client is gone).
    pub fn unsent(&mut self, id: ClientId) -> Option<usize> {
        self.client(id).map(|client| match &client.state {
            State::Answering { out, sent, .. } => out.len() - sent,
            _ => 0,
        })
    }

    /// Closes the client before the end of its answer: it sees the answer cut short.
    pub fn abort(&mut self, id: ClientId) {
        if self.client(id).is_some() {
            self.bounded.clients_mut().take(id.index);
        }
    }

    /// The client asked for a live upgrade: it is told the result ([`Server::tell_upgrade`]),
    /// by the new image if there is one.
    pub fn await_upgrade(&mut self, id: ClientId) {
        if let Some(client) = self.client(id) {
            client.state = State::Upgrading;
        }
    }

    /// Whether a client waits for an upgrade.
    pub fn upgrade_asked(&self) -> bool {
        self.bounded.clients().iter().any(|c| matches!(c.state, State::Upgrading))
    }

    /// Answers every client waiting for an upgrade with `answer`.
    pub fn tell_upgrade(&mut self, answer: &str) {
        for index in 0..MAX_CLIENTS {
            let clients = self.bounded.clients_mut();
            if let Some(client) = clients.get_mut(index).filter(|c| matches!(c.state, State::Upgrading)) {
                client.state = State::Answering { out: Vec::new(), sent: 0, complete: false };
                client.deadline = Instant::now() + ANSWER_TIMEOUT;
                client.push(answer.as_bytes(), true);
                self.drive(index);
            }
        }
    }

    /// When the next client deadline passes, or accepting is to resume.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.bounded.next_deadline()
    }

    /// Closes clients whose deadline passed (without the end of an answer, which they did not
    /// take in time), and accepts the clients a pass left waiting.
    pub fn expire(&mut self, now: Instant) {
        let serial = &mut self.next_serial;
        self.bounded.expire(now, |new| admit(new, now, serial));
    }

    /// Accepts what waits, within a pass's budget.
    fn accept(&mut self, now: Instant) {
        let serial = &mut self.next_serial;
        self.bounded.accept(now, |new| admit(new, now, serial));
    }
}

/// The client just accepted, to be served; or, one beyond [`MAX_CLIENTS`] or one that may not
/// ask, told so in one error line and closed.
fn admit(mut new: Accepted<UnixStream, SocketAddr>, now: Instant, serial: &mut u64) -> Option<Client> {
    if let Err(why) = may_ask(&new.stream) {
        refuse(&mut new.stream, &why);
        return None;
    }
    if !new.room {
        refuse(&mut new.stream, &format!("busy: {MAX_CLIENTS} clients already"));
        return None;
    }
    *serial += 1;
    let deadline = now + REQUEST_TIMEOUT;
    Some(Client { stream: new.stream, deadline, serial: *serial, state: State::Reading(Vec::new()) })
}

/// One error line, the whole answer, for a client that is not served.
fn refuse(stream: &mut UnixStream, why: &str) {
    let mut answer = format!("error: {why}\n").into_bytes();
    answer.extend_from_slice(END);
    let _ = stream.write(&answer);
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

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::net::UnixStream as Peer;

    use mio::{Events, Poll};

    use super::*;

    /// A client of `server` that has sent `request`, once the server has read it.
    fn asking(server: &mut Server, poll: &mut Poll, request: &str) -> (Peer, ClientId) {
        let mut peer = Peer::connect(server.path.path()).unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        peer.write_all(request.as_bytes()).unwrap();
        let mut events = Events::with_capacity(8);
        for _ in 0..100 {
            poll.poll(&mut events, Some(Duration::from_millis(100))).unwrap();
            for event in events.iter() {
                if let Some((id, asked)) = server.handle(event) {
                    assert!(asked.is_ok(), "{asked:?}");
                    return (peer, id);
                }
            }
        }
        panic!("the request was not read");
    }

    #[test]
    fn an_answer_ends_with_an_empty_line_and_one_given_up_on_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let config = ControlConfig { socket: dir.path().join("control.sock"), mode: 0o600 };
        let mut server = Server::bind(&config, None).unwrap();
        let mut poll = Poll::new().unwrap();
        server.register(poll.registry(), Token(0)).unwrap();

        let (mut peer, id) = asking(&mut server, &mut poll, "help\n");
        server.answer(id, "one line\n");
        let mut answer = String::new();
        peer.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "one line\n\n");

        // In parts, the end marked once, after the last.
        let (mut peer, id) = asking(&mut server, &mut poll, "show conns\n");
        assert!(server.send(id, b"a\n", false) && server.unsent(id) == Some(0));
        server.send(id, b"b\n", true);
        assert!(!server.send(id, b"c\n", true), "nothing after the end");
        answer.clear();
        peer.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "a\nb\n\n");

        // A reader that takes nothing: given up on at its deadline, with the answer cut short
        // and no end.
        let (mut peer, id) = asking(&mut server, &mut poll, "show conns\n");
        let long = "x".repeat(8 << 20) + "\n";
        server.answer(id, &long);
        assert!(server.unsent(id).is_some_and(|n| n > 0), "more than the socket holds");
        server.expire(Instant::now() + ANSWER_TIMEOUT + Duration::from_secs(1));
        assert_eq!(server.unsent(id), None, "closed");
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        assert!(got.len() < long.len() && !got.ends_with(b"\n"), "{} bytes of {}", got.len(), long.len());
    }
}
