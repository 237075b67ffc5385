//! The main thread once the daemon is up: it owns the signals and the worker threads. Signals
//! become [`Command`]s sent to every worker; the supervisor waits until all workers have stopped.
//! With one worker this costs one sleeping thread, and keeps signal handling out of the loop that
//! moves bytes.

use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use log::{error, warn};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::logging::LogHandle;
use crate::server::{Command, Remote, Server};
use crate::signals::{Signal, Signals};

const SIGNALS: Token = Token(0);
const WORKER_DONE: Token = Token(1);

/// Signals and workers, ready to run.
pub struct Supervisor {
    poll: Poll,
    signals: Signals,
    done: Arc<Waker>,
    workers: Vec<(Server, Remote)>,
}

impl Supervisor {
    /// Installs the signal handlers (from here on TERM no longer kills the process outright).
    pub fn new(workers: Vec<(Server, Remote)>) -> io::Result<Supervisor> {
        let poll = Poll::new()?;
        let mut signals = Signals::new()?;
        poll.registry().register(signals.source(), SIGNALS, Interest::READABLE)?;
        let done = Arc::new(Waker::new(poll.registry(), WORKER_DONE)?);
        Ok(Supervisor { poll, signals, done, workers })
    }

    /// Runs the workers until they have all stopped. The first worker error is returned (the
    /// others are stopped then, so that the daemon does not run on at reduced capacity).
    pub fn run(self, log: LogHandle) -> io::Result<()> {
        let Supervisor { mut poll, mut signals, done, workers } = self;
        let (finished_tx, finished) = mpsc::channel::<io::Result<()>>();
        let mut remotes = Vec::new();
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        for (i, (mut server, remote)) in workers.into_iter().enumerate() {
            let (done, finished_tx) = (Arc::clone(&done), finished_tx.clone());
            let thread = std::thread::Builder::new().name(format!("worker-{i}")).spawn(move || {
                let result = panic::catch_unwind(AssertUnwindSafe(|| server.run()))
                    .unwrap_or_else(|_| Err(io::Error::other(format!("worker {i} panicked"))));
                let _ = finished_tx.send(result);
                let _ = done.wake();
            })?;
            remotes.push(remote);
            threads.push(thread);
        }
        let broadcast = |command| remotes.iter().for_each(|r: &Remote| r.send(command));
        let stop_now = || {
            broadcast(Command::Stop);
            broadcast(Command::Stop);
        };
        let mut result = Ok(());
        let mut running = threads.len();
        let mut events = Events::with_capacity(16);
        while running > 0 {
            if let Err(e) = poll.poll(&mut events, None) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                error!("supervisor: {e}; stopping");
                stop_now();
                result = Err(e);
                break;
            }
            for signal in signals.pending() {
                match signal {
                    Signal::Stop => broadcast(Command::Stop),
                    Signal::Reload => warn!(
                        "SIGHUP: reloading is not supported by this version; restart to apply configuration changes"
                    ),
                    Signal::Stats => {
                        log.reopen();
                        broadcast(Command::Stats);
                    }
                }
            }
            while let Ok(outcome) = finished.try_recv() {
                running -= 1;
                if let Err(e) = outcome {
                    error!("worker stopped on error: {e}; stopping the others");
                    stop_now();
                    if result.is_ok() {
                        result = Err(e);
                    }
                }
            }
        }
        for thread in threads {
            let _ = thread.join();
        }
        result
    }
}
