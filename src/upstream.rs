//! A relay listener's upstream addresses at run time: the configured entries resolved to
//! targets (a host name contributes every address it resolves to, in the resolver's order),
//! where a new connection starts among them (`balance`), connecting to one, and resolving host
//! names again every `daemon.resolve_interval` on a thread of its own — never in an event loop.
//! New connections use the newest targets; open ones keep theirs.

use std::collections::HashSet;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use log::{info, warn};
use mio::net::{TcpStream, UnixStream};

use crate::config::{Balance, Upstream};
use crate::stream::Stream;

/// Where one connection attempt goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(addr) => write!(f, "{addr}"),
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl Target {
    /// Reads back what [`Display`](std::fmt::Display) wrote (`IP:port` or `unix:/path`).
    pub fn parse(text: &str) -> io::Result<Target> {
        match text.strip_prefix("unix:") {
            Some(path) => Ok(Target::Unix(PathBuf::from(path))),
            None => text.parse().map(Target::Tcp).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("upstream address {text}: {e}"))
            }),
        }
    }

    /// The address `stream` is connected to, to connect to again (`None` if the kernel no
    /// longer says, or a Unix socket without a path).
    pub fn of(stream: &Stream) -> Option<Target> {
        match stream {
            Stream::Tcp(s) => s.peer_addr().ok().map(Target::Tcp),
            Stream::Unix(s) => s.peer_addr().ok()?.as_pathname().map(|p| Target::Unix(p.to_owned())),
        }
    }

    /// Starts a non-blocking connect.
    pub fn connect(&self) -> io::Result<Stream> {
        match self {
            Target::Tcp(addr) => TcpStream::connect(*addr).map(Stream::Tcp),
            Target::Unix(path) => UnixStream::connect(path).map(Stream::Unix),
        }
    }
}

/// What each upstream entry resolved to last, and all of them in order.
type Resolved = (Vec<Vec<Target>>, Arc<[Target]>);

/// The listeners whose upstreams the resolver thread refreshes, by name.
type WatchList = Vec<(String, Weak<Upstreams>)>;

/// The upstreams of one relay listener, shared by its workers.
#[derive(Debug)]
pub struct Upstreams {
    entries: Vec<Upstream>,
    balance: Balance,
    /// What each entry resolved to last, and all of them in order.
    targets: Mutex<Resolved>,
    /// Round robin: the start of the next connection.
    next: AtomicUsize,
    /// Names whose last resolution failed (one warning each until they resolve again).
    failing: Mutex<HashSet<String>>,
}

impl Upstreams {
    /// Resolves `entries` now (blocking: at start, on reload). `Err((i, error))` names the entry
    /// that failed.
    pub fn resolve(entries: &[Upstream], balance: Balance) -> Result<Upstreams, (usize, io::Error)> {
        let mut per_entry = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            per_entry.push(resolve_one(entry).map_err(|e| (i, e))?);
        }
        Ok(Upstreams::with(entries, balance, per_entry))
    }

    fn with(entries: &[Upstream], balance: Balance, per_entry: Vec<Vec<Target>>) -> Upstreams {
        let all: Arc<[Target]> = per_entry.concat().into();
        Upstreams {
            entries: entries.to_vec(),
            balance,
            targets: Mutex::new((per_entry, all)),
            next: AtomicUsize::new(0),
            failing: Mutex::new(HashSet::new()),
        }
    }

    /// Upstreams that go on from what `entries` resolved to before a live upgrade (`per_entry`,
    /// from [`Upstreams::resolved`]), without a lookup; resolved now if that does not match.
    pub fn resumed(
        entries: &[Upstream],
        balance: Balance,
        per_entry: Vec<Vec<Target>>,
    ) -> Result<Upstreams, (usize, io::Error)> {
        if per_entry.len() != entries.len() || per_entry.iter().any(Vec::is_empty) {
            return Upstreams::resolve(entries, balance);
        }
        Ok(Upstreams::with(entries, balance, per_entry))
    }

    /// What each entry resolved to last.
    pub fn resolved(&self) -> Vec<Vec<Target>> {
        self.targets.lock().unwrap_or_else(|p| p.into_inner()).0.clone()
    }

    /// The targets now, and where a new connection starts among them.
    pub fn pick(&self) -> (Arc<[Target]>, usize) {
        let targets = Arc::clone(&self.targets.lock().unwrap_or_else(|p| p.into_inner()).1);
        let start = match self.balance {
            Balance::First => 0,
            Balance::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % targets.len().max(1),
        };
        (targets, start)
    }

    /// Whether any entry is a host name (worth resolving again).
    pub fn has_names(&self) -> bool {
        self.entries.iter().any(|e| matches!(e, Upstream::Host { .. }))
    }

    /// Resolves the host names again; keeps the last good targets of a name that fails, with
    /// one warning until it resolves again.
    pub fn refresh(&self, listener: &str) {
        let old = self.targets.lock().unwrap_or_else(|p| p.into_inner()).0.clone();
        let mut per_entry = Vec::with_capacity(self.entries.len());
        for (entry, last) in self.entries.iter().zip(old) {
            let resolved = resolve_one(entry); // blocking, with no lock held
            let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
            match resolved {
                Ok(found) => {
                    if failing.remove(&entry.to_string()) {
                        info!("listener={listener} upstream {entry} resolves again");
                    }
                    per_entry.push(found);
                }
                Err(e) => {
                    if failing.insert(entry.to_string()) {
                        warn!("listener={listener} upstream {entry} cannot be resolved: {e}; keeping its last addresses");
                    }
                    per_entry.push(last);
                }
            }
        }
        let all = per_entry.concat();
        let mut current = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        if *current.1 != all[..] {
            info!("listener={listener} upstream addresses now {}", list(&all));
            *current = (per_entry, all.into());
        }
    }
}

/// The targets of one entry: an address or path as it is, a host name resolved (blocking).
fn resolve_one(entry: &Upstream) -> io::Result<Vec<Target>> {
    match entry {
        Upstream::Ip(addr) => Ok(vec![Target::Tcp(*addr)]),
        Upstream::Unix(path) => Ok(vec![Target::Unix(path.clone())]),
        Upstream::Host { host, port } => {
            let mut seen = Vec::new();
            for addr in (host.as_str(), *port).to_socket_addrs()? {
                if !seen.contains(&Target::Tcp(addr)) {
                    seen.push(Target::Tcp(addr));
                }
            }
            match seen.is_empty() {
                true => Err(io::Error::new(io::ErrorKind::NotFound, "no address")),
                false => Ok(seen),
            }
        }
    }
}

/// `a, b, c` for a log line.
pub fn list(targets: &[Target]) -> String {
    targets.iter().map(Target::to_string).collect::<Vec<_>>().join(", ")
}

/// The upstreams whose host names the resolver thread refreshes: replaced on reload.
#[derive(Debug, Default, Clone)]
pub struct Watched {
    inner: Arc<Mutex<WatchList>>,
}

impl Watched {
    /// The listeners (name, upstreams) to refresh from now on.
    pub fn set(&self, listeners: Vec<(String, &Arc<Upstreams>)>) {
        let list = listeners.into_iter().filter(|(_, u)| u.has_names()).map(|(n, u)| (n, Arc::downgrade(u)));
        *self.inner.lock().unwrap_or_else(|p| p.into_inner()) = list.collect();
    }

    /// Starts the resolver thread: every `interval`, resolve the watched names again. It holds
    /// only weak references, and ends with the process.
    pub fn spawn(&self, interval: Duration) -> io::Result<()> {
        let watched = self.clone();
        std::thread::Builder::new().name("resolver".into()).spawn(move || loop {
            crate::signals::block(); // the supervisor's thread alone takes the signals
            std::thread::sleep(interval);
            let now: Vec<_> = watched.inner.lock().unwrap_or_else(|p| p.into_inner()).clone();
            for (name, upstreams) in now {
                if let Some(u) = upstreams.upgrade() {
                    u.refresh(&name);
                }
            }
        })?;
        Ok(())
    }
}
