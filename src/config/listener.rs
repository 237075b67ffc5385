//! Step 2 of the config pipeline for the `[[listener]]` tables: each table on its own, then the
//! listeners together.
//!
//! A table is checked key by key into a [`ListenerConfig`]. The spans of its name and addresses
//! are kept beside it (`Checked`) so that the checks across listeners (unique names, unique
//! `listen` addresses, no relay loops) can point at the line to fix.
//!
//! Timers that can be switched off (`max_lifetime`, `half_close_timeout`, `tcp_keepalive`) take
//! `"0s"` for off and become `None`; any other value must be within the key's range. Source
//! networks (`allow`, `deny`) are arrays of strings, each a CIDR network without host bits
//! (`"10.0.0.0/8"`, `"2001:db8::/32"`) or a bare address, which is a network of one.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::{Spanned, Value};

use super::locate::{Source, Span};
use crate::proxy_protocol::Version as ProxyVersion;

use super::duration::{duration, duration_or_off};
use super::{found, integer, shown, wrong_type};
use super::{ListenerConfig, Res, HOUR, TICK_NOTE};

/// Longest `idle_timeout`, `max_lifetime` and `half_close_timeout` (30 days); the shortest is
/// `daemon.tick`.
pub(super) const MAX_TIMEOUT: Duration = Duration::from_secs(30 * 24 * HOUR.as_secs());
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest `connect_timeout`; the shortest is `daemon.tick`.
const MAX_CONNECT_TIMEOUT: Duration = HOUR;
const DEFAULT_HALF_CLOSE_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
const MAX_CONNECTIONS_RANGE: (i64, i64) = (1, 1_000_000);
/// 0 means unlimited.
const MAX_CONNECTIONS_PER_IP_RANGE: (i64, i64) = (0, 1_000_000);
/// `TCP_KEEPIDLE` counts whole seconds (Linux takes up to 32767); two hours is the kernel's own
/// default, so a longer setting would only weaken it.
const TCP_KEEPALIVE_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(2 * 3600));
const MAX_NAME_LEN: usize = 64;

// ---- Step 1: the table as serde sees it ----------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileListener {
    name: Option<Spanned<String>>,
    listen: Option<Spanned<String>>,
    upstream: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<Value>>,
    connect_timeout: Option<Spanned<Value>>,
    max_connections: Option<Spanned<Value>>,
    max_lifetime: Option<Spanned<Value>>,
    half_close_timeout: Option<Spanned<Value>>,
    max_connections_per_ip: Option<Spanned<Value>>,
    allow: Option<Spanned<Value>>,
    deny: Option<Spanned<Value>>,
    tcp_keepalive: Option<Spanned<Value>>,
    // Not supported yet:
    proxy_protocol: Option<Spanned<Value>>,
}

// ---- Step 2: validation ---------------------------------------------------------------------------

/// The `[[listener]]` tables, in file order; there must be at least one.
pub(super) fn validate(
    src: &Source,
    listeners: Vec<Spanned<FileListener>>,
    tick: Duration,
) -> Res<Vec<ListenerConfig>> {
    if listeners.is_empty() {
        let blank = src.text.lines().map(str::trim).all(|l| l.is_empty() || l.starts_with('#'));
        let (at, msg) = match blank {
            true => (
                0,
                "the file is empty (blank lines and comments at most): it needs at least one \
                         [[listener]] table, with name, listen and idle_timeout",
            ),
            // Where one would be added.
            false => (src.text.len(), "no listener defined: add at least one [[listener]] table"),
        };
        return Err(src.error(at..at, "listener", msg));
    }
    let checked = listeners.into_iter().enumerate().map(|(i, l)| validate_one(src, i, l, tick));
    let checked = checked.collect::<Res<Vec<_>>>()?;
    check_unique(src, &checked)?;
    check_loops(src, &checked)?;
    Ok(checked.into_iter().map(|c| c.config).collect())
}

/// A validated listener and where its values were, for the checks across listeners.
struct Checked {
    config: ListenerConfig,
    name_span: Span,
    listen_span: Span,
    upstream_span: Option<Span>,
}

fn validate_one(src: &Source, index: usize, listener: Spanned<FileListener>, tick: Duration) -> Res<Checked> {
    let header = listener.span();
    let l = listener.into_inner();
    let prefix = format!("listener[{index}].");
    let key = |name: &str| format!("{prefix}{name}");
    let required = |name: &str| src.error(header.clone(), &key(name), "required");

    let name = l.name.ok_or_else(|| required("name"))?;
    let n = name.get_ref();
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if n.is_empty() || n.len() > MAX_NAME_LEN || !n.chars().all(ok) {
        let msg = format!("{n:?} is not a valid name: use 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 _.-");
        return Err(src.error(name.span(), &key("name"), msg));
    }

    let listen = l.listen.ok_or_else(|| required("listen"))?;
    let listen_addr = socket_addr(src, &key("listen"), &listen)?;
    let upstream = match &l.upstream {
        None => None,
        Some(v) => Some(socket_addr(src, &key("upstream"), v)?),
    };

    let idle = Some(l.idle_timeout.ok_or_else(|| required("idle_timeout"))?);
    let timer = (tick, MAX_TIMEOUT);
    let idle_timeout = duration(src, &key("idle_timeout"), &idle, (tick, timer), TICK_NOTE)?;
    // A sink never connects, and it closes at the client's FIN: these would have no effect.
    for (relay_key, value) in [
        ("connect_timeout", &l.connect_timeout),
        ("half_close_timeout", &l.half_close_timeout),
        ("proxy_protocol", &l.proxy_protocol),
    ] {
        if let (Some(v), None) = (value, upstream) {
            let msg = "only applies to a relay listener (one with an `upstream`)";
            return Err(src.error(v.span(), &key(relay_key), msg));
        }
    }
    let limits = (DEFAULT_CONNECT_TIMEOUT, (tick, MAX_CONNECT_TIMEOUT));
    let connect_timeout = duration(src, &key("connect_timeout"), &l.connect_timeout, limits, TICK_NOTE)?;
    let lifetime = (None, timer, "unlimited", TICK_NOTE);
    let max_lifetime = duration_or_off(src, &key("max_lifetime"), &l.max_lifetime, lifetime)?;
    let half_close = (Some(DEFAULT_HALF_CLOSE_TIMEOUT), timer, "off", TICK_NOTE);
    let half_close_timeout =
        duration_or_off(src, &key("half_close_timeout"), &l.half_close_timeout, half_close)?;
    let keepalive = (None, TCP_KEEPALIVE_RANGE, "off", "");
    let tcp_keepalive = duration_or_off(src, &key("tcp_keepalive"), &l.tcp_keepalive, keepalive)?;
    if let (Some(d), Some(v)) = (tcp_keepalive, &l.tcp_keepalive) {
        if d.subsec_nanos() != 0 {
            let (lower, upper) = (d.as_secs(), d.as_secs() + 1);
            let msg = format!(
                "{} is not a whole number of seconds, which is what TCP keepalive counts: \
                 write \"{lower}s\" or \"{upper}s\"",
                shown(v)
            );
            return Err(src.error(v.span(), &key("tcp_keepalive"), msg));
        }
    }

    let max_connections = integer(
        src,
        &key("max_connections"),
        &l.max_connections,
        DEFAULT_MAX_CONNECTIONS,
        MAX_CONNECTIONS_RANGE,
    )?;
    let per_ip = &l.max_connections_per_ip;
    let max_connections_per_ip =
        integer(src, &key("max_connections_per_ip"), per_ip, 0, MAX_CONNECTIONS_PER_IP_RANGE)?;
    let allow = networks(src, &key("allow"), &l.allow)?;
    let deny = networks(src, &key("deny"), &l.deny)?;
    let proxy_protocol = match &l.proxy_protocol {
        None => None,
        Some(v) => match v.get_ref() {
            Value::String(s) if s == "off" => None,
            Value::String(s) if s == "v1" => Some(ProxyVersion::V1),
            Value::String(s) if s == "v2" => Some(ProxyVersion::V2),
            Value::String(_) => {
                let msg = format!("expected \"off\", \"v1\" or \"v2\", got {}", shown(v));
                return Err(src.error(v.span(), &key("proxy_protocol"), msg));
            }
            _ => return Err(wrong_type(src, &key("proxy_protocol"), v, "\"off\", \"v1\" or \"v2\"")),
        },
    };
    Ok(Checked {
        config: ListenerConfig {
            name: n.clone(),
            listen: listen_addr,
            listen_at: src.position(&listen.span()),
            upstream,
            idle_timeout,
            connect_timeout,
            max_connections,
            max_lifetime,
            half_close_timeout,
            max_connections_per_ip,
            allow,
            deny,
            tcp_keepalive,
            proxy_protocol,
        },
        name_span: name.span(),
        listen_span: listen.span(),
        upstream_span: l.upstream.as_ref().map(Spanned::span),
    })
}

/// `allow` or `deny`: an array of network strings (see [`network`]); empty when absent. An error
/// about one of them names it by its index, `listener[0].allow[2]`, and points at it.
fn networks(src: &Source, key: &str, value: &Option<Spanned<Value>>) -> Res<Vec<IpNet>> {
    let Some(v) = value else { return Ok(Vec::new()) };
    let Value::Array(items) = v.get_ref() else {
        let expected = "an array of address or network strings, such as [\"10.0.0.0/8\", \"::1\"]";
        let mut e = wrong_type(src, key, v, expected);
        if let Value::String(s) = v.get_ref() {
            e.message.push_str(&format!("; write [{s:?}]"));
        }
        return Err(e);
    };
    let at = |i: usize| src.element_span(&v.span(), i).unwrap_or_else(|| v.span());
    let mut nets = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let key = format!("{key}[{i}]");
        let Value::String(text) = item else {
            let msg =
                format!("expected an address or network string such as \"10.0.0.0/8\", got {}", found(item));
            return Err(src.error(at(i), &key, msg));
        };
        nets.push(network(text).map_err(|msg| src.error(at(i), &key, format!("{text:?} {msg}")))?);
    }
    Ok(nets)
}

/// `"10.0.0.0/8"`, `"2001:db8::/32"`, or a bare address, which is the network of that address
/// alone (`/32`, `/128`). A network with host bits set (`"10.0.0.1/8"`) is an error: it is
/// more likely a typo than a way to write `"10.0.0.0/8"`. The error completes `"<text>" …`.
fn network(text: &str) -> Result<IpNet, String> {
    let not = "is not an address or network";
    let (addr, len) = match text.split_once('/') {
        Some((addr, len)) => (addr, Some(len)),
        None => (text, None),
    };
    let Ok(addr) = addr.parse::<IpAddr>() else {
        return Err(format!(
            "{not}: expected an IPv4 or IPv6 address with an optional /prefix length, such as \
             \"10.0.0.0/8\", \"2001:db8::/32\" or \"::1\" (no host names)"
        ));
    };
    let (family, max) = if addr.is_ipv4() { ("IPv4", 32) } else { ("IPv6", 128) };
    let len = match len {
        None => max,
        Some(l) => match l.parse::<u8>() {
            Ok(n) if n <= max && l.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                return Err(format!(
                    "{not}: the prefix length of an {family} network is 0 to {max}, got {l:?}"
                ))
            }
        },
    };
    let net = IpNet::new(addr, len).expect("prefix length checked");
    if net.trunc() != net {
        let hint = format!("did you mean \"{}\"? (a single address is written \"{addr}\")", net.trunc());
        return Err(format!("has host bits set after the /{len}: {hint}"));
    }
    Ok(net)
}

/// `IP:port` or `[IPv6]:port`, port not 0; an upstream (`key` ending in `upstream`) must not be
/// the wildcard address either.
fn socket_addr(src: &Source, key: &str, value: &Spanned<String>) -> Res<SocketAddr> {
    let text = value.get_ref();
    let msg = match text.parse::<SocketAddr>() {
        Ok(addr) if addr.port() == 0 => format!("{text:?}: port 0 is not allowed"),
        Ok(addr) if addr.ip().is_unspecified() && key.ends_with("upstream") => {
            format!("{text:?} is not an address to connect to")
        }
        Ok(addr) => return Ok(addr),
        Err(_) => format!("expected \"IP:port\" or \"[IPv6]:port\" (no host names), got {text:?}"),
    };
    Err(src.error(value.span(), key, msg))
}

/// Names and `listen` addresses are unique; the error points at the second occurrence.
fn check_unique(src: &Source, listeners: &[Checked]) -> Res<()> {
    for (j, b) in listeners.iter().enumerate() {
        let (earlier, name, listen) = (&listeners[..j], &b.config.name, b.config.listen);
        if let Some(i) = earlier.iter().position(|a| a.config.name == *name) {
            let line = src.line_of(&listeners[i].name_span);
            let msg = format!("duplicate name {name:?}: already used by listener[{i}] at line {line}");
            return Err(src.error(b.name_span.clone(), &format!("listener[{j}].name"), msg));
        }
        if let Some(i) = earlier.iter().position(|a| a.config.listen == listen) {
            let a = &listeners[i];
            let (line, first) = (src.line_of(&a.listen_span), &a.config.name);
            let msg = format!(
                "duplicate address {listen}: already used by listener[{i}] ({first:?}) at line {line}"
            );
            return Err(src.error(b.listen_span.clone(), &format!("listener[{j}].listen"), msg));
        }
    }
    Ok(())
}

/// No relay may reach itself, directly or through other listeners of this file: its connections
/// would multiply until `max_connections` ran out. An upstream reaches a listener at the same
/// address, or at the wildcard address of its family when it is a loopback address with the same
/// port.
fn check_loops(src: &Source, listeners: &[Checked]) -> Res<()> {
    let reaches = |up: SocketAddr, listen: SocketAddr| {
        let wildcard = listen.ip().is_unspecified() && up.ip().is_loopback();
        up.port() == listen.port() && up.is_ipv4() == listen.is_ipv4() && wildcard
    };
    let next = |i: usize| {
        let up = listeners[i].config.upstream?;
        let exact = listeners.iter().position(|l| l.config.listen == up);
        exact.or_else(|| listeners.iter().position(|l| reaches(up, l.config.listen)))
    };
    for (start, l) in listeners.iter().enumerate() {
        // Each listener has at most one upstream: a loop through `start` closes within `len`
        // hops, and a longer walk is a loop elsewhere, found from its own start.
        let (mut path, mut at) = (vec![l.config.name.as_str()], start);
        for _ in 0..listeners.len() {
            let Some(n) = next(at) else { break };
            path.push(&listeners[n].config.name);
            if n == start {
                let (up, listen) = (l.config.upstream.expect("a relay"), l.config.listen);
                let msg = match path.len() {
                    2 if up == listen => format!("{up} is this listener's own address"),
                    2 => format!("{up} reaches this listener's own address {listen}"),
                    _ => format!("{up} leads back to this listener: {}", path.join(" -> ")),
                };
                let msg = format!("{msg}; connections would loop");
                let key = format!("listener[{start}].upstream");
                return Err(src.error(l.upstream_span.clone(), &key, msg));
            }
            at = n;
        }
    }
    Ok(())
}

impl ListenerConfig {
    /// One line for `idlereaper --check`: the addresses, the idle timer and the connection limit,
    /// then `half_close_timeout` (on by default, so always shown for a relay), then the other
    /// protections only when they are set.
    pub fn summary(&self) -> String {
        let d = |d: Duration| humantime::format_duration(d).to_string();
        let (name, listen, idle, max) = (&self.name, self.listen, d(self.idle_timeout), self.max_connections);
        let mut line = match self.upstream {
            Some(up) => format!(
                "listener {name}: {listen} -> {up} relay, idle_timeout {idle}, connect_timeout {}, \
                 max_connections {max}",
                d(self.connect_timeout)
            ),
            None => format!("listener {name}: {listen} sink, idle_timeout {idle}, max_connections {max}"),
        };
        let mut add = |part: String| {
            line.push_str(", ");
            line.push_str(&part);
        };
        if let Some(lifetime) = self.max_lifetime {
            add(format!("max_lifetime {}", d(lifetime)));
        }
        if self.upstream.is_some() {
            add(format!("half_close_timeout {}", self.half_close_timeout.map_or("off".to_owned(), d)));
        }
        if self.max_connections_per_ip > 0 {
            add(format!("max_connections_per_ip {}", self.max_connections_per_ip));
        }
        for (key, nets) in [("allow", &self.allow), ("deny", &self.deny)] {
            match nets.len() {
                0 => {}
                1 => add(format!("{key} 1 network")),
                n => add(format!("{key} {n} networks")),
            }
        }
        if let Some(keepalive) = self.tcp_keepalive {
            add(format!("tcp_keepalive {}", d(keepalive)));
        }
        if let Some(version) = self.proxy_protocol {
            add(format!("proxy_protocol {}", if version == ProxyVersion::V1 { "v1" } else { "v2" }));
        }
        line
    }
}

#[cfg(test)]
mod tests;
