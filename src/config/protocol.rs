//! A `[[listener]]`'s protocol keys: `protocol` (what "idle" means: `tcp`, `postgres`, `redis`),
//! the timers only one protocol has (`idle_in_transaction_timeout` for `postgres`,
//! `subscriber_idle_timeout` for `redis`), and what a protocol listener may not have:
//! `idle_notice` and `idle_close = "rst"`, which the protocol's own way of ending a session
//! replaces. Each error names the key that is wrong where it is.

use std::time::Duration;

use toml::{Spanned, Value};

use super::duration::{duration, duration_or_off, Range, MAX_TIMEOUT};
use super::locate::Source;
use super::value::word;
use super::{IdleClose, Res};
use crate::observe::Protocol;

/// The protocol keys of one listener, as the file has them.
pub(super) struct ProtocolFile<'a> {
    pub(super) protocol: &'a Option<Spanned<Value>>,
    pub(super) idle_in_transaction_timeout: &'a Option<Spanned<Value>>,
    pub(super) subscriber_idle_timeout: &'a Option<Spanned<Value>>,
}

/// The validated protocol keys.
pub(super) struct ProtocolKeys {
    pub(super) protocol: Protocol,
    pub(super) idle_in_transaction_timeout: Duration,
    pub(super) subscriber_idle_timeout: Option<Duration>,
}

/// `protocol` and its timers. `idle_timeout` is the default of `idle_in_transaction_timeout`;
/// `tick` the shortest timer. (`protocol` on a sink is refused with the other relay-only keys.)
pub(super) fn validate(
    src: &Source,
    key: &dyn Fn(&str) -> String,
    file: &ProtocolFile,
    idle_timeout: Duration,
    tick: Duration,
) -> Res<ProtocolKeys> {
    let protocol = match word(src, &key("protocol"), file.protocol, &["tcp", "postgres", "redis"])? {
        Some("postgres") => Protocol::Postgres,
        Some("redis") => Protocol::Redis,
        _ => Protocol::Tcp,
    };
    let only = |name: &str, value: &Option<Spanned<Value>>, wanted: Protocol| match value {
        Some(v) if protocol != wanted => {
            let msg = format!(
                "only applies to protocol = \"{}\" (this listener's protocol is \"{}\")",
                wanted.as_str(),
                protocol.as_str()
            );
            Err(src.error(v.span(), &key(name), msg))
        }
        _ => Ok(()),
    };
    only("idle_in_transaction_timeout", file.idle_in_transaction_timeout, Protocol::Postgres)?;
    only("subscriber_idle_timeout", file.subscriber_idle_timeout, Protocol::Redis)?;
    let timer = Range::timer(tick, MAX_TIMEOUT);
    let in_transaction = file.idle_in_transaction_timeout;
    let idle_in_transaction_timeout =
        duration(src, &key("idle_in_transaction_timeout"), in_transaction, idle_timeout, timer)?;
    let subscriber = file.subscriber_idle_timeout;
    let subscriber_idle_timeout =
        duration_or_off(src, &key("subscriber_idle_timeout"), subscriber, None, timer, "never")?;
    Ok(ProtocolKeys { protocol, idle_in_transaction_timeout, subscriber_idle_timeout })
}

/// A protocol listener ends a session the protocol's way: no `idle_notice`, no reset.
pub(super) fn no_own_goodbye(
    src: &Source,
    key: &dyn Fn(&str) -> String,
    protocol: Protocol,
    idle_close: (IdleClose, &Option<Spanned<Value>>),
    idle_notice: (bool, &Option<Spanned<Value>>),
) -> Res<()> {
    let (reset, notice) = match protocol {
        Protocol::Tcp => return Ok(()),
        Protocol::Postgres => (
            "the client reads PostgreSQL's FATAL error and the server Terminate, which a reset \
             would discard",
            "the client is told in PostgreSQL's own words (FATAL 57P05 or 25P03)",
        ),
        Protocol::Redis => (
            "a reaped Redis client is closed as Redis closes one, with a FIN",
            "a reaped Redis client is sent nothing, as Redis itself sends nothing (an unsolicited \
             error would be read as the reply to its next command)",
        ),
    };
    let name = protocol.as_str();
    if let (IdleClose::Rst, Some(v)) = idle_close {
        let msg = format!("cannot be \"rst\" with protocol = \"{name}\": {reset}");
        return Err(src.error(v.span(), &key("idle_close"), msg));
    }
    if let (true, Some(v)) = idle_notice {
        let msg = format!("cannot be used with protocol = \"{name}\": {notice}");
        return Err(src.error(v.span(), &key("idle_notice"), msg));
    }
    Ok(())
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
