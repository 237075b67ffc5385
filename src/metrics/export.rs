//! The counters read out whole: carried across a live upgrade (and added back in the new
//! image), and a listener's shown by the control socket (`idlereaperctl show listeners`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::{reason_index, ListenerMetrics, Metrics, CLOSES, REASONS_BEFORE_PROTOCOLS, SHOWN};
use crate::handover::state::Counters;
use crate::rows::ListenerRow;

impl ListenerMetrics {
    /// What `idlereaperctl show listeners` shows of these counters.
    pub fn fill(&self, row: &mut ListenerRow) {
        row.open = u64::try_from(self.active.load(Relaxed)).unwrap_or(0);
        row.accepted = self.accepted.load(Relaxed);
        row.closed = SHOWN[..CLOSES]
            .iter()
            .map(|reason| (reason.as_str().to_owned(), self.closed[reason_index(*reason)].load(Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        row.refused = self.refused.iter().map(|n| n.load(Relaxed)).sum();
        row.bytes_from_client = self.bytes_from_client.load(Relaxed);
        row.bytes_from_upstream = self.bytes_from_upstream.load(Relaxed);
    }

    /// Every counter, in a fixed order, for a live upgrade to carry over (the active gauge is
    /// not one: the new image counts the connections it takes over).
    pub fn counters(&self) -> Vec<u64> {
        self.counter_cells().map(|c| c.load(Relaxed)).collect()
    }

    /// Adds counts carried over by a live upgrade (from [`ListenerMetrics::counters`]).
    pub fn restore(&self, counts: &[u64]) {
        self.counter_cells().zip(counts).for_each(|(cell, &n)| {
            cell.fetch_add(n, Relaxed);
        });
    }

    /// The counters in the order an upgrade carries them: those of the format's first version,
    /// then those added since (a binary that knows fewer reads a prefix, one that knows more
    /// finds the rest missing and keeps them at zero).
    fn counter_cells(&self) -> impl Iterator<Item = &AtomicU64> {
        let singles = [&self.accepted, &self.upstream_connect_errors, &self.bytes_from_client];
        let more = [&self.bytes_from_upstream, &self.lifetime_micros];
        let (closed, closed_since) = self.closed.split_at(REASONS_BEFORE_PROTOCOLS);
        let (refused, refused_since) = self.refused.split_at(REASONS_BEFORE_PROTOCOLS);
        let first = singles.into_iter().chain(more).chain(closed).chain(refused).chain(&self.lifetimes);
        first.chain(closed_since).chain(refused_since).chain(&self.opaque)
    }
}

impl Metrics {
    /// The process-wide counters, for a live upgrade to carry over.
    pub fn carried(&self) -> Counters {
        let i = &self.inner;
        Counters {
            started: u64::try_from(i.started.as_nanos()).unwrap_or(u64::MAX),
            reloads_ok: i.reloads_ok.load(Relaxed),
            reloads_failed: i.reloads_failed.load(Relaxed),
            upgrades_ok: i.upgrades_ok.load(Relaxed),
            upgrades_refused: i.upgrades_refused.load(Relaxed),
            upgrades_failed: i.upgrades_failed.load(Relaxed),
        }
    }

    /// Metrics for `workers` event loops that go on from the counters a live upgrade carried:
    /// the process start time and the counts do not reset.
    pub fn resumed(workers: usize, carried: &Counters) -> Metrics {
        let metrics = Metrics::started_at(workers, Duration::from_nanos(carried.started));
        let i = &metrics.inner;
        i.reloads_ok.store(carried.reloads_ok, Relaxed);
        i.reloads_failed.store(carried.reloads_failed, Relaxed);
        i.upgrades_ok.store(carried.upgrades_ok, Relaxed);
        i.upgrades_refused.store(carried.upgrades_refused, Relaxed);
        i.upgrades_failed.store(carried.upgrades_failed, Relaxed);
        metrics
    }
}
