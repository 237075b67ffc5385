//! One client of the control socket, the daemon's side: its request line read, then its answer
//! written as the supervisor hands it over — all at once, or piece by piece (`show conns`) —
//! and ended with [`END`], so that the client can tell a complete answer from one cut short.
//! And what the client is across a live upgrade ([`ControlClientState`]): the bytes of its
//! request so far, or of its answer not yet sent, or that it waits for the upgrade's result.

use std::io;
use std::os::fd::IntoRawFd;
use std::time::{Duration, Instant};

use mio::net::UnixStream;

use super::request::{self, Request};
use crate::bounded::{self, Received, Sent};
use crate::client_table::Timed;
use crate::handover::state::ControlClientState;

/// Longest request line.
pub const MAX_LINE: usize = 4096;
/// What ends every answer: an empty line. No answer has one before its end (the answers are
/// lines of text, JSON on one line), so an answer that does not end with one was cut short.
pub const END: &[u8] = b"\n";

/// A control client and where it is.
pub(super) struct Client {
    pub(super) stream: UnixStream,
    pub(super) deadline: Instant,
    /// Told apart from a later client at the same index.
    pub(super) serial: u64,
    pub(super) state: State,
}

pub(super) enum State {
    /// The request line so far.
    Reading(Vec<u8>),
    /// Waits for the result of the live upgrade it asked for.
    Upgrading,
    /// Being answered: the bytes not yet sent (from `sent` on), and whether the answer is
    /// complete (its [`END`] included).
    Answering { out: Vec<u8>, sent: usize, complete: bool },
}

/// What driving a client came to.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    Wait,
    /// Done (answered, gone, or failed): close it.
    Close,
    /// The request is complete: it is the supervisor's to answer now.
    Asked(Result<Request, String>),
}

impl Timed for Client {
    fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl Client {
    /// Reads the request line, or writes the answer, as far as the socket allows. A complete
    /// request turns the client to answering, with `answer_timeout` from now.
    pub(super) fn drive(&mut self, answer_timeout: Duration) -> Step {
        match &mut self.state {
            State::Reading(line) => match read_line(&mut self.stream, line) {
                Some(Step::Asked(request)) => {
                    self.state = State::Answering { out: Vec::new(), sent: 0, complete: false };
                    self.deadline = Instant::now() + answer_timeout;
                    Step::Asked(request)
                }
                Some(step) => step,
                None => Step::Wait,
            },
            State::Upgrading => Step::Wait,
            State::Answering { out, sent, complete } => match bounded::write_out(&mut self.stream, out, sent)
            {
                Sent::Blocked => Step::Wait,
                Sent::Failed => Step::Close,
                Sent::All if *complete => Step::Close,
                Sent::All => {
                    out.clear();
                    *sent = 0;
                    Step::Wait
                }
            },
        }
    }

    /// Adds `bytes` to the answer (`end`: and the answer's end), if it is being answered.
    /// False if it is not (then nothing is added).
    pub(super) fn push(&mut self, bytes: &[u8], end: bool) -> bool {
        let State::Answering { out, complete: complete @ false, .. } = &mut self.state else {
            return false;
        };
        out.extend_from_slice(bytes);
        if end {
            out.extend_from_slice(END);
            *complete = true;
        }
        true
    }

    /// The client as an upgrade hands it over, with its deadline as time left after `at`. An
    /// answer not complete yet is not: the client is closed, and sees an answer cut short.
    pub(super) fn freeze(self, at: Instant) -> Option<ControlClientState> {
        let (phase, bytes) = match self.state {
            State::Reading(line) => (0, line),
            State::Upgrading => (1, Vec::new()),
            State::Answering { out, sent, complete: true } => (2, out[sent..].to_vec()),
            State::Answering { complete: false, .. } => return None,
        };
        let left = self.deadline.saturating_duration_since(at);
        let deadline = u64::try_from(left.as_nanos()).unwrap_or(u64::MAX);
        Some(ControlClientState { fd: self.stream.into_raw_fd(), phase, bytes, deadline })
    }

    /// A client an upgrade handed over, its deadline counted from `frozen` (the freeze instant).
    pub(super) fn thaw(state: &ControlClientState, frozen: Instant, serial: u64) -> io::Result<Client> {
        let stream = UnixStream::from(crate::os::sys::adopt(state.fd)?);
        let bytes = state.bytes.clone();
        let state_now = match state.phase {
            0 => State::Reading(bytes),
            1 => State::Upgrading,
            _ => State::Answering { out: bytes, sent: 0, complete: true },
        };
        let deadline = frozen + Duration::from_nanos(state.deadline);
        Ok(Client { stream, deadline, serial, state: state_now })
    }
}

/// Reads into `line` until a newline, `WouldBlock`, the end, or more than [`MAX_LINE`] bytes.
/// `None`: wait for more.
fn read_line(stream: &mut impl io::Read, line: &mut Vec<u8>) -> Option<Step> {
    let newline = |bytes: &[u8]| bytes.iter().position(|&b| b == b'\n');
    match bounded::read_request(stream, line, MAX_LINE + 1, newline) {
        Received::Partial => None,
        Received::Closed => Some(Step::Close),
        Received::Complete(end) => Some(Step::Asked(parse(&line[..end]))),
        Received::TooLarge => Some(Step::Asked(Err(format!("request line longer than {MAX_LINE} bytes")))),
    }
}

/// The request a complete line (without its newline) asks.
fn parse(line: &[u8]) -> Result<Request, String> {
    match std::str::from_utf8(line) {
        Ok(text) => request::parse(text.trim_end_matches('\r')),
        Err(_) => Err("the request is not UTF-8 text".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a client sending `bytes` (then nothing more) asks.
    fn asked(bytes: &[u8]) -> Result<Request, String> {
        match read_line(&mut &bytes[..], &mut Vec::new()) {
            Some(Step::Asked(asked)) => asked,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_request_line_is_at_most_max_line_bytes() {
        let padded = |n: usize| format!("help{}\n", " ".repeat(n - 4)).into_bytes();
        assert!(asked(&padded(MAX_LINE)).is_ok(), "a line of exactly {MAX_LINE} bytes");
        let long = asked(&padded(MAX_LINE + 1)).unwrap_err();
        assert_eq!(long, format!("request line longer than {MAX_LINE} bytes"));
        assert_eq!(read_line(&mut &b"hel"[..], &mut Vec::new()), Some(Step::Close), "cut short");
    }
}
