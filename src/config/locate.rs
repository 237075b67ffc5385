//! Step 3 of the config pipeline: errors that point into the file ([`ConfigError`]).
//!
//! Errors carry byte spans: toml's own errors (syntax, types, unknown keys) and the
//! [`toml::Spanned`] values that validation rejects. This module turns a span into a 1-based line
//! and column, and, for toml's errors, finds the dotted key (`listener[1].foo`) that toml does not
//! report with its array index. It also finds the span of an array's element, which a
//! [`toml::Value`] does not carry.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

/// Where a value is in the configuration file, as a [`ConfigError`] shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
}

/// A configuration error, for a person to read.
///
/// Displayed as `<file>:<line>:<col>: <key>: <message>`; the parts the error has no value for are
/// left out, e.g. `<file>: cannot read: No such file or directory (os error 2)`.
#[derive(Debug)]
pub struct ConfigError {
    pub path: PathBuf,
    /// 1-based.
    pub line: Option<usize>,
    /// 1-based, in characters.
    pub column: Option<usize>,
    /// `daemon.tick`, `listener[1].idle_timeout`, …
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

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
        let mut key = key_at(self.text, e.span()).unwrap_or_default();
        let mut msg = e.message().to_owned();
        // The recovering parser drops a key set twice: name it from the text, as `key = `.
        let name = e.span().and_then(|s| Some((self.text.get(s.clone())?, self.text.get(s.end..)?)));
        if let (true, Some((name, after))) = (msg == "duplicate key", name) {
            if after.trim_start().starts_with('=') {
                key = if key.is_empty() { name.to_owned() } else { format!("{key}.{name}") };
                msg.push_str(": set twice in the same table");
            }
        }
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

/// Reads the file at `path` as text. One that is not UTF-8 is an error at its first byte that
/// is not, with the key being read there.
pub(super) fn read(path: &Path) -> Result<String, ConfigError> {
    let bytes = std::fs::read(path)
        .map_err(|e| Source { path, text: "" }.error(None, "", format!("cannot read: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        // Same text up to `at`, so the same line and column; and TOML to find the key in.
        let lossy = String::from_utf8_lossy(e.as_bytes());
        let key = key_at(&lossy, Some(at..at + 1)).unwrap_or_default();
        let msg = format!("byte 0x{:02X} is not valid UTF-8, which the file must be", e.as_bytes()[at]);
        Source { path, text: &lossy }.error(at..at + 1, &key, msg)
    })
}

/// The dotted key (`listener[1].foo`) being read at the start of `span`: the innermost key or
/// value there; else (a syntax error between them) a key earlier on the same line; else the
/// table whose header comes last before it. toml's recovering parser reads what it can of a
/// file with syntax errors, so that these get a key too. `None` when nothing comes before.
fn key_at(text: &str, span: Option<Span>) -> Option<String> {
    let offset = span?.start;
    let (doc, _) = DeTable::parse_recoverable(text);
    let mut nodes = Vec::new();
    for (k, v) in doc.get_ref() {
        collect(text, &mut nodes, k.get_ref().to_string(), [k.span(), v.span()], v.get_ref(), 0);
    }
    let hit = |s: &Span| s.contains(&offset) || s.start == offset;
    // The first of the deepest: `max_by_key` keeps the last of equals, hence `rev`.
    let innermost = nodes.iter().rev().filter(|n| n.spans.iter().any(hit)).max_by_key(|n| n.depth);
    let line_start = text.get(..offset).and_then(|t| t.rfind('\n')).map_or(0, |i| i + 1);
    let same_line = || {
        let on_line = |n: &&Node| (line_start..offset).contains(&n.spans[0].start);
        nodes.iter().filter(on_line).max_by_key(|n| (n.spans[0].start, n.depth))
    };
    let table = || {
        let header = |n: &&Node| n.header && n.spans[1].start < offset;
        nodes.iter().filter(header).max_by_key(|n| (n.spans[1].start, n.depth))
    };
    innermost.or_else(same_line).or_else(table).map(|n| n.key.clone())
}

/// A key or an array element of the document, with where it is.
struct Node {
    key: String,
    depth: usize,
    /// The key's and the value's (an array element has its own twice).
    spans: [Span; 2],
    /// A table written as a `[header]` or `[[header]]`: its value span is the header.
    header: bool,
}

fn collect(
    text: &str,
    nodes: &mut Vec<Node>,
    key: String,
    spans: [Span; 2],
    value: &DeValue<'_>,
    depth: usize,
) {
    let bracket = text.get(spans[1].start..).is_some_and(|t| t.starts_with('['));
    let header = matches!(value, DeValue::Table(_)) && bracket;
    nodes.push(Node { key: key.clone(), depth, spans: spans.clone(), header });
    match value {
        DeValue::Table(t) => {
            for (k, v) in t {
                let (key, spans) = (format!("{key}.{}", k.get_ref()), [k.span(), v.span()]);
                collect(text, nodes, key, spans, v.get_ref(), depth + 1);
            }
        }
        DeValue::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                collect(text, nodes, format!("{key}[{i}]"), [v.span(), v.span()], v.get_ref(), depth + 1);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::tests::{daemon, parse, rejected, LISTENER, PATH};
    use super::super::Config;
    use super::*;

    #[test]
    fn missing_file_error_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.toml");
        let e = Config::load(&path, None).unwrap_err();
        assert_eq!((e.line, e.column, e.key.as_deref()), (None, None, None));
        let enoent = "cannot read: No such file or directory (os error 2)";
        assert_eq!(e.to_string(), format!("{}: {enoent}", path.display()));
    }

    #[test]
    fn unknown_keys_are_errors_with_their_position() {
        let top = format!("colour = 1\n{LISTENER}");
        assert_eq!(rejected(&top, "colour", 1, "unknown field `colour`").column, Some(1));
        let msg = "unknown field `tik`, expected one of `pidfile`, `log`, `log_level`, `log_format`, `tick`";
        rejected(&daemon("tik = \"1ms\""), "daemon.tik", 2, msg);
        rejected(&daemon("[daemon.sub]\nq = 1"), "daemon.sub", 2, "unknown field `sub`");
        let second = format!("{LISTENER}[[listener]]\nname = \"b\"\n  idle = \"1s\"\n");
        let e = rejected(&second, "listener[1].idle", 7, "unknown field `idle`");
        assert_eq!(e.column, Some(3));
        // Columns count characters, not bytes.
        let inline = "listener = [{ name = \"é\", zzz = 1 }]\n";
        let e = rejected(inline, "listener[0].zzz", 1, "unknown field `zzz`");
        assert_eq!(e.column, Some(27));
    }

    #[test]
    fn syntax_errors_have_a_position_and_the_key_being_read() {
        let e = rejected("[daemon\n", "daemon", 1, "unclosed table, expected `]`");
        assert_eq!(e.column, Some(8));
        let e = rejected(&format!("{LISTENER}name = \"b\"\n"), "listener[0].name", 5, "duplicate key");
        assert_eq!(e.message, "duplicate key: set twice in the same table");
        let two = format!("{LISTENER}[[listener]]\nname = \"b\"\n");
        rejected(&format!("{two}idle_timeout = 5s\n"), "listener[1].idle_timeout", 7, "must be quoted");
        rejected(&format!("{two}listen = 127.0.0.1:7001\n"), "listener[1].listen", 7, "invalid float");
        rejected(
            &format!("{two}upstream = \"127.0.0.1:1\" x\n"),
            "listener[1].upstream",
            7,
            "expected newline",
        );
        rejected(&format!("{two}allow = [\"::1\",\n"), "listener[1].allow[0]", 7, "unclosed array");
        rejected(&format!("{two}x\n"), "listener[1]", 7, "");
        let e = parse("= 5\n").unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(1), None), "{e}"); // nothing before it
    }

    #[test]
    fn a_file_that_is_not_utf8_is_an_error_at_the_first_bad_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latin1.toml");
        let mut text = format!("{LISTENER}[[listener]]\nname = \"caf").into_bytes();
        text.extend_from_slice(b"\xe9\"\nlisten = \"127.0.0.1:7001\"\nidle_timeout = \"1s\"\n");
        std::fs::write(&path, text).unwrap();
        let e = Config::load(&path, None).unwrap_err();
        let shown = format!(
            "{}:6:12: listener[1].name: byte 0xE9 is not valid UTF-8, which the file must be",
            path.display()
        );
        assert_eq!(e.to_string(), shown);
        std::fs::write(&path, b"\xff\xfe[daemon]\n").unwrap();
        let e = Config::load(&path, None).unwrap_err();
        assert_eq!((e.line, e.column, e.key.as_deref()), (Some(1), Some(1), None), "{e}");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let n = 100_000;
        let e = parse(&format!("{LISTENER}x = {}1{}\n", "[".repeat(n), "]".repeat(n))).unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
    }

    #[test]
    fn line_col_edges() {
        let src = Source { path: Path::new(PATH), text: "ab\nçd\n" };
        assert_eq!(src.line_col(0), (1, 1));
        assert_eq!(src.line_col(3), (2, 1));
        assert_eq!(src.line_col(5), (2, 2)); // after the two-byte 'ç'
        assert_eq!(src.line_col(4), (2, 1)); // inside 'ç': rounded down
        assert_eq!(src.line_col(99), (3, 1)); // past the end: clamped
    }
}
