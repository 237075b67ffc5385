//! The README and the sample config say what the program does: the README's configuration
//! table is one table, in the order of the file's tables, and documents every key of the
//! commented sample (and the sample every `[daemon]` key of the table); the statistics line it
//! shows has the fields the daemon logs; `idlereaper --check` accepts the sample.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::time::Duration;

const README: &str = include_str!("../README.md");
const SAMPLE: &str = include_str!("../etc/idlereaper.toml");

/// The rows of the README's configuration table (the one whose header is `| key | default |`),
/// up to its end: the first line that is not a row.
fn config_table() -> Vec<&'static str> {
    let mut lines = README.lines().skip_while(|l| !l.starts_with("| key | default | meaning |"));
    lines.next().expect("the configuration table");
    lines.skip(1).take_while(|l| l.starts_with('|')).collect()
}

/// The `table.key` names a row documents: `| \`daemon.user\`, \`daemon.group\` | …`.
fn row_keys(row: &str) -> Vec<String> {
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
