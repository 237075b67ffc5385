//! The byte format of a [`State`]: a magic, the format's version, then every field in order
//! (the primitives are [`super::wire`]'s). Reading checks every byte and the references inside
//! (`State::check`): a short, malformed or foreign state is an error, never a panic.
//!
//! A new format gets a new [`VERSION`]; a binary lists the versions it reads in [`READS`]
//! (`idlereaper --handover-versions`), and the old image upgrades only to a binary that reads
//! its version (and restores a sample of its state: `handover::exec::preflight`). Format 2 adds,
//! after the workers, the path the daemon was started as, the log file's descriptor, the
//! guardian, the count of failed upgrades and, last, the control socket's clients; a state of
//! format 1 (from a binary without a guardian) reads with none of them. Format 2 also adds, at
//! the end of each connection's record, its protocol observer's state (`RelayState::observer`);
//! the connections of a state of format 1 (from a binary without observers) read with none,
//! idle by bytes as they were. Format 3 adds, at the end of each listener's record, the health
//! of its upstream addresses (`ListenerState::upstream_health`); the listeners of an older
//! state read with none, every address up.

use std::io;

use super::state::{
    ConnState, ControlClientState, Counters, HalfState, ListenerState, RelayState, SocketState, State,
    UpstreamHealthState, WorkerState,
};
use super::wire::{Reader, Writer};

/// The version this binary writes.
pub const VERSION: u32 = 3;
/// The versions this binary reads.
pub const READS: &[u32] = &[1, 2, 3];
const MAGIC: &[u8; 8] = b"IRHANDOV";

impl State {
    pub fn encode(&self) -> Vec<u8> {
        self.encode_as(VERSION)
    }

    /// The state in format `version` (what format 1 lacks is left out).
    fn encode_as(&self, version: u32) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes.extend_from_slice(MAGIC);
        w.u32(version);
        w.str(&self.from);
        w.u64(self.frozen_at);
        w.bool(self.stop);
        w.bool(self.foreground);
        w.str(&self.config_path);
        w.str(&self.pidfile);
        w.bool(self.pidfile_overridden);
        w.i32(self.pidfile_fd);
        for fd in [self.endpoint_fd, self.control_fd, self.reply_fd] {
            w.option(fd.as_ref(), |w, fd| w.i32(*fd));
        }
        w.list(&self.retired, |w, fd| w.i32(*fd));
        w.list(&self.texts, |w, t| w.str(t));
        w.list(&self.listeners, |w, l| {
            w.usize(l.text);
            w.usize(l.position);
            w.list(&l.counters, |w, c| w.u64(*c));
            w.option(l.unix_path.as_ref(), |w, p| w.str(p));
            w.list(&l.targets, |w, entry| w.list(entry, |w, t| w.str(t)));
            if version >= 3 {
                w.list(&l.upstream_health, |w, h| {
                    w.str(&h.address);
                    w.bool(h.disabled);
                    w.u32(h.failures);
                    w.option(h.backoff.as_ref(), |w, (length, left)| {
                        w.u64(*length);
                        w.u64(*left);
                    });
                });
            }
        });
        w.list(&self.in_force, |w, i| w.usize(*i));
        let c = &self.counters;
        for v in [c.started, c.reloads_ok, c.reloads_failed, c.upgrades_ok, c.upgrades_refused] {
            w.u64(v);
        }
        w.list(&self.workers, |w, worker| {
            w.list(&worker.listeners, |w, fd| w.option(fd.as_ref(), |w, fd| w.i32(*fd)));
            w.list(&worker.conns, |w, c| put_conn(w, c, version));
            w.u64(worker.next_id);
        });
        if version >= 2 {
            w.option(self.started_as.as_ref(), |w, p| w.str(p));
            w.option(self.log_fd.as_ref(), |w, fd| w.i32(*fd));
            w.option(self.guardian.as_ref(), |w, (fd, pid)| {
                w.i32(*fd);
                w.u32(*pid);
            });
            w.u64(self.counters.upgrades_failed);
            w.list(&self.control_clients, |w, c| {
                w.i32(c.fd);
                w.u8(c.phase);
                w.bytes(&c.bytes);
                w.u64(c.deadline);
            });
        }
        w.bytes
    }

    /// Reads a state of a version in [`READS`] (the fields an older one lacks left at their
    /// defaults); any other version, or malformed bytes, is an error.
    pub fn decode(bytes: &[u8]) -> io::Result<State> {
        let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
        let Some(rest) = bytes.strip_prefix(MAGIC) else {
            return Err(invalid("not a handover state".into()));
        };
        let mut r = Reader::new(rest);
        let version = r.u32()?;
        if !READS.contains(&version) {
            return Err(invalid(format!("handover state version {version}, this binary reads {READS:?}")));
        }
        let mut state = State {
            from: r.str()?,
            frozen_at: r.u64()?,
            stop: r.bool()?,
            foreground: r.bool()?,
            config_path: r.str()?,
            pidfile: r.str()?,
            pidfile_overridden: r.bool()?,
            pidfile_fd: r.i32()?,
            endpoint_fd: r.option(Reader::i32)?,
            control_fd: r.option(Reader::i32)?,
            reply_fd: r.option(Reader::i32)?,
            retired: r.list(Reader::i32)?,
            texts: r.list(Reader::str)?,
            listeners: r.list(|r| get_listener(r, version))?,
            in_force: r.list(Reader::usize)?,
            counters: Counters {
                started: r.u64()?,
                reloads_ok: r.u64()?,
                reloads_failed: r.u64()?,
                upgrades_ok: r.u64()?,
                upgrades_refused: r.u64()?,
                upgrades_failed: 0,
            },
            workers: r.list(|r| {
                Ok(WorkerState {
                    listeners: r.list(|r| r.option(Reader::i32))?,
                    conns: r.list(|r| get_conn(r, version))?,
                    next_id: r.u64()?,
                })
            })?,
            started_as: None,
            log_fd: None,
            guardian: None,
            control_clients: Vec::new(),
        };
        if version >= 2 {
            state.started_as = r.option(Reader::str)?;
            state.log_fd = r.option(Reader::i32)?;
            state.guardian = r.option(|r| Ok((r.i32()?, r.u32()?)))?;
            state.counters.upgrades_failed = r.u64()?;
            state.control_clients = r.list(|r| {
                Ok(ControlClientState { fd: r.i32()?, phase: r.u8()?, bytes: r.bytes()?, deadline: r.u64()? })
            })?;
        }
        r.finish()?;
        state.check()?;
        Ok(state)
    }
}

/// A listener's record in a state of `version`.
fn get_listener(r: &mut Reader<'_>, version: u32) -> io::Result<ListenerState> {
    let mut listener = ListenerState {
        text: r.usize()?,
        position: r.usize()?,
        counters: r.list(Reader::u64)?,
        unix_path: r.option(Reader::str)?,
        targets: r.list(|r| r.list(Reader::str))?,
        upstream_health: Vec::new(),
    };
    if version >= 3 {
        listener.upstream_health = r.list(|r| {
            Ok(UpstreamHealthState {
                address: r.str()?,
                disabled: r.bool()?,
                failures: r.u32()?,
                backoff: r.option(|r| Ok((r.u64()?, r.u64()?)))?,
            })
        })?;
    }
    Ok(listener)
}

fn put_socket(w: &mut Writer, s: &SocketState) {
    w.i32(s.fd);
    w.bool(s.unix);
    w.u8(s.flags);
}

fn get_socket(r: &mut Reader<'_>) -> io::Result<SocketState> {
    Ok(SocketState { fd: r.i32()?, unix: r.bool()?, flags: r.u8()? })
}

fn put_half(w: &mut Writer, h: &HalfState) {
    w.option(h.pending.as_ref(), |w, b| w.bytes(b));
    w.option(h.pipe.as_ref(), |w, p| {
        w.i32(p.0);
        w.i32(p.1);
        w.usize(p.2);
        w.usize(p.3);
    });
    w.bool(h.bulk);
    w.option(h.urgent.as_ref(), |w, b| w.u8(*b));
    w.bool(h.read_eof);
    w.bool(h.write_shut);
    w.u64(h.bytes);
}

fn get_half(r: &mut Reader<'_>) -> io::Result<HalfState> {
    Ok(HalfState {
        pending: r.option(Reader::bytes)?,
        pipe: r.option(|r| Ok((r.i32()?, r.i32()?, r.usize()?, r.usize()?)))?,
        bulk: r.bool()?,
        urgent: r.option(Reader::u8)?,
        read_eof: r.bool()?,
        write_shut: r.bool()?,
        bytes: r.u64()?,
    })
}

fn put_conn(w: &mut Writer, c: &ConnState, version: u32) {
    w.u64(c.id);
    w.usize(c.listener);
    w.option(c.peer.as_ref(), |w, p| w.str(p));
    w.u64(c.age);
    w.u64(c.activity);
    w.option(c.lifetime.as_ref(), |w, v| w.u64(*v));
    w.option(c.half_close.as_ref(), |w, v| w.u64(*v));
    w.option(c.wire_seen.as_ref(), |w, v| w.u64(*v));
    w.bool(c.per_ip_counted);
    w.option(c.attempts.as_ref(), |w, (targets, start, tried)| {
        w.list(targets, |w, t| w.str(t));
        w.usize(*start);
        w.usize(*tried);
    });
    let r = &c.relay;
    w.u8(r.phase);
    put_socket(w, &r.client);
    w.option(r.upstream.as_ref(), put_socket);
    put_half(w, &r.to_upstream);
    put_half(w, &r.to_client);
    w.option(r.first_fin.as_ref(), |w, s| w.u8(*s));
    w.option(r.preamble.as_ref(), |w, b| w.bytes(b));
    if version >= 2 {
        w.option(r.observer.as_ref(), |w, b| w.bytes(b));
    }
}

/// A connection's record in a state of `version`.
fn get_conn(r: &mut Reader<'_>, version: u32) -> io::Result<ConnState> {
    let mut conn = ConnState {
        id: r.u64()?,
        listener: r.usize()?,
        peer: r.option(Reader::str)?,
        age: r.u64()?,
        activity: r.u64()?,
        lifetime: r.option(Reader::u64)?,
        half_close: r.option(Reader::u64)?,
        wire_seen: r.option(Reader::u64)?,
        per_ip_counted: r.bool()?,
        attempts: r.option(|r| Ok((r.list(Reader::str)?, r.usize()?, r.usize()?)))?,
        relay: RelayState {
            phase: r.u8()?,
            client: get_socket(r)?,
            upstream: r.option(get_socket)?,
            to_upstream: get_half(r)?,
            to_client: get_half(r)?,
            first_fin: r.option(Reader::u8)?,
            preamble: r.option(Reader::bytes)?,
            observer: None,
        },
    };
    if version >= 2 {
        conn.relay.observer = r.option(Reader::bytes)?;
    }
    Ok(conn)
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
