//! Liveness and readiness, as the endpoint's `/healthz` and `/readyz` tell them.
//!
//! Healthy means every event loop turns. Each worker counts its loop's iterations
//! ([`Metrics::set_worker`]); an idle loop sleeps in `epoll_wait` and would not count, so a
//! `/healthz` request wakes every worker ([`Vitals::wake_loops`], the same `Ping` the systemd
//! watchdog sends) and is answered 200 once each loop has counted an iteration since, or 503
//! when one has not within [`HEALTH_WAIT`]: a loop that cannot take a command in that time is
//! wedged. A worker whose loop has ended after a stop (its connections drained) is not
//! expected to turn. The check is looked at again at growing intervals ([`Check::next`]),
//! from the supervisor's poll, so that nothing blocks while the loops answer.
//!
//! Ready means serving: from the moment a graceful stop begins (and through its drain, until
//! the process exits) `/readyz` answers 503, so that a load balancer sends no new clients.

use std::time::{Duration, Instant};

use super::Metrics;

/// How long every loop has to turn after a wake-up before `/healthz` answers 503. Less than the
/// 1 s probe timeout orchestrators default to, so that a wedged loop gets a clear answer.
pub const HEALTH_WAIT: Duration = Duration::from_millis(500);
/// The first look after the wake-up; each next one waits twice as long, up to [`LOOK_CAP`].
const FIRST_LOOK: Duration = Duration::from_millis(1);
const LOOK_CAP: Duration = Duration::from_millis(50);

/// What the endpoint asks of the daemon beyond its counters. The supervisor answers.
pub trait Vitals {
    /// Whether the daemon serves: false from the moment a graceful stop begins.
    fn ready(&self) -> bool;
    /// Wakes every worker's loop, so that an idle one turns too.
    fn wake_loops(&self);
    /// Whether worker `worker`'s loop has ended (after a stop): it is not expected to turn.
    fn loop_ended(&self, worker: usize) -> bool;
}

/// One `/healthz` request being checked: each loop's iteration count when it asked.
#[derive(Debug, Clone)]
pub(super) struct Check {
    before: Vec<u64>,
    until: Instant,
    /// When to look again.
    pub(super) next: Instant,
    wait: Duration,
}

impl Check {
    /// Notes each loop's count and wakes every loop.
    pub(super) fn start(metrics: &Metrics, vitals: &dyn Vitals, now: Instant) -> Check {
        let before = metrics.loops();
        vitals.wake_loops();
        Check { before, until: now + HEALTH_WAIT, next: now + FIRST_LOOK, wait: FIRST_LOOK }
    }

    /// `Some(Ok)` once every loop has turned (or ended), `Some(Err(why))` when one has not by
    /// [`HEALTH_WAIT`] after the start, `None` until then (look again at [`Check::next`]).
    pub(super) fn verdict(
        &mut self,
        metrics: &Metrics,
        vitals: &dyn Vitals,
        now: Instant,
    ) -> Option<Result<(), String>> {
        let now_counts = metrics.loops();
        let stuck: Vec<usize> = (self.before.iter().zip(&now_counts))
            .enumerate()
            .filter(|&(worker, (before, count))| count <= before && !vitals.loop_ended(worker))
            .map(|(worker, _)| worker)
            .collect();
        if stuck.is_empty() {
            return Some(Ok(()));
        }
        if now >= self.until {
            let workers: Vec<String> = stuck.iter().map(usize::to_string).collect();
            let ms = HEALTH_WAIT.as_millis();
            return Some(Err(format!("worker {}: loop did not turn within {ms} ms", workers.join(", "))));
        }
        self.wait = (self.wait * 2).min(LOOK_CAP);
        self.next = (now + self.wait).min(self.until);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// Vitals whose wake-up turns the loops listed in `turns`, as a worker would.
    struct Fake<'a> {
        metrics: &'a Metrics,
        turns: Vec<usize>,
        ended: Vec<usize>,
        woken: Cell<u32>,
    }

    impl Vitals for Fake<'_> {
        fn ready(&self) -> bool {
            true
        }
        fn wake_loops(&self) {
            self.woken.set(self.woken.get() + 1);
            self.turns.iter().for_each(|&w| self.metrics.set_worker(w, 0, 0));
        }
        fn loop_ended(&self, worker: usize) -> bool {
            self.ended.contains(&worker)
        }
    }

    #[test]
    fn healthy_once_every_loop_turned_after_the_wake_up() {
        let metrics = Metrics::new(2);
        metrics.set_worker(0, 0, 0); // turns before the request do not count
        let fake = Fake { metrics: &metrics, turns: vec![0, 1], ended: vec![], woken: Cell::new(0) };
        let now = Instant::now();
        let mut check = Check::start(&metrics, &fake, now);
        assert_eq!(fake.woken.get(), 1);
        assert_eq!(check.verdict(&metrics, &fake, now), Some(Ok(())));
    }

    #[test]
    fn a_loop_that_does_not_turn_is_reported_after_the_wait_not_before() {
        let metrics = Metrics::new(3);
        let fake = Fake { metrics: &metrics, turns: vec![0], ended: vec![2], woken: Cell::new(0) };
        let start = Instant::now();
        let mut check = Check::start(&metrics, &fake, start);
        let mut now = start;
        let mut looks = 0;
        let verdict = loop {
            looks += 1;
            assert!(looks < 100, "the check never concludes");
            if let Some(verdict) = check.verdict(&metrics, &fake, now) {
                break verdict;
            }
            assert!(check.next > now && check.next <= start + HEALTH_WAIT, "{:?}", check.next - start);
            now = check.next;
        };
        assert_eq!(now, start + HEALTH_WAIT, "concluded at {:?}", now - start);
        assert_eq!(verdict, Err("worker 1: loop did not turn within 500 ms".to_owned()));
        assert!(looks < 20, "{looks} looks in {HEALTH_WAIT:?}: the intervals should grow");
    }

    #[test]
    fn a_loop_that_turns_late_still_counts() {
        let metrics = Metrics::new(1);
        let fake = Fake { metrics: &metrics, turns: vec![], ended: vec![], woken: Cell::new(0) };
        let now = Instant::now();
        let mut check = Check::start(&metrics, &fake, now);
        assert_eq!(check.verdict(&metrics, &fake, now), None);
        metrics.set_worker(0, 0, 0);
        assert_eq!(check.verdict(&metrics, &fake, now + Duration::from_millis(300)), Some(Ok(())));
    }
}
