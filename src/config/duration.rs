//! Durations in the file: strings of a number and a unit, `"250ms"`, `"30s"`, `"5m"`, `"1h"`,
//! `"2d"`, or several of them, `"1h 30m"`; the number may have a fraction, `"1.5s"`.
//!
//! The units are exactly these: `ms`; `s`, `sec`, `second`; `m`, `min`, `minute`; `h`, `hour`;
//! `d`, `day`; the spelled-out ones also with a final `s` (`days`, as in `"30days"`, which is
//! how the summaries and range messages print durations). Nothing finer than a millisecond (the
//! timing wheel counts whole ticks of at least 1 ms) and nothing longer than a day, which no
//! range needs. A bare number, a negative value, an unknown unit, or a value that is not a whole
//! number of milliseconds is an error, which says what is accepted and, from the caller, the
//! key's range.

use std::time::Duration;

use toml::{Spanned, Value};

use super::locate::Source;
use super::value::{shown, wrong_type};
use super::{Res, HOUR};

/// The longest timeout any key takes: 30 days.
pub(super) const MAX_TIMEOUT: Duration = Duration::from_secs(30 * 24 * HOUR.as_secs());

/// The units and their length in milliseconds; the spelled-out names also take a final `s`.
const UNITS: [(&[&str], u128); 5] = [
    (&["ms"], 1),
    (&["s", "sec", "second"], 1_000),
    (&["m", "min", "minute"], 60_000),
    (&["h", "hour"], 3_600_000),
    (&["d", "day"], 86_400_000),
];

/// What a duration looks like, for the messages.
const EXPECTED: &str = "write a number and a unit, such as \"250ms\", \"30s\", \"5m\", \"1h\" or \"2d\" \
                        (\"1h 30m\" combines them; units: ms, s, m, h, d, or sec, second, min, minute, \
                        hour, day, also with a final s)";

/// The durations a key allows, `min..=max`, and `note`, which follows the range in a message to
/// say why the bounds are what they are.
#[derive(Debug, Clone, Copy)]
pub(super) struct Range {
    pub(super) min: Duration,
    pub(super) max: Duration,
    pub(super) note: &'static str,
}

impl Range {
    /// `min..=max`, with nothing to explain.
    pub(super) const fn plain(min: Duration, max: Duration) -> Range {
        Range { min, max, note: "" }
    }

    /// `tick..=max`, for a timer: the timing wheel runs none shorter than its tick.
    pub(super) const fn timer(tick: Duration, max: Duration) -> Range {
        Range { min: tick, max, note: " (the minimum is daemon.tick)" }
    }
}

/// The duration in `value`, or `default` when absent, within `range`.
pub(super) fn duration(
    src: &Source,
    key: &str,
    value: &Option<Spanned<Value>>,
    default: Duration,
    range: Range,
) -> Res<Duration> {
    let Some(v) = value else { return Ok(default) };
    let allowed = format!("{} to {}{}", fmt(range.min), fmt(range.max), range.note);
    let d = duration_value(src, key, v, &allowed)?;
    if d < range.min || d > range.max {
        let msg = format!("{} is out of range: allowed {allowed}", shown(v));
        return Err(src.error(v.span(), key, msg));
    }
    Ok(d)
}

/// A duration that `"0s"` switches off (`None`), `default` when absent; any other value must be
/// within `range`. The range error says what off means (`off_means`).
pub(super) fn duration_or_off(
    src: &Source,
    key: &str,
    value: &Option<Spanned<Value>>,
    default: Option<Duration>,
    range: Range,
    off_means: &str,
) -> Res<Option<Duration>> {
    let Some(v) = value else { return Ok(default) };
    let allowed = format!("0s ({off_means}) or {} to {}{}", fmt(range.min), fmt(range.max), range.note);
    let d = duration_value(src, key, v, &allowed)?;
    if d.is_zero() {
        return Ok(None);
    }
    if d < range.min || d > range.max {
        let msg = format!("{} is out of range: allowed {allowed}", shown(v));
        return Err(src.error(v.span(), key, msg));
    }
    Ok(Some(d))
}

/// The duration string in `v`: its type and syntax are checked, its range is not (a syntax
/// error ends with the range, `allowed`).
fn duration_value(src: &Source, key: &str, v: &Spanned<Value>, allowed: &str) -> Res<Duration> {
    let Value::String(text) = v.get_ref() else {
        let expected = "a duration string with a unit, such as \"30s\" or \"250ms\"";
        return Err(wrong_type(src, key, v, expected));
    };
    parse(text).map_err(|msg| src.error(v.span(), key, format!("{msg}; allowed: {allowed}")))
}

/// How the summaries and messages write a duration: `"1m 30s"`, `"30days"`.
pub(super) fn fmt(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

/// `"250ms"`, `"5m"`, `"1h 30m"`, `"1.5s"` → a whole number of milliseconds. A value too large
/// for a `Duration` becomes `Duration::MAX`, for the range check to reject.
pub(super) fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!("{text:?} has no unit: write \"{t}s\" or \"{t}ms\""));
    }
    if t.starts_with('-') {
        return Err(format!("{text:?} is negative: a duration is 0s or more"));
    }
    let not = |why: String| format!("{text:?} is not a duration: {why}{EXPECTED}");
    if t.is_empty() {
        return Err(not(String::new()));
    }
    // In millionths of a millisecond (nanoseconds), so that fractions add up exactly.
    let mut total: u128 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits);
        let after = after.trim_start();
        let letters = after.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(after.len());
        let (unit, after) = after.split_at(letters);
        let Some(ms) = unit_ms(unit) else {
            return Err(match unit.is_empty() {
                true => not(String::new()),
                false => not(format!("{unit:?} is not a unit; ")),
            });
        };
        let ns = nanos(number, ms).ok_or_else(|| not(String::new()))?;
        total = total
            .saturating_add(ns.ok_or_else(|| format!("{text:?} is not a whole number of milliseconds"))?);
        rest = after.trim_start();
    }
    if total == u128::MAX {
        return Ok(Duration::MAX); // saturated
    }
    if !total.is_multiple_of(1_000_000) {
        return Err(format!("{text:?} is not a whole number of milliseconds"));
    }
    Ok(u64::try_from(total).map_or(Duration::MAX, Duration::from_nanos))
}

/// The length of `unit` in milliseconds, if it is one.
fn unit_ms(unit: &str) -> Option<u128> {
    UNITS.iter().find_map(|(names, ms)| {
        let long = |n: &&str| n.len() > 2 && unit.strip_suffix('s') == Some(n);
        names.iter().any(|n| *n == unit || long(n)).then_some(*ms)
    })
}

/// `number` (`"5"`, `"1.5"`) of a unit of `ms` milliseconds, in nanoseconds: `None` if it is not
/// a number, `Some(None)` if it is not a whole number of nanoseconds; huge values saturate.
fn nanos(number: &str, ms: u128) -> Option<Option<u128>> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || (number.contains('.') && fraction.is_empty()) || !ok(whole) || !ok(fraction) {
        return None;
    }
    let unit = ms * 1_000_000;
    let whole = whole.bytes().try_fold(0u128, |n, b| n.checked_mul(10)?.checked_add(u128::from(b - b'0')));
    let Some(whole) = whole.and_then(|w| w.checked_mul(unit)) else {
        return Some(Some(u128::MAX));
    };
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        return Some(Some(whole));
    }
    // The unit is at most 8.64e13 ns: beyond 18 digits no fraction of it is whole.
    if fraction.len() > 18 {
        return Some(None);
    }
    let scale = 10u128.pow(fraction.len() as u32);
    let part = fraction.parse::<u128>().expect("digits") * unit;
    Some(part.is_multiple_of(scale).then(|| whole.saturating_add(part / scale)))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn units_and_their_spellings() {
        let ok = |text: &str| parse(text).unwrap_or_else(|e| panic!("{e}"));
        for text in ["1ms", "1 ms", " 1ms "] {
            assert_eq!(ok(text), ms(1), "{text}");
        }
        for text in ["2s", "2sec", "2secs", "2second", "2seconds", "2 s"] {
            assert_eq!(ok(text), ms(2000), "{text}");
        }
        for text in ["3m", "3min", "3mins", "3minute", "3minutes"] {
            assert_eq!(ok(text), ms(180_000), "{text}");
        }
        for text in ["4h", "4hour", "4hours"] {
            assert_eq!(ok(text), ms(4 * 3_600_000), "{text}");
        }
        for text in ["30d", "30day", "30days"] {
            assert_eq!(ok(text), ms(30 * 86_400_000), "{text}");
        }
        assert_eq!(ok("1h 30m"), ok("90m"));
        assert_eq!(ok("1h30m"), ok("90m"));
        assert_eq!(ok("1.5s"), ms(1500));
        assert_eq!(ok("0.5ms 0.5ms"), ms(1));
        assert_eq!(ok("1.25m"), ms(75_000));
        assert_eq!(ok("1.000000000000000000000000s"), ms(1000));
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("99999999999999999999999999999999999999999d"), Duration::MAX);
    }

    #[test]
    fn errors_say_what_is_accepted() {
        let err = |text: &str| parse(text).unwrap_err();
        let msg = "\"5x\" is not a duration: \"x\" is not a unit; write a number and a unit, such as \
                   \"250ms\", \"30s\", \"5m\", \"1h\" or \"2d\" (\"1h 30m\" combines them; units: ms, s, \
                   m, h, d, or sec, second, min, minute, hour, day, also with a final s)";
        assert_eq!(err("5x"), msg);
        for text in ["1us", "1ns", "1w", "1y", "1M", "1S", "1mss", "1hr"] {
            assert!(err(text).contains("is not a unit"), "{text}: {}", err(text));
        }
        for text in ["", "s", "ms5", "1.s", ".5s", "1..5s", "1.5.5s", "5s x", "5s,5m", "1_000ms"] {
            assert!(err(text).contains("is not a duration: "), "{text}: {}", err(text));
            assert!(err(text).contains("units: ms, s, m, h, d"), "{text}: {}", err(text));
        }
        assert_eq!(err("5"), "\"5\" has no unit: write \"5s\" or \"5ms\"");
        assert_eq!(err("-5s"), "\"-5s\" is negative: a duration is 0s or more");
        for text in ["0.5ms", "1.0001s", "0.0000005ms", "1.0000000000000000001d"] {
            assert_eq!(err(text), format!("{text:?} is not a whole number of milliseconds"));
        }
    }

    proptest! {
        #[test]
        fn what_humantime_prints_reads_back(n in 0u64..=30 * 86_400_000) {
            prop_assert_eq!(parse(&fmt(ms(n)).to_string()), Ok(ms(n)));
        }

        #[test]
        fn never_panics(text in "[0-9.a-zA-Z -]{0,30}") {
            if let Ok(d) = parse(&text) {
                prop_assert!(d == Duration::MAX || d.subsec_nanos() % 1_000_000 == 0);
            }
        }
    }
}
