//! Accepting and admitting clients: accept until `WouldBlock` (within a budget), refuse a client
//! the listener's rules exclude (logged at most once a second per reason), and for the others
//! start the upstream connect, register both sockets and arm the connection's timer. Descriptor
//! exhaustion is handled here too: waiting clients are refused with the reserve descriptor, and
//! nothing is retried while nobody waits.

use std::io;
use std::time::Instant;

use log::{debug, info, warn};

use super::attempts::Attempts;
use super::close::Entry;
use super::deadlines::Deadlines;
use super::token::KEY_MASK;
use super::{Core, Slot};
use crate::close_reason::CloseReason;
use crate::conn::Conn;
use crate::observe::Observer;
use crate::os::net::{is_out_of_descriptors, open_spare, tune_tcp, ACCEPT_PAUSE};
use crate::os::stream::{Peer, Stream};
use crate::proxy_protocol;

/// Accepts per listener per iteration (as HAProxy's `maxaccept`): a burst of new clients does
/// not delay reading the ones just accepted.
const ACCEPTS_PER_ITERATION: usize = 64;

/// An episode of descriptor exhaustion: one warning when it begins, and an info line with its
/// length and the count of clients refused when an accept succeeds again.
pub(super) struct Starved {
    since: Instant,
    refused: u64,
}

impl Starved {
    fn began(listener: &str, error: &io::Error) -> Starved {
        warn!(
            "out of descriptors: listener={listener} accept failed: {error}; refusing new clients \
             until a descriptor is freed"
        );
        Starved { since: Instant::now(), refused: 0 }
    }

    fn ended(self) {
        let millis = self.since.elapsed().as_millis();
        info!("descriptors available again: starved_ms={millis} refused={}", self.refused);
    }
}

impl Core {
    /// Accepts until `WouldBlock`, the per-iteration budget, or descriptor exhaustion.
    pub(super) fn accept_all(&mut self, i: usize) {
        for _ in 0..ACCEPTS_PER_ITERATION {
            let listener = &mut self.listeners[i];
            let Some(socket) = listener.socket.as_ref().filter(|_| listener.paused_until.is_none()) else {
                return;
            };
            let accepted = socket.accept();
            match accepted {
                Ok((stream, peer)) => {
                    if let Some(starved) = self.starved.take() {
                        starved.ended();
                        self.spare_fd = self.spare_fd.take().or_else(open_spare);
                    }
                    self.admit(i, stream, peer)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.listeners[i].backlog_ready = false;
                    return;
                }
                Err(e) if self.reclaim_descriptors(&e) => {} // try again
                Err(e) if is_out_of_descriptors(&e) => {
                    let name = &self.listeners[i].config.name;
                    self.starved.get_or_insert_with(|| Starved::began(name, &e));
                    if !self.refuse_for_want_of_descriptors(i) {
                        return;
                    }
                }
                // ECONNABORTED, EPERM (firewall), EINTR, ...: that client only.
                Err(e) => debug!("listener={} accept: {e}", self.listeners[i].config.name),
            }
        }
    }

    /// Out of descriptors: frees the reserve descriptor, takes the waiting client off the
    /// backlog and closes it (it learns at once, and the backlog does not stay readable), and
    /// takes the reserve back. `accept` fails with EMFILE even when nobody waits: then it says
    /// WouldBlock here, and nothing is retried until a new client's event (no periodic
    /// wake-up). True if a client was refused and accepting may go on.
    fn refuse_for_want_of_descriptors(&mut self, i: usize) -> bool {
        let listener = &mut self.listeners[i];
        let socket = listener.socket.as_ref().expect("accepting on an open listener");
        if self.spare_fd.take().is_some() {
            let refused = socket.accept().map(drop);
            self.spare_fd = open_spare();
            match refused {
                Ok(()) => {
                    if let Some(starved) = self.starved.as_mut() {
                        starved.refused += 1;
                    }
                    self.record(i, Entry::Refused(CloseReason::OutOfDescriptors));
                    return true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    listener.backlog_ready = false;
                    return false;
                }
                Err(_) => {}
            }
        }
        // No reserve to refuse with: retry when a connection of this worker closes (see
        // `close`), or after a pause (another worker may free one).
        listener.backlog_ready = true;
        listener.paused_until = Some(Instant::now() + ACCEPT_PAUSE);
        false
    }

    /// Sets up an accepted client: refuse it (ACL, per-address limit, listener limit), or
    /// start the upstream connect and arm its timer.
    fn admit(&mut self, i: usize, client: Stream, peer: Peer) {
        let now = Instant::now();
        // A key must fit its token: a limit only a descriptor limit above 2^25 could reach.
        let admitted = match self.slots.vacant_key() > KEY_MASK {
            true => Err(CloseReason::Limit),
            false => self.listeners[i].try_admit(peer.ip()),
        };
        let per_ip_counted = match admitted {
            Ok(counted) => counted,
            Err(reason) => return self.refuse(i, peer, reason, now),
        };
        let config = &self.listeners[i].config;
        if let Stream::Tcp(s) = &client {
            tune_tcp(s, config.tcp_keepalive, config.tcp_user_timeout);
        }
        let (conn, attempts) = match self.listeners[i].upstreams.as_ref().map(|u| u.pick()) {
            None => (Conn::sink(client), None),
            Some((targets, start)) => {
                let mut attempts = Attempts::new(targets, start);
                match self.connect_next(i, &mut attempts) {
                    Ok(upstream) => {
                        let config = &self.listeners[i].config;
                        let preamble = config.proxy_protocol.map(|version| {
                            match (peer, client.local_addr().or(config.listen.tcp())) {
                                (Peer::Ip(source), Some(destination)) => {
                                    proxy_protocol::header(version, source, destination)
                                }
                                _ => proxy_protocol::header_unknown(version),
                            }
                            .into_boxed_slice()
                        });
                        let observer = Observer::new(config.protocol);
                        (Conn::relay(client, upstream, preamble, observer), Some(attempts))
                    }
                    Err((reason, failure)) => {
                        self.listeners[i].release(peer.ip(), per_ip_counted);
                        let id = self.new_id();
                        return self.closed_at_once(i, id, peer, reason, failure, attempts.tried());
                    }
                }
            }
        };
        let deadlines =
            Deadlines::at_accept(&self.listeners[i].config, conn.is_connecting(), &self.clock, now);
        self.record(i, Entry::Accepted);
        let id = self.new_id();
        self.install(Slot {
            id,
            conn,
            listener: i,
            peer,
            accepted: now,
            gen: 0,
            timer: None,
            deadlines,
            wire_seen: None,
            per_ip_counted,
            attempts,
        });
    }

    /// A client refused at accept (closed at once: it learns immediately instead of waiting in
    /// a backlog, and the backlog keeps moving). A flood of refusals is logged at most once a
    /// second per listener and reason.
    fn refuse(&mut self, i: usize, peer: Peer, reason: CloseReason, now: Instant) {
        self.record(i, Entry::Refused(reason));
        let listener = &mut self.listeners[i];
        let kind = match reason {
            CloseReason::Denied => 0,
            CloseReason::PerIpLimit => 1,
            _ => 2,
        };
        if let Some(held_back) = listener.refusals[kind].admit(now) {
            let listener = listener.config.name.as_str();
            let refused_unlogged = (held_back > 0).then_some(held_back);
            info!(listener, client:% = peer, reason:% = reason, refused_unlogged; "conn refused");
        }
    }
}
