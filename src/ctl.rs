//! The client side of the control socket, for `idlereaperctl`: where the socket is (`-s PATH`,
//! or the `[control]` table of the configuration file), and one request answered. The protocol
//! is one request line; the daemon writes the answer, an empty line to end it, and closes. An
//! answer without that end was cut short (the daemon gave up on a reader that did not keep up,
//! or stopped): an error, never a shorter answer. An answer whose first line starts with
//! `error:` is a refusal.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Config;

/// How long the daemon may take to answer (an upgrade checks the new binary first).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request got no answer, or a refusal.
#[derive(Debug)]
pub enum Failure {
    /// The daemon could not be reached (exit status 1): the message names the socket and why.
    Unreachable(String),
    /// The daemon refused the request (exit status 2): its `error:` line, without the prefix.
    Refused(String),
    /// The answer stopped before its end (exit status 1): what was received is not shown.
    Truncated(String),
}

impl Failure {
    pub fn exit_status(&self) -> i32 {
        match self {
            Failure::Unreachable(_) | Failure::Truncated(_) => 1,
            Failure::Refused(_) => 2,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unreachable(m) | Failure::Refused(m) | Failure::Truncated(m) => f.write_str(m),
        }
    }
}

/// The control socket named by the `[control]` table of the configuration file at `config`.
pub fn socket_in(config: &Path) -> Result<PathBuf, Failure> {
    let text = std::fs::read_to_string(config).map_err(|e| {
        Failure::Unreachable(format!(
            "cannot read {}: {e} (or give the socket with -s PATH)",
            config.display()
        ))
    })?;
    let parsed = Config::parse(&text, config).map_err(|e| Failure::Unreachable(e.to_string()))?;
    match parsed.control {
        Some(control) => Ok(control.socket),
        None => Err(Failure::Unreachable(format!(
            "{} has no [control] table: the daemon has no control socket (or give one with -s PATH)",
            config.display()
        ))),
    }
}

/// Sends `request` (one line) to the daemon at `socket` and returns its answer, without the
/// empty line that ends it.
pub fn ask(socket: &Path, request: &str) -> Result<String, Failure> {
    let unreachable =
        |e: io::Error| Failure::Unreachable(format!("cannot reach the daemon at {}: {e}", socket.display()));
    let mut stream = UnixStream::connect(socket).map_err(unreachable)?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(unreachable)?;
    // A daemon that refuses the peer answers at once and closes, perhaps before the request
    // is written: its answer is read all the same.
    let sent = stream.write_all(format!("{request}\n").as_bytes());
    let mut answer = String::new();
    let read = stream.read_to_string(&mut answer);
    if answer.is_empty() {
        sent.and(read).map_err(unreachable)?;
        return Err(Failure::Unreachable(format!(
            "the daemon at {} closed without an answer",
            socket.display()
        )));
    }
    let Some(answer) = answer.strip_suffix("\n\n") else {
        let why = read.err().map(|e| format!(": {e}")).unwrap_or_default();
        return Err(Failure::Truncated(format!(
            "answer truncated: the daemon at {} closed after {} bytes, before the end of its answer{why}",
            socket.display(),
            answer.len()
        )));
    };
    match answer.strip_prefix("error: ") {
        Some(refusal) => Err(Failure::Refused(refusal.trim_end().to_owned())),
        None => Ok(format!("{answer}\n")),
    }
}
