//! Listening sockets. Each worker gets its own socket per configured listener: with more than one
//! worker they are bound with `SO_REUSEPORT` and the kernel spreads new connections across them.
//! The count of open connections is shared by a listener's sockets, so `max_connections` holds
//! for the listener as a whole.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpListener;

use crate::app::Error;
use crate::config::{Config, ListenerConfig};

/// One worker's socket for a configured listener.
pub struct Listener {
    pub config: ListenerConfig,
    /// `None` once closed for a stop.
    pub(crate) socket: Option<TcpListener>,
    /// Connections of this listener open in all workers.
    active: Arc<AtomicUsize>,
    /// Accepting is paused (descriptor exhaustion) until then.
    pub(crate) paused_until: Option<Instant>,
    /// Clients may be waiting in the backlog that no new event will announce.
    pub(crate) backlog_ready: bool,
}

impl Listener {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.socket.as_ref().and_then(|s| s.local_addr().ok())
    }

    /// Counts a new connection, unless the listener is at `max_connections`.
    pub(crate) fn try_admit(&self) -> bool {
        let max = self.config.max_connections;
        self.active.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).is_ok()
    }

    /// Uncounts a closed connection.
    pub(crate) fn release(&self) {
        let before = self.active.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "listener {}: more connections closed than admitted", self.config.name);
    }

    /// Whether a paused listener may accept again at `now`.
    pub(crate) fn resumable(&self, now: Instant) -> bool {
        self.paused_until.is_some_and(|t| now >= t)
    }

    /// Whether clients may be waiting that no new event will announce (edge-triggered): the
    /// last accept pass stopped at its budget, or the listener was paused.
    pub(crate) fn can_accept(&self) -> bool {
        self.backlog_ready && self.paused_until.is_none() && self.socket.is_some()
    }
}

/// Binds every listener of `config` once per worker, before daemonizing, so that errors reach the
/// terminal. Returns one set of listeners per worker.
pub fn bind(config: &Config) -> Result<Vec<Vec<Listener>>, Error> {
    let workers = config.daemon.workers.max(1);
    let shared: Vec<Arc<AtomicUsize>> = config.listeners.iter().map(|_| Arc::default()).collect();
    (0..workers)
        .map(|_| {
            config
                .listeners
                .iter()
                .zip(&shared)
                .map(|(lc, active)| {
                    let socket = crate::net::listen(lc.listen, workers > 1).map_err(|e| {
                        Error::io(format!("listener {}: cannot listen on {}", lc.name, lc.listen), e)
                    })?;
                    Ok(Listener {
                        config: lc.clone(),
                        socket: Some(socket),
                        active: Arc::clone(active),
                        paused_until: None,
                        backlog_ready: true,
                    })
                })
                .collect::<Result<Vec<_>, Error>>()
        })
        .collect()
}

/// Whether an accept error means the process or system is out of descriptors or memory: then
/// accepting must pause instead of retrying at once.
pub(crate) fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}
