//! Answering the control socket's requests: `show` from the workers' slots and the counters,
//! `kill` through the workers, `reload` and `upgrade` as the signals do, but with the result
//! going back to the client that asked.

use std::io;
use std::sync::mpsc::{self, Sender};
use std::time::{Duration, Instant};

use super::{broadcast, Supervisor, Turn};
use crate::control::request::{Request, HELP};
use crate::report::{self, ConnRow, ListenerRow};
use crate::worker::{Command, Remote};

/// How long the workers get to answer a question (each answers within one loop turn).
const WORKER_ANSWER: Duration = Duration::from_secs(2);

/// Asks every worker and gathers their answers (those that came within [`WORKER_ANSWER`]).
fn ask<T>(remotes: &[Remote], question: impl Fn(Sender<T>) -> Command) -> Vec<T> {
    let (reply, replies) = mpsc::channel();
    broadcast(remotes, || question(reply.clone()));
    drop(reply);
    let until = Instant::now() + WORKER_ANSWER;
    let mut answers = Vec::with_capacity(remotes.len());
    while answers.len() < remotes.len() {
        match replies.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(answer) => answers.push(answer),
            Err(_) => break,
        }
    }
    answers
}

fn json<T: serde::Serialize>(rows: &T) -> String {
    serde_json::to_string(rows).unwrap_or_else(|e| format!("error: {e}")) + "\n"
}

impl Supervisor {
    /// Answers control client `client`. `Err` only as [`Supervisor::upgrade`] fails.
    pub(super) fn answer(
        &mut self,
        client: usize,
        request: Result<Request, String>,
        turn: &mut Turn<'_>,
    ) -> io::Result<()> {
        let remotes = &turn.threads.remotes;
        let text = match request {
            Err(e) => format!("error: {e}\n"),
            Ok(Request::Help) => HELP.to_owned(),
            Ok(Request::ShowConns { query, json: as_json }) => {
                let mut rows: Vec<ConnRow> =
                    ask(remotes, |reply| Command::Inspect { query: query.clone(), reply })
                        .into_iter()
                        .flatten()
                        .collect();
                rows.sort_by_key(|r| (r.reap_in_ms.unwrap_or(u64::MAX), r.id));
                rows.truncate(query.limit.unwrap_or(usize::MAX));
                if as_json {
                    json(&rows)
                } else {
                    report::conns_table(&rows)
                }
            }
            Ok(Request::ShowListeners { json: as_json }) => {
                let rows = self.listener_rows();
                if as_json {
                    json(&rows)
                } else {
                    report::listeners_table(&rows)
                }
            }
            Ok(Request::Kill(selector)) => {
                let killed: usize = ask(remotes, |reply| Command::Kill { selector: selector.clone(), reply })
                    .into_iter()
                    .sum();
                format!("killed {killed}\n")
            }
            Ok(Request::Reload | Request::Upgrade) if self.stopping => {
                "error: the daemon is stopping\n".to_owned()
            }
            Ok(Request::Reload) => match self.reload(remotes, turn.log) {
                Ok(changes) => format!("reloaded: {changes}\n"),
                Err(e) => format!("error: reload failed, keeping the running configuration: {e}\n"),
            },
            Ok(Request::Upgrade) => return self.upgrade(turn, Some(client)),
        };
        if let Some(control) = self.control.as_mut() {
            control.answer(client, text);
        }
        Ok(())
    }

    /// A row per listener in force, with its counters.
    fn listener_rows(&self) -> Vec<ListenerRow> {
        let counters = self.metrics.listeners();
        self.config
            .listeners
            .iter()
            .zip(counters)
            .map(|(lc, counters)| {
                let upstream: Vec<String> = lc.upstream.iter().map(ToString::to_string).collect();
                let mut row = ListenerRow {
                    name: lc.name.clone(),
                    listen: lc.listen.to_string(),
                    upstream: if upstream.is_empty() { "-".to_owned() } else { upstream.join(",") },
                    open: 0,
                    accepted: 0,
                    closed: Vec::new(),
                    refused: 0,
                    idle_timeout_ms: u64::try_from(lc.idle_timeout.as_millis()).unwrap_or(u64::MAX),
                    bytes_from_client: 0,
                    bytes_from_upstream: 0,
                };
                counters.fill(&mut row);
                row
            })
            .collect()
    }
}
