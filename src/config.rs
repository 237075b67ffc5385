//! TEMPORARY stand-in (replaced by the real config loader).
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
pub const DEFAULT_PATH: &str = "/etc/idlereaper.toml";
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub path: PathBuf,
    pub daemon: DaemonConfig,
    pub listeners: Vec<ListenerConfig>,
}
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    pub pidfile: PathBuf,
    pub log: LogTarget,
    pub log_level: log::LevelFilter,
    pub tick: Duration,
    pub shutdown_timeout: Duration,
    pub user: Option<String>,
    pub group: Option<String>,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Syslog,
    Stderr,
    File(PathBuf),
}
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    pub name: String,
    pub listen: SocketAddr,
    pub upstream: Option<SocketAddr>,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_connections: usize,
}
#[derive(Debug)]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}
impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}
impl std::error::Error for ConfigError {}
#[derive(serde::Deserialize)]
struct F {
    daemon: Option<D>,
    listener: Vec<L>,
}
#[derive(serde::Deserialize)]
struct D {
    pidfile: Option<String>,
    log: Option<String>,
    tick: Option<String>,
    shutdown_timeout: Option<String>,
}
#[derive(serde::Deserialize)]
struct L {
    name: String,
    listen: String,
    upstream: Option<String>,
    idle_timeout: String,
    connect_timeout: Option<String>,
    max_connections: Option<usize>,
}
impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let t = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.into(),
            line: None,
            column: None,
            key: None,
            message: e.to_string(),
        })?;
        Self::parse(&t, path)
    }
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let err =
            |m: String| ConfigError { path: path.into(), line: None, column: None, key: None, message: m };
        let f: F = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        let dur = |s: &str| humantime::parse_duration(s).map_err(|e| err(e.to_string()));
        let d = f.daemon.unwrap_or(D { pidfile: None, log: None, tick: None, shutdown_timeout: None });
        let daemon = DaemonConfig {
            pidfile: d.pidfile.unwrap_or("/run/idlereaper/idlereaper.pid".into()).into(),
            log: match d.log.as_deref() {
                Some("stderr") => LogTarget::Stderr,
                Some("syslog") | None => LogTarget::Syslog,
                Some(p) => LogTarget::File(p.into()),
            },
            log_level: log::LevelFilter::Info,
            tick: dur(d.tick.as_deref().unwrap_or("1ms"))?,
            shutdown_timeout: dur(d.shutdown_timeout.as_deref().unwrap_or("10s"))?,
            user: None,
            group: None,
        };
        let mut listeners = vec![];
        for l in f.listener {
            listeners.push(ListenerConfig {
                name: l.name,
                listen: l.listen.parse().map_err(|e: std::net::AddrParseError| err(e.to_string()))?,
                upstream: match l.upstream {
                    Some(u) => Some(u.parse().map_err(|e: std::net::AddrParseError| err(e.to_string()))?),
                    None => None,
                },
                idle_timeout: dur(&l.idle_timeout)?,
                connect_timeout: dur(l.connect_timeout.as_deref().unwrap_or("5s"))?,
                max_connections: l.max_connections.unwrap_or(10000),
            });
        }
        Ok(Config { path: path.into(), daemon, listeners })
    }
    pub fn summary(&self) -> Vec<String> {
        self.listeners.iter().map(|l| format!("listener {}", l.name)).collect()
    }
}
