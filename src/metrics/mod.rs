//! Prometheus metrics: the counters the event loops bump, and the text a scrape reads.
//!
//! ```text
//! worker threads ──bump (relaxed atomics)──▶ ListenerMetrics (one per configured listener)
//!                                                   ▲
//! supervisor ── GET /metrics (http::Endpoint) ──▶ Metrics::render ──▶ text exposition 0.0.4
//! ```
//!
//! Every worker counts into the same [`ListenerMetrics`] of a listener: a relaxed atomic add per
//! event, no lock on the connection path. Only the supervisor's thread takes the lock around the
//! list of listeners, to replace it on reload or to read it for a scrape. Relaxed ordering is
//! enough: each number is independent, and a scrape is a snapshot of something moving anyway.
//! A histogram's `+Inf` bucket and `_count` come from the same reads of its buckets, so they
//! always agree; its `_sum` may be a connection ahead or behind.
//!
//! Names follow the Prometheus conventions: the `idlereaper_` prefix, `_total` on counters, base
//! units (seconds, bytes). Each family is written as `# HELP`, `# TYPE`, then all its samples,
//! the listeners in configuration order; label values are escaped as the format requires.
//! Close and refusal reasons are written even at zero, so that `rate()` sees them from the start;
//! their names are those of the close log line ([`CloseReason::as_str`]).
//!
//! A relay listener's upstream addresses are read at scrape time from its upstreams' health
//! table (`idlereaper_upstream_up`), which the listener's counters point to, weakly.
//!
//! The process's own numbers are the standard `process_*` family of the Prometheus client
//! libraries (CPU time, memory, descriptors, start time), read at scrape time.
//!
//! Here: the counters and how they are bumped. [`render`] writes a scrape's families (and
//! lists them all, [`render::FAMILIES`]), [`process`] reads the process's numbers,
//! [`exposition`] the text format, [`export`] reads the counters out whole (a live upgrade, the
//! control socket), [`http`] and [`request`] serve `GET /metrics`, `/healthz` and `/readyz`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use crate::close_reason::CloseReason;
use crate::observe::Cause;
use crate::upstream::Upstreams;

mod export;
mod exposition;
pub mod health;
pub mod http;
mod process;
mod render;
mod request;

/// Every close reason, where its counter is kept: [`reason_index`] is the position. The order
/// is fixed (a live upgrade carries the counters in it, see `export`): a new reason goes at the
/// end. [`SHOWN`] is the order the metrics show them in.
const REASONS: [CloseReason; 18] = [
    CloseReason::ClientClosed,
    CloseReason::UpstreamClosed,
    CloseReason::ClientReset,
    CloseReason::UpstreamReset,
    CloseReason::Idle,
    CloseReason::MaxLifetime,
    CloseReason::HalfCloseTimeout,
    CloseReason::ConnectTimeout,
    CloseReason::UpstreamRefused,
    CloseReason::Error,
    CloseReason::Shutdown,
    CloseReason::Killed,
    CloseReason::Limit,
    CloseReason::PerIpLimit,
    CloseReason::Denied,
    CloseReason::OutOfDescriptors,
    CloseReason::IdleInTransaction,
    CloseReason::SubscriberIdle,
];
/// How many reasons the format carried across an upgrade had before the protocol ones.
const REASONS_BEFORE_PROTOCOLS: usize = 16;
/// The ends of accepted connections, in the order the metrics show them, then the refusals at
/// accept from [`CLOSES`] on.
const SHOWN: [CloseReason; 18] = [
    CloseReason::ClientClosed,
    CloseReason::UpstreamClosed,
    CloseReason::ClientReset,
    CloseReason::UpstreamReset,
    CloseReason::Idle,
    CloseReason::IdleInTransaction,
    CloseReason::SubscriberIdle,
    CloseReason::MaxLifetime,
    CloseReason::HalfCloseTimeout,
    CloseReason::ConnectTimeout,
    CloseReason::UpstreamRefused,
    CloseReason::Error,
    CloseReason::Shutdown,
    CloseReason::Killed,
    CloseReason::Limit,
    CloseReason::PerIpLimit,
    CloseReason::Denied,
    CloseReason::OutOfDescriptors,
];
/// `SHOWN[..CLOSES]` end accepted connections; the rest are refusals.
const CLOSES: usize = 14;

/// The index of `reason` in [`REASONS`]. A `match`, so that a new reason does not compile
/// until it has a place here.
fn reason_index(reason: CloseReason) -> usize {
    match reason {
        CloseReason::ClientClosed => 0,
        CloseReason::UpstreamClosed => 1,
        CloseReason::ClientReset => 2,
        CloseReason::UpstreamReset => 3,
        CloseReason::Idle => 4,
        CloseReason::MaxLifetime => 5,
        CloseReason::HalfCloseTimeout => 6,
        CloseReason::ConnectTimeout => 7,
        CloseReason::UpstreamRefused => 8,
        CloseReason::Error => 9,
        CloseReason::Shutdown => 10,
        CloseReason::Killed => 11,
        CloseReason::Limit => 12,
        CloseReason::PerIpLimit => 13,
        CloseReason::Denied => 14,
        CloseReason::OutOfDescriptors => 15,
        CloseReason::IdleInTransaction => 16,
        CloseReason::SubscriberIdle => 17,
    }
}

/// Upper bounds of the connection lifetime buckets, in milliseconds, with the `le` label that
/// shows them in seconds: from a refused-at-once upstream to a day-long session. A lifetime
/// longer than the last goes to `+Inf` only.
const LIFETIME_BUCKETS: [(u64, &str); 8] = [
    (10, "0.01"),
    (100, "0.1"),
    (1_000, "1"),
    (10_000, "10"),
    (60_000, "60"),
    (300_000, "300"),
    (3_600_000, "3600"),
    (86_400_000, "86400"),
];

/// Counters of one configured listener, shared by all workers (atomics, `Relaxed`).
#[derive(Debug)]
pub struct ListenerMetrics {
    name: String,
    accepted: AtomicU64,
    active: AtomicI64,
    /// By [`reason_index`]: connections closed, and connections refused at accept.
    closed: [AtomicU64; REASONS.len()],
    refused: [AtomicU64; REASONS.len()],
    upstream_connect_errors: AtomicU64,
    bytes_from_client: AtomicU64,
    bytes_from_upstream: AtomicU64,
    /// Lifetimes per bucket, not cumulative; the last one is beyond every bound.
    lifetimes: [AtomicU64; LIFETIME_BUCKETS.len() + 1],
    /// Sum of the lifetimes in microseconds (wraps after 584,000 years of connections).
    lifetime_micros: AtomicU64,
    /// Connections a protocol observer stopped following, by [`Cause::index`].
    opaque: [AtomicU64; Cause::ALL.len()],
    /// A relay listener's upstreams in force (weak: a reload replaces them).
    upstreams: Mutex<Weak<Upstreams>>,
}

impl ListenerMetrics {
    /// `name` is the listener's configured name, the value of the `listener` label.
    pub fn new(name: &str) -> Arc<ListenerMetrics> {
        Arc::new(ListenerMetrics {
            name: name.to_owned(),
            accepted: AtomicU64::new(0),
            active: AtomicI64::new(0),
            closed: Default::default(),
            refused: Default::default(),
            upstream_connect_errors: AtomicU64::new(0),
            bytes_from_client: AtomicU64::new(0),
            bytes_from_upstream: AtomicU64::new(0),
            lifetimes: Default::default(),
            lifetime_micros: AtomicU64::new(0),
            opaque: Default::default(),
            upstreams: Mutex::new(Weak::new()),
        })
    }

    /// The listener's upstreams in force from now on (`idlereaper_upstream_up`); `None` for a
    /// sink.
    pub fn set_upstreams(&self, upstreams: Option<&Arc<Upstreams>>) {
        let weak = upstreams.map_or_else(Weak::new, Arc::downgrade);
        *self.upstreams.lock().unwrap_or_else(|p| p.into_inner()) = weak;
    }

    fn upstreams(&self) -> Option<Arc<Upstreams>> {
        self.upstreams.lock().unwrap_or_else(|p| p.into_inner()).upgrade()
    }

    /// A protocol observer stopped following a connection
    /// (`idlereaper_protocol_opaque_total{cause}`).
    pub fn protocol_opaque(&self, cause: Cause) {
        self.opaque[cause.index()].fetch_add(1, Relaxed);
    }

    /// A connection was admitted (`idlereaper_connections_accepted_total`).
    pub fn accepted(&self) {
        self.accepted.fetch_add(1, Relaxed);
    }

    /// Connections now open changed by `delta` (`idlereaper_connections_active`).
    pub fn active_add(&self, delta: i64) {
        self.active.fetch_add(delta, Relaxed);
    }

    /// An accepted connection ended after `lifetime` (`idlereaper_connections_closed_total`
    /// and `idlereaper_connection_lifetime_seconds`). It does not change the active gauge.
    pub fn closed(&self, reason: CloseReason, lifetime: Duration) {
        self.closed[reason_index(reason)].fetch_add(1, Relaxed);
        let bucket = LIFETIME_BUCKETS.iter().position(|&(ms, _)| lifetime <= Duration::from_millis(ms));
        self.lifetimes[bucket.unwrap_or(LIFETIME_BUCKETS.len())].fetch_add(1, Relaxed);
        let micros = u64::try_from(lifetime.as_micros()).unwrap_or(u64::MAX);
        self.lifetime_micros.fetch_add(micros, Relaxed);
    }

    /// A client was closed at accept (`idlereaper_connections_refused_total`): `Limit`,
    /// `PerIpLimit`, `Denied` or `OutOfDescriptors`.
    pub fn refused(&self, reason: CloseReason) {
        self.refused[reason_index(reason)].fetch_add(1, Relaxed);
    }

    /// Connecting to the upstream failed (`idlereaper_upstream_connect_errors_total`).
    pub fn upstream_connect_error(&self) {
        self.upstream_connect_errors.fetch_add(1, Relaxed);
    }

    /// Bytes relayed since the last call (`idlereaper_relayed_bytes_total`): deltas, not totals.
    pub fn bytes(&self, from_client: u64, from_upstream: u64) {
        if from_client > 0 {
            self.bytes_from_client.fetch_add(from_client, Relaxed);
        }
        if from_upstream > 0 {
            self.bytes_from_upstream.fetch_add(from_upstream, Relaxed);
        }
    }
}

/// Everything a scrape shows. A cloneable handle: clones share the numbers.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    /// The listeners of the configuration in force, in its order.
    listeners: Mutex<Vec<Arc<ListenerMetrics>>>,
    /// Live timers per worker.
    timers: Box<[AtomicU64]>,
    /// Relay buffers in use per worker (for the statistics line).
    buffers: Box<[AtomicU64]>,
    /// Loop iterations per worker: the watchdog's proof that each loop still turns.
    loops: Box<[AtomicU64]>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    upgrades_ok: AtomicU64,
    upgrades_refused: AtomicU64,
    upgrades_failed: AtomicU64,
    /// Since the Unix epoch.
    started: Duration,
}

impl Metrics {
    /// For `workers` event loops (`set_timers` takes 0..workers), started now.
    pub fn new(workers: usize) -> Metrics {
        let started = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        Metrics::started_at(workers, started)
    }

    fn started_at(workers: usize, started: Duration) -> Metrics {
        Metrics {
            inner: Arc::new(Inner {
                listeners: Mutex::new(Vec::new()),
                timers: (0..workers).map(|_| AtomicU64::new(0)).collect(),
                buffers: (0..workers).map(|_| AtomicU64::new(0)).collect(),
                loops: (0..workers).map(|_| AtomicU64::new(0)).collect(),
                reloads_ok: AtomicU64::new(0),
                reloads_failed: AtomicU64::new(0),
                upgrades_ok: AtomicU64::new(0),
                upgrades_refused: AtomicU64::new(0),
                upgrades_failed: AtomicU64::new(0),
                started,
            }),
        }
    }

    /// When the daemon started (an upgrade carries it), since the Unix epoch.
    pub fn started(&self) -> Duration {
        self.inner.started
    }

    /// The listeners currently configured (replaced on reload; order = config order). A listener
    /// that stays across a reload should keep its `Arc` (see [`Metrics::listener`]), or its
    /// counters restart and its active gauge loses the connections already open.
    pub fn set_listeners(&self, listeners: Vec<Arc<ListenerMetrics>>) {
        *self.inner.listeners.lock().unwrap_or_else(|p| p.into_inner()) = listeners;
    }

    /// The counters of the listeners configured now, in configuration order.
    pub fn listeners(&self) -> Vec<Arc<ListenerMetrics>> {
        self.inner.listeners.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The counters of the current listener `name`, or new ones if there is none: what a reload
    /// passes to [`Metrics::set_listeners`] for each listener of the new configuration.
    pub fn listener(&self, name: &str) -> Arc<ListenerMetrics> {
        let listeners = self.inner.listeners.lock().unwrap_or_else(|p| p.into_inner());
        match listeners.iter().find(|l| l.name == name) {
            Some(l) => Arc::clone(l),
            None => ListenerMetrics::new(name),
        }
    }

    /// Worker `worker`'s number of live timers (`idlereaper_timers`, summed over workers) and
    /// of relay buffers in use, at the end of a loop iteration (which it counts).
    pub fn set_worker(&self, worker: usize, timers: usize, buffers: usize) {
        let i = &self.inner;
        match (i.timers.get(worker), i.buffers.get(worker), i.loops.get(worker)) {
            (Some(t), Some(b), Some(l)) => {
                t.store(timers as u64, Relaxed);
                b.store(buffers as u64, Relaxed);
                l.fetch_add(1, Relaxed);
            }
            _ => debug_assert!(false, "set_worker: worker {worker} of {}", self.inner.timers.len()),
        }
    }

    /// Loop iterations of every worker so far (see [`Metrics::set_worker`]).
    pub fn loops(&self) -> Vec<u64> {
        self.inner.loops.iter().map(|l| l.load(Relaxed)).collect()
    }

    /// Connections open now, over the listeners configured now.
    pub fn open_connections(&self) -> i64 {
        self.inner
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|l| l.active.load(Relaxed))
            .sum()
    }

    /// The fields of the statistics line logged on USR1 (`stats connections=… accepted=…`), read
    /// from the same counters as `/metrics`, summed over the listeners configured now and over
    /// the workers.
    pub fn stats(&self) -> [(&'static str, i64); 6] {
        let sum = |v: &[AtomicU64]| v.iter().map(|a| a.load(Relaxed)).sum::<u64>();
        let (mut accepted, mut closed, mut refused) = (0, 0, 0);
        for l in self.inner.listeners.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            accepted += l.accepted.load(Relaxed);
            closed += sum(&l.closed);
            refused += sum(&l.refused);
        }
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        [
            ("connections", self.open_connections()),
            ("accepted", count(accepted)),
            ("closed", count(closed)),
            ("refused", count(refused)),
            ("timers", count(sum(&self.inner.timers))),
            ("buffers_in_use", count(sum(&self.inner.buffers))),
        ]
    }

    /// A reload was applied (`ok`) or rejected (`idlereaper_reloads_total{result}`).
    pub fn reload(&self, ok: bool) {
        let counter = if ok { &self.inner.reloads_ok } else { &self.inner.reloads_failed };
        counter.fetch_add(1, Relaxed);
    }

    /// A live upgrade's end (`idlereaper_upgrades_total{result}`).
    pub fn upgrade(&self, result: UpgradeResult) {
        let i = &self.inner;
        let counter = match result {
            UpgradeResult::Success => &i.upgrades_ok,
            UpgradeResult::Refused => &i.upgrades_refused,
            UpgradeResult::Failed => &i.upgrades_failed,
        };
        counter.fetch_add(1, Relaxed);
    }
}

/// How a live upgrade ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeResult {
    /// The new code runs.
    Success,
    /// Not attempted (the pre-flight checks, or an `execve` that failed): the running code
    /// carries on.
    Refused,
    /// The new image did not take over after the `execve`: the old code carries on, in the
    /// upgrade's guardian.
    Failed,
}

#[cfg(test)]
mod endpoint_tests;
#[cfg(test)]
mod tests;
