//! Step 2 of the config pipeline for the `[daemon]` and `[metrics]` tables: each key checked into
//! a [`DaemonConfig`], and the metrics address against the listeners' (they could not both be
//! bound). The `File*` structs are the tables as serde sees them (step 1); the spans they keep
//! are also what the checks against this machine (the `host` submodule) point at.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::{Spanned, Value};

use super::duration::{duration, duration_or_off, Range};
use super::locate::Source;
use super::value::integer;
use super::{DaemonConfig, ListenerConfig, LogFormat, LogTarget, MetricsConfig, Res, HOUR, MS};

const DEFAULT_PIDFILE: &str = "/run/idlereaper/idlereaper.pid";
const DEFAULT_TICK: Duration = MS;
const TICK_RANGE: Range = Range::plain(MS, Duration::from_secs(1));
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
const SHUTDOWN_TIMEOUT_RANGE: Range = Range::plain(Duration::ZERO, HOUR);
const DEFAULT_WORKERS: usize = 1;
/// 0 means one per core.
const WORKERS_RANGE: (i64, i64) = (0, 64);

/// How often upstream host names are resolved again, by default, and within what range.
const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(30);
const RESOLVE_INTERVAL_RANGE: Range = Range::plain(Duration::from_secs(1), Duration::from_secs(24 * 3600));

// ---- Step 1: the tables as serde sees them ---------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileDaemon {
    pub(super) pidfile: Option<Spanned<String>>,
    pub(super) log: Option<Spanned<String>>,
    pub(super) log_level: Option<Spanned<String>>,
    pub(super) log_format: Option<Spanned<String>>,
    pub(super) tick: Option<Spanned<Value>>,
    pub(super) shutdown_timeout: Option<Spanned<Value>>,
    pub(super) user: Option<Spanned<String>>,
    pub(super) group: Option<Spanned<String>>,
    pub(super) workers: Option<Spanned<Value>>,
    pub(super) resolve_interval: Option<Spanned<Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileMetrics {
    pub(super) listen: Option<Spanned<String>>,
}

// ---- Step 2: validation ---------------------------------------------------------------------------

/// `[metrics]`: a `listen` address, as a listener's, that no listener's address overlaps.
pub(super) fn validate_metrics(
    src: &Source,
    table: Spanned<FileMetrics>,
    ls: &[ListenerConfig],
) -> Res<MetricsConfig> {
    const KEY: &str = "metrics.listen";
    let header = table.span();
    let Some(listen) = table.into_inner().listen else {
        let msg = "required: the address to serve GET /metrics on, such as \"127.0.0.1:9109\"";
        return Err(src.error(header, KEY, msg));
    };
    let text = listen.get_ref();
    let error = |msg: String| Err(src.error(listen.span(), KEY, msg));
    let addr = match text.parse::<SocketAddr>() {
        Ok(addr) if addr.port() == 0 => return error(format!("{text:?}: port 0 is not allowed")),
        Ok(addr) => addr,
        Err(_) => {
            return error(format!("expected \"IP:port\" or \"[IPv6]:port\" (no host names), got {text:?}"))
        }
    };
    // One port of one family, and the same address or a wildcard: they cannot both be bound.
    let overlaps = |other: SocketAddr| {
        let wildcard = addr.ip().is_unspecified() || other.ip().is_unspecified();
        let same_port = other.port() == addr.port() && other.is_ipv4() == addr.is_ipv4();
        same_port && (other.ip() == addr.ip() || wildcard)
    };
    let tcp = |l: &ListenerConfig| l.listen.tcp().filter(|other| overlaps(*other));
    if let Some((i, l, other)) = ls.iter().enumerate().find_map(|(i, l)| tcp(l).map(|o| (i, l, o))) {
        let name = &l.name;
        return error(match other == addr {
            true => format!("duplicate address {addr}: already used by listener[{i}] ({name:?})"),
            false => format!("{addr} overlaps {other} of listener[{i}] ({name:?}): both cannot be bound"),
        });
    }
    Ok(MetricsConfig { listen: addr })
}

pub(super) fn validate(src: &Source, d: &FileDaemon) -> Res<DaemonConfig> {
    // A path the kernel cannot take would pass `--check` and fail only at start.
    for (key, value) in [("daemon.pidfile", &d.pidfile), ("daemon.log", &d.log)] {
        if let Some(v) = value.as_ref().filter(|v| v.get_ref().contains('\0')) {
            return Err(src.error(
                v.span(),
                key,
                format!("a path cannot contain a NUL byte, got {:?}", v.get_ref()),
            ));
        }
    }
    let pidfile = match &d.pidfile {
        None => PathBuf::from(DEFAULT_PIDFILE),
        Some(p) if Path::new(p.get_ref()).is_absolute() => PathBuf::from(p.get_ref()),
        Some(p) => {
            let msg = format!("must be an absolute path, got {:?}", p.get_ref());
            return Err(src.error(p.span(), "daemon.pidfile", msg));
        }
    };
    let log = log_target(src, &d.log)?;
    let log_level = log_level(src, &d.log_level)?;
    let log_format = log_format(src, &d.log_format)?;
    let tick = duration(src, "daemon.tick", &d.tick, DEFAULT_TICK, TICK_RANGE)?;
    let (shutdown, default_shutdown) = (&d.shutdown_timeout, DEFAULT_SHUTDOWN_TIMEOUT);
    let shutdown_timeout =
        duration(src, "daemon.shutdown_timeout", shutdown, default_shutdown, SHUTDOWN_TIMEOUT_RANGE)?;
    let user = account(src, "daemon.user", &d.user)?;
    let group = account(src, "daemon.group", &d.group)?;
    if let (None, Some(g)) = (&user, &d.group) {
        let msg = "is set without daemon.user: the daemon switches to a group only together with a \
                   user; set daemon.user too, or remove daemon.group";
        return Err(src.error(g.span(), "daemon.group", msg));
    }
    let workers = match integer(src, "daemon.workers", &d.workers, DEFAULT_WORKERS, WORKERS_RANGE)? {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(WORKERS_RANGE.1 as usize)),
        n => n,
    };
    let log_at = d.log.as_ref().map(|v| src.position(&v.span()));
    let (resolve, default_resolve) = (&d.resolve_interval, Some(DEFAULT_RESOLVE_INTERVAL));
    let (key, off) = ("daemon.resolve_interval", "only at start and reload");
    let resolve_interval = duration_or_off(src, key, resolve, default_resolve, RESOLVE_INTERVAL_RANGE, off)?;
    Ok(DaemonConfig {
        pidfile,
        log,
        log_at,
        log_level,
        log_format,
        tick,
        shutdown_timeout,
        user,
        group,
        workers,
        resolve_interval,
    })
}

/// `log`: `"syslog"` (the default), `"stderr"` or an absolute path.
fn log_target(src: &Source, value: &Option<Spanned<String>>) -> Res<LogTarget> {
    Ok(match value.as_ref().map(|v| (v.get_ref().as_str(), v)) {
        None | Some(("syslog", _)) => LogTarget::Syslog,
        Some(("stderr", _)) => LogTarget::Stderr,
        Some((s, _)) if Path::new(s).is_absolute() => LogTarget::File(PathBuf::from(s)),
        Some((s, v)) => {
            let msg = format!("expected \"syslog\", \"stderr\" or an absolute path, got {s:?}");
            return Err(src.error(v.span(), "daemon.log", msg));
        }
    })
}

/// `log_level`: one of the five levels, by name in lower case; `info` by default.
fn log_level(src: &Source, value: &Option<Spanned<String>>) -> Res<log::LevelFilter> {
    let Some(v) = value else { return Ok(log::LevelFilter::Info) };
    // `LevelFilter::from_str` also takes "off" and any case; the file takes exactly these.
    match v.get_ref().as_str() {
        s @ ("error" | "warn" | "info" | "debug" | "trace") => Ok(s.parse().expect("a level")),
        s => {
            let msg = format!("expected error, warn, info, debug or trace, got {s:?}");
            Err(src.error(v.span(), "daemon.log_level", msg))
        }
    }
}

/// `log_format`: `"text"` (the default) or `"json"`.
fn log_format(src: &Source, value: &Option<Spanned<String>>) -> Res<LogFormat> {
    match value.as_ref().map(|v| (v.get_ref().as_str(), v)) {
        None | Some(("text", _)) => Ok(LogFormat::Text),
        Some(("json", _)) => Ok(LogFormat::Json),
        Some((s, v)) => {
            let msg = format!("expected \"text\" or \"json\", got {s:?}");
            Err(src.error(v.span(), "daemon.log_format", msg))
        }
    }
}

/// A user or group name: non-empty, no spaces.
fn account(src: &Source, key: &str, value: &Option<Spanned<String>>) -> Res<Option<String>> {
    let Some(v) = value else { return Ok(None) };
    let name = v.get_ref();
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        let msg = format!("must be a non-empty name without spaces, got {name:?}");
        return Err(src.error(v.span(), key, msg));
    }
    Ok(Some(name.clone()))
}

#[cfg(test)]
#[path = "daemon_tests.rs"]
mod tests;
