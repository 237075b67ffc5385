//! `allow` and `deny`, a listener's source networks: arrays of strings, each a CIDR network
//! without host bits (`"10.0.0.0/8"`, `"2001:db8::/32"`) or a bare address, which is a network
//! of one.

use std::net::IpAddr;

use ipnet::IpNet;
use toml::{Spanned, Value};

use super::super::locate::Source;
use super::super::value::{found, wrong_type};
use super::super::Res;

/// `allow` or `deny`: an array of network strings (see [`network`]); empty when absent. An error
/// about one of them names it by its index, `listener[0].allow[2]`, and points at it.
pub(super) fn networks(src: &Source, key: &str, value: &Option<Spanned<Value>>) -> Res<Vec<IpNet>> {
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
pub(super) fn network(text: &str) -> Result<IpNet, String> {
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
