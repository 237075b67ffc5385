//! One reference for the configuration: every key the file accepts (the list the program checks
//! keys against, [`idlereaper::file_keys`]) is documented in idlereaper.toml(5), in the
//! README's configuration table and in the commented sample config, and none of them documents
//! a key the program would refuse. Where they state a key's default as a value, they state the
//! same one, and it is the value `idlereaper --check` shows for a file that does not set it.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::time::Duration;

use crate::common::*;
use crate::docs::{config_table, row_keys, SAMPLE};

const MAN5: &str = include_str!("../../packaging/idlereaper.toml.5");
const MAN5_PATH: &str = "packaging/idlereaper.toml.5";
const SAMPLE_PATH: &str = "etc/idlereaper.toml";

/// Every key of the file, as `table.key`, from the program.
fn program_keys() -> BTreeSet<String> {
    let tables = idlereaper::file_keys();
    let keys: BTreeSet<String> =
        tables.iter().flat_map(|t| t.keys.iter().map(move |k| format!("{}.{k}", t.table))).collect();
    assert!(keys.contains("daemon.tick") && keys.contains("listener.idle_timeout"), "{keys:?}");
    keys
}

/// The man page's entries, by `table.key`: from each `.TP` / `.B key = …` line to the next `.TP`
/// or `.SH`, under the section `THE [table] TABLE` (or `THE [[table]] TABLES`).
fn man_entries() -> BTreeMap<String, String> {
    let mut entries = BTreeMap::new();
    let mut table = None;
    let mut current: Option<(String, String)> = None;
    let mut lines = MAN5.lines().peekable();
    while let Some(line) = lines.next() {
        let ends_entry = line.starts_with(".TP") || line.starts_with(".SH");
        if ends_entry {
            entries.extend(current.take());
        }
        if let Some(title) = line.strip_prefix(".SH THE ") {
            table = Some(title.trim_matches(|c: char| !c.is_ascii_lowercase()).to_owned())
                .filter(|_| title.ends_with(" TABLE") || title.ends_with(" TABLES"));
        } else if line.starts_with(".SH") {
            table = None;
        } else if line.starts_with(".TP") {
            let next = lines.peek().copied().unwrap_or_default();
            let key = next.strip_prefix(".B ").and_then(|rest| rest.split_once(" = ")).map(|(key, _)| key);
            if let (Some(table), Some(key)) = (&table, key) {
                current = Some((format!("{table}.{key}"), String::new()));
            }
        } else if let Some((_, text)) = &mut current {
            text.push_str(line);
            text.push('\n');
        }
    }
    entries.extend(current);
    entries
}

/// A default stated as a value (`"30s"`, `10000`, `[]`), without its quotes; `None` for words.
fn literal(text: &str) -> Option<String> {
    let text = text.trim().trim_end_matches(['.', ',', ';']);
    let quoted = text.strip_prefix('"').and_then(|t| t.strip_suffix('"'));
    let number = text.chars().all(|c| c.is_ascii_digit()) && !text.is_empty();
    match (quoted, number || text == "[]" || text.starts_with('/')) {
        (Some(inner), _) => Some(inner.to_owned()),
        (None, true) => Some(text.to_owned()),
        (None, false) => None,
    }
}

/// The man page's `Default:` of an entry, when it is a value: the word set in bold after it.
fn man_default(entry: &str) -> Option<String> {
    let after = entry.split_once("Default:")?.1;
    let (rest_of_line, following) = after.split_once('\n').unwrap_or((after, ""));
    if !rest_of_line.trim().is_empty() {
        return None; // a sentence: "not set", "the listener's idle_timeout"
    }
    let bold = following.lines().next()?;
    let word = bold.strip_prefix(".BR ").or_else(|| bold.strip_prefix(".B "))?.split(' ').next()?;
    literal(&word.replace("\\(dq", "\""))
}

/// The README table's default of each key, when it is a value.
fn readme_defaults() -> BTreeMap<String, String> {
    let mut defaults = BTreeMap::new();
    for row in config_table() {
        let cell = row.split('|').nth(2).unwrap_or_default().trim();
        let code = cell.strip_prefix('`').and_then(|c| c.strip_suffix('`')).filter(|c| !c.contains('`'));
        if let Some(value) = code.and_then(literal) {
            defaults.extend(row_keys(row).into_iter().map(|key| (key, value.clone())));
        }
    }
    defaults
}

/// The sample's keys (set, or commented out as `#key = …`) with the default their comment
/// states as a value (`Default "5s"`, `Default 10000`, `"off" (the default)`), if any.
fn sample_keys_and_defaults() -> BTreeMap<String, Option<String>> {
    let mut table = String::new();
    let mut comment = String::new();
    let mut keys: BTreeMap<String, Option<String>> = BTreeMap::new();
    for line in SAMPLE.lines() {
        if line.starts_with("# ") || line == "#" {
            comment += &line[1..];
            comment.push('\n');
            continue;
        }
        let bare = line.trim_start_matches('#');
        if let Some(name) = bare.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
            table = name.to_owned();
        } else if let Some(name) = bare.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            table = name.to_owned();
        } else if let Some((key, _)) = bare.split_once(" = ") {
            if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                let default = comment_default(&comment);
                let entry = keys.entry(format!("{table}.{key}")).or_default();
                if entry.is_none() {
                    *entry = default;
                }
            }
        }
        comment.clear();
    }
    keys
}

/// The default a comment states as a value.
fn comment_default(comment: &str) -> Option<String> {
    let comment = comment.replace('\n', " ");
    if let Some((before, _)) = comment.split_once(" (the default)") {
        return literal(before.rsplit(' ').next()?);
    }
    let after = comment.split_once("Default")?.1.trim_start_matches(':').trim_start();
    let value = match after.strip_prefix('"') {
        Some(rest) => format!("\"{}\"", rest.split('"').next()?),
        None => after.split([' ', ';']).next()?.to_owned(),
    };
    literal(&value)
}

/// The defaults `idlereaper --check` shows (`key value` pairs) for a relay listener that sets
/// only what it must.
fn program_defaults(keys: &BTreeSet<String>) -> BTreeMap<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("minimal.toml");
    let (listen, upstream) = (free_addr(), free_addr());
    let set = ["name", "listen", "upstream", "idle_timeout"];
    std::fs::write(&file, relay_listener("minimal", listen, upstream, "5m")).unwrap();
    let args = [OsStr::new("--check"), OsStr::new("-c"), file.as_os_str()];
    let run = run_cli(dir.path(), &args, Duration::from_secs(10));
    assert_eq!(run.status.code(), Some(0), "--check of a minimal file: {}", run.stderr);
    let mut defaults = BTreeMap::new();
    for line in run.stdout.lines() {
        let (head, pairs) = line.split_once(": ").unwrap_or_default();
        let table = head.split(' ').next().unwrap_or_default();
        for pair in pairs.split(", ") {
            let mut words = pair.split(' ');
            let (Some(key), Some(value)) = (words.next(), words.next()) else { continue };
            let name = format!("{table}.{key}");
            if keys.contains(&name) && !set.contains(&key) {
                defaults.insert(name, value.to_owned());
            }
        }
    }
    assert!(defaults.len() >= 5, "--check shows defaults as `key value`: {defaults:?}\n{}", run.stdout);
    defaults
}

#[test]
fn every_key_is_documented_in_the_man_page_the_readme_and_the_sample() {
    let keys = program_keys();
    let man: BTreeSet<String> = man_entries().into_keys().collect();
    let readme: BTreeSet<String> = config_table().iter().flat_map(|r| row_keys(r)).collect();
    let sample: BTreeSet<String> = sample_keys_and_defaults().into_keys().collect();
    let mut problems = Vec::new();
    for (place, documented) in [
        (format!("idlereaper.toml(5) ({MAN5_PATH})"), &man),
        ("the README's configuration table".to_owned(), &readme),
        (format!("the sample config ({SAMPLE_PATH})"), &sample),
    ] {
        for key in keys.difference(documented) {
            problems.push(format!("{key} is missing from {place}"));
        }
        for key in documented.difference(&keys) {
            problems.push(format!("{key} is in {place}, but the program accepts no such key"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_defaults_documented_agree_with_each_other_and_with_the_program() {
    let keys = program_keys();
    let man: BTreeMap<String, String> =
        man_entries().into_iter().filter_map(|(k, entry)| Some((k, man_default(&entry)?))).collect();
    let readme = readme_defaults();
    let sample: BTreeMap<String, String> =
        sample_keys_and_defaults().into_iter().filter_map(|(k, d)| Some((k, d?))).collect();
    let program = program_defaults(&keys);
    assert!(man.len() >= 15 && readme.len() >= 15 && sample.len() >= 15, "{man:?}\n{readme:?}\n{sample:?}");
    let mut problems = Vec::new();
    for key in &keys {
        let stated: Vec<(&str, &String)> = [
            ("idlereaper --check", program.get(key)),
            ("idlereaper.toml(5)", man.get(key)),
            ("the README's table", readme.get(key)),
            ("the sample config", sample.get(key)),
        ]
        .into_iter()
        .filter_map(|(place, value)| Some((place, value?)))
        .collect();
        if stated.windows(2).any(|w| w[0].1 != w[1].1) {
            let said: Vec<String> =
                stated.iter().map(|(place, value)| format!("{place}: {value:?}")).collect();
            problems.push(format!("{key}: the defaults differ: {}", said.join(", ")));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
