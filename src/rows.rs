//! What the control socket answers with, as data: one row per connection ([`ConnRow`]) and per
//! listener ([`ListenerRow`]), and their two forms — an aligned table for a person, JSON for a
//! program (`--json`, and `idlereaperctl top`). The daemon fills the rows; `idlereaperctl`
//! reads them back. A leaf: it knows nothing of where the numbers come from.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

/// One open connection, as `show conns` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnRow {
    /// Unique for the daemon's lifetime; the close line's `id=`.
    pub id: u64,
    pub listener: String,
    /// `IP:port`, or `unix`.
    pub client: String,
    /// The upstream's address (`-` for a sink).
    pub upstream: String,
    /// `tcp`, `postgres` or `redis`: what idle means for it.
    pub protocol: String,
    /// `tcp`: `connecting`, `relaying`, `half_closed` or `sink`. A protocol's, once connected:
    /// `starting`, `idle`, `idle_in_transaction`, `busy`, `subscribed`, `monitoring`, `opaque`
    /// (`half_closed` after a FIN).
    pub state: String,
    /// The inactivity timer its state runs: `idle`, `idle_in_transaction`, `subscriber_idle`,
    /// or `none` (never closed as idle); `connect` while connecting.
    pub timer: String,
    pub age_ms: u64,
    /// Since the last byte moved (or since accept, while connecting).
    pub idle_ms: u64,
    /// Until the daemon closes it, unless something moves first; none when no deadline runs.
    pub reap_in_ms: Option<u64>,
    /// Which deadline is next: `idle`, `idle_in_transaction`, `subscriber_idle`,
    /// `max_lifetime`, `half_close`, `connect`, or `none`.
    pub reap_reason: String,
    /// The length of its inactivity timer (0 for none; for `top`'s bar).
    pub idle_timeout_ms: u64,
    pub bytes_from_client: u64,
    pub bytes_from_upstream: u64,
}

/// The order `show conns` lists connections in: soonest to be reaped first, then by id; one
/// that no deadline runs for (`reap_in_ms` none) after every other.
pub fn reap_order(reap_in_ms: Option<u64>, id: u64) -> (u64, u64) {
    (reap_in_ms.unwrap_or(u64::MAX), id)
}

/// One listener in force, as `show listeners` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerRow {
    pub name: String,
    pub listen: String,
    /// The upstream entries, comma-separated (`-` for a sink).
    pub upstream: String,
    pub open: u64,
    pub accepted: u64,
    /// Connections closed, by reason (only reasons that occurred).
    pub closed: Vec<(String, u64)>,
    pub refused: u64,
    pub idle_timeout_ms: u64,
    pub bytes_from_client: u64,
    pub bytes_from_upstream: u64,
    /// A relay's upstream addresses (what its entries resolve to), each once, in order; empty
    /// for a sink (and from a daemon that does not say).
    #[serde(default)]
    pub upstreams: Vec<UpstreamRow>,
}

/// One upstream address of a relay listener, as `show listeners` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamRow {
    /// `IP:port` or `unix:/path`: what `idlereaperctl upstream disable|enable` takes.
    pub address: String,
    /// `up`, `disabled` (no new connection; open ones go on) or `backoff` (passed over after a
    /// failed connect, unless every address left is).
    pub state: String,
    /// Connects that failed in a row since the last that succeeded.
    pub failures: u32,
    /// Until the backoff ends (`backoff` only).
    pub backoff_left_ms: Option<u64>,
}

/// A duration in milliseconds as a person reads it: `850ms`, `12.3s`, `4m05s`, `2h03m`.
pub fn human_ms(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms}ms"),
        1_000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// Column widths that fit `header` and `rows`.
fn widths(header: &[&str], rows: &[Vec<String>]) -> Vec<usize> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    widths
}

/// One line of a table: each cell padded to its column's width (a longer one pushes the rest
/// of its line only), two spaces between columns, none at the end.
fn line<'a>(out: &mut String, cells: impl Iterator<Item = &'a str>, widths: &[usize]) {
    let start = out.len();
    for (i, (cell, w)) in cells.zip(widths).enumerate() {
        if i > 0 {
            out.push_str("  ");
        }
        let _ = write!(out, "{cell:<w$}");
    }
    out.truncate(out[start..].trim_end().len() + start);
    out.push('\n');
}

/// Rows as an aligned table under a header line.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let widths = widths(header, rows);
    let mut out = String::new();
    line(&mut out, header.iter().copied(), &widths);
    for row in rows {
        line(&mut out, row.iter().map(String::as_str), &widths);
    }
    out
}

const CONNS_HEADER: [&str; 13] = [
    "id",
    "listener",
    "client",
    "upstream",
    "protocol",
    "state",
    "timer",
    "age",
    "idle",
    "reap_in",
    "reap_reason",
    "from_client",
    "from_upstream",
];

fn conn_cells(r: &ConnRow) -> Vec<String> {
    vec![
        r.id.to_string(),
        r.listener.clone(),
        r.client.clone(),
        r.upstream.clone(),
        r.protocol.clone(),
        r.state.clone(),
        r.timer.clone(),
        human_ms(r.age_ms),
        human_ms(r.idle_ms),
        r.reap_in_ms.map_or_else(|| "-".to_owned(), human_ms),
        r.reap_reason.clone(),
        r.bytes_from_client.to_string(),
        r.bytes_from_upstream.to_string(),
    ]
}

/// `show conns` as a table written in parts, in the order given (soonest to be reaped
/// first): the columns fit the header and the rows of the first part; a longer cell in a
/// later part pushes the rest of its own line only.
#[derive(Debug)]
pub struct ConnsTable {
    widths: Vec<usize>,
}

impl ConnsTable {
    /// Writes the header line and the `first` rows, in columns that fit them.
    pub fn start(first: &[ConnRow], out: &mut String) -> ConnsTable {
        let cells: Vec<Vec<String>> = first.iter().map(conn_cells).collect();
        let widths = widths(&CONNS_HEADER, &cells);
        line(out, CONNS_HEADER.iter().copied(), &widths);
        for row in &cells {
            line(out, row.iter().map(String::as_str), &widths);
        }
        ConnsTable { widths }
    }

    /// Writes more rows in the columns of the first.
    pub fn more(&self, rows: &[ConnRow], out: &mut String) {
        for row in rows {
            line(out, conn_cells(row).iter().map(String::as_str), &self.widths);
        }
    }
}

/// `show conns`: a table, in the order given.
pub fn conns_table(rows: &[ConnRow]) -> String {
    let mut out = String::new();
    ConnsTable::start(rows, &mut out);
    out
}

/// A JSON array written in parts: the same bytes as the whole array at once, and a newline.
#[derive(Debug, Default)]
pub struct JsonArray {
    started: bool,
}

impl JsonArray {
    /// Writes more elements.
    pub fn more<T: Serialize>(&mut self, items: &[T], out: &mut String) {
        for item in items {
            out.push(if self.started { ',' } else { '[' });
            self.started = true;
            // The rows are plain data: serializing one cannot fail.
            out.push_str(&serde_json::to_string(item).unwrap_or_else(|_| "null".to_owned()));
        }
    }

    /// Closes the array (an empty one if nothing was written).
    pub fn end(self, out: &mut String) {
        out.push_str(if self.started { "]\n" } else { "[]\n" });
    }
}

/// `show listeners`: a table, then one of the relays' upstream addresses and their state.
pub fn listeners_table(rows: &[ListenerRow]) -> String {
    let header = ["name", "listen", "upstream", "open", "accepted", "refused", "idle_timeout", "closed"];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let closed: Vec<String> = r.closed.iter().map(|(reason, n)| format!("{reason}={n}")).collect();
            vec![
                r.name.clone(),
                r.listen.clone(),
                r.upstream.clone(),
                r.open.to_string(),
                r.accepted.to_string(),
                r.refused.to_string(),
                human_ms(r.idle_timeout_ms),
                if closed.is_empty() { "-".to_owned() } else { closed.join(",") },
            ]
        })
        .collect();
    let mut out = table(&header, &cells);
    let header = ["listener", "upstream", "state", "failures", "backoff_left"];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .flat_map(|r| r.upstreams.iter().map(move |u| (&r.name, u)))
        .map(|(name, u)| {
            vec![
                name.clone(),
                u.address.clone(),
                u.state.clone(),
                u.failures.to_string(),
                u.backoff_left_ms.map_or("-".to_owned(), human_ms),
            ]
        })
        .collect();
    // Straight after: an answer has no empty line before its end (the control protocol's).
    if !cells.is_empty() {
        out.push_str(&table(&header, &cells));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u64, reap_in_ms: u64) -> ConnRow {
        ConnRow {
            id,
            listener: "pg".into(),
            client: "127.0.0.1:40000".into(),
            upstream: "127.0.0.1:5432".into(),
            protocol: "tcp".into(),
            state: "relaying".into(),
            timer: "idle".into(),
            age_ms: 65_000,
            idle_ms: 1_500,
            reap_in_ms: Some(reap_in_ms),
            reap_reason: "idle".into(),
            idle_timeout_ms: 300_000,
            bytes_from_client: 10,
            bytes_from_upstream: 2048,
        }
    }

    #[test]
    fn connections_no_deadline_runs_for_are_listed_last_then_by_id() {
        let mut keys = [(None, 1), (Some(u64::MAX - 1), 9), (Some(5), 7), (None, 0), (Some(5), 2)];
        keys.sort_by_key(|&(reap_in, id)| reap_order(reap_in, id));
        assert_eq!(keys, [(Some(5), 2), (Some(5), 7), (Some(u64::MAX - 1), 9), (None, 0), (None, 1)]);
    }

    #[test]
    fn durations_read_as_a_person_writes_them() {
        assert_eq!(human_ms(850), "850ms");
        assert_eq!(human_ms(12_345), "12.3s");
        assert_eq!(human_ms(245_000), "4m05s");
        assert_eq!(human_ms(7_380_000), "2h03m");
    }

    #[test]
    fn a_table_aligns_its_columns_and_json_reads_back() {
        let mut busy = row(8, 0);
        (busy.protocol, busy.state, busy.timer, busy.reap_in_ms) =
            ("postgres".into(), "busy".into(), "none".into(), None);
        busy.reap_reason = "none".into();
        let rows = vec![row(7, 298_500), row(12345, 5), busy];
        let text = conns_table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[3].contains("postgres  busy      none") && lines[3].contains("  -  "), "{text}");
        assert!(lines[0].starts_with("id     listener  client"), "{text}");
        assert!(lines[1].contains("4m58s") && lines[2].contains("5ms"), "{text}");
        let column = |l: &str| l.find("relaying");
        assert_eq!(column(lines[1]), column(lines[2]), "aligned:\n{text}");
        let json = serde_json::to_string(&rows).unwrap();
        assert_eq!(serde_json::from_str::<Vec<ConnRow>>(&json).unwrap(), rows);
    }

    #[test]
    fn a_table_or_json_written_in_parts_reads_as_one() {
        let rows: Vec<ConnRow> = (0..5).map(|i| row(i, 1000 * i)).collect();
        let mut parts = String::new();
        let table = ConnsTable::start(&rows[..3], &mut parts);
        table.more(&rows[3..], &mut parts);
        assert_eq!(parts, conns_table(&rows), "the same columns when the first part has the widest cells");
        // A wider cell later pushes its own line, and only it.
        let mut wide = row(123_456_789, 5);
        wide.client = "[2001:db8::1]:40000".into();
        let mut text = String::new();
        ConnsTable::start(&rows[..2], &mut text).more(&[wide, row(3, 7)], &mut text);
        let lines: Vec<&str> = text.lines().collect();
        let column = |l: &str| l.find("relaying");
        assert_eq!(column(lines[0].replace("state", "relaying").as_str()), column(lines[1]));
        assert!(column(lines[3]) > column(lines[1]), "{text}");
        assert_eq!(column(lines[4]), column(lines[1]), "{text}");
        // A later part with the observers' columns and a connection no deadline runs for.
        let mut idle = row(9, 0);
        (idle.protocol, idle.state, idle.timer, idle.reap_in_ms) =
            ("redis".into(), "subscribed".into(), "none".into(), None);
        let mut text = String::new();
        ConnsTable::start(&rows[..1], &mut text).more(&[idle], &mut text);
        let last = text.lines().nth(2).unwrap();
        assert!(last.contains("redis") && last.contains("subscribed") && last.contains("  -  "), "{text}");
        for n in [0, 1, 5] {
            let (mut json, mut array) = (String::new(), JsonArray::default());
            array.more(&rows[..n.min(2)], &mut json);
            array.more(&rows[n.min(2)..n], &mut json);
            array.end(&mut json);
            assert_eq!(json, serde_json::to_string(&rows[..n]).unwrap() + "\n");
        }
    }
}
