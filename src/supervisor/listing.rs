//! `show conns`, answered while the workers build it: each worker sends its rows in order
//! (`rows::reap_order`: soonest to be reaped first, those no deadline runs for last, then by
//! id), in batches of a loop turn ([`Rows`]), the next one when the supervisor asks for it; the
//! supervisor merges the workers' rows in that order and writes each part of the answer as soon
//! as it is placed. A row is placed once every worker still building has sent one at least as
//! late; `--limit` stops the merge at that many (each worker chose its soonest that many, so the
//! merge keeps the soonest of all). The table's columns fit its first [`TABLE_FIT`] rows.
//!
//! A worker is asked for its next batch only when the merge needs it and the client has taken
//! the answer down to [`LOW_WATER`] bytes not yet sent: a reader that does not keep up holds
//! the building of rows, not megabytes of answer in the daemon. A worker that stops (or never
//! got the question) counts as done. Before a live upgrade every answer in progress is
//! completed ([`Listing::complete`]): the workers' rows do not cross the exec.

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use mio::Waker;

use crate::control::{ClientId, Server};
use crate::rows::{reap_order, ConnRow, ConnsTable, JsonArray};
use crate::worker::{Command, Query, Remote, Rows};

/// Rows a table's columns are fitted to: the first part of a table waits for them (or for the
/// end of the answer).
const TABLE_FIT: usize = 1024;
/// Bytes of answer not yet sent below which the workers are asked for more rows.
const LOW_WATER: usize = 64 * 1024;

/// A `show conns` being answered.
pub(super) struct Listing {
    client: ClientId,
    parts: Vec<Part>,
    /// Rows still wanted (`--limit`).
    left: usize,
    form: Form,
}

/// One worker's rows: received and not placed yet, whether the next batch is asked for, and
/// whether it sent its last.
struct Part {
    remote: Remote,
    listing: u64,
    rows: Receiver<Rows>,
    queue: VecDeque<ConnRow>,
    asked: bool,
    done: bool,
}

enum Form {
    Json(JsonArray),
    /// The rows held until the columns are fitted, then the table.
    Table {
        held: Vec<ConnRow>,
        table: Option<ConnsTable>,
    },
}

/// What comes next in the merge.
enum Next {
    /// The next row is placed.
    Placed,
    /// A worker still building has sent nothing that is not placed yet.
    Wait,
    End,
}

impl Part {
    fn add(&mut self, batch: Rows) {
        self.queue.extend(batch.rows);
        self.done |= batch.last;
        self.asked = false;
    }

    /// Asks the worker for its next batch (unless asked already, or done).
    fn ask(&mut self) {
        if !self.asked && !self.done {
            self.remote.send(Command::Rows { listing: self.listing, more: true });
            self.asked = true;
        }
    }

    /// Takes the batches that came.
    fn take(&mut self) {
        while !self.done {
            match self.rows.try_recv() {
                Ok(batch) => self.add(batch),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => self.done = true,
            }
        }
    }
}

impl Drop for Part {
    /// A worker still building rows nobody will read is told to stop.
    fn drop(&mut self) {
        if !self.done {
            self.remote.send(Command::Rows { listing: self.listing, more: false });
        }
    }
}

impl Listing {
    /// Starts answering `client`: asks every worker (`remotes`) for the rows `query` chooses,
    /// as `show conns` number `listing`, each worker waking the supervisor (`wake`) as it sends.
    /// At most `query.limit` rows, as JSON or a table.
    pub(super) fn start(
        client: ClientId,
        listing: u64,
        remotes: &[Remote],
        query: &Query,
        json: bool,
        wake: &Arc<Waker>,
    ) -> Listing {
        let parts = remotes
            .iter()
            .map(|remote| {
                let (reply, rows) = mpsc::channel();
                let wake = Arc::clone(wake);
                remote.send(Command::Inspect { listing, query: query.clone(), reply, wake });
                let remote = remote.clone();
                Part { remote, listing, rows, queue: VecDeque::new(), asked: true, done: false }
            })
            .collect();
        let form = match json {
            true => Form::Json(JsonArray::default()),
            false => Form::Table { held: Vec::new(), table: None },
        };
        Listing { client, parts, left: query.limit.unwrap_or(usize::MAX), form }
    }

    /// Takes the batches that came, writes out what can be placed, and asks for the rows the
    /// merge needs next if the client has taken most of what it was sent. True when the
    /// listing is over: answered, or its client gone.
    pub(super) fn pump(&mut self, control: &mut Server) -> bool {
        self.parts.iter_mut().for_each(Part::take);
        if self.write(control) {
            return true;
        }
        match control.unsent(self.client) {
            None => true, // closed: it stopped reading for too long, or went away
            Some(unsent) if unsent < LOW_WATER => {
                self.parts.iter_mut().filter(|part| part.queue.is_empty()).for_each(Part::ask);
                false
            }
            Some(_) => false,
        }
    }

    /// Waits for the rest of every worker's rows (until `deadline`), and writes out the whole
    /// answer; a worker that does not finish by then leaves the client an answer cut short.
    pub(super) fn complete(&mut self, control: &mut Server, deadline: Instant) {
        for part in &mut self.parts {
            while !part.done {
                part.ask();
                match part.rows.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(batch) => part.add(batch),
                    Err(RecvTimeoutError::Disconnected) => part.done = true,
                    Err(RecvTimeoutError::Timeout) => return control.abort(self.client),
                }
            }
        }
        self.write(control);
    }

    /// Places the next row in the merged order in `placed`, if it can be told yet.
    fn place(&mut self, placed: &mut Vec<ConnRow>) -> Next {
        if self.left == 0 {
            return Next::End;
        }
        let mut best: Option<(usize, (u64, u64))> = None;
        for (i, part) in self.parts.iter().enumerate() {
            match part.queue.front() {
                None if !part.done => return Next::Wait,
                None => {}
                Some(row) => {
                    let key = reap_order(row.reap_in_ms, row.id);
                    if best.is_none_or(|(_, best)| key < best) {
                        best = Some((i, key));
                    }
                }
            }
        }
        match best.and_then(|(i, _)| self.parts[i].queue.pop_front()) {
            Some(row) => {
                self.left -= 1;
                placed.push(row);
                Next::Placed
            }
            None => Next::End,
        }
    }

    /// Places what can be placed and sends it. True when the listing is over.
    fn write(&mut self, control: &mut Server) -> bool {
        let mut placed = Vec::new();
        let end = loop {
            match self.place(&mut placed) {
                Next::Placed => {}
                Next::Wait => break false,
                Next::End => break true,
            }
        };
        let mut out = String::new();
        match &mut self.form {
            Form::Json(array) => {
                array.more(&placed, &mut out);
                if end {
                    std::mem::take(array).end(&mut out);
                }
            }
            Form::Table { table: Some(table), .. } => table.more(&placed, &mut out),
            Form::Table { held, table } => {
                held.extend(placed);
                if end || held.len() >= TABLE_FIT {
                    *table = Some(ConnsTable::start(held, &mut out));
                    *held = Vec::new();
                }
            }
        }
        if out.is_empty() && !end {
            return false;
        }
        let wanted = control.send(self.client, out.as_bytes(), end);
        end || !wanted
    }
}
