//! A bounded-request server: a listening socket and at most `capacity` clients on a poll that
//! is not its own, each client asking one request and taking one answer before its deadline.
//! The skeleton the control socket (`control/server.rs`) and the metrics endpoint
//! (`metrics/http.rs`) share; what a client is, what it asks and how it is answered are theirs.
//!
//! It must not be a way to hang, crash or busy the daemon, so everything is bounded: a request
//! is read up to a limit ([`read_request`]); a client is closed when its deadline passes (the
//! deadlines are the server's: one to ask, one to take the answer, or one for both); at most
//! `capacity` clients are served at once, and one more is still accepted, handed to the server
//! to be told it is busy, and closed, so that the backlog keeps moving; an accept pass takes at
//! most [`ACCEPTS_PER_PASS`] clients, the rest are taken at once on the next turn of the loop,
//! through [`BoundedServer::next_deadline`] and [`BoundedServer::expire`]. An accept error such
//! as running out of descriptors pauses accepting for [`ACCEPT_PAUSE`] instead of spinning.
//!
//! Tokens: the server owns `base..=base + capacity` of the poll, `base` for the listener and
//! `base + 1 + i` for the client at index `i` of its client table (a client keeps its index
//! from accept to close).
//! Readiness (mio, edge-triggered): a client is registered for reading and writing once, and
//! every read and write runs until `WouldBlock`; a spurious event, or one meant for the previous
//! client of the same token, costs a call that returns `WouldBlock`. Closing a client is
//! dropping its socket.

use std::io::{self, Read, Write};
use std::time::Instant;

use log::debug;
use mio::event::Source;
use mio::{Interest, Registry, Token};

use crate::client_table::{ClientTable, Timed};
use crate::os::net::ACCEPT_PAUSE;

/// Clients accepted per pass; more wait for the next turn of the loop.
pub const ACCEPTS_PER_PASS: usize = 64;

/// A listening socket of either family, as the server accepts from it.
pub trait Listen: Source {
    type Stream: Source;
    type Peer;
    fn accept(&self) -> io::Result<(Self::Stream, Self::Peer)>;
}

impl Listen for mio::net::TcpListener {
    type Stream = mio::net::TcpStream;
    type Peer = std::net::SocketAddr;
    fn accept(&self) -> io::Result<(Self::Stream, Self::Peer)> {
        mio::net::TcpListener::accept(self)
    }
}

impl Listen for mio::net::UnixListener {
    type Stream = mio::net::UnixStream;
    type Peer = std::os::unix::net::SocketAddr;
    fn accept(&self) -> io::Result<(Self::Stream, Self::Peer)> {
        mio::net::UnixListener::accept(self)
    }
}

/// A client just accepted, for the server to serve (its own client made of the stream) or to
/// refuse (told why on the stream, if it likes, which is then closed).
pub struct Accepted<S, P> {
    pub stream: S,
    pub peer: P,
    /// Whether the client table has room for it; if not, it is one over the cap.
    pub room: bool,
}

/// What a token of the server stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owned {
    Listener,
    Client(usize),
}

/// What `token` stands for among the `capacity + 1` tokens from `base`.
pub fn owned(base: Token, capacity: usize, token: Token) -> Option<Owned> {
    match token.0.checked_sub(base.0)? {
        0 => Some(Owned::Listener),
        n if n <= capacity => Some(Owned::Client(n - 1)),
        _ => None,
    }
}

/// The token of the client at `index`.
pub fn client_token(base: Token, index: usize) -> Token {
    Token(base.0 + 1 + index)
}

/// The listener and its clients; `name` begins the debug lines it logs. A client is the
/// server's own type, with its deadline ([`Timed`]) and its socket (`stream_of`).
pub struct BoundedServer<L: Listen, C> {
    name: &'static str,
    listener: L,
    stream_of: fn(&mut C) -> &mut L::Stream,
    /// A handle on the poll it is registered with, for accepting without an event.
    registry: Option<Registry>,
    base: Option<Token>,
    clients: ClientTable<C>,
    capacity: usize,
}

impl<L: Listen, C: Timed> BoundedServer<L, C> {
    pub fn new(
        name: &'static str,
        listener: L,
        capacity: usize,
        stream_of: fn(&mut C) -> &mut L::Stream,
    ) -> BoundedServer<L, C> {
        let clients = ClientTable::new(capacity);
        BoundedServer { name, listener, stream_of, registry: None, base: None, clients, capacity }
    }

    /// The listening socket.
    #[cfg(test)]
    pub fn listener(&self) -> &L {
        &self.listener
    }

    /// The clients, by index.
    pub fn clients(&self) -> &ClientTable<C> {
        &self.clients
    }

    /// The clients, by index, to drive, put (adopted) or take (closed).
    pub fn clients_mut(&mut self) -> &mut ClientTable<C> {
        &mut self.clients
    }

    /// Registers the listener as `base`, and the clients it has already (handed over by a live
    /// upgrade: they hear of their sockets' readiness from the registration).
    pub fn register(&mut self, registry: &Registry, base: Token) -> io::Result<()> {
        if base.0.checked_add(self.capacity).is_none() {
            let why = format!("{}: token range overflows", self.name);
            return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
        }
        let handle = registry.try_clone()?;
        registry.register(&mut self.listener, base, Interest::READABLE)?;
        for index in 0..self.capacity {
            if let Some(client) = self.clients.get_mut(index) {
                let interest = Interest::READABLE | Interest::WRITABLE;
                registry.register((self.stream_of)(client), client_token(base, index), interest)?;
            }
        }
        (self.registry, self.base) = (Some(handle), Some(base));
        Ok(())
    }

    /// What `token` stands for, if it is one of the server's.
    pub fn owned(&self, token: Token) -> Option<Owned> {
        self.base.and_then(|base| owned(base, self.capacity, token))
    }

    /// Gives up the listener and the clients, taken off the poll, in index order.
    pub fn shut(mut self, registry: &Registry) -> (L, Vec<C>) {
        let _ = registry.deregister(&mut self.listener);
        let mut clients = Vec::new();
        for index in 0..self.capacity {
            if let Some(mut client) = self.clients.take(index) {
                let _ = registry.deregister((self.stream_of)(&mut client));
                clients.push(client);
            }
        }
        (self.listener, clients)
    }

    /// When the next client deadline passes, or accepting is to resume.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.clients.next_deadline()
    }

    /// Closes the clients whose deadline passed, and accepts those a pass left waiting.
    pub fn expire(&mut self, now: Instant, admit: impl FnMut(Accepted<L::Stream, L::Peer>) -> Option<C>) {
        if self.clients.expire(now) {
            self.accept(now, admit);
        }
    }

    /// Accepts until `WouldBlock` or [`ACCEPTS_PER_PASS`], each client given to `admit`: the
    /// client it returns is registered and put at a free index; one it refuses is closed.
    pub fn accept(&mut self, now: Instant, mut admit: impl FnMut(Accepted<L::Stream, L::Peer>) -> Option<C>) {
        let (Some(base), Some(registry)) = (self.base, self.registry.as_ref()) else { return };
        self.clients.accept_again(None);
        for _ in 0..ACCEPTS_PER_PASS {
            let (stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted) =>
                {
                    continue
                }
                Err(e) => {
                    debug!("{}: accept: {e}; pausing accepts for {ACCEPT_PAUSE:?}", self.name);
                    self.clients.accept_again(Some(now + ACCEPT_PAUSE));
                    return;
                }
            };
            let free = self.clients.free();
            let Some(mut client) = admit(Accepted { stream, peer, room: free.is_some() }) else { continue };
            let Some(index) = free else { continue }; // no room: dropping it closes it
            let interest = Interest::READABLE | Interest::WRITABLE;
            match registry.register((self.stream_of)(&mut client), client_token(base, index), interest) {
                Ok(()) => self.clients.put(index, client),
                Err(e) => debug!("{}: a client cannot be registered: {e}", self.name),
            }
        }
        self.clients.accept_again(Some(now)); // budget spent: more may be waiting, with no event to say so
    }
}

/// How reading a request went.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// Not complete yet; the socket would block.
    Partial,
    /// Complete: the request is `buf[..end]`. Bytes after it are ignored.
    Complete(usize),
    /// `max` bytes and no end in sight.
    TooLarge,
    /// End of stream or an error before the request was complete.
    Closed,
}

/// Reads into `buf` until `end_of` finds the request's end in it, `WouldBlock`, or `max` bytes.
/// `end_of` is given the whole of `buf` and returns the length of the request in it.
pub fn read_request(
    stream: &mut impl Read,
    buf: &mut Vec<u8>,
    max: usize,
    end_of: impl Fn(&[u8]) -> Option<usize>,
) -> Received {
    let mut chunk = [0u8; 1024];
    loop {
        let room = max.saturating_sub(buf.len());
        if room == 0 {
            return Received::TooLarge;
        }
        let want = room.min(chunk.len());
        let n = match stream.read(&mut chunk[..want]) {
            Ok(0) => return Received::Closed,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Received::Partial,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Received::Closed,
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = end_of(buf) {
            return Received::Complete(end);
        }
    }
}

/// How writing an answer went.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// All of it.
    All,
    /// Not all: the socket would block.
    Blocked,
    /// The client is gone (or the socket failed).
    Failed,
}

/// Writes `answer[*sent..]` until all is sent or the socket would block, counting in `sent`.
pub fn write_out(stream: &mut impl Write, answer: &[u8], sent: &mut usize) -> Sent {
    while *sent < answer.len() {
        match stream.write(&answer[*sent..]) {
            Ok(0) => return Sent::Failed,
            Ok(n) => *sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Sent::Blocked,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Sent::Failed,
        }
    }
    Sent::All
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;
    use std::time::Duration;

    use mio::Poll;

    use super::*;

    /// A client that only holds its socket until its deadline.
    struct Held(mio::net::TcpStream, Instant);

    impl Timed for Held {
        fn deadline(&self) -> Instant {
            self.1
        }
    }

    #[test]
    fn one_over_the_cap_is_handed_back_and_a_passed_deadline_frees_its_place() {
        let listener = crate::os::net::listen("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let addr = listener.local_addr().unwrap();
        let poll = Poll::new().unwrap();
        let mut server = BoundedServer::new("test", listener, 1, |held: &mut Held| &mut held.0);
        server.register(poll.registry(), Token(10)).unwrap();
        let first = std::net::TcpStream::connect(addr).unwrap();
        let mut second = std::net::TcpStream::connect(addr).unwrap();
        second.set_read_timeout(Some(Duration::from_secs(10))).unwrap();

        let (now, mut over) = (Instant::now(), 0);
        for _ in 0..100 {
            server.accept(now, |new| match new.room {
                true => Some(Held(new.stream, now + Duration::from_secs(1))),
                false => {
                    over += 1;
                    None
                }
            });
            if over > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!((server.clients().len(), over), (1, 1), "one served, one over the cap");
        assert_eq!(server.owned(Token(11)), Some(Owned::Client(0)));
        assert_eq!(second.read(&mut [0; 8]).unwrap(), 0, "the one over the cap is closed");
        assert_eq!(server.next_deadline(), Some(now + Duration::from_secs(1)));
        server.expire(now + Duration::from_secs(2), |_| None);
        assert_eq!(server.clients().len(), 0, "given up on at its deadline");
        drop(first);
    }

    #[test]
    fn tokens() {
        let base = Token(7);
        let capacity = 32;
        assert_eq!(owned(base, capacity, Token(6)), None);
        assert_eq!(owned(base, capacity, Token(7)), Some(Owned::Listener));
        assert_eq!(owned(base, capacity, Token(8)), Some(Owned::Client(0)));
        let last = client_token(base, capacity - 1);
        assert_eq!(owned(base, capacity, last), Some(Owned::Client(capacity - 1)));
        assert_eq!(owned(base, capacity, Token(8 + capacity)), None);
        assert_eq!(owned(Token(usize::MAX), capacity, Token(0)), None);
    }
}
