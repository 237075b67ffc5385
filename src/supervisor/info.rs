//! `show info` and `show config`, the first things an operator asks: the daemon's version, pid,
//! uptime, configuration file and when it was loaded, workers, open connections, and how the
//! last reload and the last upgrade ended ([`History`], kept by this image: since the start, or
//! since the upgrade that started it); and the configuration in force, written out.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::Supervisor;

/// How a reload or an upgrade ended.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Event {
    /// `ok` or `failed` (a reload); `success`, `refused` or `failed` (an upgrade).
    result: &'static str,
    /// Seconds since the Unix epoch.
    at: u64,
    /// What it changed, or why it did not happen.
    detail: String,
}

/// When the configuration in force was loaded, and the last reload and upgrade.
#[derive(Debug)]
pub(super) struct History {
    loaded: SystemTime,
    reload: Option<Event>,
    upgrade: Option<Event>,
}

fn seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl History {
    /// A configuration loaded now, nothing else done yet.
    pub(super) fn new() -> History {
        History { loaded: SystemTime::now(), reload: None, upgrade: None }
    }

    /// A reload ended (`ok`: and its configuration is in force from now on).
    pub(super) fn reloaded(&mut self, ok: bool, detail: &str) {
        let now = SystemTime::now();
        if ok {
            self.loaded = now;
        }
        let result = if ok { "ok" } else { "failed" };
        self.reload = Some(Event { result, at: seconds(now), detail: detail.to_owned() });
    }

    /// An upgrade ended: `success` (its new image read the configuration file again),
    /// `refused` or `failed`.
    pub(super) fn upgraded(&mut self, result: &'static str, detail: &str) {
        let now = SystemTime::now();
        if result == "success" {
            self.loaded = now;
        }
        self.upgrade = Some(Event { result, at: seconds(now), detail: detail.to_owned() });
    }
}

/// What `show info` answers, as JSON (times in seconds since the Unix epoch).
#[derive(Debug, Serialize)]
struct Info<'a> {
    version: &'static str,
    pid: u32,
    started: u64,
    uptime_s: u64,
    config: String,
    config_loaded: u64,
    workers: usize,
    listeners: usize,
    open_connections: i64,
    last_reload: Option<&'a Event>,
    last_upgrade: Option<&'a Event>,
}

/// A time as people read it: `2026-11-30T10:00:00Z`.
fn shown(seconds: u64) -> String {
    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)).to_string()
}

fn event_line(event: Option<&Event>) -> String {
    match event {
        None => "none (since the daemon started, or its last upgrade)".to_owned(),
        Some(e) => format!("{} at {}: {}", e.result, shown(e.at), e.detail),
    }
}

impl Supervisor {
    /// `show info`: a table of names and values, or one JSON object.
    pub(super) fn info(&self, json: bool) -> String {
        let started = self.metrics.started().as_secs();
        let info = Info {
            version: env!("CARGO_PKG_VERSION"),
            pid: std::process::id(),
            started,
            uptime_s: seconds(SystemTime::now()).saturating_sub(started),
            config: self.config.path.display().to_string(),
            config_loaded: seconds(self.history.loaded),
            workers: self.config.daemon.workers,
            listeners: self.config.listeners.len(),
            open_connections: self.metrics.open_connections(),
            last_reload: self.history.reload.as_ref(),
            last_upgrade: self.history.upgrade.as_ref(),
        };
        if json {
            return serde_json::to_string(&info).unwrap_or_else(|e| format!("error: {e}")) + "\n";
        }
        let uptime = humantime::format_duration(Duration::from_secs(info.uptime_s));
        let rows = [
            ("version", info.version.to_owned()),
            ("pid", info.pid.to_string()),
            ("started", format!("{} (up {uptime})", shown(info.started))),
            ("config", format!("{}, loaded {}", info.config, shown(info.config_loaded))),
            ("workers", info.workers.to_string()),
            ("listeners", info.listeners.to_string()),
            ("open connections", info.open_connections.to_string()),
            ("last reload", event_line(info.last_reload)),
            ("last upgrade", event_line(info.last_upgrade)),
        ];
        rows.iter().map(|(name, value)| format!("{name:<17} {value}\n")).collect()
    }

    /// `show config`: the configuration in force as TOML (with a comment saying whose it is),
    /// or as one JSON object.
    pub(super) fn config_in_force(&self, json: bool) -> String {
        if json {
            return self.config.to_json().to_string() + "\n";
        }
        let header = format!(
            "# The configuration in force in idlereaper {} (pid {}), read from {} at {}.\n\
             # Every key is written out, the defaults too.\n",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            self.config.path.display(),
            shown(seconds(self.history.loaded))
        );
        header + &self.config.to_toml()
    }
}
