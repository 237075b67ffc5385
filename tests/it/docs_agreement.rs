//! The documents agree with each other and with the code where they state the same thing: every
//! list of the settings a reload does not apply (idlereaper(8), idlereaper.toml(5), the README,
//! the sample config) is the daemon's one list, `RESTART_ONLY`; every mention of `systemctl
//! reload` says that it runs `idlereaperctl reload`, as the unit's `ExecReload=` does; the
//! `idle_notice` cap is stated, as the number the daemon enforces, in idlereaper.toml(5), the
//! README and the sample; and each row of idlereaperctl(8)'s EXIT STATUS table is a case a test
//! of this binary exercises.

use std::collections::BTreeSet;
use std::process::Command;

use crate::common::*;

const README: &str = include_str!("../../README.md");
const MAN8: &str = include_str!("../../packaging/idlereaper.8");
const MAN5: &str = include_str!("../../packaging/idlereaper.toml.5");
const CTL8: &str = include_str!("../../packaging/idlereaperctl.8");
const PACKAGING_README: &str = include_str!("../../packaging/README.md");
const UNIT: &str = include_str!("../../packaging/idlereaper.service");
const SAMPLE: &str = include_str!("../../etc/idlereaper.toml");

/// The daemon's list, as the documents write it: `daemon.tick`, and `[metrics]` for a table.
fn restart_only() -> BTreeSet<String> {
    idlereaper::RESTART_ONLY
        .iter()
        .map(|s| match s.contains('.') {
            true => (*s).to_owned(),
            false => format!("[{s}]"),
        })
        .collect()
}

/// The settings a text names: `daemon.KEY` words and `[metrics]`/`[control]` tables.
fn settings_in(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in text.match_indices("daemon.") {
        let key: String =
            text[at + 7..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
        found.insert(format!("daemon.{key}"));
    }
    for table in ["[metrics]", "[control]"] {
        if text.contains(table) {
            found.insert(table.to_owned());
        }
    }
    found
}

/// The paragraph of a man page (between `.IP`, `.PP`, `.TP` or `.SH` lines) that says `words`,
/// within the section `section`.
fn man_paragraph(man: &str, section: &str, words: &str) -> String {
    let from = man.find(&format!("\n.SH {section}\n")).unwrap_or_else(|| panic!("no {section}"));
    let text = &man[from + 1..];
    let text = &text[..text[1..].find("\n.SH ").map_or(text.len(), |i| i + 1)];
    let mut paragraphs = vec![String::new()];
    for line in text.lines() {
        if [".IP", ".PP", ".TP", ".SH"].iter().any(|m| line.starts_with(m)) {
            paragraphs.push(String::new());
        }
        let last = paragraphs.last_mut().unwrap();
        last.push_str(line);
        last.push('\n');
    }
    paragraphs.into_iter().find(|p| p.contains(words)).unwrap_or_else(|| panic!("{section}: {words:?}"))
}

#[test]
fn every_restart_only_list_is_the_daemons_list() {
    let expected = restart_only();
    // The bullet of RELOADING in each man page.
    for (page, man) in [("idlereaper(8)", MAN8), ("idlereaper.toml(5)", MAN5)] {
        let paragraph = man_paragraph(man, "RELOADING", "need a restart");
        assert_eq!(settings_in(&paragraph), expected, "{page} RELOADING:\n{paragraph}");
    }
    // The README's Reload bullet, keys written without their table.
    let bullet = README.split("\n- ").find(|b| b.contains("need a restart")).expect("the README's bullet");
    let bullet = &bullet[bullet.find("apply at once").expect("the keys applied at once first")..];
    // Backticked words without a space: the keys (`idlereaperctl reload` is not one).
    let named: BTreeSet<String> = bullet
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|k| !k.contains(' '))
        .map(|k| if k.starts_with('[') { k.to_owned() } else { format!("daemon.{k}") })
        .collect();
    assert_eq!(named, expected, "README:\n{bullet}");
    // idlereaper.toml(5): each key or table that needs a restart says so where it is described.
    let mut described = BTreeSet::new();
    let mut table = String::new();
    for entry in MAN5.split("\n.TP\n").flat_map(|e| e.split("\n.SH ")) {
        if let Some(name) = entry.strip_prefix("THE [").and_then(|t| t.split(']').next()) {
            table = name.to_owned();
            if entry.contains("it needs a restart") {
                described.insert(format!("[{table}]"));
            }
        } else if table == "daemon" && entry.contains("it needs a restart") {
            let key = entry.trim_start_matches(".B ").split(' ').next().unwrap_or("");
            described.insert(format!("daemon.{key}"));
        }
    }
    assert_eq!(described, expected, "idlereaper.toml(5), key by key");
    // The sample config: the comment above each key or table.
    assert_eq!(sample_restart_only(), expected, "etc/idlereaper.toml");
}

/// The keys and tables of the sample whose comment says that a reload does not change them.
fn sample_restart_only() -> BTreeSet<String> {
    let (mut found, mut table, mut comment, mut after_key) =
        (BTreeSet::new(), String::new(), String::new(), false);
    for line in SAMPLE.lines() {
        let uncommented = line.trim_start_matches('#');
        let header = uncommented.strip_prefix('[').and_then(|h| h.split(']').next());
        let key = uncommented
            .split_once(" = ")
            .map(|(k, _)| k)
            .filter(|k| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        if let Some(name) = header {
            table = name.trim_matches(|c| c == '[' || c == ']').to_owned();
            if comment.contains("needs a restart") {
                found.insert(format!("[{table}]"));
            }
            comment.clear();
        } else if let Some(key) = key.filter(|k| !k.is_empty()) {
            if comment.contains("a restart") {
                found.insert(format!("{table}.{key}"));
            }
            after_key = true;
        } else if line.trim().is_empty() {
            comment.clear();
        } else {
            if after_key {
                comment.clear();
                after_key = false;
            }
            comment.push_str(line);
        }
    }
    found
}

#[test]
fn systemctl_reload_is_said_to_run_idlereaperctl_reload_everywhere() {
    let exec = UNIT.lines().find_map(|l| l.strip_prefix("ExecReload=")).expect("ExecReload=");
    assert_eq!(exec, "/usr/sbin/idlereaperctl reload");
    for (doc, text) in [
        ("README.md", README),
        ("packaging/README.md", PACKAGING_README),
        ("idlereaper(8)", MAN8),
        ("idlereaper.toml(5)", MAN5),
        ("idlereaperctl(8)", CTL8),
        ("the unit", UNIT),
    ] {
        let text = text.replace("\\fB", "").replace("\\fP", "").replace("\n.B ", " ").replace("\n.BR ", " ");
        let text = text.replace(['"', '\n'], " ");
        let mentions: Vec<usize> = text.match_indices("systemctl reload").map(|(at, _)| at).collect();
        for at in mentions {
            let window = &text[at.saturating_sub(300)..(at + 300).min(text.len())];
            assert!(
                window.contains("idlereaperctl reload"),
                "{doc}: `systemctl reload` without `idlereaperctl reload` near it:\n…{window}…"
            );
            assert!(!window.contains("systemctl reload idlereaper sends"), "{doc}: {window}");
        }
    }
}

#[test]
fn the_idle_notice_cap_is_stated_as_the_daemon_enforces_it() {
    // The daemon's cap, found at its edge.
    let dir = tempfile::tempdir().unwrap();
    let check = |n: usize| {
        let file = dir.path().join(format!("notice{n}.toml"));
        let notice = "x".repeat(n);
        let text = format!(
            "[[listener]]\nname = \"n\"\nlisten = \"127.0.0.1:7000\"\nidle_timeout = \"1s\"\nidle_notice = \"{notice}\"\n"
        );
        std::fs::write(&file, text).unwrap();
        Command::new(BIN).args(["--check", "-c"]).arg(&file).output().unwrap().status.success()
    };
    assert!(check(1024) && !check(1025), "the daemon takes 1,024 bytes and no more");
    let readme_row = README.lines().find(|l| l.starts_with("| `listener.idle_notice`")).expect("README row");
    assert!(readme_row.contains("at most 1,024 bytes"), "{readme_row}");
    let sample = SAMPLE.split("\n\n").find(|b| b.contains("#idle_notice = ")).expect("the sample's block");
    assert!(sample.contains("At most 1,024 bytes"), "{sample}");
    let man = MAN5.split("\n.TP\n").find(|e| e.starts_with(".B idle_notice")).expect("idle_notice(5)");
    assert!(man.contains("At most 1,024 bytes"), "{man}");
}

/// Each row of idlereaperctl(8)'s EXIT STATUS table (status, command) and the test that
/// exercises it (its function name, found in this binary's sources).
const EXIT_ROWS: [(&str, &str, &str); 9] = [
    ("0", "any", "kill_that_matches_nothing_and_bad_requests_exit_as_the_manual_says"),
    ("1", "any", "a_daemon_that_cannot_be_reached_is_exit_1_with_what_to_do"),
    ("1", "any", "an_answer_without_its_end_is_an_error_not_a_shorter_answer"),
    ("1", "kill", "kill_that_matches_nothing_and_bad_requests_exit_as_the_manual_says"),
    ("1", "upgrade --pid", "upgrade_by_pid_reports_the_new_binary_or_no_outcome_within_the_wait"),
    ("2", "any", "kill_that_matches_nothing_and_bad_requests_exit_as_the_manual_says"),
    ("2", "reload", "a_file_with_a_syntax_error_still_names_the_socket_and_reload_is_refused_by_the_daemon"),
    ("2", "upgrade", "an_upgrade_refused_or_whose_exec_fails_is_told_and_clients_caught_in_it_are_answered"),
    ("3", "any", "no_answer_within_the_wait_is_exit_3"),
];

#[test]
fn each_exit_status_row_of_the_manual_is_tested() {
    let table = CTL8.split("\n.TS\n").nth(1).and_then(|t| t.split("\n.TE\n").next()).expect("a table");
    let rows: Vec<(String, String)> = table
        .lines()
        .filter_map(|l| {
            let mut cells = l.split('\t');
            let status = cells.next().filter(|s| s.len() == 1 && s.chars().all(|c| c.is_ascii_digit()))?;
            Some((status.to_owned(), cells.next()?.replace("\\-", "-")))
        })
        .collect();
    let listed: Vec<(String, String)> =
        EXIT_ROWS.iter().map(|(s, c, _)| ((*s).to_owned(), (*c).to_owned())).collect();
    assert_eq!(rows, listed, "idlereaperctl(8) EXIT STATUS");
    let sources: String = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .collect();
    for (status, command, test) in EXIT_ROWS {
        assert!(
            sources.contains(&format!("fn {test}()")),
            "exit status {status} of {command}: no test {test}"
        );
    }
}
