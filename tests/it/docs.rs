//! The README and the sample config say what the program does: the README's configuration
//! table is one table, in the order of the file's tables, and documents every key of the
//! commented sample (and the sample every `[daemon]` key of the table); the statistics line and
//! the close line it shows have the fields the daemon logs, in order, and its JSON close line the
//! same fields; `idlereaper --check` accepts the sample.

use crate::common::*;
use std::collections::BTreeSet;
use std::time::Duration;

const README: &str = include_str!("../../README.md");
pub const SAMPLE: &str = include_str!("../../etc/idlereaper.toml");

/// The rows of the README's configuration table (the one whose header is `| key | default |`),
/// up to its end: the first line that is not a row.
pub fn config_table() -> Vec<&'static str> {
    let mut lines = README.lines().skip_while(|l| !l.starts_with("| key | default | meaning |"));
    lines.next().expect("the configuration table");
    lines.skip(1).take_while(|l| l.starts_with('|')).collect()
}

/// The `table.key` names a row documents: `| \`daemon.user\`, \`daemon.group\` | …`.
pub fn row_keys(row: &str) -> Vec<String> {
    let first = row.split('|').nth(1).unwrap_or("");
    first.split(',').map(|k| k.trim().trim_matches('`').to_owned()).collect()
}

/// The keys of the sample, set or commented out (`#key = …`), as `table.key`.
fn sample_keys() -> BTreeSet<String> {
    let mut table = String::new();
    let mut keys = BTreeSet::new();
    for line in SAMPLE.lines() {
        let line = line.trim_start_matches('#');
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
            table = name.to_owned();
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            table = name.to_owned();
        } else if let Some((key, _)) = line.split_once(" = ") {
            if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                keys.insert(format!("{table}.{key}"));
            }
        }
    }
    keys
}

#[test]
fn the_configuration_table_is_one_table_in_the_order_of_the_file() {
    let rows = config_table();
    let keys: Vec<String> = rows.iter().flat_map(|r| row_keys(r)).collect();
    assert!(keys.iter().any(|k| k == "metrics.listen"), "a blank line ends the table early: {keys:?}");
    let order =
        |k: &String| ["daemon.", "listener.", "metrics.", "control."].iter().position(|t| k.starts_with(t));
    let tables: Vec<_> = keys.iter().map(order).collect();
    assert!(
        tables.iter().all(Option::is_some),
        "every row is a daemon, listener, metrics or control key: {keys:?}"
    );
    assert!(
        tables.windows(2).all(|w| w[0] <= w[1]),
        "[daemon], [[listener]], [metrics], [control] rows in order: {keys:?}"
    );
}

#[test]
fn the_table_documents_the_sample_and_the_sample_every_daemon_key() {
    let documented: BTreeSet<String> = config_table().iter().flat_map(|r| row_keys(r)).collect();
    let sample = sample_keys();
    let undocumented: Vec<_> = sample.difference(&documented).collect();
    assert!(undocumented.is_empty(), "keys of the sample not in the README's table: {undocumented:?}");
    let daemon_missing: Vec<_> =
        documented.iter().filter(|k| k.starts_with("daemon.") && !sample.contains(*k)).collect();
    assert!(daemon_missing.is_empty(), "[daemon] keys missing from the sample: {daemon_missing:?}");
}

#[test]
fn the_statistics_line_shown_is_the_one_logged() {
    let shown = README.lines().find(|l| l.contains("`USR1`")).expect("the USR1 row");
    let (_, line) = shown.split_once("(`stats ").expect("a stats line in the USR1 row");
    let line = line.split('`').next().unwrap();
    let documented: Vec<&str> = line.split_whitespace().map(|f| f.split('=').next().unwrap()).collect();
    let mut daemon = Daemon::start(&sink_listener("sink", free_addr(), "30s"));
    let logged: Vec<String> = daemon.stats().into_keys().collect();
    let mut sorted = documented.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, logged, "README shows `stats {line}`");
}

/// The README's example lines of the Logs section that start with `prefix`.
fn logs_example(prefix: &str) -> &'static str {
    let logs = README.split_once("\n## Logs\n").expect("a Logs section").1;
    logs.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix:?} line in Logs"))
}

#[test]
fn the_close_line_shown_is_the_one_logged() {
    let shown = logs_example("conn closed ");
    let keys = |fields: &str| -> Vec<String> {
        fields.split_whitespace().filter_map(|f| f.split_once('=')).map(|(k, _)| k.to_owned()).collect()
    };
    let documented = keys(shown.strip_prefix("conn closed ").unwrap());
    let upstream = Upstream::echo();
    let listen = free_addr();
    let daemon = Daemon::start(&relay_listener("example-relay", listen, upstream.addr, "30s"));
    let mut client = connect(listen);
    assert_echo(&mut client, b"shown");
    let me = client.local_addr().unwrap();
    drop(client);
    let line = daemon.wait_close_of(me, std::time::Duration::from_secs(5));
    let logged = keys(line.raw.split_once(" conn closed ").unwrap().1);
    assert_eq!(documented, logged, "README shows {shown:?}; the daemon logged {:?}", line.raw);

    let json: serde_json::Value = serde_json::from_str(logs_example("{")).expect("the README's JSON line");
    let members: Vec<String> = json.as_object().unwrap().keys().cloned().collect();
    let expected: Vec<String> =
        ["time", "level", "msg"].map(String::from).into_iter().chain(documented).collect();
    let (mut sorted_members, mut sorted_expected) = (members.clone(), expected);
    sorted_members.sort();
    sorted_expected.sort();
    assert_eq!(sorted_members, sorted_expected, "the JSON line has the text line's fields: {members:?}");
    assert_eq!((json["msg"].as_str(), json["id"].as_u64()), (Some("conn closed"), Some(17)));
}

#[test]
fn check_accepts_the_sample() {
    let dir = tempfile::tempdir().unwrap();
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/etc/idlereaper.toml");
    let args = ["--check", "--config", sample].map(std::ffi::OsStr::new);
    let run = run_cli(dir.path(), &args, Duration::from_secs(10));
    assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
    assert!(
        run.stdout.contains("workers 1") && run.stdout.ends_with(": configuration ok\n"),
        "{}",
        run.stdout
    );
}
