//! The reference documentation agrees with the program and the package: the metric lists of
//! idlereaper(8) and the README name exactly the families a scrape shows (and the renderer can
//! write), each with its type and every label value a scrape shows; the package's contents lists
//! (the README's installation step, `packaging/README.md`) name what `Cargo.toml` installs; the
//! unit's `Documentation=` names every man page the package installs; idlereaper(8)'s FILES names
//! `idlereaperctl(8)` and the packaged control socket.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::*;

const README: &str = include_str!("../../README.md");
const MAN8: &str = include_str!("../../packaging/idlereaper.8");
const PACKAGING_README: &str = include_str!("../../packaging/README.md");
const UNIT: &str = include_str!("../../packaging/idlereaper.service");
const CARGO_TOML: &str = include_str!("../../Cargo.toml");
const SAMPLE: &str = include_str!("../../etc/idlereaper.toml");

/// The text from the line `start` to the next line starting with `next` (exclusive).
fn section<'a>(text: &'a str, start: &str, next: &str) -> &'a str {
    let from = text.find(&format!("\n{start}\n")).unwrap_or_else(|| panic!("no `{start}` section")) + 1;
    let rest = &text[from + start.len()..];
    let to = rest.find(&format!("\n{next}")).map_or(rest.len(), |i| i + 1);
    &text[from..from + start.len() + to]
}

/// The metric names a text mentions: words `idlereaper_…` or `process_…`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let is_name = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    let mut names = BTreeSet::new();
    for prefix in ["idlereaper_", "process_"] {
        for (at, _) in text.match_indices(prefix) {
            let before = text[..at].chars().next_back();
            if before.is_some_and(|c| is_name(c) || c.is_ascii_alphabetic()) {
                continue; // inside a longer word
            }
            let word: String = text[at..].chars().take_while(|&c| is_name(c)).collect();
            if !word.ends_with('_') {
                names.insert(word);
            }
        }
    }
    names
}

/// The families of a scrape with their type, and per family each label's values (but the
/// listener's name, the histogram's `le` and the version, which vary).
struct Scraped {
    types: BTreeMap<String, String>,
    labels: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

fn scraped() -> Scraped {
    let body = busy_scrape();
    let mut types = BTreeMap::new();
    let mut labels: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            types.insert(name.to_owned(), kind.to_owned());
        }
    }
    for family in types.keys() {
        for label in ["reason", "result", "direction", "cause"] {
            let values = label_values(&body, family, label);
            if !values.is_empty() {
                labels.entry(family.clone()).or_default().insert(label.to_owned(), values);
            }
        }
    }
    Scraped { types, labels }
}

/// The man page's entry of `family`: from its `.B family` line to the next paragraph macro.
fn man_entry<'a>(metrics: &'a str, family: &str) -> &'a str {
    let start = metrics
        .find(&format!("\n.B {family}\n"))
        .or_else(|| metrics.find(&format!("\n.B {family}{{")))
        .unwrap_or_else(|| panic!("idlereaper(8) METRICS has no `.B {family}` entry"));
    let rest = &metrics[start + 1..];
    let end = [".TP", ".PP", ".SS", ".SH"].iter().filter_map(|m| rest.find(&format!("\n{m}"))).min();
    &rest[..end.unwrap_or(rest.len())]
}

/// The README table row of `family`.
fn readme_row<'a>(metrics: &'a str, family: &str) -> &'a str {
    metrics
        .lines()
        .find(|l| l.starts_with(&format!("| `{family}`")) || l.starts_with(&format!("| `{family}{{")))
        .unwrap_or_else(|| panic!("the README's metrics table has no row for {family}"))
}

#[test]
fn the_metric_lists_name_exactly_the_families_the_daemon_exports() {
    let families = exported_families();
    let scrape = scraped();
    let shown: BTreeSet<String> = scrape.types.keys().cloned().collect();
    assert_eq!(shown, families, "a real scrape and the renderer's list");
    let man = metric_names(section(MAN8, ".SH METRICS", ".SH "));
    assert_eq!(man, families, "idlereaper(8) METRICS");
    let readme = metric_names(section(README, "## Metrics", "## "));
    assert_eq!(readme, families, "README, Metrics");
}

#[test]
fn each_family_is_documented_with_its_type_and_every_label_value() {
    let scrape = scraped();
    let man = section(MAN8, ".SH METRICS", ".SH ");
    let readme = section(README, "## Metrics", "## ");
    for (family, kind) in &scrape.types {
        let entry = man_entry(man, family);
        assert!(
            entry.to_lowercase().contains(kind.as_str()),
            "idlereaper(8) does not call {family} a {kind}:\n{entry}"
        );
        let row = readme_row(readme, family);
        let row_type = row.split('|').nth(2).unwrap_or_default().trim();
        assert_eq!(row_type, kind, "README's type of {family}: {row}");
        for (label, values) in scrape.labels.get(family).into_iter().flatten() {
            for value in values {
                let word = |text: &str| {
                    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).any(|w| w == value)
                };
                assert!(word(entry), "idlereaper(8) lists no {label} `{value}` for {family}:\n{entry}");
                assert!(word(row), "README lists no {label} `{value}` for {family}: {row}");
            }
        }
    }
    // What the lists had lost once.
    assert!(scrape.labels["idlereaper_connections_closed_total"]["reason"].contains("killed"));
    assert!(scrape.types.contains_key("idlereaper_upgrades_total"));
}

/// What `Cargo.toml` installs: the assets' destinations, absolute, and the unit.
fn installed() -> Vec<String> {
    let manifest: toml::Table = CARGO_TOML.parse().expect("Cargo.toml");
    let assets = manifest["package"]["metadata"]["deb"]["assets"].as_array().expect("assets");
    let mut paths: Vec<String> = assets
        .iter()
        .map(|a| {
            let (source, dest) = (a[0].as_str().unwrap(), a[1].as_str().unwrap());
            let file = source.rsplit('/').next().unwrap();
            let dest = if dest.ends_with('/') { format!("{dest}{file}") } else { dest.to_owned() };
            format!("/{dest}")
        })
        .collect();
    paths.push("/usr/lib/systemd/system/idlereaper.service".to_owned());
    paths
}

/// The man pages the package installs, as `name(section)`.
fn man_pages() -> Vec<String> {
    let pages: Vec<String> = installed()
        .iter()
        .filter_map(|p| {
            p.strip_prefix("/usr/share/man/man")?.split_once('/')?.1.strip_suffix(".gz").map(str::to_owned)
        })
        .map(|page| {
            let (name, section) = page.rsplit_once('.').unwrap();
            format!("{name}({section})")
        })
        .collect();
    assert!(pages.len() >= 3, "{pages:?}");
    pages
}

/// `a/{b,c}` as `a/b` and `a/c` (one brace group).
fn expand(path: &str) -> Vec<String> {
    match (path.find('{'), path.find('}')) {
        (Some(open), Some(close)) if open < close => path[open + 1..close]
            .split(',')
            .map(|alt| format!("{}{alt}{}", &path[..open], &path[close + 1..]))
            .collect(),
        _ => vec![path.to_owned()],
    }
}

#[test]
fn the_package_contents_lists_name_what_the_package_installs() {
    let table = section(PACKAGING_README, "## What is in the package", "## ");
    let listed: BTreeSet<String> =
        table.split('`').skip(1).step_by(2).filter(|s| s.starts_with('/')).flat_map(expand).collect();
    for path in installed() {
        assert!(listed.contains(&path), "packaging/README.md's contents table lacks {path}: {listed:?}");
    }
    let install = section(README, "## Install from a .deb", "## ");
    for path in installed().iter().filter(|p| p.starts_with("/usr/sbin/")) {
        assert!(install.contains(&format!("`{path}`")), "README's install step does not name {path}");
    }
    for page in man_pages() {
        assert!(install.contains(&format!("`{page}`")), "README's install step does not name {page}");
    }
    assert!(
        install.contains("/usr/share/idlereaper/monitoring/"),
        "README's install step: the monitoring files"
    );
    assert!(install.contains("/var/log/idlereaper"), "README's install step: the log directory");
}

#[test]
fn the_unit_and_idlereaper_8_point_to_the_control_tool_and_socket() {
    let documentation = UNIT.lines().find_map(|l| l.strip_prefix("Documentation=")).expect("Documentation=");
    for page in man_pages() {
        assert!(
            documentation.split(' ').any(|d| d == format!("man:{page}")),
            "Documentation={documentation}: {page}"
        );
    }
    let files = section(MAN8, ".SH FILES", ".SH ");
    let socket = SAMPLE
        .lines()
        .find_map(|l| l.strip_prefix("#socket = \"")?.strip_suffix('"'))
        .expect("the sample's commented control socket, which the package turns on");
    assert!(files.contains(&format!(".I {socket}\n")), "idlereaper(8) FILES lacks {socket}:\n{files}");
    assert!(
        files.contains(".BR idlereaperctl (8)"),
        "idlereaper(8) FILES does not refer to idlereaperctl(8)"
    );
    // Every configuration file the package installs, and every program but the page's own.
    let others = installed().into_iter().filter(|p| p != "/usr/sbin/idlereaper");
    for path in others.filter(|p| p.starts_with("/usr/sbin/") || p.starts_with("/etc/")) {
        assert!(files.contains(&format!(".I {path}\n")), "idlereaper(8) FILES lacks {path}");
    }
}
