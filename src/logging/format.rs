//! How one log line is written, from a record's message and its fields (the `log` facade's
//! key-values): as text, `2026-11-27T03:24:57.123Z INFO conn closed id=17 listener=pg …`, or as
//! one JSON object, `{"time":"…","level":"INFO","msg":"conn closed","id":17,"listener":"pg",…}`.
//!
//! A line's fields are given once, where it is logged (`info!(id, listener; "conn closed")`),
//! with their types: an integer or a float is a JSON number, a boolean a JSON boolean, anything
//! else (a string, an address, a reason) a JSON string. A field whose value is absent (`None`)
//! is left out of both forms. In the text form a value is written as it is unless it is empty
//! or holds a space, a quote, `=`, a backslash or a control character: then it is quoted, with
//! `"` and `\` escaped (logfmt's rule), so that `key=value` pairs can always be split again.
//! No field is named `time`, `level` or `msg`, the members every JSON line starts with.

use std::fmt::{self, Write as _};

use log::kv::{self, Key, Source, Value, VisitSource, VisitValue};
use log::Record;

use crate::config::LogFormat;

/// The whole line for a file or stderr, its newline included.
pub(super) fn line(format: LogFormat, time: impl fmt::Display, record: &Record<'_>) -> String {
    let mut out = String::with_capacity(192);
    match format {
        LogFormat::Text => {
            let _ = write!(out, "{time} {} ", record.level());
            text_into(&mut out, record.args(), record.key_values());
        }
        LogFormat::Json => json_into(&mut out, &time.to_string(), record),
    }
    out.push('\n');
    out
}

/// What syslog is given as the message: the text form without time and level (its header has
/// them), or the whole JSON object, time and level included, as every destination writes it.
pub(super) fn syslog_message(format: LogFormat, time: impl fmt::Display, record: &Record<'_>) -> String {
    let mut out = String::with_capacity(160);
    match format {
        LogFormat::Text => text_into(&mut out, record.args(), record.key_values()),
        LogFormat::Json => json_into(&mut out, &time.to_string(), record),
    }
    out
}

/// The text form of a message and its fields, `message key=value …`: what a line says, for
/// the places that show it besides the log (a control client's answer, systemd's status).
pub fn text(message: &str, fields: &dyn Source) -> String {
    let mut out = String::with_capacity(128);
    text_into(&mut out, &format_args!("{message}"), fields);
    out
}

fn text_into(out: &mut String, message: &fmt::Arguments<'_>, fields: &dyn Source) {
    let _ = write!(out, "{message}");
    let _ = fields.visit(&mut Fields { out, json: false });
}

fn json_into(out: &mut String, time: &str, record: &Record<'_>) {
    out.push_str("{\"time\":");
    json_string(out, time);
    out.push_str(",\"level\":");
    json_string(out, record.level().as_str());
    out.push_str(",\"msg\":");
    match record.args().as_str() {
        Some(message) => json_string(out, message),
        None => json_string(out, &record.args().to_string()),
    }
    let _ = record.key_values().visit(&mut Fields { out, json: true });
    out.push('}');
}

/// The members every JSON line has: no field may take these names.
const RESERVED: [&str; 3] = ["time", "level", "msg"];

/// Writes each present field, ` key=value` (text) or `,"key":value` (JSON), straight into the
/// line: a field is written, then taken back if its value turns out to be absent, and a value
/// is copied aside only when it must be quoted or escaped.
struct Fields<'a> {
    out: &'a mut String,
    json: bool,
}

impl<'kvs> VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), kv::Error> {
        debug_assert!(!RESERVED.contains(&key.as_str()), "a field named {key} would repeat a JSON member");
        let mark = self.out.len();
        match self.json {
            true => {
                self.out.push(',');
                json_string(self.out, key.as_str());
                self.out.push(':');
            }
            false => {
                let _ = write!(self.out, " {key}=");
            }
        }
        let mut field = Field { out: &mut *self.out, json: self.json, absent: false };
        let _ = value.visit(&mut field);
        if field.absent {
            self.out.truncate(mark);
        }
        Ok(())
    }
}

/// One value, written as its type says.
struct Field<'a> {
    out: &'a mut String,
    json: bool,
    absent: bool,
}

impl Field<'_> {
    fn number(&mut self, n: impl fmt::Display) {
        let _ = write!(self.out, "{n}");
    }

    fn string(&mut self, s: &str) {
        match self.json {
            true => json_string(self.out, s),
            false if needs_quotes(s) => quoted(self.out, s),
            false => self.out.push_str(s),
        }
    }
}

impl<'v> VisitValue<'v> for Field<'_> {
    /// Anything else is shown as a string (`Display`): written in place, then quoted if it
    /// must be.
    fn visit_any(&mut self, value: Value<'_>) -> Result<(), kv::Error> {
        let at = self.out.len();
        let _ = write!(self.out, "{value}");
        let plain = match self.json {
            true => !self.out[at..].chars().any(|c| c == '"' || c == '\\' || c.is_control()),
            false => !needs_quotes(&self.out[at..]),
        };
        match (plain, self.json) {
            (true, true) => self.out.insert(at, '"'),
            (true, false) => return Ok(()),
            (false, _) => {
                let shown = self.out.split_off(at);
                self.string(&shown);
                return Ok(());
            }
        }
        self.out.push('"');
        Ok(())
    }

    fn visit_null(&mut self) -> Result<(), kv::Error> {
        self.absent = true;
        Ok(())
    }

    fn visit_u64(&mut self, value: u64) -> Result<(), kv::Error> {
        self.number(value);
        Ok(())
    }

    fn visit_i64(&mut self, value: i64) -> Result<(), kv::Error> {
        self.number(value);
        Ok(())
    }

    fn visit_u128(&mut self, value: u128) -> Result<(), kv::Error> {
        self.number(value);
        Ok(())
    }

    fn visit_i128(&mut self, value: i128) -> Result<(), kv::Error> {
        self.number(value);
        Ok(())
    }

    /// The shortest form that reads back as the same number, always with a point or an
    /// exponent (`12.0`, `0.5`, `1e21`), so that it reads as a float in either form; JSON has
    /// no NaN or infinity: those are null there.
    fn visit_f64(&mut self, value: f64) -> Result<(), kv::Error> {
        match (self.json, value.is_finite()) {
            (true, false) => self.out.push_str("null"),
            _ => {
                let _ = write!(self.out, "{value:?}");
            }
        }
        Ok(())
    }

    fn visit_bool(&mut self, value: bool) -> Result<(), kv::Error> {
        self.number(value);
        Ok(())
    }

    fn visit_str(&mut self, value: &str) -> Result<(), kv::Error> {
        self.string(value);
        Ok(())
    }

    fn visit_char(&mut self, value: char) -> Result<(), kv::Error> {
        self.string(value.encode_utf8(&mut [0; 4]));
        Ok(())
    }
}

fn needs_quotes(s: &str) -> bool {
    s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '=' | '\\'))
}

/// `"…"` with `"` and `\` escaped and control characters written as escapes, so that a value
/// never ends its line.
fn quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A JSON string, escaped as RFC 8259 asks.
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::kv::ToValue;
    use log::Level;

    const TIME: &str = "2026-11-27T03:24:57.123Z";

    fn both(record: &Record<'_>) -> (String, serde_json::Value) {
        let text = line(LogFormat::Text, TIME, record);
        let json = line(LogFormat::Json, TIME, record);
        assert!(text.ends_with('\n') && json.ends_with('\n') && json.matches('\n').count() == 1);
        (text, serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}")))
    }

    #[test]
    fn the_same_fields_as_text_and_as_json_with_their_types() {
        let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 40312));
        let error: Option<Value<'_>> = None;
        let fields: [(&str, Value<'_>); 7] = [
            ("id", 17u64.into()),
            ("listener", "pg".into()),
            ("client", Value::from_display(&peer)),
            ("lifetime_ms", 300_004u64.into()),
            ("pause_ms", 12.0f64.into()),
            ("error", error.to_value()),
            ("delta", (-3i64).into()),
        ];
        let record = Record::builder()
            .level(Level::Info)
            .args(format_args!("conn closed"))
            .key_values(&fields)
            .build();
        let (text, json) = both(&record);
        assert_eq!(
            text,
            "2026-11-27T03:24:57.123Z INFO conn closed id=17 listener=pg client=127.0.0.1:40312 \
             lifetime_ms=300004 pause_ms=12.0 delta=-3\n"
        );
        let expected = serde_json::json!({
            "time": TIME, "level": "INFO", "msg": "conn closed", "id": 17, "listener": "pg",
            "client": "127.0.0.1:40312", "lifetime_ms": 300004, "pause_ms": 12.0, "delta": -3,
        });
        assert_eq!(json, expected, "an absent field is left out; numbers are numbers");
        assert!(json["pause_ms"].is_f64() && json["id"].is_u64());
    }

    #[test]
    fn values_that_would_break_a_line_are_quoted_and_escaped() {
        let odd = "a \"b\" = c\\d\nnext";
        let fields: [(&str, Value<'_>); 4] =
            [("error", odd.into()), ("empty", "".into()), ("plain", "x:1".into()), ("ok", true.into())];
        let quote = "\"hi\"".to_owned();
        // A message with arguments: written whole, then escaped, in JSON.
        let warn = |args: fmt::Arguments<'_>| {
            both(&Record::builder().level(Level::Warn).args(args).key_values(&fields).build())
        };
        let (text, json) = warn(format_args!("say {quote}"));
        assert_eq!(
            text,
            "2026-11-27T03:24:57.123Z WARN say \"hi\" error=\"a \\\"b\\\" = c\\\\d\\nnext\" empty=\"\" \
             plain=x:1 ok=true\n"
        );
        assert_eq!(json["msg"], "say \"hi\"");
        assert_eq!(json["error"], odd, "the JSON string reads back as the value");
        assert_eq!((json["empty"].as_str(), json["ok"].as_bool()), (Some(""), Some(true)));
    }

    #[test]
    fn a_line_without_fields_is_its_message() {
        let record = Record::builder().level(Level::Error).args(format_args!("stopped on error: x")).build();
        let (text, json) = both(&record);
        assert_eq!(text, "2026-11-27T03:24:57.123Z ERROR stopped on error: x\n");
        assert_eq!(json, serde_json::json!({"time": TIME, "level": "ERROR", "msg": "stopped on error: x"}));
        assert_eq!(syslog_message(LogFormat::Text, TIME, &record), "stopped on error: x");
        let syslog: serde_json::Value =
            serde_json::from_str(&syslog_message(LogFormat::Json, TIME, &record)).unwrap();
        assert_eq!(syslog, json, "syslog is given the same object");
    }

    #[test]
    fn non_finite_floats_are_null_in_json() {
        let fields: [(&str, Value<'_>); 1] = [("x", f64::NAN.into())];
        let record = Record::builder().level(Level::Info).args(format_args!("m")).key_values(&fields).build();
        assert_eq!(both(&record).1["x"], serde_json::Value::Null);
    }

    #[test]
    fn text_is_the_message_and_its_fields() {
        let fields: [(&str, Value<'_>); 2] =
            [("from", "0.1.0".into()), ("binary", "/opt/a b/idlereaper".into())];
        assert_eq!(text("upgraded", &fields), "upgraded from=0.1.0 binary=\"/opt/a b/idlereaper\"");
    }
}
