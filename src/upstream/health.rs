//! The health of a relay listener's upstream addresses, as connects find it and as the operator
//! sets it (`idlereaperctl upstream disable|enable`): one table per listener, shared by its
//! workers (a lock taken once per connect attempt and per connect that succeeds after a
//! failure, never per byte; none at all while every address is up) and, across a reload, by
//! the listener that keeps its `listen` address.
//!
//! Passive health: an address whose connect failed (refused, unreachable, or no answer within
//! `connect_timeout`) is passed over for a backoff that doubles with each failed retry up to
//! its cap, and is forgotten at its first successful connect. A new connection tries the
//! addresses that are up first, in `balance` order, then those in backoff, the soonest to end
//! first: a backoff reorders, it never refuses a client an address that might answer. A
//! disabled address gets no new connection at all; its open ones go on (a drain).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Target;
use crate::config::Backoff;
use crate::rows::UpstreamRow;

/// Where an address stands for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Up,
    /// Passed over until then, unless every address left is.
    Backoff(Instant),
    /// Never tried by a new connection.
    Disabled,
}

/// What is known of one address besides "up": kept only while it says something.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Health {
    pub disabled: bool,
    /// Connects that failed in a row since the last that succeeded.
    pub failures: u32,
    /// The backoff in force or last in force: its length and its end.
    pub backoff: Option<(Duration, Instant)>,
}

impl Health {
    fn standing(&self, now: Instant) -> Standing {
        match self.backoff {
            _ if self.disabled => Standing::Disabled,
            Some((_, until)) if until > now => Standing::Backoff(until),
            _ => Standing::Up,
        }
    }

    fn is_up_and_clean(&self) -> bool {
        *self == Health::default()
    }
}

/// What a failed connect did to an address's health, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// A backoff of this length began (`failures` in a row).
    Backoff { length: Duration, failures: u32 },
    /// It was in backoff already (a connect begun before it): counted, nothing else.
    Counted,
}

/// The health of one listener's addresses, by address.
#[derive(Debug, Default)]
pub struct HealthTable {
    entries: Mutex<HashMap<Target, Health>>,
    /// Whether `entries` has any: without, every address is up and no lock is needed.
    any: AtomicBool,
}

impl HealthTable {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<Target, Health>) -> T) -> T {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let out = f(&mut entries);
        entries.retain(|_, h| !h.is_up_and_clean());
        self.any.store(!entries.is_empty(), Ordering::Relaxed);
        out
    }

    /// Of the addresses `order` yields (a connection's untried ones, position and address, in
    /// its `balance` order), the position of the one to try next: the first that is up, else
    /// the one whose backoff ends soonest; `None` when only disabled ones are left.
    pub fn next<'a>(
        &self,
        mut order: impl Iterator<Item = (usize, &'a Target)>,
        now: Instant,
    ) -> Option<usize> {
        if !self.any.load(Ordering::Relaxed) {
            return order.next().map(|(k, _)| k);
        }
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let standing = |t: &Target| entries.get(t).map_or(Standing::Up, |h| h.standing(now));
        choose(order.map(|(k, t)| (k, standing(t))))
    }

    /// A connect to `target` failed at `now`: with `backoff` set, it is passed over for the
    /// next backoff (unless one runs already).
    pub fn failed(&self, target: &Target, backoff: Option<Backoff>, now: Instant) -> Option<Failed> {
        let backoff = backoff?;
        self.with(|entries| {
            let health = entries.entry(target.clone()).or_default();
            health.failures = health.failures.saturating_add(1);
            match health.backoff {
                Some((_, until)) if until > now => Some(Failed::Counted),
                last => {
                    let length = backoff.after(last.map(|(length, _)| length));
                    health.backoff = Some((length, now + length));
                    Some(Failed::Backoff { length, failures: health.failures })
                }
            }
        })
    }

    /// A connect to `target` succeeded: its failures are forgotten. How many there were, if any.
    pub fn connected(&self, target: &Target) -> Option<u32> {
        if !self.any.load(Ordering::Relaxed) {
            return None;
        }
        self.with(|entries| {
            let health = entries.get_mut(target)?;
            let failures = health.failures;
            (health.failures, health.backoff) = (0, None);
            (failures > 0).then_some(failures)
        })
    }

    /// Disables or enables `targets`; enabling also ends a backoff. Returns whether each was
    /// disabled before.
    pub fn set_disabled(&self, targets: &[Target], disabled: bool) -> Vec<bool> {
        self.with(|entries| {
            let mut before = Vec::with_capacity(targets.len());
            for target in targets {
                let health = entries.entry(target.clone()).or_default();
                before.push(health.disabled);
                health.disabled = disabled;
                if !disabled {
                    (health.failures, health.backoff) = (0, None);
                }
            }
            before
        })
    }

    /// Forgets every address but `targets` (those a reload or a new resolution left).
    pub fn retain(&self, targets: &[Target]) {
        self.with(|entries| entries.retain(|t, _| targets.contains(t)));
    }

    /// A row per address of `targets` (each once, in order), as `show listeners` shows it.
    pub fn rows(&self, targets: &[Target], now: Instant) -> Vec<UpstreamRow> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut rows: Vec<UpstreamRow> = Vec::with_capacity(targets.len());
        for target in targets {
            let address = target.to_string();
            if rows.iter().any(|r| r.address == address) {
                continue;
            }
            let health = entries.get(target).copied().unwrap_or_default();
            let (state, backoff_left_ms) = match health.standing(now) {
                Standing::Up => ("up", None),
                Standing::Disabled => ("disabled", None),
                Standing::Backoff(until) => ("backoff", Some(millis(until - now))),
            };
            rows.push(UpstreamRow {
                address,
                state: state.to_owned(),
                failures: health.failures,
                backoff_left_ms,
            });
        }
        rows
    }

    /// Every entry: the address and its health (for a live upgrade).
    pub fn entries(&self) -> Vec<(Target, Health)> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.iter().map(|(t, h)| (t.clone(), *h)).collect()
    }

    /// Entries a live upgrade handed over (added to what the table has).
    pub fn restore(&self, carried: impl IntoIterator<Item = (Target, Health)>) {
        self.with(|entries| entries.extend(carried));
    }
}

/// Of `candidates` (position, standing), in the order to try them: the first up; else the one
/// in backoff that ends soonest (the first of those on a tie); `None` when all are disabled.
pub fn choose(candidates: impl Iterator<Item = (usize, Standing)>) -> Option<usize> {
    let mut soonest: Option<(Instant, usize)> = None;
    for (k, standing) in candidates {
        match standing {
            Standing::Up => return Some(k),
            Standing::Backoff(until) if soonest.is_none_or(|(s, _)| until < s) => soonest = Some((until, k)),
            Standing::Backoff(_) | Standing::Disabled => {}
        }
    }
    soonest.map(|(_, k)| k)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(port: u16) -> Target {
        Target::Tcp(([127, 0, 0, 1], port).into())
    }

    const BACKOFF: Backoff = Backoff { first: Duration::from_secs(1), max: Duration::from_secs(4) };

    /// The positions a connection would try, in order, if none of its connects succeeded.
    fn order(table: &HealthTable, targets: &[Target], now: Instant) -> Vec<usize> {
        let mut tried = Vec::new();
        for _ in 0..targets.len() {
            let left = targets.iter().enumerate().filter(|(k, _)| !tried.contains(k));
            match table.next(left, now) {
                Some(k) => tried.push(k),
                None => break,
            }
        }
        tried
    }

    #[test]
    fn an_address_that_failed_is_tried_last_and_a_disabled_one_never() {
        let (table, now) = (HealthTable::default(), Instant::now());
        let targets = [t(1), t(2), t(3)];
        assert_eq!(order(&table, &targets, now), [0, 1, 2], "all up: balance order");
        table.failed(&targets[0], Some(BACKOFF), now);
        assert_eq!(order(&table, &targets, now), [1, 2, 0], "in backoff: after the others");
        table.failed(&targets[1], Some(BACKOFF), now - Duration::from_millis(500));
        assert_eq!(order(&table, &targets, now), [2, 1, 0], "the backoff that ends first first");
        table.set_disabled(&targets[2..], true);
        assert_eq!(order(&table, &targets, now), [1, 0], "a disabled address is never tried");
        let later = now + Duration::from_secs(1);
        assert_eq!(order(&table, &targets, later), [0, 1], "both backoffs over: up again, in order");
        table.set_disabled(&targets, true);
        assert_eq!(order(&table, &targets, now), Vec::<usize>::new(), "every address disabled: none");
    }

    #[test]
    fn a_backoff_doubles_with_each_failed_retry_and_a_success_forgets_it() {
        let (table, start) = (HealthTable::default(), Instant::now());
        let a = t(1);
        let mut now = start;
        let mut lengths = Vec::new();
        for _ in 0..5 {
            match table.failed(&a, Some(BACKOFF), now) {
                Some(Failed::Backoff { length, .. }) => lengths.push(length.as_secs()),
                other => panic!("a retry after the backoff starts another: {other:?}"),
            }
            // A connect begun before the backoff, failing during it, changes nothing more.
            assert_eq!(table.failed(&a, Some(BACKOFF), now), Some(Failed::Counted));
            now += Duration::from_secs(lengths.last().copied().unwrap_or(0));
        }
        assert_eq!(lengths, [1, 2, 4, 4, 4]);
        let row = &table.rows(std::slice::from_ref(&a), now - Duration::from_secs(1))[0];
        assert_eq!((row.state.as_str(), row.failures, row.backoff_left_ms), ("backoff", 10, Some(1000)));
        assert_eq!(table.connected(&a), Some(10));
        assert_eq!(
            table.failed(&a, Some(BACKOFF), now),
            Some(Failed::Backoff { length: BACKOFF.first, failures: 1 })
        );
        assert_eq!(table.connected(&a), Some(1));
        assert!(!table.any.load(Ordering::Relaxed), "all up again: no entry, no lock");
        assert_eq!(table.failed(&a, None, now), None, "passive health off: nothing recorded");
        assert_eq!(order(&table, &[a], now), [0]);
    }

    #[test]
    fn enabling_ends_a_backoff_and_rows_say_each_state_once() {
        let (table, now) = (HealthTable::default(), Instant::now());
        let (a, b, c) = (t(1), t(2), t(3));
        table.failed(&a, Some(BACKOFF), now);
        table.set_disabled(std::slice::from_ref(&b), true);
        let rows = table.rows(&[a.clone(), b.clone(), c.clone(), a.clone()], now);
        let states: Vec<(&str, &str)> = rows.iter().map(|r| (r.address.as_str(), r.state.as_str())).collect();
        assert_eq!(states, [("127.0.0.1:1", "backoff"), ("127.0.0.1:2", "disabled"), ("127.0.0.1:3", "up")]);
        assert_eq!(table.set_disabled(&[a.clone(), b.clone()], false), [false, true]);
        assert!(table.rows(&[a, b], now).iter().all(|r| r.state == "up" && r.failures == 0));
    }

    #[test]
    fn what_leaves_the_list_is_forgotten_and_a_carried_entry_restored() {
        let (table, now) = (HealthTable::default(), Instant::now());
        let (a, b) = (t(1), t(2));
        table.set_disabled(&[a.clone(), b.clone()], true);
        table.retain(std::slice::from_ref(&b));
        assert_eq!(table.entries().len(), 1);
        let other = HealthTable::default();
        other.restore(table.entries());
        assert_eq!(
            other.rows(&[a, b], now).iter().map(|r| r.state.as_str()).collect::<Vec<_>>(),
            ["up", "disabled"]
        );
    }
}
