//! The keys the file accepts, table by table, read from the file structs themselves: the list
//! serde's derive hands to `deserialize_struct`, which is the one `deny_unknown_fields` checks a
//! key against (and names in its "expected one of" message). A key added to a struct is in
//! this list by construction, so that the reference documentation (idlereaper.toml(5), the
//! README's table, the sample config) can be held to it by a test.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};

use super::FileConfig;
use super::{control::FileControl, daemon::FileDaemon, daemon::FileMetrics, listener::FileListener};

/// One table of the file (`daemon`, `listener`, `metrics`, `control`) and its keys, in the
/// order of the struct's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableKeys {
    pub table: &'static str,
    pub keys: &'static [&'static str],
}

/// Every table of the file with its keys, in the order of `FileConfig`'s fields.
pub fn file_keys() -> Vec<TableKeys> {
    let keys_of = |table: &str| match table {
        "daemon" => fields_of::<FileDaemon>(),
        "listener" => fields_of::<FileListener>(),
        "metrics" => fields_of::<FileMetrics>(),
        "control" => fields_of::<FileControl>(),
        other => unreachable!("a table without its struct here: {other}"),
    };
    fields_of::<FileConfig>().iter().map(|&table| TableKeys { table, keys: keys_of(table) }).collect()
}

/// The field names serde's derive gives `deserialize_struct` for `T`: asked of a deserializer
/// that records them and stops.
fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldNames(&mut fields));
    fields
}

/// A deserializer that only records the field list of the struct asked of it.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

/// What [`FieldNames`] answers every request with, once it has what it wanted.
#[derive(Debug)]
struct Recorded;

impl fmt::Display for Recorded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field names recorded")
    }
}

impl std::error::Error for Recorded {}

impl de::Error for Recorded {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Recorded
    }
}

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = Recorded;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Recorded> {
        Err(Recorded)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Recorded> {
        *self.0 = fields;
        Err(Recorded)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::Config;
    use super::*;

    #[test]
    fn every_table_has_the_keys_its_struct_declares() {
        let tables = file_keys();
        let names: Vec<&str> = tables.iter().map(|t| t.table).collect();
        assert_eq!(names, ["daemon", "listener", "metrics", "control"]);
        let keys = |table: &str| tables.iter().find(|t| t.table == table).unwrap().keys;
        assert_eq!(keys("metrics"), ["listen"]);
        assert_eq!(keys("control"), ["socket", "mode"]);
        assert!(keys("daemon").starts_with(&["pidfile", "log", "log_level"]), "{:?}", keys("daemon"));
        assert!(keys("listener").contains(&"subscriber_idle_timeout"), "{:?}", keys("listener"));
    }

    #[test]
    fn the_list_is_the_one_unknown_keys_are_checked_against() {
        for table in file_keys() {
            let text = match table.table {
                "listener" => "[[listener]]\nno_such_key = 1\n".to_owned(),
                name => format!("[{name}]\nno_such_key = 1\n"),
            };
            let Err(error) = Config::parse(&text, Path::new("t.toml")) else {
                panic!("{}: an unknown key was accepted", table.table);
            };
            // serde's wording: `a`; `a` or `b`; one of `a`, `b`, `c`.
            let quoted: Vec<String> = table.keys.iter().map(|k| format!("`{k}`")).collect();
            let expected = match quoted.as_slice() {
                [one] => format!("expected {one}"),
                [a, b] => format!("expected {a} or {b}"),
                all => format!("expected one of {}", all.join(", ")),
            };
            assert!(error.to_string().contains(&expected), "{}: {error}", table.table);
        }
    }
}
