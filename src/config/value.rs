//! One value of the file, checked on its own: an integer in its range, a word from a list, an
//! octal mode; and how a message names a value (`shown`) and what was found instead of what was
//! expected (`wrong_type`). Durations have a module of their own (`duration`).

use toml::{Spanned, Value};

use super::locate::Source;
use super::{ConfigError, Res};

/// An integer key within `(min, max)`, or `default` when absent.
pub(super) fn integer(
    src: &Source,
    key: &str,
    value: &Option<Spanned<Value>>,
    default: usize,
    range: (i64, i64),
) -> Res<usize> {
    let (min, max) = range;
    let Some(v) = value else { return Ok(default) };
    match v.get_ref() {
        Value::Integer(n) if (min..=max).contains(n) => Ok(*n as usize), // in range, so it fits
        Value::Integer(n) => {
            let msg = format!("{n} is out of range: allowed {min} to {max}");
            Err(src.error(v.span(), key, msg))
        }
        _ => Err(wrong_type(src, key, v, "an integer")),
    }
}

pub(super) fn wrong_type(src: &Source, key: &str, value: &Spanned<Value>, expected: &str) -> ConfigError {
    src.error(value.span(), key, format!("expected {expected}, got {}", found(value.get_ref())))
}

/// A value's type, with the value itself when it is a scalar: `integer 5`, `string "5"`, `array`.
pub(super) fn found(v: &Value) -> String {
    match v {
        Value::Array(_) | Value::Table(_) => v.type_str().to_owned(),
        _ => format!("{} {v}", v.type_str()),
    }
}

/// A value as the file has it, for a message that quotes it: `"30s"`, `5`.
pub(super) fn shown(v: &Spanned<Value>) -> String {
    match v.get_ref() {
        Value::String(s) => format!("{s:?}"),
        v => v.to_string(),
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
