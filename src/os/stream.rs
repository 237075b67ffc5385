//! The sockets the relay moves bytes between, of either family: a connected stream ([`Stream`]),
//! a listening socket ([`ListenSocket`]) and who is on the other end of an accepted one
//! ([`Peer`]). TCP and Unix stream sockets behave alike for reading, writing, `splice`,
//! half-close and readiness; the differences (no address for a Unix client, no `TCP_INFO`, no
//! `TCP_NODELAY`) are answered here once, so the relay does not branch on the family.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};

use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

/// A connected stream socket.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// Who is on the other end of an accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Ip(SocketAddr),
    /// A client of a Unix socket listener: it has no address (logs and metrics say `unix`).
    Unix,
}

/// A listening socket.
#[derive(Debug)]
pub enum ListenSocket {
    Tcp(TcpListener),
    Unix(UnixListener),
}

macro_rules! either {
    ($value:expr, $s:ident => $body:expr) => {
        match $value {
            Stream::Tcp($s) => $body,
            Stream::Unix($s) => $body,
        }
    };
}

macro_rules! listening {
    ($value:expr, $s:ident => $body:expr) => {
        match $value {
            ListenSocket::Tcp($s) => $body,
            ListenSocket::Unix($s) => $body,
        }
    };
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Ip(addr) => write!(f, "{addr}"),
            Peer::Unix => f.write_str("unix"),
        }
    }
}

impl Peer {
    /// The client's address, for admission by address (`None` for a Unix client).
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        match self {
            Peer::Ip(addr) => Some(addr.ip().to_canonical()),
            Peer::Unix => None,
        }
    }
}

impl Stream {
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }

    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Stream::Tcp(s) => s.take_error(),
            Stream::Unix(s) => s.take_error(),
        }
    }

    /// Gives up the socket, open, by its number (a live upgrade: see `handover`).
    pub fn into_raw(self) -> RawFd {
        either!(self, s => s.into_raw_fd())
    }

    /// A connected socket of either family, from its descriptor (one a live upgrade handed
    /// over).
    pub fn from_fd(fd: OwnedFd, unix: bool) -> Stream {
        if unix {
            Stream::Unix(UnixStream::from(fd))
        } else {
            Stream::Tcp(TcpStream::from(fd))
        }
    }

    /// Who is on the other end, for a person to read: `IP:port`, or `unix:/path` (`-` if the
    /// kernel does not say, as for a connect still in progress).
    pub fn peer_label(&self) -> String {
        match self {
            Stream::Tcp(s) => s.peer_addr().map_or("-".to_owned(), |a| a.to_string()),
            Stream::Unix(s) => {
                match s.peer_addr().ok().and_then(|a| a.as_pathname().map(|p| p.display().to_string())) {
                    Some(path) => format!("unix:{path}"),
                    None => "-".to_owned(),
                }
            }
        }
    }

    /// The local address of a TCP socket (the listener's side of an accepted one).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Stream::Tcp(s) => s.local_addr().ok(),
            Stream::Unix(_) => None,
        }
    }
}

impl ListenSocket {
    /// Gives up the socket, open, by its number (a live upgrade).
    pub fn into_raw(self) -> RawFd {
        listening!(self, s => s.into_raw_fd())
    }

    /// A listening socket of either family, from its descriptor (one a live upgrade handed
    /// over).
    pub fn from_fd(fd: OwnedFd, unix: bool) -> ListenSocket {
        if unix {
            ListenSocket::Unix(UnixListener::from(fd))
        } else {
            ListenSocket::Tcp(TcpListener::from(fd))
        }
    }

    /// Accepts one connection (non-blocking).
    pub fn accept(&self) -> io::Result<(Stream, Peer)> {
        match self {
            ListenSocket::Tcp(l) => l.accept().map(|(s, addr)| (Stream::Tcp(s), Peer::Ip(addr))),
            ListenSocket::Unix(l) => l.accept().map(|(s, _)| (Stream::Unix(s), Peer::Unix)),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        either!(self, s => s.read(buf))
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        either!(self, s => s.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        either!(self, s => s.flush())
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        either!(self, s => s.as_fd())
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        either!(self, s => s.as_raw_fd())
    }
}

impl AsFd for ListenSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        listening!(self, s => s.as_fd())
    }
}

impl Source for Stream {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        either!(self, s => s.register(registry, token, interests))
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        either!(self, s => s.reregister(registry, token, interests))
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        either!(self, s => s.deregister(registry))
    }
}

impl Source for ListenSocket {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        listening!(self, s => s.register(registry, token, interests))
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        listening!(self, s => s.reregister(registry, token, interests))
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        listening!(self, s => s.deregister(registry))
    }
}
