//! The daemon's log lines: `<rfc3339> INFO conn closed key=value ... [error="..."]`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

/// One `conn closed` line: `<time> INFO conn closed key=value ... [error="..."]`.
#[derive(Debug, Clone)]
pub struct CloseLine {
    pub raw: String,
    pub fields: BTreeMap<String, String>,
}

impl CloseLine {
    /// Parses a log line; `None` if it is not a `conn closed` line.
    pub fn parse(line: &str) -> Option<CloseLine> {
        let (head, rest) = line.split_once(" conn closed ")?;
        if !head.ends_with("INFO") {
            return None;
        }
        Some(CloseLine { raw: line.to_string(), fields: parse_fields(rest) })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    pub fn reason(&self) -> &str {
        self.get("reason").unwrap_or("")
    }

    /// A numeric field; panics (showing the line) if missing or not a number.
    pub fn num(&self, key: &str) -> u64 {
        self.get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no numeric {key}= in {:?}", self.raw))
    }

    /// Asserts the reason, showing the whole line on failure.
    pub fn assert_reason(&self, reason: &str) {
        assert_eq!(self.reason(), reason, "close line: {}", self.raw);
    }

    /// Asserts the documented format: an RFC 3339 UTC time, then every field, with a known
    /// reason and numeric counters.
    pub fn assert_well_formed(&self) {
        let time = self.raw.split(' ').next().unwrap_or("");
        assert!(looks_rfc3339(time), "timestamp {time:?} in {:?}", self.raw);
        assert!(self.get("listener").is_some_and(|v| !v.is_empty()), "listener= in {:?}", self.raw);
        assert!(
            self.get("client").is_some_and(|c| c == "unix" || c.parse::<SocketAddr>().is_ok()),
            "client= is an address, or unix: {:?}",
            self.raw
        );
        assert!(REASONS.contains(&self.reason()), "known reason in {:?}", self.raw);
        for key in ["lifetime_ms", "bytes_from_client", "bytes_from_upstream"] {
            self.num(key);
        }
    }
}

/// The close reasons the log format documents.
pub const REASONS: [&str; 15] = [
    "idle",
    "idle_in_transaction",
    "subscriber_idle",
    "client_closed",
    "upstream_closed",
    "client_reset",
    "upstream_reset",
    "upstream_refused",
    "connect_timeout",
    "error",
    "shutdown",
    "limit",
    "max_lifetime",
    "half_close_timeout",
    "killed",
];

/// `2026-11-27T03:24:57.123Z` or `2026-11-27T03:24:57Z` (UTC, optional fraction).
pub fn looks_rfc3339(t: &str) -> bool {
    let b = t.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    let date = digits(0..4) && at(4, b'-') && digits(5..7) && at(7, b'-') && digits(8..10);
    let time =
        at(10, b'T') && digits(11..13) && at(13, b':') && digits(14..16) && at(16, b':') && digits(17..19);
    if !(date && time) {
        return false;
    }
    let Some(fraction) = t[19..].strip_suffix('Z').or_else(|| t[19..].strip_suffix("+00:00")) else {
        return false;
    };
    fraction.is_empty()
        || fraction.strip_prefix('.').is_some_and(|d| !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit()))
}

/// `a=1 b="x y" c=z` → {a: 1, b: x y, c: z}.
pub fn parse_fields(text: &str) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    let mut rest = text.trim_start();
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().to_string();
        let after = &rest[eq + 1..];
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            },
            None => match after.find(' ') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            },
        };
        fields.insert(key, value.to_string());
        rest = next.trim_start();
    }
    fields
}
