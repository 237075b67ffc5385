//! Answering the control socket's requests: `show` from the workers' slots and the counters
//! (`show conns` as the workers build it: [`super::listing`]; `show info` and `show config`:
//! [`super::info`]), `kill` through the workers,
//! `reload` and `upgrade` as the signals do, but with the result going back to the client that
//! asked. An `upgrade` is not run here: its asker waits, and the loop runs one upgrade for
//! every asker and a SIGUSR2 of the same turn, last (see `upgrade.rs`).

use std::sync::mpsc::{self, Sender};
use std::time::{Duration, Instant};

use log::info;
use mio::Events;

use super::listing::Listing;
use super::{broadcast, Supervisor};
use crate::control::request::{Request, HELP};
use crate::control::ClientId;
use crate::logging::LogHandle;
use crate::rows::{self, ListenerRow};
use crate::worker::{Command, Remote};

/// How long the workers get to answer a question (`kill`: within one loop turn; the rest of a
/// `show conns` before an upgrade: a batch per turn).
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

impl Supervisor {
    /// The control socket's turn: its events handled, the requests that came answered, the
    /// `show conns` in progress taken further, and clients past their deadline closed.
    pub(super) fn serve_control(&mut self, events: &Events, remotes: &[Remote], log: &LogHandle) {
        let Some(control) = self.control.as_mut() else { return };
        let mut asked = Vec::new();
        for event in events.iter() {
            if control.owns(event.token()) {
                asked.extend(control.handle(event));
            }
        }
        for (client, request) in asked {
            self.answer(client, request, remotes, log);
        }
        self.pump_listings();
        if let Some(control) = self.control.as_mut() {
            control.expire(Instant::now());
        }
    }

    /// Answers control client `client` (or, for `show conns`, starts to; for `upgrade`, makes it
    /// wait for the upgrade's result).
    pub(super) fn answer(
        &mut self,
        client: ClientId,
        request: Result<Request, String>,
        remotes: &[Remote],
        log: &LogHandle,
    ) {
        let text = match request {
            Err(e) => format!("error: {e}\n"),
            Ok(Request::Help) => HELP.to_owned(),
            Ok(Request::Ping) => {
                format!("pong pid={} version={}\n", std::process::id(), env!("CARGO_PKG_VERSION"))
            }
            Ok(Request::ShowConns { query, json }) => {
                self.next_listing += 1;
                let listing = Listing::start(client, self.next_listing, remotes, &query, json, &self.done);
                self.listings.push(listing);
                return;
            }
            Ok(Request::ShowListeners { json: as_json }) => {
                let rows = self.listener_rows();
                if as_json {
                    serde_json::to_string(&rows).unwrap_or_else(|e| format!("error: {e}")) + "\n"
                } else {
                    rows::listeners_table(&rows)
                }
            }
            Ok(Request::ShowInfo { json }) => self.info(json),
            Ok(Request::ShowConfig { json }) => self.config_in_force(json),
            Ok(Request::Kill(selector)) => {
                let killed: usize = ask(remotes, |reply| Command::Kill { selector: selector.clone(), reply })
                    .into_iter()
                    .sum();
                format!("killed {killed}\n")
            }
            Ok(Request::Upstream { listener, address, disable }) => {
                self.set_upstream(&listener, &address, disable).unwrap_or_else(|e| format!("error: {e}\n"))
            }
            Ok(Request::Reload | Request::Upgrade) if self.stopping => {
                "error: the daemon is stopping\n".to_owned()
            }
            Ok(Request::Reload) if self.upgrading => {
                "error: reload refused: an upgrade is in progress, and it applies the configuration file\n"
                    .to_owned()
            }
            Ok(Request::Reload) => match self.reload(remotes, log) {
                Ok(reloaded) => reloaded.answer(),
                Err(e) => format!("error: reload failed, keeping the running configuration: {e}\n"),
            },
            Ok(Request::Upgrade) => {
                if let Some(control) = self.control.as_mut() {
                    control.await_upgrade(client);
                }
                return;
            }
        };
        if let Some(control) = self.control.as_mut() {
            control.answer(client, &text);
        }
    }

    /// Takes every `show conns` in progress as far as the workers' rows allow.
    fn pump_listings(&mut self) {
        if let Some(control) = self.control.as_mut() {
            self.listings.retain_mut(|listing| !listing.pump(control));
        }
    }

    /// Completes every `show conns` in progress (before a live upgrade freezes the workers),
    /// waiting for their rows up to [`WORKER_ANSWER`].
    pub(super) fn complete_listings(&mut self) {
        let deadline = Instant::now() + WORKER_ANSWER;
        let listings = std::mem::take(&mut self.listings);
        if let Some(control) = self.control.as_mut() {
            for mut listing in listings {
                listing.complete(control, deadline);
            }
        }
    }

    /// `upstream disable|enable LISTENER ADDRESS`: the addresses named taken out of the
    /// listener's choice for new connections, or put back (a backoff ended too). Returns a line
    /// per address; an unknown listener, a sink or an address not in its list is an error.
    fn set_upstream(&self, listener: &str, address: &str, disable: bool) -> Result<String, String> {
        let Some(i) = self.config.listeners.iter().position(|l| l.name == listener) else {
            let names: Vec<&str> = self.config.listeners.iter().map(|l| l.name.as_str()).collect();
            return Err(format!("no listener {listener:?} (listeners: {})", names.join(", ")));
        };
        let Some(upstreams) = &self.upstreams[i] else {
            return Err(format!("listener {listener} is a sink: it has no upstream"));
        };
        let targets = upstreams.select(address)?;
        upstreams.health().set_disabled(&targets, disable);
        let state = if disable { "disabled" } else { "up" };
        let mut out = String::new();
        for target in &targets {
            info!("listener={listener} upstream {target} {state} by the control socket");
            out.push_str(&format!("listener={listener} upstream={target} state={state}\n"));
        }
        Ok(out)
    }

    /// A row per listener in force, with its counters and its upstream addresses' state.
    fn listener_rows(&self) -> Vec<ListenerRow> {
        let counters = self.metrics.listeners();
        let now = Instant::now();
        self.config
            .listeners
            .iter()
            .zip(counters)
            .zip(&self.upstreams)
            .map(|((lc, counters), upstreams)| {
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
                    upstreams: upstreams.as_ref().map_or(Vec::new(), |u| u.rows(now)),
                };
                counters.fill(&mut row);
                row
            })
            .collect()
    }
}
