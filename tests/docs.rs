//! The README says what the program does: its configuration table is one table, in the order
//! of the file's tables, and the statistics line it shows has the fields the daemon logs.

mod common;

use common::*;

const README: &str = include_str!("../README.md");

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

#[test]
fn the_configuration_table_is_one_table_in_the_order_of_the_file() {
    let rows = config_table();
    let keys: Vec<String> = rows.iter().flat_map(|r| row_keys(r)).collect();
    assert!(keys.iter().any(|k| k == "metrics.listen"), "a blank line ends the table early: {keys:?}");
    let order = |k: &String| ["daemon.", "listener.", "metrics."].iter().position(|t| k.starts_with(t));
    let tables: Vec<_> = keys.iter().map(order).collect();
    assert!(tables.iter().all(Option::is_some), "every row is a daemon, listener or metrics key: {keys:?}");
    assert!(
        tables.windows(2).all(|w| w[0] <= w[1]),
        "[daemon], [[listener]], [metrics] rows in order: {keys:?}"
    );
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
