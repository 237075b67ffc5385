//! The program's error type: a configuration error (exit status 2) or a failed operation with
//! what was being done (exit status 1). A leaf below every layer that can fail at start-up
//! (daemon, listeners, logging, the start-up sequence), so that none of them imports another.

use std::fmt;
use std::io;

use crate::config::ConfigError;

/// Why the program failed.
#[derive(Debug)]
pub enum Error {
    /// The configuration is invalid or unreadable (exit status 2).
    Config(ConfigError),
    /// An operation failed; `context` says on what.
    Io { context: String, source: io::Error },
    /// Anything else, fully described.
    Message(String),
}

impl Error {
    /// An I/O error with what we were doing.
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io { context: context.into(), source }
    }

    /// The process exit status for this error.
    pub fn exit_status(&self) -> u8 {
        match self {
            Error::Config(_) => 2,
            Error::Io { .. } | Error::Message(_) => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => write!(f, "{e}"),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::Message(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Config(e) => Some(e),
            Error::Io { source, .. } => Some(source),
            Error::Message(_) => None,
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Error {
        Error::Config(e)
    }
}

/// Prints an error for a person, on stderr (the terminal, before daemonizing).
pub fn report(err: &Error) {
    eprintln!("idlereaper: {err}");
}
