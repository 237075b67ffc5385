//! Step 3 of the config pipeline: errors that point into the file.
//!
//! Errors carry byte spans: toml's own errors (syntax, types, unknown keys) and the
//! [`toml::Spanned`] values that validation rejects. This module turns a span into a 1-based line
//! and column, and, for toml's errors, finds the dotted key (`listener[1].foo`) that toml does not
//! report with its array index. It also finds the span of an array's element, which a
//! [`toml::Value`] does not carry.

use std::ops::Range;
use std::path::Path;

use toml::de::{DeTable, DeValue};

use super::{ConfigError, Position};

pub(super) type Span = Range<usize>;

/// The text being validated and the file it is from.
pub(super) struct Source<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
}

impl Source<'_> {
    /// An error at `span` (none: no line and column) for `key` (empty: none).
    pub(super) fn error(
        &self,
        span: impl Into<Option<Span>>,
        key: &str,
        msg: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = span.into().map(|s| self.line_col(s.start)).unzip();
        ConfigError {
            path: self.path.to_owned(),
            line,
            column,
            key: (!key.is_empty()).then(|| key.to_owned()),
            message: msg.into(),
        }
    }

    /// A toml syntax or type error. toml gives the span but not the array index of the key, so
    /// the key is found again from the span.
    pub(super) fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let key = key_at(self.text, e.span()).unwrap_or_default();
        let mut msg = e.message().to_owned();
        if key == "listener" && msg.contains("expected a sequence") {
            msg.push_str("; write each listener as a [[listener]] table");
        }
        self.error(e.span(), &key, msg)
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub(super) fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (before.matches('\n').count() + 1, column)
    }

    /// Where `span` starts.
    pub(super) fn position(&self, span: &Span) -> Position {
        let (line, column) = self.line_col(span.start);
        Position { line, column }
    }

    pub(super) fn line_of(&self, span: &Span) -> usize {
        self.line_col(span.start).0
    }

    /// The span of element `index` of the inline array whose span is `array`; `None` if there is
    /// no such element (`array` is not an inline array: an array of tables, say). Serde's view of
    /// a value has a span only for the whole array, so errors about an element come here.
    pub(super) fn element_span(&self, array: &Span, index: usize) -> Option<Span> {
        let value = DeValue::parse(self.text.get(array.clone())?).ok()?;
        let DeValue::Array(items) = value.get_ref() else { return None };
        let item = items.get(index)?.span();
        Some(array.start + item.start..array.start + item.end)
    }
}

/// The dotted key (`listener[1].foo`) of the innermost key or value at the start of `span`;
/// `None` when there is none or the text is not valid TOML.
fn key_at(text: &str, span: Option<Span>) -> Option<String> {
    let doc = DeTable::parse(text).ok()?;
    let mut finder = KeyFinder { offset: span?.start, found: None };
    for (k, v) in doc.get_ref() {
        finder.visit(k.get_ref().to_string(), [k.span(), v.span()], v.get_ref(), 0);
    }
    finder.found.map(|(_, key)| key)
}

struct KeyFinder {
    offset: usize,
    /// Depth and key of the innermost hit so far.
    found: Option<(usize, String)>,
}

impl KeyFinder {
    fn visit(&mut self, key: String, spans: [Span; 2], value: &DeValue<'_>, depth: usize) {
        let hit = |s: &Span| s.contains(&self.offset) || s.start == self.offset;
        let deepest = self.found.as_ref().filter(|(d, _)| *d >= depth).is_none();
        if deepest && spans.iter().any(hit) {
            self.found = Some((depth, key.clone()));
        }
        match value {
            DeValue::Table(t) => {
                for (k, v) in t {
                    let (key, spans) = (format!("{key}.{}", k.get_ref()), [k.span(), v.span()]);
                    self.visit(key, spans, v.get_ref(), depth + 1);
                }
            }
            DeValue::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    self.visit(format!("{key}[{i}]"), [v.span(), v.span()], v.get_ref(), depth + 1);
                }
            }
            _ => {}
        }
    }
}
