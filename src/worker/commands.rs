//! The supervisor's commands to a worker (ping, stop, reload, freeze, inspect and the rows after,
//! kill), the handle that sends them, and the worker's side of each.

use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{error, info};
use mio::{Interest, Waker};

use super::handover::Frozen;
use super::inspect::{Query, Rows, Selector};
use super::token::Target;
use super::{Core, Phase};
use crate::close_reason::CloseReason;
use crate::config::ListenerConfig;
use crate::listener::Listener;
use crate::upstream::Upstreams;

/// What the supervisor asks of a worker.
pub enum Command {
    /// Nothing but a turn of the loop: the watchdog's proof that it still turns.
    Ping,
    /// Stop accepting and drain; a second `Stop` closes everything at once.
    Stop,
    /// Apply a new configuration (SIGHUP).
    Reload(Reload),
    /// A live upgrade: give up every listener handle and connection, with times relative to
    /// `at` (a `CLOCK_MONOTONIC` reading, shared by both images), send them back on `reply`,
    /// and stop.
    Freeze { at: u64, reply: Sender<Frozen> },
    /// A row for each open connection `query` chooses (`show conns` number `listing`), sent
    /// on `reply` in batches, with `wake` woken after each: the first at once, each next one
    /// when asked for with [`Command::Rows`].
    Inspect { listing: u64, query: Query, reply: Sender<Rows>, wake: Arc<Waker> },
    /// The next batch of rows of `show conns` number `listing` (`more`), or none: the asker is
    /// gone.
    Rows { listing: u64, more: bool },
    /// Close the connections `selector` names, at once; reply with how many.
    Kill { selector: Selector, reply: Sender<usize> },
}

/// A worker's part of a reload: the listeners of the new configuration, in order, and the
/// settings that apply at once. Listener indices only grow, so every worker assigns the same
/// index to the same listener, and open connections keep pointing at theirs.
pub struct Reload {
    pub listeners: Vec<ListenerChange>,
    pub shutdown_timeout: Duration,
}

/// One listener of a new configuration.
pub enum ListenerChange {
    /// The socket at `index` stays (same address): no client is refused during the reload. Its
    /// new settings apply to new connections, and to open ones from their next activity on.
    Keep { index: usize, config: ListenerConfig, upstreams: Option<Arc<Upstreams>> },
    /// A socket bound for the reload; it takes the next index.
    Add(Listener),
}

/// The supervisor's handle on a worker's loop.
#[derive(Clone)]
pub struct Remote {
    commands: Sender<Command>,
    waker: Arc<Waker>,
}

impl Remote {
    pub(super) fn new(commands: Sender<Command>, waker: Arc<Waker>) -> Remote {
        Remote { commands, waker }
    }

    /// Sends a command and wakes the loop. A worker that has already stopped ignores it.
    pub fn send(&self, command: Command) {
        if self.commands.send(command).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

impl Core {
    pub(super) fn handle_commands(&mut self) {
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Ping => {}
                Command::Stop => self.stop(),
                Command::Reload(reload) => self.reload(reload),
                Command::Freeze { at, reply } => {
                    let _ = reply.send(self.freeze(at));
                }
                // Connections an upgrade handed over are all taken over first: they are shown
                // and can be killed like the others.
                Command::Inspect { listing, query, reply, wake } => {
                    self.adopt_some(usize::MAX);
                    self.inspect(listing, &query, reply, wake);
                }
                Command::Rows { listing, more } => self.more_rows(listing, more),
                Command::Kill { selector, reply } => {
                    self.adopt_some(usize::MAX);
                    let _ = reply.send(self.kill(&selector));
                }
            }
        }
    }

    /// Switches to the listeners of a reloaded configuration: kept ones get their new settings,
    /// added ones are registered, the others are closed (their connections run on).
    fn reload(&mut self, reload: Reload) {
        if self.phase != Phase::Running {
            return; // stopping: the listeners are closed already
        }
        let mut wanted = vec![false; self.listeners.len()];
        for change in reload.listeners {
            match change {
                ListenerChange::Keep { index, config, upstreams } => {
                    wanted[index] = true;
                    self.listeners[index].config = config;
                    self.listeners[index].upstreams = upstreams;
                }
                ListenerChange::Add(mut listener) => {
                    let index = self.listeners.len();
                    if let Some(socket) = listener.socket.as_mut() {
                        let token = Target::Listener(index).token();
                        if let Err(e) = self.registry.register(socket, token, Interest::READABLE) {
                            error!("reload: listener={} cannot be registered: {e}", listener.config.name);
                            listener.socket = None;
                        }
                    }
                    self.listeners.push(listener);
                    wanted.push(true);
                }
            }
        }
        for (listener, wanted) in self.listeners.iter_mut().zip(wanted) {
            if !wanted {
                listener.close(&self.registry);
            }
        }
        self.shutdown_timeout = reload.shutdown_timeout;
    }

    /// First stop: close the listeners and drain; second: close everything now.
    fn stop(&mut self) {
        match self.phase {
            Phase::Running => {
                let until = Instant::now() + self.shutdown_timeout;
                info!(
                    "stopping worker={}: listeners closed, draining connections={} for up to {:?}",
                    self.worker,
                    self.slots.len(),
                    self.shutdown_timeout
                );
                for listener in &mut self.listeners {
                    listener.close(&self.registry);
                }
                self.phase = Phase::Draining { until };
            }
            Phase::Draining { .. } => {
                info!("second stop: worker={} closing connections={} now", self.worker, self.slots.len());
                self.close_all(CloseReason::Shutdown);
                self.phase = Phase::Stopped;
            }
            Phase::Stopped => {}
        }
    }
}
