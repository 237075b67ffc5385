//! Listening sockets. Each worker gets its own socket per configured listener: with more than one
//! worker they are bound with `SO_REUSEPORT` and the kernel spreads new connections across them.
//! The count of open connections is shared by a listener's sockets, so `max_connections` holds
//! for the listener as a whole.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::net::TcpListener;

use crate::app::Error;
use crate::config::{Config, ListenerConfig};
use crate::metrics::{ListenerMetrics, Metrics};
use crate::vocab::CloseReason;

/// One worker's socket for a configured listener.
pub struct Listener {
    pub config: ListenerConfig,
    /// `None` once closed for a stop.
    pub(crate) socket: Option<TcpListener>,
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
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.socket.as_ref().and_then(|s| s.local_addr().ok())
    }

    /// Admits a new client from `ip` and counts it, or says why it is refused: `allow` / `deny`,
    /// then `max_connections`, then `max_connections_per_ip`. `Ok(true)` when it was counted per
    /// address (pass that back to [`Listener::release`]: a reload may change the limit meanwhile).
    pub(crate) fn try_admit(&self, ip: IpAddr) -> Result<bool, CloseReason> {
        let config = &self.config;
        let listed = |nets: &[ipnet::IpNet]| nets.iter().any(|n| n.contains(&ip));
        if (!config.allow.is_empty() && !listed(&config.allow)) || listed(&config.deny) {
            return Err(CloseReason::Denied);
        }
        let max = config.max_connections;
        if self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .is_err()
        {
            return Err(CloseReason::Limit);
        }
        if config.max_connections_per_ip > 0 {
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
    pub(crate) fn release(&self, ip: IpAddr, counted_ip: bool) {
        let before = self.active.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "listener {}: more connections closed than admitted", self.config.name);
        if counted_ip {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(count) = per_ip.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
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
/// terminal, and gives each its counters in `metrics`. Returns one set of listeners per worker,
/// in configuration order.
pub fn bind(config: &Config, metrics: &Metrics) -> Result<Vec<Vec<Listener>>, Error> {
    let workers = config.daemon.workers.max(1);
    let counters: Vec<_> = config.listeners.iter().map(|lc| ListenerMetrics::new(&lc.name)).collect();
    metrics.set_listeners(counters.clone());
    let mut sets: Vec<Vec<Listener>> = (0..workers).map(|_| Vec::new()).collect();
    for (lc, counters) in config.listeners.iter().zip(counters) {
        for (set, listener) in sets.iter_mut().zip(bind_one(lc, workers, counters)?) {
            set.push(listener);
        }
    }
    Ok(sets)
}

/// Binds one listener once per worker (with `SO_REUSEPORT` when there are several), sharing
/// its connection counts. Used at start and for a listener a reload adds.
pub fn bind_one(
    lc: &ListenerConfig,
    workers: usize,
    metrics: Arc<ListenerMetrics>,
) -> Result<Vec<Listener>, Error> {
    let active = Arc::new(AtomicUsize::new(0));
    let per_ip = Arc::new(Mutex::new(HashMap::new()));
    (0..workers)
        .map(|_| {
            let socket = crate::net::listen(lc.listen, workers > 1)
                .map_err(|e| Error::io(format!("listener {}: cannot listen on {}", lc.name, lc.listen), e))?;
            Ok(Listener {
                config: lc.clone(),
                socket: Some(socket),
                active: Arc::clone(&active),
                per_ip: Arc::clone(&per_ip),
                refusals: Default::default(),
                metrics: Arc::clone(&metrics),
                paused_until: None,
                backlog_ready: true,
            })
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
