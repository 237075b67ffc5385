//! One client of the control socket, the daemon's side: its request line read, then its answer
//! written as the supervisor hands it over — all at once, or piece by piece (`show conns`) —
//! and ended with [`END`], so that the client can tell a complete answer from one cut short.
//! And what the client is across a live upgrade ([`ControlClientState`]): the bytes of its
//! request so far, or of its answer not yet sent, or that it waits for the upgrade's result.

use std::io::{self, Read, Write};
use std::os::fd::IntoRawFd;
use std::time::{Duration, Instant};

use mio::net::UnixStream;

use super::request::{self, Request};
use crate::handover::state::ControlClientState;
use crate::slots::Timed;

/// Longest request line.
pub const MAX_LINE: usize = 4096;
/// What ends every answer: an empty line. No answer has one before its end (the answers are
/// lines of text, JSON on one line), so an answer that does not end with one was cut short.
pub const END: &[u8] = b"\n";

/// A control client and where it is.
pub(super) struct Client {
    pub(super) stream: UnixStream,
    pub(super) deadline: Instant,
    /// Told apart from a later client of the same slot.
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
            State::Answering { out, sent, complete } => {
                while *sent < out.len() {
                    match self.stream.write(&out[*sent..]) {
                        Ok(0) => return Step::Close,
                        Ok(n) => *sent += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return Step::Close,
                    }
                }
                if *complete {
                    return Step::Close;
                }
                out.clear();
                *sent = 0;
                Step::Wait
            }
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
        let stream = UnixStream::from(crate::sys::adopt(state.fd)?);
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

/// Reads into `line` until a newline, `WouldBlock`, or the end. `None`: wait for more.
fn read_line(stream: &mut UnixStream, line: &mut Vec<u8>) -> Option<Step> {
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(Step::Close),
            Ok(n) => {
                line.extend_from_slice(&buf[..n]);
                if let Some(step) = complete(line) {
                    return Some(step);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Some(Step::Close),
        }
    }
}

/// The request in `line`, if the line is complete (or too long to be one).
fn complete(line: &[u8]) -> Option<Step> {
    if let Some(end) = line.iter().position(|&b| b == b'\n') {
        let request = match std::str::from_utf8(&line[..end]) {
            Ok(text) => request::parse(text.trim_end_matches('\r')),
            Err(_) => Err("the request is not UTF-8 text".to_owned()),
        };
        return Some(Step::Asked(request));
    }
    (line.len() > MAX_LINE).then(|| Step::Asked(Err(format!("request line longer than {MAX_LINE} bytes"))))
}
