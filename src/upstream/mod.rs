//! A relay listener's upstream addresses at run time: the configured entries resolved to
//! targets (a host name contributes every address it resolves to, in the resolver's order),
//! where a new connection starts among them (`balance`), connecting to one, and resolving host
//! names again every `daemon.resolve_interval` on a thread of its own — never in an event loop.
//! New connections use the newest targets; open ones keep theirs. Which target a connection
//! tries next is the [`health`] table's to say (passive health, and the operator's
//! `idlereaperctl upstream disable|enable`).

use std::collections::HashSet;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use log::{info, warn};
use mio::net::{TcpStream, UnixStream};

use crate::config::{Backoff, Balance, ListenerConfig, Upstream};
use crate::os::stream::Stream;
use crate::rows::UpstreamRow;

mod health;

pub use health::{Health, HealthTable};

/// Where one connection attempt goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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
    /// The listener's name, for the log.
    listener: String,
    entries: Vec<Upstream>,
    balance: Balance,
    backoff: Option<Backoff>,
    /// The addresses' health; shared with the upstreams a reload replaces these with.
    health: Arc<HealthTable>,
    /// What each entry resolved to last, and all of them in order.
    targets: Mutex<Resolved>,
    /// Round robin: the start of the next connection.
    next: AtomicUsize,
    /// Names whose last resolution failed (one warning each until they resolve again).
    failing: Mutex<HashSet<String>>,
}

impl Upstreams {
    /// Resolves the upstream entries of `lc` now (blocking: at start, on reload).
    /// `Err((i, error))` names the entry that failed.
    pub fn resolve(lc: &ListenerConfig) -> Result<Upstreams, (usize, io::Error)> {
        let mut per_entry = Vec::new();
        for (i, entry) in lc.upstream.iter().enumerate() {
            per_entry.push(resolve_one(entry).map_err(|e| (i, e))?);
        }
        Ok(Upstreams::with(lc, per_entry))
    }

    fn with(lc: &ListenerConfig, per_entry: Vec<Vec<Target>>) -> Upstreams {
        let all: Arc<[Target]> = per_entry.concat().into();
        Upstreams {
            listener: lc.name.clone(),
            entries: lc.upstream.clone(),
            balance: lc.balance,
            backoff: lc.upstream_backoff,
            health: Arc::default(),
            targets: Mutex::new((per_entry, all)),
            next: AtomicUsize::new(0),
            failing: Mutex::new(HashSet::new()),
        }
    }

    /// Upstreams that go on from what the entries of `lc` resolved to before a live upgrade
    /// (`per_entry`, from [`Upstreams::resolved`]), without a lookup; resolved now if that does
    /// not match.
    pub fn resumed(
        lc: &ListenerConfig,
        per_entry: Vec<Vec<Target>>,
    ) -> Result<Upstreams, (usize, io::Error)> {
        if per_entry.len() != lc.upstream.len() || per_entry.iter().any(Vec::is_empty) {
            return Upstreams::resolve(lc);
        }
        Ok(Upstreams::with(lc, per_entry))
    }

    /// These upstreams, with the health of `before`'s addresses (a reload that keeps the
    /// listener): the same table, shared, so that what a worker still on `before` records is
    /// not lost. Once the reload is in force, [`Upstreams::forget_unlisted`].
    pub fn keeping_health_of(mut self, before: &Upstreams) -> Upstreams {
        self.health = Arc::clone(&before.health);
        self
    }

    /// Forgets the health of addresses no longer listed.
    pub fn forget_unlisted(&self) {
        self.health.retain(&self.all());
    }

    /// The health of the addresses.
    pub fn health(&self) -> &HealthTable {
        &self.health
    }

    /// A connect to `target` failed (`error`) at `now`: passed over for a while, if the listener
    /// has `upstream_backoff`.
    pub fn failed(&self, target: &Target, error: &io::Error, now: Instant) {
        let name = &self.listener;
        match self.health.failed(target, self.backoff, now) {
            Some(health::Failed::Backoff { length, failures: 1 }) => {
                let length = humantime::format_duration(length);
                warn!(
                    "listener={name} upstream {target} failed to connect ({error}): passed over for {length}"
                );
            }
            Some(health::Failed::Backoff { length, failures }) => {
                let length = humantime::format_duration(length);
                info!("listener={name} upstream {target} failed to connect again, {failures} in a row ({error}): passed over for {length}");
            }
            Some(health::Failed::Counted) | None => {}
        }
    }

    /// A connect to `target` succeeded: a backoff it had is over.
    pub fn connected(&self, target: &Target) {
        if let Some(failures) = self.health.connected(target) {
            info!("listener={} upstream {target} connects again, after {failures} failed", self.listener);
        }
    }

    /// The addresses `address` names among the current ones: an address as `show listeners`
    /// writes it, or an upstream entry as the file writes it (every address it resolves to
    /// now). An error that lists the addresses when it names none.
    pub fn select(&self, address: &str) -> Result<Vec<Target>, String> {
        let targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        let parsed = Target::parse(address).ok();
        let mut chosen: Vec<Target> =
            targets.1.iter().filter(|t| Some(*t) == parsed.as_ref()).cloned().collect();
        if chosen.is_empty() {
            if let Some(i) = self.entries.iter().position(|e| e.to_string() == address) {
                chosen = targets.0[i].clone();
            }
        }
        chosen.dedup();
        match chosen.is_empty() {
            false => Ok(chosen),
            true => Err(format!(
                "listener {} has no upstream {address} (its upstream addresses: {})",
                self.listener,
                list(&targets.1)
            )),
        }
    }

    /// A row per address now, as `show listeners` shows it.
    pub fn rows(&self, now: Instant) -> Vec<UpstreamRow> {
        self.health.rows(&self.all(), now)
    }

    /// What each entry resolved to last.
    pub fn resolved(&self) -> Vec<Vec<Target>> {
        self.targets.lock().unwrap_or_else(|p| p.into_inner()).0.clone()
    }

    /// The targets now, in order.
    fn all(&self) -> Arc<[Target]> {
        Arc::clone(&self.targets.lock().unwrap_or_else(|p| p.into_inner()).1)
    }

    /// The targets now, and where a new connection starts among them.
    pub fn pick(&self) -> (Arc<[Target]>, usize) {
        let targets = self.all();
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
            self.health.retain(&all);
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
