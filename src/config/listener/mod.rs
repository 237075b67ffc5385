//! Step 2 of the config pipeline for the `[[listener]]` tables: each table on its own, then the
//! listeners together.
//!
//! A table is checked key by key into a [`ListenerConfig`]. The spans of its name and addresses
//! are kept beside it ([`Checked`]) so that the checks across listeners (unique names, unique
//! `listen` addresses, no relay loops) can point at the line to fix.
//!
//! Timers that can be switched off (`max_lifetime`, `half_close_timeout`, `tcp_keepalive`) take
//! `"0s"` for off and become `None`; any other value must be within the key's range. Source
//! networks (`allow`, `deny`) are read in `networks`.

use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::{Spanned, Value};

use super::locate::Source;
use crate::proxy_protocol::Version as ProxyVersion;

use super::address::{self, Listen};
use super::backoff;
use super::checks::{self, Checked};
use super::duration::{duration, duration_or_off, Range, MAX_TIMEOUT};
use super::protocol::{self, ProtocolFile, ProtocolKeys};
use super::value::{integer, octal_mode, shown, word, wrong_type};
use super::{Backoff, Balance, IdleClose, ListenerConfig, Res, HOUR};
use networks::networks;
use upstreams::upstreams;

/// Longest `idle_timeout`, `max_lifetime` and `half_close_timeout` (30 days); the shortest is
/// `daemon.tick`.
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
const TCP_KEEPALIVE_RANGE: Range = Range::plain(Duration::from_secs(1), Duration::from_secs(2 * 3600));
const MAX_NAME_LEN: usize = 64;
const DEFAULT_SOCKET_MODE: u32 = 0o660;
/// `TCP_USER_TIMEOUT` in milliseconds: below a second it would drop healthy peers on a lossy
/// path; above an hour the kernel's own retransmission limit (about 15 minutes) comes first.
const TCP_USER_TIMEOUT_RANGE: Range = Range::plain(Duration::from_secs(1), HOUR);
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
    upstream_backoff: Option<Spanned<Value>>,
    upstream_backoff_max: Option<Spanned<Value>>,
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

fn validate_one(src: &Source, index: usize, listener: Spanned<FileListener>, tick: Duration) -> Res<Checked> {
    let header = listener.span();
    let l = listener.into_inner();
    let prefix = format!("listener[{index}].");
    let key = |name: &str| format!("{prefix}{name}");
    let required = |name: &str| src.error(header.clone(), &key(name), "required");

    let name = l.name.as_ref().ok_or_else(|| required("name"))?;
    check_name(src, &key("name"), name)?;
    let listen = l.listen.as_ref().ok_or_else(|| required("listen"))?;
    let listen_addr = address::listen(listen.get_ref())
        .map_err(|msg| src.error(listen.span(), &key("listen"), format!("{:?} {msg}", listen.get_ref())))?;
    let (upstream, upstream_spans) = upstreams(src, &key("upstream"), &l.upstream)?;
    let idle = Some(l.idle_timeout.clone().ok_or_else(|| required("idle_timeout"))?);
    let idle_timeout = duration(src, &key("idle_timeout"), &idle, tick, Range::timer(tick, MAX_TIMEOUT))?;
    if upstream.is_empty() {
        sink_has_no_relay_keys(src, &key, &l)?;
    }
    let timers = timers(src, &key, &l, tick)?;
    let admission = admission(src, &key, &l, &listen_addr)?;
    let balance = match word(src, &key("balance"), &l.balance, &["first", "round_robin"])? {
        Some("round_robin") => Balance::RoundRobin,
        _ => Balance::First,
    };
    let proxy_protocol = match word(src, &key("proxy_protocol"), &l.proxy_protocol, &["off", "v1", "v2"])? {
        Some("v1") => Some(ProxyVersion::V1),
        Some("v2") => Some(ProxyVersion::V2),
        _ => None,
    };
    let closing = closing(src, &key, &l, idle_timeout, tick)?;
    Ok(Checked {
        config: ListenerConfig {
            name: name.get_ref().clone(),
            listen: listen_addr,
            socket_mode: admission.socket_mode,
            listen_at: src.position(&listen.span()),
            upstream_at: upstream_spans.iter().map(|span| src.position(span)).collect(),
            upstream,
            balance,
            idle_timeout,
            connect_timeout: timers.connect_timeout,
            upstream_backoff: timers.upstream_backoff,
            max_connections: admission.max_connections,
            max_lifetime: timers.max_lifetime,
            half_close_timeout: timers.half_close_timeout,
            max_connections_per_ip: admission.max_connections_per_ip,
            allow: admission.allow,
            deny: admission.deny,
            tcp_keepalive: timers.tcp_keepalive,
            proxy_protocol,
            tcp_user_timeout: timers.tcp_user_timeout,
            idle_close: closing.idle_close,
            idle_notice: closing.idle_notice,
            protocol: closing.protocol.protocol,
            idle_in_transaction_timeout: closing.protocol.idle_in_transaction_timeout,
            subscriber_idle_timeout: closing.protocol.subscriber_idle_timeout,
        },
        name_span: name.span(),
        listen_span: listen.span(),
        upstream_spans,
    })
}

/// `name`: 1 to [`MAX_NAME_LEN`] of `A-Z a-z 0-9 _ . -`, safe in log lines and metric labels.
fn check_name(src: &Source, key: &str, name: &Spanned<String>) -> Res<()> {
    let n = name.get_ref();
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if n.is_empty() || n.len() > MAX_NAME_LEN || !n.chars().all(ok) {
        let msg = format!("{n:?} is not a valid name: use 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 _.-");
        return Err(src.error(name.span(), key, msg));
    }
    Ok(())
}

/// A sink never connects, and it closes at the client's FIN: the relay's keys would have no
/// effect on it.
fn sink_has_no_relay_keys(src: &Source, key: &dyn Fn(&str) -> String, l: &FileListener) -> Res<()> {
    let relay_only = [
        ("connect_timeout", &l.connect_timeout),
        ("upstream_backoff", &l.upstream_backoff),
        ("upstream_backoff_max", &l.upstream_backoff_max),
        ("half_close_timeout", &l.half_close_timeout),
        ("proxy_protocol", &l.proxy_protocol),
        ("balance", &l.balance),
        ("protocol", &l.protocol),
    ];
    none_set(src, key, &relay_only, "only applies to a relay listener (one with an `upstream`)")
}

/// A listener's timers but `idle_timeout` (which is required) and the protocol's.
struct Timers {
    connect_timeout: Duration,
    upstream_backoff: Option<Backoff>,
    max_lifetime: Option<Duration>,
    half_close_timeout: Option<Duration>,
    tcp_keepalive: Option<Duration>,
    tcp_user_timeout: Option<Duration>,
}

fn timers(src: &Source, key: &dyn Fn(&str) -> String, l: &FileListener, tick: Duration) -> Res<Timers> {
    let timer = Range::timer(tick, MAX_TIMEOUT);
    let connect = Range::timer(tick, MAX_CONNECT_TIMEOUT);
    let connect_timeout =
        duration(src, &key("connect_timeout"), &l.connect_timeout, DEFAULT_CONNECT_TIMEOUT, connect)?;
    let upstream_backoff = backoff::validate(src, key, &l.upstream_backoff, &l.upstream_backoff_max, tick)?;
    let max_lifetime = duration_or_off(src, &key("max_lifetime"), &l.max_lifetime, None, timer, "unlimited")?;
    let (half_close, default_half_close) = (&l.half_close_timeout, Some(DEFAULT_HALF_CLOSE_TIMEOUT));
    let half_close_timeout =
        duration_or_off(src, &key("half_close_timeout"), half_close, default_half_close, timer, "off")?;
    let tcp_keepalive =
        duration_or_off(src, &key("tcp_keepalive"), &l.tcp_keepalive, None, TCP_KEEPALIVE_RANGE, "off")?;
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
    let (user_timeout, default) = (&l.tcp_user_timeout, "the kernel's default");
    let tcp_user_timeout =
        duration_or_off(src, &key("tcp_user_timeout"), user_timeout, None, TCP_USER_TIMEOUT_RANGE, default)?;
    Ok(Timers {
        connect_timeout,
        upstream_backoff,
        max_lifetime,
        half_close_timeout,
        tcp_keepalive,
        tcp_user_timeout,
    })
}

/// Who may connect and how many: the limits, the source networks, and the mode of a Unix
/// listener's socket file.
struct Admission {
    max_connections: usize,
    max_connections_per_ip: usize,
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    socket_mode: u32,
}

fn admission(
    src: &Source,
    key: &dyn Fn(&str) -> String,
    l: &FileListener,
    listen: &Listen,
) -> Res<Admission> {
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
    match listen {
        Listen::Unix(_) => {
            // A Unix client has no address: rules about addresses cannot apply.
            let by_address = [
                ("allow", &l.allow),
                ("deny", &l.deny),
                ("max_connections_per_ip", &l.max_connections_per_ip),
            ];
            let msg = "does not apply to a Unix socket listener: its clients have no address";
            none_set(src, key, &by_address, msg)?;
        }
        Listen::Systemd(_) => {
            let msg =
                "does not apply to a socket systemd passes: its .socket unit sets the mode (SocketMode=)";
            none_set(src, key, &[("socket_mode", &l.socket_mode)], msg)?;
        }
        _ => {
            let msg = "only applies to a Unix socket listener (listen = \"unix:/path\")";
            none_set(src, key, &[("socket_mode", &l.socket_mode)], msg)?;
        }
    }
    let socket_mode = match &l.socket_mode {
        None => DEFAULT_SOCKET_MODE,
        Some(v) => octal_mode(v).map_err(|msg| src.error(v.span(), &key("socket_mode"), msg))?,
    };
    Ok(Admission { max_connections, max_connections_per_ip, allow, deny, socket_mode })
}

/// How a connection the daemon closes ends, and what idle means for it (the protocol).
struct Closing {
    idle_close: IdleClose,
    idle_notice: Option<Arc<[u8]>>,
    protocol: ProtocolKeys,
}

fn closing(
    src: &Source,
    key: &dyn Fn(&str) -> String,
    l: &FileListener,
    idle_timeout: Duration,
    tick: Duration,
) -> Res<Closing> {
    let idle_close = match word(src, &key("idle_close"), &l.idle_close, &["fin", "rst"])? {
        Some("rst") => IdleClose::Rst,
        _ => IdleClose::Fin,
    };
    let file = ProtocolFile {
        protocol: &l.protocol,
        idle_in_transaction_timeout: &l.idle_in_transaction_timeout,
        subscriber_idle_timeout: &l.subscriber_idle_timeout,
    };
    let protocol = protocol::validate(src, key, &file, idle_timeout, tick)?;
    let notice_set =
        matches!(l.idle_notice.as_ref().map(|v| v.get_ref()), Some(Value::String(t)) if !t.is_empty());
    let (close, notice) = ((idle_close, &l.idle_close), (notice_set, &l.idle_notice));
    protocol::no_own_goodbye(src, key, protocol.protocol, close, notice)?;
    let idle_notice = idle_notice(src, &key("idle_notice"), &l.idle_notice, idle_close)?;
    Ok(Closing { idle_close, idle_notice, protocol })
}

/// `idle_notice`: a string of at most [`MAX_IDLE_NOTICE`] bytes, never with a reset; empty or
/// absent is none.
fn idle_notice(
    src: &Source,
    key: &str,
    value: &Option<Spanned<Value>>,
    idle_close: IdleClose,
) -> Res<Option<Arc<[u8]>>> {
    let Some(v) = value else { return Ok(None) };
    match v.get_ref() {
        Value::String(text) if text.is_empty() => Ok(None),
        Value::String(_) if idle_close == IdleClose::Rst => {
            let msg = "cannot be sent with idle_close = \"rst\": a reset discards it";
            Err(src.error(v.span(), key, msg))
        }
        Value::String(text) if text.len() > MAX_IDLE_NOTICE => {
            let msg = format!("is {} bytes long: at most {MAX_IDLE_NOTICE}", text.len());
            Err(src.error(v.span(), key, msg))
        }
        Value::String(text) => Ok(Some(Arc::from(text.as_bytes()))),
        _ => Err(wrong_type(src, key, v, "a string, such as \"-ERR idle timeout\\r\\n\"")),
    }
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

mod networks;
mod upstreams;

#[cfg(test)]
mod tests;
