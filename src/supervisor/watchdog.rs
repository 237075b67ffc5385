//! systemd's watchdog: `WATCHDOG=1` only while every worker's loop still turns.

use std::time::Instant;

use crate::metrics::Metrics;

/// The watchdog: when the next `WATCHDOG=1` is due, and each worker's loop count at the last
/// ping (a wedged loop does not count up, and then systemd restarts the service).
pub(super) struct Watchdog {
    every: std::time::Duration,
    pub(super) next: Instant,
    seen: Vec<u64>,
}

impl Watchdog {
    pub(super) fn new(every: std::time::Duration, metrics: &Metrics) -> Watchdog {
        Watchdog { every, next: Instant::now(), seen: metrics.loops() }
    }

    /// Whether every loop turned since the last call; schedules the next.
    pub(super) fn all_turned(&mut self, metrics: &Metrics) -> bool {
        let now = metrics.loops();
        let turned = now.iter().zip(&self.seen).all(|(n, s)| n > s);
        self.seen = now;
        self.next = Instant::now() + self.every;
        turned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_vouches_only_for_loops_that_turned() {
        let metrics = Metrics::new(2);
        let mut watchdog = Watchdog::new(std::time::Duration::from_millis(10), &metrics);
        metrics.set_worker(0, 0, 0);
        assert!(!watchdog.all_turned(&metrics), "worker 1 did not turn");
        metrics.set_worker(0, 0, 0);
        metrics.set_worker(1, 0, 0);
        assert!(watchdog.all_turned(&metrics));
        metrics.set_worker(1, 0, 0);
        assert!(!watchdog.all_turned(&metrics), "worker 0 is stuck");
        assert!(watchdog.next > Instant::now());
    }
}
