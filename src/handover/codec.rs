//! The byte format of a [`State`]: a magic, the format's version, then every field in order
//! (the primitives are [`super::wire`]'s). Reading checks every byte and the references inside
//! (`State::check`): a short, malformed or foreign state is an error, never a panic.
//!
//! A new format gets a new [`VERSION`]; a binary lists the versions it reads in [`READS`]
//! (`idlereaper --handover-versions`), and the old image upgrades only to a binary that reads
//! its version (and restores a sample of its state: `handover::exec::preflight`). A version
//! adds fields at the end of the top-level record, so reading an older one stops early and
//! leaves the newer fields at their defaults. Version 2 adds the control clients.

use std::io;

use super::state::{
    ConnState, ControlClientState, Counters, HalfState, ListenerState, RelayState, SocketState, State,
    WorkerState,
};
use super::wire::{Reader, Writer};

/// The version this binary writes.
pub const VERSION: u32 = 2;
/// The versions this binary reads.
pub const READS: &[u32] = &[1, 2];
const MAGIC: &[u8; 8] = b"IRHANDOV";

impl State {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes.extend_from_slice(MAGIC);
        w.u32(VERSION);
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
        });
        w.list(&self.in_force, |w, i| w.usize(*i));
        let c = &self.counters;
        for v in [c.started, c.reloads_ok, c.reloads_failed, c.upgrades_ok, c.upgrades_refused] {
            w.u64(v);
        }
        w.list(&self.workers, |w, worker| {
            w.list(&worker.listeners, |w, fd| w.option(fd.as_ref(), |w, fd| w.i32(*fd)));
            w.list(&worker.conns, put_conn);
            w.u64(worker.next_id);
        });
        // Version 2.
        w.list(&self.control_clients, |w, c| {
            w.i32(c.fd);
            w.u8(c.phase);
            w.bytes(&c.bytes);
            w.u64(c.deadline);
        });
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
            listeners: r.list(|r| {
                Ok(ListenerState {
                    text: r.usize()?,
                    position: r.usize()?,
                    counters: r.list(Reader::u64)?,
                    unix_path: r.option(Reader::str)?,
                    targets: r.list(|r| r.list(Reader::str))?,
                })
            })?,
            in_force: r.list(Reader::usize)?,
            counters: Counters {
                started: r.u64()?,
                reloads_ok: r.u64()?,
                reloads_failed: r.u64()?,
                upgrades_ok: r.u64()?,
                upgrades_refused: r.u64()?,
            },
            workers: r.list(|r| {
                Ok(WorkerState {
                    listeners: r.list(|r| r.option(Reader::i32))?,
                    conns: r.list(get_conn)?,
                    next_id: r.u64()?,
                })
            })?,
            control_clients: Vec::new(),
        };
        if version >= 2 {
            state.control_clients = r.list(|r| {
                Ok(ControlClientState { fd: r.i32()?, phase: r.u8()?, bytes: r.bytes()?, deadline: r.u64()? })
            })?;
        }
        r.finish()?;
        state.check()?;
        Ok(state)
    }
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

fn put_conn(w: &mut Writer, c: &ConnState) {
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
}

fn get_conn(r: &mut Reader<'_>) -> io::Result<ConnState> {
    Ok(ConnState {
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
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        let half = HalfState {
            pending: Some(b"held".to_vec()),
            pipe: Some((10, 11, 300, 262_144)),
            bulk: true,
            urgent: Some(b'!'),
            read_eof: true,
            write_shut: false,
            bytes: 1 << 40,
        };
        let conn = ConnState {
            id: 42,
            listener: 1,
            peer: Some("127.0.0.1:4000".into()),
            age: 5,
            activity: 2_000_000_000,
            lifetime: Some(9),
            half_close: None,
            wire_seen: Some(77),
            per_ip_counted: true,
            attempts: Some((vec!["127.0.0.1:1".into(), "unix:/run/x.sock".into()], 1, 2)),
            relay: RelayState {
                phase: 1,
                client: SocketState { fd: 7, unix: false, flags: 0b10_1011 },
                upstream: Some(SocketState { fd: 8, unix: true, flags: 0 }),
                to_upstream: half,
                to_client: HalfState::default(),
                first_fin: Some(1),
                preamble: Some(b"PROXY UNKNOWN\r\n".to_vec()),
            },
        };
        State {
            from: "0.1.0".into(),
            frozen_at: 123,
            stop: true,
            foreground: false,
            config_path: "/etc/idlereaper.toml".into(),
            pidfile: "/run/x.pid".into(),
            pidfile_overridden: true,
            pidfile_fd: 3,
            endpoint_fd: Some(4),
            control_fd: Some(20),
            reply_fd: Some(21),
            retired: vec![22],
            texts: vec!["[daemon]\n".into(), "old".into()],
            listeners: vec![
                ListenerState {
                    text: 0,
                    position: 0,
                    counters: vec![1, 2, 3],
                    unix_path: None,
                    targets: vec![vec!["127.0.0.1:6379".into(), "[::1]:6379".into()], vec![]],
                },
                ListenerState {
                    text: 1,
                    position: 2,
                    counters: vec![],
                    unix_path: Some("/run/s".into()),
                    targets: vec![],
                },
            ],
            in_force: vec![0],
            counters: Counters {
                started: 1,
                reloads_ok: 2,
                reloads_failed: 3,
                upgrades_ok: 4,
                upgrades_refused: 5,
            },
            workers: vec![WorkerState { listeners: vec![Some(5), None], conns: vec![conn], next_id: 43 }],
            control_clients: vec![
                ControlClientState { fd: 23, phase: 0, bytes: b"show co".to_vec(), deadline: 4_000_000_000 },
                ControlClientState { fd: 24, phase: 2, bytes: b"[]\n\n".to_vec(), deadline: 0 },
            ],
        }
    }

    #[test]
    fn a_state_reads_back_as_written_with_every_descriptor_named() {
        let state = sample();
        let back = State::decode(&state.encode()).unwrap();
        assert_eq!(back, state);
        let mut fds = back.descriptors();
        fds.sort();
        assert_eq!(fds, vec![3, 4, 5, 7, 8, 10, 11, 20, 21, 22, 23, 24]);
        assert_eq!(back.connections(), 1);
    }

    #[test]
    fn another_version_or_a_damaged_state_is_refused() {
        let mut bytes = sample().encode();
        bytes[MAGIC.len()] = 99; // the version
        let e = State::decode(&bytes).unwrap_err().to_string();
        assert!(e.contains("version 99"), "{e}");
        assert!(State::decode(b"something else").is_err());
        let bytes = sample().encode();
        assert!(State::decode(&bytes[..bytes.len() - 1]).is_err(), "cut short");
        let mut state = sample();
        state.workers[0].conns[0].listener = 5;
        assert!(State::decode(&state.encode()).is_err(), "a connection of no listener");
        let mut state = sample();
        state.control_clients[0].phase = 3;
        assert!(State::decode(&state.encode()).is_err(), "a control client in no known phase");
    }

    #[test]
    fn a_version_1_state_reads_with_no_control_client() {
        // Version 1 is version 2 without the control clients' list at the end.
        let mut state = sample();
        state.control_clients.clear();
        let mut bytes = state.encode();
        bytes.truncate(bytes.len() - 8);
        bytes[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(State::decode(&bytes).unwrap(), state);
        // Version 2 requires the list.
        bytes[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&2u32.to_le_bytes());
        assert!(State::decode(&bytes).is_err(), "version 2 cut short");
    }
}
