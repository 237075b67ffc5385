//! The worker threads: one per worker, each reporting its end on a channel and waking the
//! supervisor; counted as they finish, and joined.

use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use log::error;
use mio::Waker;

use super::stop_now;
use crate::signals;
use crate::worker::{Remote, Worker};

/// The worker threads.
pub(super) struct Threads {
    pub(super) remotes: Vec<Remote>,
    pub(super) handles: Vec<JoinHandle<()>>,
    /// Threads not yet finished.
    pub(super) running: usize,
}

impl Threads {
    /// One thread per worker; each reports its end on `finished` and wakes the supervisor.
    pub(super) fn spawn(
        workers: Vec<(Worker, Remote)>,
        done: &Arc<Waker>,
        finished: &Sender<io::Result<()>>,
    ) -> io::Result<Threads> {
        let mut threads = Threads { remotes: Vec::new(), handles: Vec::new(), running: 0 };
        for (i, (mut server, remote)) in workers.into_iter().enumerate() {
            let (done, finished) = (Arc::clone(done), finished.clone());
            let thread = std::thread::Builder::new().name(format!("worker-{i}")).spawn(move || {
                signals::block(); // the supervisor's thread alone takes the signals
                let result = panic::catch_unwind(AssertUnwindSafe(|| server.run()))
                    .unwrap_or_else(|_| Err(io::Error::other(format!("worker {i} panicked"))));
                let _ = finished.send(result);
                let _ = done.wake();
            })?;
            threads.remotes.push(remote);
            threads.handles.push(thread);
            threads.running += 1;
        }
        Ok(threads)
    }

    /// Waits for every thread to end (after a stop or a freeze). Their results are dropped:
    /// the caller knows why they ended.
    pub(super) fn join(&mut self, finished: &Receiver<io::Result<()>>) {
        while self.running > 0 && finished.recv().is_ok() {
            self.running -= 1;
        }
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }

    /// Counts the threads that have finished; the first error is the result, and stops the
    /// others.
    pub(super) fn reap(&mut self, finished: &Receiver<io::Result<()>>, result: &mut io::Result<()>) {
        while let Ok(outcome) = finished.try_recv() {
            self.running -= 1;
            if let Err(e) = outcome {
                error!("worker stopped on error: {e}; stopping the others");
                stop_now(&self.remotes);
                if result.is_ok() {
                    *result = Err(e);
                }
            }
        }
    }
}
