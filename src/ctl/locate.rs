//! Where `idlereaperctl` finds the control socket (and, for an upgrade by signal, the pidfile)
//! without trusting the whole configuration file: `-s SOCKET`; else the `[control]` table's
//! `socket`, read by toml's recovering parser so that a syntax error elsewhere — the broken
//! edit an operator wants to `reload` — still yields it; else the packaged default. A file that
//! cannot be read or parsed is a warning, never a failure: the daemon, not this tool, judges the
//! file.

use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

/// The control socket of the packaged configuration.
pub const DEFAULT_SOCKET: &str = "/run/idlereaper/control.sock";
/// The pidfile when `daemon.pidfile` is not set.
pub const DEFAULT_PIDFILE: &str = "/run/idlereaper/idlereaper.pid";

/// A path and where it came from, for the messages about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub path: PathBuf,
    /// `from -s`, `the [control] socket of /etc/idlereaper.toml`, `the packaged default (…)`.
    pub origin: String,
}

/// What the configuration file says of one key, read leniently, and what to warn of.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Lenient {
    /// The key's string value; `None` if the file, the table or the key is not there.
    pub value: Option<String>,
    /// Why the file could not be read, or could not be parsed whole (then `value` is what the
    /// recovering parser made of it).
    pub warning: Option<String>,
}

/// The string at `table.key` in the file at `config`.
pub fn lenient(config: &Path, table: &str, key: &str) -> Lenient {
    match std::fs::read(config) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let (value, error) = string_in(&text, table, key);
            // `file:line:col: message`, as the daemon shows its errors.
            let warning = error.map(|e| match e.starts_with(|c: char| c.is_ascii_digit()) {
                true => format!("{}:{e}", config.display()),
                false => format!("{}: {e}", config.display()),
            });
            Lenient { value, warning }
        }
        Err(e) => Lenient { value: None, warning: Some(format!("cannot read {}: {e}", config.display())) },
    }
}

/// The string at `table.key` in `text`, and the first syntax error if there is one. With an
/// error, the value is what toml's recovering parser read of the whole text or, failing that,
/// of the table's own lines (from its `[table]` header to the next header).
pub fn string_in(text: &str, table: &str, key: &str) -> (Option<String>, Option<String>) {
    let (value, errors) = recovered(text, table, key);
    let error = errors.first().map(|e| {
        let at = e.span().map(|s| line_col(text, s.start)).map(|(l, c)| format!("{l}:{c}: "));
        format!("{}{}", at.unwrap_or_default(), e.message())
    });
    let value = match (value, &error) {
        (None, Some(_)) => table_lines(text, table).and_then(|lines| recovered(&lines, table, key).0),
        (value, _) => value,
    };
    (value, error)
}

/// What the recovering parser reads at `table.key`, and the errors it found.
fn recovered(text: &str, table: &str, key: &str) -> (Option<String>, Vec<toml::de::Error>) {
    let (doc, errors) = DeTable::parse_recoverable(text);
    let value = doc.get_ref().get(table).and_then(|t| match t.get_ref() {
        DeValue::Table(t) => match t.get(key)?.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            _ => None,
        },
        _ => None,
    });
    (value, errors)
}

/// The lines of `[table]`: its header and what follows up to the next header line.
fn table_lines(text: &str, table: &str) -> Option<String> {
    let header = format!("[{table}]");
    let is_header = |line: &str| line.split('#').next().unwrap_or("").trim() == header;
    let mut lines = text.lines().skip_while(|l| !is_header(l));
    let first = lines.next()?;
    let rest = lines.take_while(|l| !l.trim_start().starts_with('['));
    Some(std::iter::once(first).chain(rest).collect::<Vec<_>>().join("\n"))
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The control socket: `option` (`-s`), else the `[control]` socket of the file at `config`,
/// else [`DEFAULT_SOCKET`]; with a warning when the file could not be read or parsed whole.
pub fn socket(option: Option<&Path>, config: &Path) -> (Located, Option<String>) {
    if let Some(path) = option {
        return (Located { path: path.to_owned(), origin: "given with -s".to_owned() }, None);
    }
    let read = lenient(config, "control", "socket");
    let located = match read.value {
        Some(path) => {
            Located { path: path.into(), origin: format!("the [control] socket of {}", config.display()) }
        }
        None => {
            let why = match &read.warning {
                Some(_) => format!("none found in {}", config.display()),
                None => format!("{} has no [control] socket", config.display()),
            };
            Located { path: DEFAULT_SOCKET.into(), origin: format!("the packaged default ({why})") }
        }
    };
    (located, read.warning)
}

/// The daemon's pidfile: `daemon.pidfile` of the file at `config`, else [`DEFAULT_PIDFILE`].
pub fn pidfile(config: &Path) -> (Located, Option<String>) {
    let read = lenient(config, "daemon", "pidfile");
    let located = match read.value {
        Some(path) => {
            Located { path: path.into(), origin: format!("daemon.pidfile of {}", config.display()) }
        }
        None => Located { path: DEFAULT_PIDFILE.into(), origin: "the default pidfile".to_owned() },
    };
    (located, read.warning)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTROL: &str = "[control]\nsocket = \"/run/x/control.sock\"\n";

    #[test]
    fn the_socket_is_read_past_a_syntax_error_elsewhere() {
        for broken in [
            "[daemon]\ntick = \n",
            "[daemon]\ntick = \"1ms\n",
            "[[listener]]\nname = \"a\"\nlisten = 127.0.0.1:7000\n",
            "[[listener]\nname = \"a\"\n",
            "garbage that is not toml at all\n",
        ] {
            for text in [format!("{broken}{CONTROL}"), format!("{CONTROL}{broken}")] {
                let (value, error) = string_in(&text, "control", "socket");
                assert_eq!(value.as_deref(), Some("/run/x/control.sock"), "{text:?}: {error:?}");
                assert!(error.is_some(), "{text:?}: the syntax error is reported");
            }
        }
    }

    #[test]
    fn a_valid_file_gives_its_value_without_warning_and_a_missing_one_gives_none() {
        let (value, error) = string_in(&format!("[daemon]\nworkers = 2\n{CONTROL}"), "control", "socket");
        assert_eq!((value.as_deref(), error), (Some("/run/x/control.sock"), None));
        // Unknown keys and values out of range are the daemon's to judge: no warning here.
        let (value, error) = string_in("[daemon]\nbogus = 1\n", "control", "socket");
        assert_eq!((value, error), (None, None));
        let (value, _) = string_in("[control]\nsocket = 5\n", "control", "socket");
        assert_eq!(value, None, "not a string");
        let (_, error) = string_in("[daemon]\n\ntick = \n", "control", "socket");
        assert!(error.as_deref().is_some_and(|e| e.starts_with("3:")), "{error:?}");
    }

    #[test]
    fn the_option_wins_and_an_unreadable_file_falls_back_to_the_default_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let (located, warning) = socket(Some(Path::new("/tmp/s.sock")), &dir.path().join("nothing"));
        assert_eq!((located.path, warning), (PathBuf::from("/tmp/s.sock"), None));
        let (located, warning) = socket(None, &dir.path().join("nothing"));
        assert_eq!(located.path, PathBuf::from(DEFAULT_SOCKET));
        assert!(warning.is_some_and(|w| w.starts_with("cannot read ")));
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[[listener]]\n").unwrap();
        let (located, warning) = socket(None, &file);
        assert_eq!((located.path, warning), (PathBuf::from(DEFAULT_SOCKET), None));
        assert!(located.origin.contains("has no [control] socket"), "{}", located.origin);
        std::fs::write(&file, format!("[daemon]\npidfile = \"/run/p.pid\"\n{CONTROL}")).unwrap();
        assert_eq!(socket(None, &file).0.path, PathBuf::from("/run/x/control.sock"));
        assert_eq!(pidfile(&file).0.path, PathBuf::from("/run/p.pid"));
    }
}
