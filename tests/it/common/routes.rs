//! How a test reaches a real service through the daemon: the address forms of `listen` and
//! `upstream` as a parameter ([`Route`]), the endpoint a client connects to ([`Endpoint`]: TCP
//! or a Unix socket), and the daemon started as a relay in front of a service ([`Relay`]).
//!
//! A test that goes through the daemon takes a [`Route`], so that one check runs with every form
//! the config accepts.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{daemon_section, free_addr, Daemon, IO_TIMEOUT};

/// Where a client (or the daemon) connects: a TCP address or a Unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Endpoint {
    /// The endpoint as the config writes it, quoted: `"127.0.0.1:6379"`, `"unix:/run/x.sock"`.
    pub fn config_value(&self) -> String {
        match self {
            Endpoint::Tcp(addr) => format!("\"{addr}\""),
            Endpoint::Unix(path) => format!("\"unix:{}\"", path.display()),
        }
    }

    /// Connects, with [`IO_TIMEOUT`] on reads and writes; panics if it cannot.
    pub fn connect(&self) -> Stream {
        self.try_connect().unwrap_or_else(|e| panic!("connect to {self}: {e}"))
    }

    /// Connects, with [`IO_TIMEOUT`] on reads and writes.
    pub fn try_connect(&self) -> io::Result<Stream> {
        let stream = match self {
            Endpoint::Tcp(addr) => Stream::Tcp(TcpStream::connect_timeout(addr, Duration::from_secs(5))?),
            Endpoint::Unix(path) => Stream::Unix(UnixStream::connect(path)?),
        };
        stream.set_timeouts(IO_TIMEOUT);
        Ok(stream)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(addr) => write!(f, "{addr}"),
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A client connection over TCP or a Unix socket.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    /// Reads until the peer closes (EOF or reset) and returns the bytes; panics if the peer is
    /// still open after `timeout`.
    pub fn read_until_closed(&mut self, timeout: Duration) -> Vec<u8> {
        let start = Instant::now();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // Each read waits at most what is left of `timeout`; a read returns at least one byte,
        // so the loop is bounded by the bytes the peer sends within the timeout.
        loop {
            let left = timeout.saturating_sub(start.elapsed()).max(Duration::from_millis(1));
            self.set_read_timeout(left);
            match self.read(&mut buf) {
                Ok(0) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    return got
                }
                Err(e) => panic!(
                    "the connection is still open {:?} after the wait began ({e}); got {:?}",
                    start.elapsed(),
                    String::from_utf8_lossy(&got)
                ),
            }
        }
    }

    fn set_read_timeout(&self, timeout: Duration) {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(Some(timeout)).unwrap(),
            Stream::Unix(s) => s.set_read_timeout(Some(timeout)).unwrap(),
        }
    }

    /// Sets `timeout` on reads and writes.
    pub fn set_timeouts(&self, timeout: Duration) {
        self.set_read_timeout(timeout);
        match self {
            Stream::Tcp(s) => s.set_write_timeout(Some(timeout)).unwrap(),
            Stream::Unix(s) => s.set_write_timeout(Some(timeout)).unwrap(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where a service answers: on TCP (127.0.0.1) and on its own Unix socket.
#[derive(Debug, Clone)]
pub struct ServiceAddrs {
    pub tcp: SocketAddr,
    pub unix: PathBuf,
}

/// How the daemon's listener and upstream are written in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A TCP listener; `upstream = "127.0.0.1:PORT"`.
    Ip,
    /// A TCP listener; `upstream = "localhost:PORT"`.
    HostName,
    /// `listen = "unix:<temp dir>/<name>"`; `upstream = "unix:<the service's socket>"`.
    Unix,
    /// A TCP listener; `upstream = ["127.0.0.1:PORT", "unix:<the service's socket>"]`: two ways
    /// to the same service, so every connection lands there whichever entry it takes.
    List,
}

impl Route {
    /// The listener's `listen` endpoint: a fresh loopback TCP address, or the Unix socket `name`
    /// in `dir` (a name the client tools expect, such as PostgreSQL's `.s.PGSQL.<port>`).
    pub fn front(self, dir: &Path, name: &str) -> Endpoint {
        match self {
            Route::Unix => Endpoint::Unix(dir.join(name)),
            Route::Ip | Route::HostName | Route::List => Endpoint::Tcp(free_addr()),
        }
    }

    /// The `upstream` value (TOML) that names `service` in this form.
    pub fn upstream(self, service: &ServiceAddrs) -> String {
        let ip = Endpoint::Tcp(service.tcp).config_value();
        let unix = Endpoint::Unix(service.unix.clone()).config_value();
        match self {
            Route::Ip => ip,
            Route::HostName => format!("\"localhost:{}\"", service.tcp.port()),
            Route::Unix => unix,
            Route::List => format!("[{ip}, {unix}]"),
        }
    }
}

/// The daemon relaying one listener to a service.
pub struct Relay {
    /// Where clients connect.
    pub front: Endpoint,
    pub daemon: Daemon,
}

impl Relay {
    /// Starts the daemon with one relay listener `name` in front of `service`, written in the
    /// form of `route` (a Unix listener's socket is `socket_name` in the daemon's temp dir),
    /// with `idle_timeout` and any further keys of the listener in `extra` (TOML lines).
    pub fn start(
        route: Route,
        service: &ServiceAddrs,
        socket_name: &str,
        idle_timeout: &str,
        extra: &str,
    ) -> Relay {
        Relay::start_with(route, service, socket_name, idle_timeout, extra, |_| ("2s".into(), String::new()))
    }

    /// [`Relay::start`], with the daemon's `shutdown_timeout` and further tables (`[control]`,
    /// `[metrics]`) from `more`, which is given the daemon's temp dir.
    pub fn start_with(
        route: Route,
        service: &ServiceAddrs,
        socket_name: &str,
        idle_timeout: &str,
        extra: &str,
        more: impl FnOnce(&Path) -> (String, String),
    ) -> Relay {
        let dir = tempfile::tempdir().expect("temp dir");
        let front = route.front(dir.path(), socket_name);
        let listener = format!(
            "[[listener]]\nname = \"svc\"\nlisten = {}\nupstream = {}\nidle_timeout = \"{idle_timeout}\"\n{extra}\n",
            front.config_value(),
            route.upstream(service)
        );
        let (shutdown_timeout, tables) = more(dir.path());
        let config = daemon_section(dir.path(), &shutdown_timeout) + &listener + &tables;
        let daemon = Daemon::start_in(dir, &config);
        Relay { front, daemon }
    }

    /// Whether the daemon logged a connection closed for being idle.
    pub fn closed_one_as_idle(&self) -> bool {
        self.daemon.closes().iter().any(|c| c.reason() == "idle")
    }
}
