//! What a reload changes, compared key by key on the configuration written out
//! ([`super::render`]): listeners added, removed, or changed (matched by `listen` address, as
//! the reload keeps their sockets) and which of their keys; the `[daemon]` keys a reload
//! applies; and [`RESTART_ONLY`], the one list of the settings a running daemon cannot change,
//! which keep their running values. The documentation's lists are held to this one by a test.

use super::render::{self, Table};
use super::Config;

/// The settings a reload does not apply (they need a restart): `[daemon]` keys, and whole
/// tables (`metrics`, `control`).
pub const RESTART_ONLY: [&str; 9] = [
    "daemon.pidfile",
    "daemon.user",
    "daemon.group",
    "daemon.workers",
    "daemon.tick",
    "daemon.log",
    "daemon.resolve_interval",
    "metrics",
    "control",
];

/// What a reload changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Name and address of each listener added.
    pub added: Vec<(String, String)>,
    /// Name and address of each listener removed.
    pub removed: Vec<(String, String)>,
    /// Each kept listener (by its new name) whose keys changed, and those keys.
    pub changed: Vec<(String, Vec<&'static str>)>,
    /// The `[daemon]` keys applied at once that changed (`daemon.log_level`, …).
    pub daemon: Vec<String>,
    /// The [`RESTART_ONLY`] settings that differ from the running ones and were not applied.
    pub not_applied: Vec<&'static str>,
}

/// The value of `setting` (`daemon.tick`, or a whole table such as `metrics`) in `tables`.
fn setting(tables: &[Table], setting: &str) -> Option<String> {
    match setting.split_once('.') {
        Some((table, key)) => tables.iter().find(|t| t.name == table)?.get(key).map(ToString::to_string),
        None => tables.iter().find(|t| t.name == setting).map(|t| format!("{:?}", t.keys)),
    }
}

impl Config {
    /// Gives this (newly read) configuration the running values of the [`RESTART_ONLY`]
    /// settings, and returns those that differed. `pidfile_overridden`: the pidfile was given
    /// with `--pidfile`, so the file's does not count.
    pub fn keep_restart_only(&mut self, running: &Config, pidfile_overridden: bool) -> Vec<&'static str> {
        let (old, new) = (render::tables(running), render::tables(self));
        let not_applied: Vec<&'static str> = RESTART_ONLY
            .into_iter()
            .filter(|s| setting(&old, s) != setting(&new, s))
            .filter(|s| !(pidfile_overridden && *s == "daemon.pidfile"))
            .collect();
        let (d, r) = (&mut self.daemon, &running.daemon);
        d.pidfile.clone_from(&r.pidfile);
        d.user.clone_from(&r.user);
        d.group.clone_from(&r.group);
        d.workers = r.workers;
        d.tick = r.tick;
        d.log.clone_from(&r.log);
        d.resolve_interval = r.resolve_interval;
        self.metrics.clone_from(&running.metrics);
        self.control.clone_from(&running.control);
        not_applied
    }

    /// What applying `new` in place of this configuration changes (`new` with its restart-only
    /// settings already kept, whose list is `not_applied`).
    pub fn changes(&self, new: &Config, not_applied: Vec<&'static str>) -> Changes {
        let (old_tables, new_tables) = (render::tables(self), render::tables(new));
        let listeners = |tables: &[Table]| -> Vec<Table> {
            tables.iter().filter(|t| t.name == "listener").cloned().collect()
        };
        let (old_ls, new_ls) = (listeners(&old_tables), listeners(&new_tables));
        let mut changes = Changes { not_applied, ..Changes::default() };
        let named = |l: &super::ListenerConfig| (l.name.clone(), l.listen.to_string());
        for (lc, table) in new.listeners.iter().zip(&new_ls) {
            match self.listeners.iter().position(|old| old.listen == lc.listen) {
                None => changes.added.push(named(lc)),
                Some(j) => {
                    let keys = changed_keys(&old_ls[j], table);
                    if !keys.is_empty() {
                        changes.changed.push((lc.name.clone(), keys));
                    }
                }
            }
        }
        let kept = |old: &super::ListenerConfig| new.listeners.iter().any(|l| l.listen == old.listen);
        changes.removed = self.listeners.iter().filter(|l| !kept(l)).map(named).collect();
        let daemon = |tables: &[Table]| tables.iter().find(|t| t.name == "daemon").cloned();
        if let (Some(old), Some(new)) = (daemon(&old_tables), daemon(&new_tables)) {
            let keys = changed_keys(&old, &new).into_iter().map(|k| format!("daemon.{k}"));
            changes.daemon = keys.filter(|k| !RESTART_ONLY.contains(&k.as_str())).collect();
        }
        changes
    }
}

/// The keys whose values differ between two versions of a table (or that one of them lacks),
/// in the order of the new one, then those only the old one has.
fn changed_keys(old: &Table, new: &Table) -> Vec<&'static str> {
    let mut keys: Vec<&'static str> =
        new.keys.iter().filter(|(k, v)| old.get(k) != Some(v)).map(|(k, _)| *k).collect();
    keys.extend(old.keys.iter().filter(|(k, _)| new.get(k).is_none()).map(|(k, _)| *k));
    keys
}

impl Changes {
    /// The lines a reload answers with after its summary: one per listener added, removed or
    /// changed, one for the `[daemon]` keys applied, and one for the settings not applied.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (name, listen) in &self.added {
            lines.push(format!("added listener {name} ({listen})"));
        }
        for (name, listen) in &self.removed {
            lines.push(format!("removed listener {name} ({listen}): its open connections run on"));
        }
        for (name, keys) in &self.changed {
            lines.push(format!("changed listener {name}: {}", keys.join(", ")));
        }
        if !self.daemon.is_empty() {
            lines.push(format!("changed {}", self.daemon.join(", ")));
        }
        if !self.not_applied.is_empty() {
            lines.push(format!(
                "not applied (restart idlereaper to apply; the running values stay): {}",
                self.not_applied.join(", ")
            ));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(text, Path::new("/etc/idlereaper.toml")).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    const A: &str = "[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:7000\"\nidle_timeout = \"1s\"\n";
    const B: &str = "[[listener]]\nname = \"b\"\nlisten = \"127.0.0.1:7001\"\nidle_timeout = \"1s\"\n";

    #[test]
    fn listeners_are_told_apart_by_address_and_their_keys_named() {
        let old = parse(&format!("{A}{B}"));
        let changed_a = A.replace("idle_timeout = \"1s\"", "idle_timeout = \"2s\"\nmax_connections = 5");
        let c = "[[listener]]\nname = \"c\"\nlisten = \"127.0.0.1:7002\"\nidle_timeout = \"1s\"\n";
        let mut new = parse(&format!("[daemon]\nlog_level = \"debug\"\n{changed_a}{c}"));
        let not_applied = new.keep_restart_only(&old, false);
        let changes = old.changes(&new, not_applied);
        assert_eq!(changes.added, [("c".to_owned(), "127.0.0.1:7002".to_owned())]);
        assert_eq!(changes.removed, [("b".to_owned(), "127.0.0.1:7001".to_owned())]);
        assert_eq!(changes.changed, [("a".to_owned(), vec!["idle_timeout", "max_connections"])]);
        assert_eq!(changes.daemon, ["daemon.log_level"]);
        assert!(changes.not_applied.is_empty());
        // The same duration written otherwise is no change.
        let same = parse(&format!("{}{B}", A.replace("\"1s\"", "\"1000ms\"")));
        assert_eq!(old.changes(&same, Vec::new()), Changes::default());
        assert!(Changes::default().lines().is_empty());
    }

    #[test]
    fn every_restart_only_setting_is_reported_and_keeps_its_running_value() {
        let old = parse(A);
        let variants = [
            ("daemon.pidfile", "[daemon]\npidfile = \"/run/other.pid\"\n"),
            ("daemon.user", "[daemon]\nuser = \"nobody\"\n"),
            ("daemon.group", "[daemon]\nuser = \"root\"\ngroup = \"nogroup\"\n"),
            ("daemon.workers", "[daemon]\nworkers = 3\n"),
            ("daemon.tick", "[daemon]\ntick = \"5ms\"\n"),
            ("daemon.log", "[daemon]\nlog = \"stderr\"\n"),
            ("daemon.resolve_interval", "[daemon]\nresolve_interval = \"1m\"\n"),
            ("metrics", "[metrics]\nlisten = \"127.0.0.1:9109\"\n"),
            ("control", "[control]\nsocket = \"/run/x.sock\"\n"),
        ];
        let covered: Vec<&str> = variants.iter().map(|(s, _)| *s).collect();
        assert_eq!(covered, RESTART_ONLY, "a variant for each restart-only setting");
        for (setting, text) in variants {
            let mut new = parse(&format!("{text}{A}"));
            let not_applied = new.keep_restart_only(&old, false);
            // A group is set only with a user.
            let expected = match setting {
                "daemon.group" => vec!["daemon.user", "daemon.group"],
                _ => vec![setting],
            };
            assert_eq!(not_applied, expected, "{setting}");
            // The running values stay: nothing differs from the running configuration now.
            assert_eq!(old.changes(&new, Vec::new()), Changes::default(), "{setting}");
            assert_eq!(render::tables(&new), render::tables(&old), "{setting}");
        }
        let mut new = parse(&format!("[daemon]\npidfile = \"/run/other.pid\"\n{A}"));
        assert!(new.keep_restart_only(&old, true).is_empty(), "--pidfile: the file's does not count");
    }

    #[test]
    fn the_lines_say_each_change() {
        let changes = Changes {
            added: vec![("c".into(), "127.0.0.1:7002".into())],
            removed: vec![("b".into(), "127.0.0.1:7001".into())],
            changed: vec![("a".into(), vec!["idle_timeout", "allow"])],
            daemon: vec!["daemon.log_level".into()],
            not_applied: vec!["daemon.tick", "metrics"],
        };
        assert_eq!(
            changes.lines(),
            [
                "added listener c (127.0.0.1:7002)",
                "removed listener b (127.0.0.1:7001): its open connections run on",
                "changed listener a: idle_timeout, allow",
                "changed daemon.log_level",
                "not applied (restart idlereaper to apply; the running values stay): daemon.tick, metrics",
            ]
        );
    }
}
