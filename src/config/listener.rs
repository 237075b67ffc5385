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

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::{Spanned, Value};

use super::locate::{Source, Span};
use crate::proxy_protocol::Version as ProxyVersion;

use super::address::{self, Listen, Upstream};
use super::checks;
use super::duration::{duration, duration_or_off};
use super::protocol::{self, ProtocolFile};
use super::{found, integer, shown, wrong_type};
use super::{Balance, IdleClose, ListenerConfig, Res, HOUR, TICK_NOTE};

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
const DEFAULT_SOCKET_MODE: u32 = 0o660;
/// `TCP_USER_TIMEOUT` in milliseconds: below a second it would drop healthy peers on a lossy
/// path; above an hour the kernel's own retransmission limit (about 15 minutes) comes first.
const TCP_USER_TIMEOUT_RANGE: (Duration, Duration) = (Duration::from_secs(1), HOUR);
/// Longest `idle_notice`: it must fit a socket's send buffer at once.
const MAX_IDLE_NOTICE: usize = 1024;

// ---- Step 1: the table as serde sees it ----------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileListener {
    name: Option<Spanned<String>>,
    listen: Option<Spanned<String>>,
    upstream: Option<Spanned<Value>>,
    balance: Option<Spanned<Value>>,
    socket_mode: Option<Spanned<Value>>,
    idle_timeout: Option<Spanned<Value>>,
    connect_timeout: Option<Spanned<Value>>,
    max_connections: Option<Spanned<Value>>,
    max_lifetime: Option<Spanned<Value>>,
    half_close_timeout: Option<Spanned<Value>>,
    max_connections_per_ip: Option<Spanned<Value>>,
    allow: Option<Spanned<Value>>,
    deny: Option<Spanned<Value>>,
    tcp_keepalive: Option<Spanned<Value>>,
    proxy_protocol: Option<Spanned<Value>>,
    tcp_user_timeout: Option<Spanned<Value>>,
    idle_close: Option<Spanned<Value>>,
    idle_notice: Option<Spanned<Value>>,
    protocol: Option<Spanned<Value>>,
    idle_in_transaction_timeout: Option<Spanned<Value>>,
    subscriber_idle_timeout: Option<Spanned<Value>>,
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
    checks::unique(src, &checked)?;
    checks::no_loops(src, &checked)?;
    Ok(checked.into_iter().map(|c| c.config).collect())
}

/// A validated listener and where its values were, for the checks across listeners.
pub(super) struct Checked {
    pub(super) config: ListenerConfig,
    pub(super) name_span: Span,
    pub(super) listen_span: Span,
    /// Of each `upstream` entry.
    pub(super) upstream_spans: Vec<Span>,
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
    let listen_addr = address::listen(listen.get_ref())
        .map_err(|msg| src.error(listen.span(), &key("listen"), format!("{:?} {msg}", listen.get_ref())))?;
    let (upstream, upstream_spans) = upstreams(src, &key("upstream"), &l.upstream)?;
    let relay = !upstream.is_empty();

    let idle = Some(l.idle_timeout.ok_or_else(|| required("idle_timeout"))?);
    let timer = (tick, MAX_TIMEOUT);
    let idle_timeout = duration(src, &key("idle_timeout"), &idle, (tick, timer), TICK_NOTE)?;
    // A sink never connects, and it closes at the client's FIN: these would have no effect.
    let relay_only = [
        ("connect_timeout", &l.connect_timeout),
        ("half_close_timeout", &l.half_close_timeout),
        ("proxy_protocol", &l.proxy_protocol),
        ("balance", &l.balance),
        ("protocol", &l.protocol),
    ];
    if !relay {
        none_set(src, &key, &relay_only, "only applies to a relay listener (one with an `upstream`)")?;
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
    let unix = matches!(listen_addr, Listen::Unix(_));
    if unix {
        // A Unix client has no address: rules about addresses cannot apply.
        let by_address =
            [("allow", &l.allow), ("deny", &l.deny), ("max_connections_per_ip", &l.max_connections_per_ip)];
        let msg = "does not apply to a Unix socket listener: its clients have no address";
        none_set(src, &key, &by_address, msg)?;
    } else if matches!(listen_addr, Listen::Systemd(_)) {
        let msg = "does not apply to a socket systemd passes: its .socket unit sets the mode (SocketMode=)";
        none_set(src, &key, &[("socket_mode", &l.socket_mode)], msg)?;
    } else {
        let msg = "only applies to a Unix socket listener (listen = \"unix:/path\")";
        none_set(src, &key, &[("socket_mode", &l.socket_mode)], msg)?;
    }
    let socket_mode = match &l.socket_mode {
        None => DEFAULT_SOCKET_MODE,
        Some(v) => octal_mode(v).map_err(|msg| src.error(v.span(), &key("socket_mode"), msg))?,
    };
    let balance = match word(src, &key("balance"), &l.balance, &["first", "round_robin"])? {
        Some("round_robin") => Balance::RoundRobin,
        _ => Balance::First,
    };
    let user_timeout = (None, TCP_USER_TIMEOUT_RANGE, "the kernel's default", "");
    let tcp_user_timeout = duration_or_off(src, &key("tcp_user_timeout"), &l.tcp_user_timeout, user_timeout)?;
    let idle_close = match word(src, &key("idle_close"), &l.idle_close, &["fin", "rst"])? {
        Some("rst") => IdleClose::Rst,
        _ => IdleClose::Fin,
    };
    let file = ProtocolFile {
        protocol: &l.protocol,
        idle_in_transaction_timeout: &l.idle_in_transaction_timeout,
        subscriber_idle_timeout: &l.subscriber_idle_timeout,
    };
    let protocol = protocol::validate(src, &key, &file, idle_timeout, tick)?;
    let notice_set =
        matches!(l.idle_notice.as_ref().map(|v| v.get_ref()), Some(Value::String(t)) if !t.is_empty());
    let (close, notice) = ((idle_close, &l.idle_close), (notice_set, &l.idle_notice));
    protocol::no_own_goodbye(src, &key, protocol.protocol, close, notice)?;
    let idle_notice = match &l.idle_notice {
        None => None,
        Some(v) => match v.get_ref() {
            Value::String(text) if text.is_empty() => None,
            Value::String(_) if idle_close == IdleClose::Rst => {
                let msg = "cannot be sent with idle_close = \"rst\": a reset discards it";
                return Err(src.error(v.span(), &key("idle_notice"), msg));
            }
            Value::String(text) if text.len() > MAX_IDLE_NOTICE => {
                let msg = format!("is {} bytes long: at most {MAX_IDLE_NOTICE}", text.len());
                return Err(src.error(v.span(), &key("idle_notice"), msg));
            }
            Value::String(text) => Some(std::sync::Arc::from(text.as_bytes())),
            _ => {
                return Err(wrong_type(
                    src,
                    &key("idle_notice"),
                    v,
                    "a string, such as \"-ERR idle timeout\\r\\n\"",
                ))
            }
        },
    };
    let proxy_protocol = match word(src, &key("proxy_protocol"), &l.proxy_protocol, &["off", "v1", "v2"])? {
        Some("v1") => Some(ProxyVersion::V1),
        Some("v2") => Some(ProxyVersion::V2),
        _ => None,
    };
    Ok(Checked {
        config: ListenerConfig {
            name: n.clone(),
            listen: listen_addr,
            socket_mode,
            listen_at: src.position(&listen.span()),
            upstream_at: upstream_spans.iter().map(|span| src.position(span)).collect(),
            upstream,
            balance,
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
            tcp_user_timeout,
            idle_close,
            idle_notice,
            protocol: protocol.protocol,
            idle_in_transaction_timeout: protocol.idle_in_transaction_timeout,
            subscriber_idle_timeout: protocol.subscriber_idle_timeout,
        },
        name_span: name.span(),
        listen_span: listen.span(),
        upstream_spans,
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

/// `upstream`: one address string or an array of them (see [`address::upstream`]); absent
/// for a sink. Not empty, no duplicates. Returns the entries and their spans.
fn upstreams(src: &Source, key: &str, value: &Option<Spanned<Value>>) -> Res<(Vec<Upstream>, Vec<Span>)> {
    let Some(v) = value else { return Ok((Vec::new(), Vec::new())) };
    let items: Vec<(String, &Value, Span)> = match v.get_ref() {
        Value::String(_) => vec![(key.to_owned(), v.get_ref(), v.span())],
        Value::Array(items) if items.is_empty() => {
            let msg = "is an empty list: give at least one address, or remove the key for a sink";
            return Err(src.error(v.span(), key, msg));
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                (format!("{key}[{i}]"), item, src.element_span(&v.span(), i).unwrap_or_else(|| v.span()))
            })
            .collect(),
        _ => return Err(wrong_type(src, key, v, "an address string or an array of them")),
    };
    let (mut entries, mut spans) = (Vec::new(), Vec::new());
    for (key, item, span) in items {
        let Value::String(text) = item else {
            return Err(src.error(span, &key, format!("expected an address string, got {}", found(item))));
        };
        let entry = address::upstream(text)
            .map_err(|msg| src.error(span.clone(), &key, format!("{text:?} {msg}")))?;
        if let Some(i) = entries.iter().position(|e| *e == entry) {
            let msg = format!("{text:?} is already upstream[{i}]: each address once");
            return Err(src.error(span, &key, msg));
        }
        entries.push(entry);
        spans.push(span);
    }
    Ok((entries, spans))
}

/// An error at the first of `values` that is set (`msg` says why none may be, here).
fn none_set(
    src: &Source,
    key: &dyn Fn(&str) -> String,
    values: &[(&str, &Option<Spanned<Value>>)],
    msg: &str,
) -> Res<()> {
    match values.iter().find_map(|(name, value)| value.as_ref().map(|v| (name, v))) {
        Some((name, v)) => Err(src.error(v.span(), &key(name), msg)),
        None => Ok(()),
    }
}

/// A string value that must be one of `words`; `None` when absent.
pub(super) fn word<'w>(
    src: &Source,
    key: &str,
    value: &Option<Spanned<Value>>,
    words: &[&'w str],
) -> Res<Option<&'w str>> {
    let Some(v) = value else { return Ok(None) };
    // "a", "b" or "c"
    let quoted: Vec<String> = words.iter().map(|w| format!("{w:?}")).collect();
    let listed = match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    match v.get_ref() {
        Value::String(s) => match words.iter().find(|w| **w == s) {
            Some(w) => Ok(Some(w)),
            None => Err(src.error(v.span(), key, format!("expected {listed}, got {}", shown(v)))),
        },
        _ => Err(wrong_type(src, key, v, &listed)),
    }
}

/// `socket_mode`: an octal string of three or four digits, such as `"0660"`.
pub(super) fn octal_mode(v: &Spanned<Value>) -> Result<u32, String> {
    let bad = || {
        format!(
            "expected an octal mode of three or four digits as a string, such as \"0660\", got {}",
            shown(v)
        )
    };
    let Value::String(text) = v.get_ref() else { return Err(bad()) };
    if !(3..=4).contains(&text.len()) || !text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(bad());
    }
    let mode = u32::from_str_radix(text, 8).map_err(|_| bad())?;
    if mode > 0o777 {
        return Err(format!("{}: only the permission bits (up to 0777) may be set", shown(v)));
    }
    Ok(mode)
}

#[cfg(test)]
mod tests;
