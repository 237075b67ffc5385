//! `upstream`, where a relay listener connects: one address string or an array of them, each
//! read by [`address::upstream`]; absent for a sink.

use toml::{Spanned, Value};

use super::super::address::{self, Upstream};
use super::super::locate::{Source, Span};
use super::super::value::{found, wrong_type};
use super::super::Res;

/// `upstream`: one address string or an array of them (see [`address::upstream`]); absent
/// for a sink. Not empty, no duplicates. Returns the entries and their spans.
pub(super) fn upstreams(
    src: &Source,
    key: &str,
    value: &Option<Spanned<Value>>,
) -> Res<(Vec<Upstream>, Vec<Span>)> {
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
