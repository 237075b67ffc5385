//! Listening sockets. Each worker gets its own socket per configured TCP listener: with more than
//! one worker they are bound with `SO_REUSEPORT` and the kernel spreads new connections across
//! them. A Unix socket listener is bound once and shared (each worker polls its own handle). The
//! count of open connections is shared by a listener's sockets, so `max_connections` holds for
//! the listener as a whole; so are its upstream addresses. A socket systemd passed
//! (`systemd:NAME`) is shared by the workers as a Unix listener's is: one socket cannot be
//! split by `SO_REUSEPORT`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::Registry;

use crate::activation::{self, Inherited};
use crate::close_reason::CloseReason;
use crate::config::{Config, Listen, ListenerConfig};
use crate::error::Error;
use crate::metrics::{ListenerMetrics, Metrics};
use crate::os::net::UnixPath;
use crate::os::stream::ListenSocket;
use crate::upstream::Upstreams;

/// One worker's socket for a configured listener.
pub struct Listener {
    pub config: ListenerConfig,
    /// `None` once closed for a stop, or by a reload that removed it.
    pub(crate) socket: Option<ListenSocket>,
    /// A Unix listener's socket file, removed once every worker has closed the listener.
    unix_path: Option<UnixPath>,
    /// A relay's upstream addresses, shared by the workers; `None` for a sink.
    pub(crate) upstreams: Option<Arc<Upstreams>>,
    /// Connections of this listener open in all workers.
    active: Arc<AtomicUsize>,
    /// Connections per client address, in all workers (only with `max_connections_per_ip`).
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// Refusals at accept, logged at most once a second per reason.
    pub(crate) refusals: [RateLimit; 3],
    /// Its counters for `/metrics`, shared by all workers (and kept across reloads).
    pub(crate) metrics: Arc<ListenerMetrics>,
    /// Accepting is paused (descriptor exhaustion) until then.
    pub(crate) paused_until: Option<Instant>,
    /// Clients may be waiting in the backlog that no new event will announce.
    pub(crate) backlog_ready: bool,
}

impl Listener {
    /// Admits a new client from `ip` (`None`: a Unix client, which the address rules do not
    /// concern) and counts it, or says why it is refused: `allow` / `deny`, then
    /// `max_connections`, then `max_connections_per_ip`. `Ok(true)` when it was counted per
    /// address (pass that back to [`Listener::release`]: a reload may change the limit meanwhile).
    pub(crate) fn try_admit(&self, ip: Option<IpAddr>) -> Result<bool, CloseReason> {
        let config = &self.config;
        if let Some(ip) = ip {
            let listed = |nets: &[ipnet::IpNet]| nets.iter().any(|n| n.contains(&ip));
            if (!config.allow.is_empty() && !listed(&config.allow)) || listed(&config.deny) {
                return Err(CloseReason::Denied);
            }
        }
        let max = config.max_connections;
        if self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .is_err()
        {
            return Err(CloseReason::Limit);
        }
        if let (Some(ip), true) = (ip, config.max_connections_per_ip > 0) {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let count = per_ip.entry(ip).or_insert(0);
            if *count >= config.max_connections_per_ip {
                drop(per_ip);
                self.active.fetch_sub(1, Ordering::AcqRel);
                return Err(CloseReason::PerIpLimit);
            }
            *count += 1;
            return Ok(true);
        }
        Ok(false)
    }

    /// Uncounts a closed connection from `ip`.
    pub(crate) fn release(&self, ip: Option<IpAddr>, counted_ip: bool) {
        let before = self.active.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "listener {}: more connections closed than admitted", self.config.name);
        if let (Some(ip), true) = (ip, counted_ip) {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(count) = per_ip.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }

    /// Counts a connection a live upgrade handed over, whatever the limits say now.
    pub(crate) fn readmit(&self, ip: Option<IpAddr>, counted_ip: bool) {
        self.active.fetch_add(1, Ordering::AcqRel);
        if let (Some(ip), true) = (ip, counted_ip) {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            *per_ip.entry(ip).or_insert(0) += 1;
        }
    }

    /// Gives up this worker's handle for a live upgrade, open, by its number, and the socket
    /// file that is still to be removed when the listener closes (kept on disk meanwhile).
    pub(crate) fn freeze(&mut self) -> (Option<std::os::fd::RawFd>, Option<String>) {
        let fd = self.socket.take().map(ListenSocket::into_raw);
        let path = self.unix_path.take().map(|guard| {
            let path = guard.path().display().to_string();
            std::mem::forget(guard); // the file stays: the new image listens on it
            path
        });
        (fd, path)
    }

    /// Closes this worker's handle on the socket (a stop, or a reload that removed it).
    pub(crate) fn close(&mut self, registry: &Registry) {
        if let Some(mut socket) = self.socket.take() {
            let _ = mio::event::Source::deregister(&mut socket, registry);
        }
        self.unix_path = None;
    }

    /// Whether a paused listener may accept again at `now`.
    pub(crate) fn resumable(&self, now: Instant) -> bool {
        self.paused_until.is_some_and(|t| now >= t)
    }

    /// Whether clients may be waiting that no new event will announce (edge-triggered): the
    /// last accept pass stopped at its budget, or the listener was paused.
    pub(crate) fn can_accept(&self) -> bool {
        self.backlog_ready && self.paused_until.is_none() && self.socket.is_some()
    }
}

/// Binds every listener of `config` once per worker, before daemonizing, so that errors reach the
/// terminal, and gives each its counters in `metrics` and its resolved upstreams. Unix socket
/// files are given to `owner` (uid, gid), if set; a `systemd:NAME` listener takes its socket
/// from `inherited`. Returns one set of listeners per worker, in configuration order.
pub fn bind(
    config: &Config,
    metrics: &Metrics,
    owner: Option<(u32, u32)>,
    inherited: &mut Inherited,
) -> Result<Vec<Vec<Listener>>, Error> {
    let workers = config.daemon.workers.max(1);
    let counters: Vec<_> = config.listeners.iter().map(|lc| ListenerMetrics::new(&lc.name)).collect();
    metrics.set_listeners(counters.clone());
    let mut sets: Vec<Vec<Listener>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, (lc, counters)) in config.listeners.iter().zip(counters).enumerate() {
        let upstreams = resolve_upstreams(config, i, None)?;
        let listeners = match &lc.listen {
            Listen::Systemd(name) => from_systemd(config, i, name, inherited, counters, upstreams)?,
            _ => bind_one(lc, workers, counters, upstreams, owner)?,
        };
        for (set, listener) in sets.iter_mut().zip(listeners) {
            set.push(listener);
        }
    }
    Ok(sets)
}

/// Resolves the upstream entries of listener `i` of `config` now (blocking); `None` for a sink.
/// `before`: the listener's upstreams until now (a reload that keeps it), whose addresses keep
/// their health. A name that does not resolve is an error at the entry's position (exit status
/// 1: the file may be right and the resolver wrong).
pub fn resolve_upstreams(
    config: &Config,
    i: usize,
    before: Option<&Upstreams>,
) -> Result<Option<Arc<Upstreams>>, Error> {
    let lc = &config.listeners[i];
    if lc.upstream.is_empty() {
        return Ok(None);
    }
    let resolved = Upstreams::resolve(lc).map(|u| match before {
        Some(before) => u.keeping_health_of(before),
        None => u,
    });
    resolved.map(|u| Some(Arc::new(u))).map_err(|(e, error)| {
        let key = lc.upstream_key(i, e);
        let at = lc.upstream_at.get(e).copied();
        let msg = format!("cannot resolve {}: {error}", lc.upstream[e]);
        Error::Message(config.error_at(&key, at, msg).to_string())
    })
}

/// Listener `i` of `config` on the socket systemd passed as `name`, for every worker (one
/// socket, a handle each). Errors are at the listener's `listen` key, exit status 1: the file
/// may be right and the socket unit wrong, as for an address in use.
fn from_systemd(
    config: &Config,
    i: usize,
    name: &str,
    inherited: &mut Inherited,
    metrics: Arc<ListenerMetrics>,
    upstreams: Option<Arc<Upstreams>>,
) -> Result<Vec<Listener>, Error> {
    let lc = &config.listeners[i];
    let at = |msg: String| {
        Error::Message(config.error_at(&format!("listener[{i}].listen"), Some(lc.listen_at), msg).to_string())
    };
    let passed = inherited.take_named(name).map_err(at)?;
    let (socket, unix) = activation::listening(passed)
        .map_err(|e| at(format!("the socket systemd passed as {name:?} {e}")))?;
    if unix && (!lc.allow.is_empty() || !lc.deny.is_empty() || lc.max_connections_per_ip > 0) {
        return Err(at(format!(
            "the socket systemd passed as {name:?} is a Unix socket, whose clients have no address: \
             allow, deny and max_connections_per_ip do not apply to it"
        )));
    }
    let workers = config.daemon.workers.max(1);
    let sockets = (0..workers)
        .map(|_| socket.try_clone().map(|fd| Some(ListenSocket::from_fd(fd, unix))))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::io(format!("listener {}: the socket systemd passed as {name:?}", lc.name), e))?;
    Ok(assemble(lc, sockets, None, metrics, upstreams))
}

/// Binds one listener for every worker (TCP: a socket each, with `SO_REUSEPORT` when there are
/// several; Unix: one socket, a handle each), sharing its connection counts and upstreams. Used
/// at start and for a listener a reload adds (not one on a socket systemd passes: those are
/// taken at start only).
pub fn bind_one(
    lc: &ListenerConfig,
    workers: usize,
    metrics: Arc<ListenerMetrics>,
    upstreams: Option<Arc<Upstreams>>,
    owner: Option<(u32, u32)>,
) -> Result<Vec<Listener>, Error> {
    let failed = |e| Error::io(format!("listener {}: cannot listen on {}", lc.name, lc.listen), e);
    let unix = match &lc.listen {
        Listen::Systemd(name) => {
            return Err(Error::Message(format!(
                "listener {:?}: the socket systemd passes as {name:?} is taken only at start: restart \
                 idlereaper to add this listener",
                lc.name
            )))
        }
        Listen::Tcp(_) => None,
        Listen::Unix(path) => Some(crate::os::net::listen_unix(path, lc.socket_mode, owner).map_err(failed)?),
    };
    let sockets = (0..workers)
        .map(|_| match (&lc.listen, &unix) {
            (Listen::Tcp(addr), _) => {
                Ok(ListenSocket::Tcp(crate::os::net::listen(*addr, workers > 1).map_err(failed)?))
            }
            (Listen::Unix(_), Some((first, _))) => Ok(ListenSocket::Unix(mio::net::UnixListener::from_std(
                first.as_fd().try_clone_to_owned().map_err(failed)?.into(),
            ))),
            (Listen::Unix(_), None) | (Listen::Systemd(_), _) => unreachable!("bound above"),
        })
        .map(|socket| socket.map(Some))
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(assemble(lc, sockets, unix.map(|(_, path)| path), metrics, upstreams))
}

/// The listeners a live upgrade handed over: listener `lc`'s handle of each worker (`None`
/// where closed), with its socket file if it is still to be removed on close.
pub fn adopt(
    lc: &ListenerConfig,
    fds: &[Option<RawFd>],
    unix_path: Option<UnixPath>,
    metrics: Arc<ListenerMetrics>,
    upstreams: Option<Arc<Upstreams>>,
) -> Result<Vec<Listener>, Error> {
    let failed = |e| Error::io(format!("listener {}: the socket handed over", lc.name), e);
    // A socket systemd passed is of either family: it says which.
    let unix = |fd: &OwnedFd| match lc.listen {
        Listen::Systemd(_) => activation::is_unix(fd.as_fd()),
        _ => Ok(matches!(lc.listen, Listen::Unix(_))),
    };
    let sockets = fds
        .iter()
        .map(|fd| {
            fd.map(|fd| {
                let fd = crate::os::sys::adopt(fd)?;
                unix(&fd).map(|unix| ListenSocket::from_fd(fd, unix))
            })
            .transpose()
            .map_err(failed)
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(assemble(lc, sockets, unix_path, metrics, upstreams))
}

/// One listener per worker around its sockets, sharing the connection counts, the counters,
/// the upstreams and the socket file.
fn assemble(
    lc: &ListenerConfig,
    sockets: Vec<Option<ListenSocket>>,
    unix_path: Option<UnixPath>,
    metrics: Arc<ListenerMetrics>,
    upstreams: Option<Arc<Upstreams>>,
) -> Vec<Listener> {
    let active = Arc::new(AtomicUsize::new(0));
    let per_ip = Arc::new(Mutex::new(HashMap::new()));
    metrics.set_upstreams(upstreams.as_ref());
    sockets
        .into_iter()
        .map(|socket| Listener {
            config: lc.clone(),
            unix_path: socket.as_ref().and(unix_path.clone()),
            socket,
            upstreams: upstreams.clone(),
            active: Arc::clone(&active),
            per_ip: Arc::clone(&per_ip),
            refusals: Default::default(),
            metrics: Arc::clone(&metrics),
            paused_until: None,
            backlog_ready: true,
        })
        .collect()
}

/// Lets a kind of log line through at most once per interval, counting the ones held back.
#[derive(Debug, Default)]
pub struct RateLimit {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    const INTERVAL: Duration = Duration::from_secs(1);

    /// `Some(n)` if a line may be logged now, `n` being how many were held back since the last
    /// one; `None` to hold this one back.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|t| now.saturating_duration_since(t) < Self::INTERVAL) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_lets_one_line_a_second_through_and_counts_the_rest() {
        let mut limit = RateLimit::default();
        let t0 = Instant::now();
        assert_eq!(limit.admit(t0), Some(0));
        assert_eq!(limit.admit(t0 + Duration::from_millis(10)), None);
        assert_eq!(limit.admit(t0 + Duration::from_millis(999)), None);
        assert_eq!(limit.admit(t0 + Duration::from_secs(1)), Some(2));
        assert_eq!(limit.admit(t0 + Duration::from_secs(3)), Some(0));
    }
}
