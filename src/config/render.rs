//! A validated [`Config`] written back as the file would have it, every key spelled out (the
//! defaults too), in the order of the file's tables and of their keys: what `idlereaperctl show
//! config` answers with (as TOML that `idlereaper --check` accepts, or as JSON), and what a
//! reload compares to say which keys changed ([`super::changes`]). A key the file may not have
//! for a listener (`connect_timeout` on a sink, `allow` on a Unix socket, a protocol's own
//! timer on another protocol) is left out, so that reading the text back gives the same
//! configuration.

use std::time::Duration;

use toml::Value;

use super::{Balance, Config, DaemonConfig, IdleClose, Listen, ListenerConfig, LogTarget};
use crate::observe::Protocol;
use crate::proxy_protocol::Version as ProxyVersion;

/// One table of the file: its name (`daemon`, `listener`, `metrics`, `control`) and its keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub name: &'static str,
    pub keys: Vec<(&'static str, Value)>,
}

impl Table {
    /// The value of `key`, if the table has it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.keys.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

/// A duration as the file writes one: `"0s"`, `"250ms"`, `"1h 30m"`.
pub fn duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut parts = Vec::new();
    for (unit, length) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if ms >= length {
            parts.push(format!("{}{unit}", ms / length));
            ms %= length;
        }
    }
    parts.join(" ")
}

fn text(s: impl Into<String>) -> Value {
    Value::String(s.into())
}

fn count(n: usize) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

fn off(d: Option<Duration>) -> Value {
    text(d.map_or_else(|| "0s".to_owned(), duration))
}

fn mode(mode: u32) -> Value {
    text(format!("{mode:04o}"))
}

fn daemon(d: &DaemonConfig) -> Table {
    let log = match &d.log {
        LogTarget::Syslog => "syslog".to_owned(),
        LogTarget::Stderr => "stderr".to_owned(),
        LogTarget::File(path) => path.display().to_string(),
    };
    let mut keys = vec![
        ("pidfile", text(d.pidfile.display().to_string())),
        ("log", text(log)),
        ("log_level", text(d.log_level.as_str().to_lowercase())),
        ("log_format", text(d.log_format.as_str())),
        ("tick", text(duration(d.tick))),
        ("shutdown_timeout", text(duration(d.shutdown_timeout))),
    ];
    keys.extend(d.user.as_ref().map(|user| ("user", text(user.as_str()))));
    keys.extend(d.group.as_ref().map(|group| ("group", text(group.as_str()))));
    keys.push(("workers", count(d.workers)));
    keys.push(("resolve_interval", off(d.resolve_interval)));
    Table { name: "daemon", keys }
}

fn listener(l: &ListenerConfig) -> Table {
    let relay = !l.upstream.is_empty();
    let strings = |items: Vec<String>| Value::Array(items.into_iter().map(Value::String).collect());
    let mut keys = vec![("name", text(l.name.as_str())), ("listen", text(l.listen.to_string()))];
    if relay {
        keys.push(("upstream", strings(l.upstream.iter().map(ToString::to_string).collect())));
        let balance = match l.balance {
            Balance::First => "first",
            Balance::RoundRobin => "round_robin",
        };
        keys.push(("balance", text(balance)));
    }
    if matches!(l.listen, Listen::Unix(_)) {
        keys.push(("socket_mode", mode(l.socket_mode)));
    }
    keys.push(("idle_timeout", text(duration(l.idle_timeout))));
    if relay {
        keys.push(("connect_timeout", text(duration(l.connect_timeout))));
        // Passive health off is `upstream_backoff = "0s"`, with no cap to write.
        match l.upstream_backoff {
            Some(backoff) => {
                keys.push(("upstream_backoff", text(duration(backoff.first))));
                keys.push(("upstream_backoff_max", text(duration(backoff.max))));
            }
            None => keys.push(("upstream_backoff", text("0s"))),
        }
    }
    keys.push(("max_connections", count(l.max_connections)));
    keys.push(("max_lifetime", off(l.max_lifetime)));
    if relay {
        keys.push(("half_close_timeout", off(l.half_close_timeout)));
    }
    if !matches!(l.listen, Listen::Unix(_)) {
        keys.push(("max_connections_per_ip", count(l.max_connections_per_ip)));
        keys.push(("allow", strings(l.allow.iter().map(ToString::to_string).collect())));
        keys.push(("deny", strings(l.deny.iter().map(ToString::to_string).collect())));
    }
    keys.push(("tcp_keepalive", off(l.tcp_keepalive)));
    if relay {
        let proxy = match l.proxy_protocol {
            None => "off",
            Some(ProxyVersion::V1) => "v1",
            Some(ProxyVersion::V2) => "v2",
        };
        keys.push(("proxy_protocol", text(proxy)));
    }
    keys.push(("tcp_user_timeout", off(l.tcp_user_timeout)));
    let close = match l.idle_close {
        IdleClose::Fin => "fin",
        IdleClose::Rst => "rst",
    };
    keys.push(("idle_close", text(close)));
    let notice = l.idle_notice.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
    keys.push(("idle_notice", text(notice)));
    if relay {
        keys.push(("protocol", text(l.protocol.as_str())));
    }
    match l.protocol {
        Protocol::Postgres => {
            keys.push(("idle_in_transaction_timeout", text(duration(l.idle_in_transaction_timeout))))
        }
        Protocol::Redis => keys.push(("subscriber_idle_timeout", off(l.subscriber_idle_timeout))),
        Protocol::Tcp => {}
    }
    Table { name: "listener", keys }
}

/// Every table of `config`, in the file's order: `[daemon]`, each `[[listener]]`, then
/// `[metrics]` and `[control]` if it has them.
pub fn tables(config: &Config) -> Vec<Table> {
    let mut tables = vec![daemon(&config.daemon)];
    tables.extend(config.listeners.iter().map(listener));
    if let Some(m) = &config.metrics {
        tables.push(Table { name: "metrics", keys: vec![("listen", text(m.listen.to_string()))] });
    }
    if let Some(c) = &config.control {
        let keys = vec![("socket", text(c.socket.display().to_string())), ("mode", mode(c.mode))];
        tables.push(Table { name: "control", keys });
    }
    tables
}

impl Config {
    /// The configuration as TOML, every key written out; no empty line (the control socket's
    /// answers have none before their end).
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        for table in tables(self) {
            match table.name {
                "listener" => out.push_str("[[listener]]\n"),
                name => out.push_str(&format!("[{name}]\n")),
            }
            for (key, value) in &table.keys {
                out.push_str(&format!("{key} = {value}\n"));
            }
        }
        out
    }

    /// The configuration as one JSON object: `daemon`, `listener` (an array), and `metrics`
    /// and `control` when there are.
    pub fn to_json(&self) -> serde_json::Value {
        let mut object = serde_json::Map::new();
        let mut listeners = Vec::new();
        for table in tables(self) {
            let keys: serde_json::Map<String, serde_json::Value> = table
                .keys
                .iter()
                .map(|(k, v)| ((*k).to_owned(), serde_json::to_value(v).unwrap_or_default()))
                .collect();
            match table.name {
                "listener" => listeners.push(serde_json::Value::Object(keys)),
                name => drop(object.insert(name.to_owned(), serde_json::Value::Object(keys))),
            }
        }
        object.insert("listener".to_owned(), serde_json::Value::Array(listeners));
        serde_json::Value::Object(object)
    }
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
