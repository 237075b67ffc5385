//! The configuration file: `/etc/idlereaper.toml` in, a validated [`Config`] out.
//!
//! # Pipeline
//!
//! ```text
//! TOML text ──toml + serde──▶ FileConfig ──validate──▶ Config
//!                 │                             │
//!                 └──────── ConfigError ◀───────┘   file:line:col: key: message
//! ```
//!
//! 1. **Text → `FileConfig`.** serde structs that mirror the file, with
//!    `#[serde(deny_unknown_fields)]` on every table, so that a misspelt key is an error and not
//!    a silently ignored line. Every value that step 2 checks is wrapped in [`toml::Spanned`], so
//!    that a validation error can point at its line and column. Fields are `Option`s: a missing
//!    required key is reported by step 2, with the key's full name. Durations and counts are
//!    read as `toml::Value`, so that step 2 can say in words what it expected and what it found.
//!    Each table's struct lives with its validation: the `daemon` and `listener` submodules.
//! 2. **`FileConfig` → `Config`.** Defaults are filled in, each value is checked on its own
//!    (ranges, absolute paths, addresses, networks), then the listeners are checked together
//!    (unique names, unique `listen` addresses, no relay loops), then `[metrics]` against the
//!    listeners. `[daemon]` and `[metrics]` are checked in the `daemon` submodule, the listeners
//!    in the `listener` submodule, durations in `duration`, other single values in `value`; the
//!    checks across listeners in `checks`. The first error found is returned.
//! 3. **`Config` against this machine** (the `host` submodule; [`Config::load`] only, so at start,
//!    for `--check` and for a reload). What the daemon would otherwise refuse only at start, and
//!    that needs no socket: the users and groups named exist, the pidfile's directory exists or
//!    can be created, a log file's directory exists. Errors point at the key, as in step 2.
//!    [`Config::parse`] skips this step, so that tests of the text run anywhere.
//! 4. **Errors** (the `locate` submodule). toml's own errors carry a byte span, and so do the
//!    `Spanned` values that validation rejects; either becomes a 1-based line and column. The key
//!    is written as a user would write it: `daemon.tick`, `listener[1].idle_timeout`, where `[1]`
//!    is the 0-based position of the `[[listener]]` table in the file (the index, not the name,
//!    so that errors about a missing or invalid `name` read the same way).
//!
//! The rest of the program sees only [`Config`]; the `File*` structs are private.
//!
//! # Values
//!
//! * Durations are strings with a unit (the `duration` submodule): `"250ms"`, `"30s"`, `"5m"`,
//!   `"1h 30m"`, `"1.5s"`, `"2d"`; units ms, s, m, h, d, or spelled out. A bare number (`5` or
//!   `"5"`), a negative value or an unknown unit is an error. Durations must be whole
//!   milliseconds (`"1.5ms"` is rejected rather than rounded): the timing wheel counts whole
//!   ticks of at least 1 ms, so finer precision would be a promise the daemon cannot keep. The timers that can be switched off (`max_lifetime`,
//!   `half_close_timeout`, `tcp_keepalive`) take `"0s"` for off; `tcp_keepalive` must be whole
//!   seconds, because that is what the kernel's `TCP_KEEPIDLE` counts.
//! * Addresses are `"IP:port"`, `"[IPv6]:port"` or `"unix:/path"`; a listener's may also be
//!   `"systemd:NAME"` (a socket systemd passes), an upstream's `"host:port"` (resolved at start,
//!   then every `daemon.resolve_interval`); port 0 is rejected, and so is a wildcard address
//!   (`0.0.0.0`, `::`) as an upstream.
//! * Source networks (`allow`, `deny`) are arrays of strings, each a CIDR network
//!   (`"10.0.0.0/8"`, `"2001:db8::/32"`) or a bare address (a network of one). Host bits set
//!   after the prefix (`"10.0.0.1/8"`) are an error, not silently cleared. An error about one
//!   element names it by its index: `listener[0].allow[2]`.
//! * `[metrics]` is optional; without it there is no metrics endpoint. Its `listen` is required
//!   and is an address like a listener's, which no listener may use (nor overlap through a
//!   wildcard address on the same port: the two could not both be bound).
//! * The keys of a relay (`connect_timeout`, `upstream_backoff`, `upstream_backoff_max`,
//!   `half_close_timeout`, `proxy_protocol`, `balance`, `protocol`) on a sink listener are
//!   errors: a sink never connects, and it closes at the client's FIN, so they would have no
//!   effect.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use locate::Source;

pub use crate::observe::Protocol;
pub use address::{Listen, Upstream};
pub use backoff::Backoff;
pub use changes::{Changes, RESTART_ONLY};
pub use keys::{file_keys, TableKeys};
pub use locate::{ConfigError, Position};

mod address;
mod backoff;
mod changes;
mod checks;
mod control;
mod daemon;
mod duration;
mod host;
mod keys;
mod listener;
mod locate;
mod protocol;
mod render;
mod value;

/// Where the daemon looks for its configuration when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/idlereaper.toml";

const MS: Duration = Duration::from_millis(1);
const HOUR: Duration = Duration::from_secs(60 * 60);

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from (or the path given to [`Config::parse`]).
    pub path: PathBuf,
    pub daemon: DaemonConfig,
    /// In file order; at least one.
    pub listeners: Vec<ListenerConfig>,
    /// The `[metrics]` table; `None` without one (no metrics endpoint).
    pub metrics: Option<MetricsConfig>,
    /// The `[control]` table; `None` without one (no control socket).
    pub control: Option<ControlConfig>,
    /// The text it was read from: a live upgrade hands it to the new image, which reads it again
    /// for the connections of the listeners it configures.
    pub text: std::sync::Arc<str>,
}

/// The `[metrics]` table: where the Prometheus endpoint (`GET /metrics`) listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Port is not 0; no listener's `listen` address, nor one that overlaps it.
    pub listen: SocketAddr,
}

/// The `[control]` table: the Unix socket `idlereaperctl` talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConfig {
    /// Absolute, at most `sun_path` long; no listener's socket.
    pub socket: PathBuf,
    /// The socket file's mode (default 0660); its owner is `daemon.user`/`daemon.group`.
    pub mode: u32,
}

/// The `[daemon]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    /// Absolute path. Default `/run/idlereaper/idlereaper.pid`.
    pub pidfile: PathBuf,
    /// Default [`LogTarget::Syslog`].
    pub log: LogTarget,
    /// Where `log` is in the file (`None`: not there, the default), for the errors found at
    /// start (no syslog socket for a daemon).
    pub log_at: Option<Position>,
    /// Default `Info`; never `Off`.
    pub log_level: log::LevelFilter,
    /// How each line is written. Default [`LogFormat::Text`].
    pub log_format: LogFormat,
    /// Timing-wheel resolution, 1ms..=1s. Default 1ms.
    pub tick: Duration,
    /// How long open connections may run after TERM, 0s..=1h (0 = close at once). Default 10s.
    pub shutdown_timeout: Duration,
    /// User to switch to after binding, when started as root. Non-empty, no spaces.
    pub user: Option<String>,
    /// Group to switch to after binding, when started as root. Non-empty, no spaces.
    pub group: Option<String>,
    /// Event-loop threads, each with its own `SO_REUSEPORT` listeners, wheel and connections.
    /// The file's 0 ("one per core") is resolved here, so this is 1..=64. Default 1.
    pub workers: usize,
    /// How often upstream host names are resolved again; `None` ("0s"): only at start and on
    /// reload. 1s..=1d, default 30s.
    pub resolve_interval: Option<Duration>,
}

/// Where log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Syslog,
    Stderr,
    /// An absolute path.
    File(PathBuf),
}

/// How a log line is written: `time LEVEL message key=value …`, or one JSON object with the
/// same fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// The word the file uses.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// One `[[listener]]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// Unique; 1 to 64 of `A-Z a-z 0-9 _ . -`, so it is safe in log lines and metric labels.
    pub name: String,
    /// Unique across listeners: `IP:port` (port not 0) or a Unix socket path.
    pub listen: Listen,
    /// The mode of a Unix listener's socket file (default `0o660`); unused for TCP.
    pub socket_mode: u32,
    /// Where `listen` is in the file, for errors found later (a reload that cannot bind it).
    pub listen_at: Position,
    /// Where a relay connects, in the order written (each tried per `balance`); empty for a
    /// sink listener. No duplicates; never leads back to this listener.
    pub upstream: Vec<Upstream>,
    /// Where each `upstream` entry is in the file, for errors found later (a name that does not
    /// resolve).
    pub upstream_at: Vec<Position>,
    /// Where a new connection starts in `upstream`. Default [`Balance::First`].
    pub balance: Balance,
    /// `daemon.tick`..=30 days.
    pub idle_timeout: Duration,
    /// `daemon.tick`..=1h, default 5s. Set in the file only for a relay listener.
    pub connect_timeout: Duration,
    /// Passive health: how long an upstream address whose connect failed is passed over
    /// (default 1s, doubling to 30s); `None` ("0s"): off. Set in the file only for a relay.
    pub upstream_backoff: Option<Backoff>,
    /// 1..=1_000_000, default 10000.
    pub max_connections: usize,
    /// Close a connection this long after it was accepted, whatever its traffic. `None` ("0s",
    /// the default) means unlimited; otherwise `daemon.tick`..=30 days.
    pub max_lifetime: Option<Duration>,
    /// Once one side has sent FIN, the inactivity timeout until the other's FIN. Default 30s;
    /// `None` ("0s") means only the idle timeout applies; otherwise `daemon.tick`..=30 days. Set
    /// in the file only for a relay listener (a sink closes at the client's FIN).
    pub half_close_timeout: Option<Duration>,
    /// Connections one source address may hold at once, 0..=1_000_000; 0 (the default) means
    /// unlimited. It may exceed `max_connections`.
    pub max_connections_per_ip: usize,
    /// Source networks allowed to connect; empty (the default) means everyone. Each is a
    /// network address (no host bits set); a bare address in the file is a /32 or /128.
    pub allow: Vec<ipnet::IpNet>,
    /// Source networks refused even if allowed; empty by default. Same form as `allow`.
    pub deny: Vec<ipnet::IpNet>,
    /// SO_KEEPALIVE idle time on both sockets; `None` ("0s", the default) means off. Otherwise
    /// whole seconds, 1s..=2h.
    pub tcp_keepalive: Option<Duration>,
    /// PROXY protocol header sent to the upstream first; `None` ("off", the default). Relay only.
    pub proxy_protocol: Option<crate::proxy_protocol::Version>,
    /// `TCP_USER_TIMEOUT` on both TCP sockets; `None` ("0s", the default) leaves the kernel's.
    /// Otherwise 1s..=1h.
    pub tcp_user_timeout: Option<Duration>,
    /// How a connection closed by `idle_timeout`, `max_lifetime` or `half_close_timeout` ends.
    pub idle_close: IdleClose,
    /// Bytes written to the client just before an idle close, if it can take them at once.
    /// Never with [`IdleClose::Rst`] (a reset discards them), nor with a protocol.
    pub idle_notice: Option<std::sync::Arc<[u8]>>,
    /// What idle means for its connections (default [`Protocol::Tcp`]: nothing moved). Set in
    /// the file only for a relay listener.
    pub protocol: Protocol,
    /// PostgreSQL idle in a transaction: `daemon.tick`..=30 days, default `idle_timeout`.
    pub idle_in_transaction_timeout: Duration,
    /// Redis subscribers with no message for this long; `None` (unset or `"0s"`): never.
    pub subscriber_idle_timeout: Option<Duration>,
}

/// Which upstream address a new connection tries first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Always the first; the next ones only when it fails.
    First,
    /// One further for each new connection (shared by the workers).
    RoundRobin,
}

/// How a connection the daemon closes on a timer ends for both peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleClose {
    /// A FIN (a reset only where bytes are undelivered).
    Fin,
    /// A reset (`SO_LINGER` 0): no TIME_WAIT on the daemon's side.
    Rst,
}

impl Config {
    /// Read and validate the file, then check it against this machine (pipeline step 3). Every
    /// error names the file. `pidfile` is the `--pidfile` option: it replaces `daemon.pidfile`,
    /// and its directory is checked instead.
    pub fn load(path: &Path, pidfile: Option<&Path>) -> Result<Config, ConfigError> {
        let text = locate::read(path)?;
        let src = Source { path, text: &text };
        let file: FileConfig = toml::from_str(&text).map_err(|e| src.toml_error(&e))?;
        validate(&src, file, Checks::Host { pidfile })
    }

    /// Validate `text` as if it had been read from `path`: the text alone, without the checks
    /// against this machine that [`Config::load`] adds (for the tests of the text, and for the
    /// texts a live upgrade hands over, which were checked when they were loaded).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let src = Source { path, text };
        let file: FileConfig = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
        validate(&src, file, Checks::TextOnly)
    }

    /// An error about `key` found after validation (binding a listener on a reload, say), shown
    /// like the others: `<file>:<line>:<col>: <key>: <message>`.
    pub fn error_at(&self, key: &str, at: Option<Position>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: self.path.clone(),
            line: at.map(|p| p.line),
            column: at.map(|p| p.column),
            key: Some(key.to_owned()),
            message: message.into(),
        }
    }

    /// One line for the daemon, then one per listener, then one for the metrics endpoint and one
    /// for the control socket if there are, for `idlereaper --check`.
    pub fn summary(&self) -> Vec<String> {
        let d = |d: Duration| humantime::format_duration(d).to_string();
        let dc = &self.daemon;
        let log = match &dc.log {
            LogTarget::Syslog => "syslog".to_string(),
            LogTarget::Stderr => "stderr".to_string(),
            LogTarget::File(p) => p.display().to_string(),
        };
        let user = match (&dc.user, &dc.group) {
            (Some(u), Some(g)) => format!(", user {u}, group {g}"),
            (Some(u), None) => format!(", user {u}"),
            _ => String::new(),
        };
        let resolve = dc.resolve_interval.map_or("off".to_owned(), d);
        let daemon = format!(
            "daemon: pidfile {}, log {log} ({}, {}), tick {}, shutdown_timeout {}, workers {}, \
             resolve_interval {resolve}{user}",
            dc.pidfile.display(),
            dc.log_level.as_str().to_lowercase(),
            dc.log_format.as_str(),
            d(dc.tick),
            d(dc.shutdown_timeout),
            dc.workers
        );
        let metrics = self.metrics.as_ref().map(|m| format!("metrics: http://{}/metrics", m.listen));
        let control =
            self.control.as_ref().map(|c| format!("control: {} (mode {:04o})", c.socket.display(), c.mode));
        let listeners = self.listeners.iter().map(ListenerConfig::summary);
        std::iter::once(daemon).chain(listeners).chain(metrics).chain(control).collect()
    }
}

// ---- Step 1: the file as serde sees it ------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    daemon: Option<daemon::FileDaemon>,
    listener: Option<Vec<Spanned<listener::FileListener>>>,
    metrics: Option<Spanned<daemon::FileMetrics>>,
    control: Option<Spanned<control::FileControl>>,
}

// ---- Step 2: validation ---------------------------------------------------------------------------

type Res<T> = Result<T, ConfigError>;

/// Whether validation ends with the checks against this machine (step 3).
enum Checks<'a> {
    /// The text alone ([`Config::parse`], for the tests of the text).
    #[cfg_attr(not(test), allow(dead_code))]
    TextOnly,
    /// With the `--pidfile` option, if given.
    Host { pidfile: Option<&'a Path> },
}

fn validate(src: &Source, file: FileConfig, checks: Checks) -> Res<Config> {
    let file_daemon = file.daemon.unwrap_or_default();
    let mut daemon = daemon::validate(src, &file_daemon)?;
    let listeners = listener::validate(src, file.listener.unwrap_or_default(), daemon.tick)?;
    let metrics = file.metrics.map(|m| daemon::validate_metrics(src, m, &listeners)).transpose()?;
    let control = file.control.map(|c| control::validate(src, c, &listeners)).transpose()?;
    if let Checks::Host { pidfile } = checks {
        host::check(src, &file_daemon, &mut daemon, pidfile)?;
    }
    Ok(Config { path: src.path.to_owned(), daemon, listeners, metrics, control, text: src.text.into() })
}

#[cfg(test)]
mod property_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod upstream_tests;
