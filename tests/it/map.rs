//! ARCHITECTURE.md held to the tree, as rust-analyzer's tidy tests hold its docs: every file
//! path it names exists, every code identifier it names in backticks is a word of the source,
//! and its list of leaf modules is the list `architecture.rs` enforces. A rename that forgets
//! the map fails here, with the stale names listed.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::architecture::LEAVES;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn map() -> String {
    fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md")
}

/// The spans between backticks, line by line (a span never crosses a line in this file).
fn backticked(line: &str) -> Vec<&str> {
    line.split('`').skip(1).step_by(2).collect()
}

/// The folders of the tree the map may name, and the text of every file in them (bounded:
/// the tree is a few hundred files).
fn tree_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name != ".ci" || name == "target" || name == "results" {
                continue;
            }
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(root(), &mut out);
    out
}

/// A span that reads as a path in the tree: it has a slash, or a file extension the tree uses.
fn is_path(span: &str) -> bool {
    let tidy = span.chars().all(|c| c.is_ascii_alphanumeric() || "/_.-*{},".contains(c));
    let known = [".rs", ".md", ".sh", ".py", ".toml", ".yml", ".json", ".in", ".5", ".8"];
    let named = !span.starts_with('/') && !span.starts_with('.');
    tidy && named && (span.contains('/') || known.iter().any(|e| span.ends_with(e)))
}

/// The paths a span stands for: `{a,b}` expanded; `*` matched against the tree later.
fn expand(span: &str) -> Vec<String> {
    match (span.find('{'), span.find('}')) {
        (Some(open), Some(close)) if open < close => span[open + 1..close]
            .split(',')
            .map(|part| format!("{}{}{}", &span[..open], part, &span[close + 1..]))
            .collect(),
        _ => vec![span.to_owned()],
    }
}

/// Where `name` is in the tree, if it is: a path relative to the root, to `src/`, to
/// `tests/it/`, or to one of the folders this line named before it; a bare file name (`mod.rs`,
/// `liveness.rs` in a paragraph about the worker) anywhere; `*` matches within one name.
fn find(name: &str, folders: &[String], files: &[PathBuf]) -> Option<String> {
    let name = name.trim_end_matches('/');
    let defaults = ["", "src/", "tests/it/"].map(String::from);
    let bases = folders.iter().rev().map(|f| format!("{f}/")).chain(defaults);
    for base in bases {
        let want = format!("{base}{name}");
        for file in files {
            let rel = file.strip_prefix(root()).unwrap().to_string_lossy().into_owned();
            if glob_prefix(&want, &rel) {
                let depth = want.split('/').count();
                return Some(rel.split('/').take(depth).collect::<Vec<_>>().join("/"));
            }
        }
    }
    if name.contains('/') {
        return None;
    }
    files.iter().map(|f| f.strip_prefix(root()).unwrap().to_string_lossy().into_owned()).find(|rel| {
        let base = rel.rsplit('/').next().unwrap_or(rel);
        glob_one(name, base)
    })
}

/// Whether `rel` is the path `want` names or lies under it, `*` matching within one name.
fn glob_prefix(want: &str, rel: &str) -> bool {
    let want: Vec<&str> = want.split('/').collect();
    let rel: Vec<&str> = rel.split('/').collect();
    want.len() <= rel.len() && want.iter().zip(&rel).all(|(w, r)| glob_one(w, r))
}

fn glob_one(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            name.len() >= head.len() + tail.len() && name.starts_with(head) && name.ends_with(tail)
        }
    }
}

/// A span that reads as code: `Name`, `name`, `NAME`, `Type::item`, `name()` — a Rust path.
fn identifiers(span: &str) -> Option<Vec<&str>> {
    let span = span.strip_suffix("()").unwrap_or(span);
    let parts: Vec<&str> = span.split("::").collect();
    let word = |w: &str| {
        !w.is_empty()
            && w.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    parts.iter().all(|p| word(p)).then_some(parts)
}

/// Whether `word` occurs as a whole word in `text`.
fn has_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        let edge = |c: Option<char>| c.is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        edge(before) && edge(after)
    })
}

#[test]
fn every_path_the_map_names_exists() {
    let files = tree_files();
    assert!(files.len() > 100, "the tree was not found");
    let mut missing = Vec::new();
    for (n, line) in map().lines().enumerate() {
        let mut folders: Vec<String> = Vec::new();
        for span in backticked(line).into_iter().filter(|s| is_path(s)) {
            for path in expand(span) {
                let Some(found) = find(&path, &folders, &files) else {
                    missing.push(format!("line {}: `{span}`", n + 1));
                    continue;
                };
                let dir = if root().join(&found).is_dir() {
                    found
                } else {
                    found.rsplit_once('/').map(|(d, _)| d.to_owned()).unwrap_or_default()
                };
                if !dir.is_empty() && !folders.contains(&dir) {
                    folders.push(dir);
                }
            }
        }
    }
    assert!(missing.is_empty(), "ARCHITECTURE.md names paths the tree lacks:\n{}", missing.join("\n"));
}

#[test]
fn every_identifier_the_map_names_is_in_the_source() {
    let text: String = tree_files()
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "rs" || e == "py" || e == "sh" || e == "toml"))
        .filter_map(|f| fs::read_to_string(f).ok())
        .collect::<Vec<_>>()
        .join("\n");
    let mut missing = BTreeSet::new();
    for (n, line) in map().lines().enumerate() {
        for span in backticked(line) {
            if is_path(span) {
                continue;
            }
            let Some(parts) = identifiers(span) else { continue };
            for part in parts {
                if !has_word(&text, part) {
                    missing.insert(format!("line {}: `{span}` ({part})", n + 1));
                }
            }
        }
    }
    let missing: Vec<_> = missing.into_iter().collect();
    assert!(missing.is_empty(), "ARCHITECTURE.md names code the source lacks:\n{}", missing.join("\n"));
}

#[test]
fn the_maps_leaves_are_the_leaves_the_layer_test_enforces() {
    let map = map();
    let line = map
        .split("**Leaves**")
        .nth(1)
        .expect("ARCHITECTURE.md's code map has a **Leaves** entry")
        .split_once("):")
        .expect("the leaves' entry lists them after a colon")
        .1
        .split("; then")
        .next()
        .unwrap();
    let named: BTreeSet<String> =
        backticked(line).iter().map(|s| s.trim_end_matches('/').to_owned()).collect();
    let enforced: BTreeSet<String> = LEAVES.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(named, enforced, "ARCHITECTURE.md's leaves (left) and tests/it/architecture.rs's (right)");
}

#[test]
fn the_span_readers_read_what_they_should() {
    assert!(is_path("src/worker/mod.rs") && is_path("reload.rs") && is_path("tests/it/"));
    assert!(!is_path("crate::") && !is_path("IP:port") && !is_path("/proc/self") && !is_path(".sh"));
    assert_eq!(expand("tests/it/common/{a,b}.rs"), ["tests/it/common/a.rs", "tests/it/common/b.rs"]);
    assert!(glob_one("*_tests.rs", "daemon_tests.rs") && !glob_one("*_tests.rs", "tests.rs"));
    assert_eq!(identifiers("Core::record"), Some(vec!["Core", "record"]));
    assert_eq!(identifiers("show conns"), None);
    assert!(has_word("fn reap_order(", "reap_order") && !has_word("reap_orders", "reap_order"));
}
