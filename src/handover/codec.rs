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
//! idle by bytes as they were.

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
                observer: Some(vec![1, 5, 0, 73]),
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
                upgrades_failed: 6,
            },
            workers: vec![WorkerState { listeners: vec![Some(5), None], conns: vec![conn], next_id: 43 }],
            started_as: Some("/opt/idlereaper/current/idlereaper".into()),
            log_fd: Some(23),
            guardian: Some((24, 4321)),
            control_clients: vec![
                ControlClientState { fd: 25, phase: 0, bytes: b"show co".to_vec(), deadline: 4_000_000_000 },
                ControlClientState { fd: 26, phase: 1, bytes: Vec::new(), deadline: 30_000_000_000 },
                ControlClientState { fd: 27, phase: 2, bytes: b"[]\n\n".to_vec(), deadline: 0 },
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
        assert_eq!(
            fds,
            vec![3, 4, 5, 7, 8, 10, 11, 20, 21, 22, 23, 25, 26, 27],
            "every one but the guardian's pipe"
        );
        assert_eq!(back.connections(), 1);
    }

    #[test]
    fn a_state_of_format_1_reads_without_what_format_2_added() {
        let state = sample();
        let back = State::decode(&state.encode_as(1)).unwrap();
        assert_eq!((back.started_as.as_ref(), back.log_fd, back.guardian), (None, None, None));
        assert_eq!(back.counters.upgrades_failed, 0);
        assert_eq!(back.control_clients, vec![], "no control client");
        assert_eq!(back.workers[0].conns[0].relay.observer, None, "a connection without an observer");
        let mut same = sample();
        (same.started_as, same.log_fd, same.guardian) = (None, None, None);
        same.counters.upgrades_failed = 0;
        same.control_clients.clear();
        same.workers[0].conns[0].relay.observer = None;
        assert_eq!(back, same, "everything else as written");
        assert_eq!(State::decode(&same.encode()).unwrap(), same, "none in format 2 too");
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
        state.control_clients.clear();
        let bytes = state.encode();
        assert!(
            State::decode(&bytes[..bytes.len() - 8]).is_err(),
            "format 2 without its control clients' list"
        );
        let mut state = sample();
        state.workers[0].conns[0].listener = 5;
        assert!(State::decode(&state.encode()).is_err(), "a connection of no listener");
        let mut state = sample();
        state.control_clients[0].phase = 3;
        assert!(State::decode(&state.encode()).is_err(), "a control client in no known phase");
    }
}
