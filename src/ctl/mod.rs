//! The client side of the control socket, for `idlereaperctl`: where the socket is
//! ([`locate`]: `-s SOCKET`, or the `[control]` table of the configuration file read leniently,
//! or the packaged default), one request answered, and why not ([`reach`]: what to do about a
//! socket that cannot be reached); and an upgrade by signal for a daemon without a control
//! socket ([`by_signal`]). The protocol is one request line; the daemon writes the answer, an
//! empty line to end it, and closes. An answer without that end was cut short (the daemon gave
//! up on a reader that did not keep up, or stopped): an error, never a shorter answer. An answer
//! whose first line starts with `error:` is a refusal.

pub mod by_signal;
pub mod locate;
pub mod reach;

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long the daemon may take to answer (an upgrade checks the new binary first).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request got no answer, or a refusal; each with its exit status (idlereaperctl(8)).
#[derive(Debug)]
pub enum Failure {
    /// The daemon could not be reached (exit status 1): the message names the socket, why, and
    /// what to do.
    Unreachable(String),
    /// The answer stopped before its end (exit status 1): what was received is not shown.
    Truncated(String),
    /// The request matched nothing (exit status 1): a `kill` that closed no connection.
    Unmatched(String),
    /// The daemon refused the request (exit status 2): its `error:` line, without the prefix.
    Refused(String),
    /// The daemon took the request but gave no answer within the wait (exit status 3): an
    /// upgrade may still be under way.
    NoAnswer(String),
}

impl Failure {
    pub fn exit_status(&self) -> i32 {
        match self {
            Failure::Unreachable(_) | Failure::Truncated(_) | Failure::Unmatched(_) => 1,
            Failure::Refused(_) => 2,
            Failure::NoAnswer(_) => 3,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unreachable(m)
            | Failure::Refused(m)
            | Failure::Truncated(m)
            | Failure::Unmatched(m)
            | Failure::NoAnswer(m) => f.write_str(m),
        }
    }
}

/// Sends `request` (one line) to the daemon at `socket` and returns its answer, without the
/// empty line that ends it; waits up to [`ANSWER_TIMEOUT`].
pub fn ask(socket: &Path, request: &str) -> Result<String, Failure> {
    ask_within(socket, request, ANSWER_TIMEOUT)
}

/// [`ask`], waiting up to `wait` for the answer.
pub fn ask_within(socket: &Path, request: &str, wait: Duration) -> Result<String, Failure> {
    let mut stream =
        UnixStream::connect(socket).map_err(|e| Failure::Unreachable(reach::unreachable(socket, &e)))?;
    let unreachable =
        |e: io::Error| Failure::Unreachable(format!("cannot reach the daemon at {}: {e}", socket.display()));
    stream.set_read_timeout(Some(wait)).map_err(unreachable)?;
    // A daemon that refuses the peer answers at once and closes, perhaps before the request
    // is written: its answer is read all the same.
    let sent = stream.write_all(format!("{request}\n").as_bytes());
    let mut answer = String::new();
    let read = stream.read_to_string(&mut answer);
    if answer.is_empty() {
        if let Err(e) = &read {
            if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
                return Err(Failure::NoAnswer(format!(
                    "the daemon at {} gave no answer within {}",
                    socket.display(),
                    humantime::format_duration(wait)
                )));
            }
        }
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
