//! Cancelling the query of a busy PostgreSQL session the daemon closes (`max_lifetime`, `kill`,
//! a stop): a CancelRequest with the key its server gave, on a new connection to the upstream
//! address that served the session, so that the query stops instead of running on for nobody.
//!
//! Never in an event loop: a worker hands each cancel to its own small thread, started the first
//! time one is needed, through a bounded queue ([`QUEUED`]; a cancel that does not fit is dropped
//! and logged). Each has a deadline ([`TIMEOUT`] at most, the listener's `connect_timeout` if
//! shorter) for its connect and its write, counted from when it was queued, so that the thread
//! never falls further behind than that; when the worker ends, the thread finishes what is
//! queued within those deadlines and is joined.

use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, warn};
use socket2::{Domain, SockAddr, Socket, Type};

use crate::observe::postgres::BackendKey;
use crate::upstream::Target;

/// Cancels waiting at once, per worker.
const QUEUED: usize = 64;
/// The longest a cancel may take, from queued to written.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// One CancelRequest to send.
struct Cancel {
    to: Target,
    /// Bytes the upstream expects first on every connection (a PROXY protocol header).
    preamble: Option<Box<[u8]>>,
    key: BackendKey,
    deadline: Instant,
}

/// A worker's cancels: the queue, and the thread that sends them.
#[derive(Default)]
pub struct Canceller {
    worker: usize,
    queue: Option<SyncSender<Cancel>>,
    thread: Option<JoinHandle<()>>,
}

impl Canceller {
    pub fn new(worker: usize) -> Canceller {
        Canceller { worker, queue: None, thread: None }
    }

    /// Queues a CancelRequest for `key` to `to`, after `preamble`; gives up after `timeout`
    /// (at most [`TIMEOUT`]). Never blocks.
    pub fn cancel(&mut self, to: Target, preamble: Option<Box<[u8]>>, key: BackendKey, timeout: Duration) {
        let deadline = Instant::now() + timeout.min(TIMEOUT);
        let cancel = Cancel { to, preamble, key, deadline };
        let Some(queue) = self.queue() else { return };
        match queue.try_send(cancel) {
            Ok(()) => {}
            Err(TrySendError::Full(c)) => {
                warn!(
                    "cancel of backend pid={} at {} dropped: {QUEUED} cancels already waiting",
                    c.key.pid, c.to
                )
            }
            Err(TrySendError::Disconnected(c)) => {
                warn!("cancel of backend pid={} at {} dropped: no thread to send it", c.key.pid, c.to)
            }
        }
    }

    /// The queue, the thread behind it started if it is not yet.
    fn queue(&mut self) -> Option<&SyncSender<Cancel>> {
        if self.queue.is_none() {
            let (sender, receiver) = mpsc::sync_channel(QUEUED);
            let spawned =
                thread::Builder::new().name(format!("cancel-{}", self.worker)).spawn(move || run(receiver));
            match spawned {
                Ok(thread) => (self.queue, self.thread) = (Some(sender), Some(thread)),
                Err(e) => warn!("cannot start the thread that cancels queries: {e}"),
            }
        }
        self.queue.as_ref()
    }
}

impl Drop for Canceller {
    /// Lets the thread finish what is queued (each cancel within its deadline), and joins it.
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(queue: Receiver<Cancel>) {
    for cancel in queue {
        let (pid, to) = (cancel.key.pid, cancel.to.clone());
        match send(cancel) {
            Ok(()) => debug!("cancel sent to {to} for backend pid={pid}"),
            Err(e) => warn!("cancel of backend pid={pid} at {to} failed: {e}"),
        }
    }
}

/// Connects, writes the preamble and the CancelRequest, and closes, within the deadline.
fn send(cancel: Cancel) -> io::Result<()> {
    let left = || {
        cancel.deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()).ok_or_else(|| {
            io::Error::new(io::ErrorKind::TimedOut, "past its deadline before it could be sent")
        })
    };
    let (domain, address) = match &cancel.to {
        Target::Tcp(addr) => (Domain::for_address(*addr), SockAddr::from(*addr)),
        Target::Unix(path) => (Domain::UNIX, SockAddr::unix(path)?),
    };
    let socket = Socket::new(domain, Type::STREAM.cloexec(), None)?;
    socket.connect_timeout(&address, left()?)?;
    socket.set_write_timeout(Some(left()?))?;
    let request = cancel.key.cancel_request();
    let bytes = [cancel.preamble.as_deref().unwrap_or_default(), &request[..]].concat();
    (&socket).write_all(&bytes)
}
