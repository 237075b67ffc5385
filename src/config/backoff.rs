//! A relay listener's passive health keys: `upstream_backoff`, how long an upstream address
//! whose connect failed (refused, or no answer within `connect_timeout`) is passed over, and
//! `upstream_backoff_max`, the longest it becomes as it doubles with each failed retry.
//! `upstream_backoff = "0s"` turns passive health off: every address is tried in `balance`
//! order, whatever its last connect did.

use std::time::Duration;

use toml::{Spanned, Value};

use super::duration::{duration, duration_or_off, Range};
use super::locate::Source;
use super::value::shown;
use super::{Res, HOUR};

/// Default `upstream_backoff`: long enough that a dead address costs a connect attempt once a
/// second at most, short enough that one that recovers is used again at once.
pub(super) const DEFAULT_FIRST: Duration = Duration::from_secs(1);
/// Default `upstream_backoff_max`: an address dead for good is retried twice a minute.
pub(super) const DEFAULT_MAX: Duration = Duration::from_secs(30);
/// Longest of either: an address unused for longer than an hour is one to remove from the file.
const LONGEST: Duration = HOUR;

/// How long an upstream address whose connect failed is passed over: `first` after one failure,
/// doubled for each failure of the retry after it, up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The backoff after one that lasted `last` ended in another failure (`None`: the first).
    pub fn after(&self, last: Option<Duration>) -> Duration {
        match last {
            None => self.first,
            Some(last) => last.saturating_mul(2).clamp(self.first, self.max),
        }
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { first: DEFAULT_FIRST, max: DEFAULT_MAX }
    }
}

/// The two keys of one listener; `None` when passive health is off (`upstream_backoff = "0s"`).
/// An unset `upstream_backoff_max` is the default or `upstream_backoff`, whichever is longer; a
/// set one shorter than `upstream_backoff` is an error.
pub(super) fn validate(
    src: &Source,
    key: &dyn Fn(&str) -> String,
    first: &Option<Spanned<Value>>,
    max: &Option<Spanned<Value>>,
    tick: Duration,
) -> Res<Option<Backoff>> {
    let range = Range::timer(tick, LONGEST);
    let first_key = key("upstream_backoff");
    let first_value =
        duration_or_off(src, &first_key, first, Some(DEFAULT_FIRST), range, "passive health off")?;
    let max_key = key("upstream_backoff_max");
    let longest = duration(src, &max_key, max, DEFAULT_MAX, range)?;
    let Some(first_value) = first_value else { return Ok(None) };
    match max {
        Some(v) if longest < first_value => {
            let msg = format!("{} is shorter than upstream_backoff ({})", shown(v), fmt(first_value));
            Err(src.error(v.span(), &max_key, msg))
        }
        Some(_) => Ok(Some(Backoff { first: first_value, max: longest })),
        None => Ok(Some(Backoff { first: first_value, max: longest.max(first_value) })),
    }
}

fn fmt(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failed_retry_doubles_the_backoff_up_to_its_cap() {
        let b = Backoff { first: Duration::from_millis(300), max: Duration::from_secs(2) };
        let mut last = None;
        let mut seen = Vec::new();
        for _ in 0..6 {
            let next = b.after(last);
            seen.push(next.as_millis());
            last = Some(next);
        }
        assert_eq!(seen, [300, 600, 1200, 2000, 2000, 2000]);
        // A backoff carried from a configuration with other values is brought into range.
        assert_eq!(b.after(Some(Duration::from_secs(60))), Duration::from_secs(2));
        assert_eq!(b.after(Some(Duration::from_millis(1))), Duration::from_millis(300));
    }
}
