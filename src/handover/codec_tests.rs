//! The byte format's tests: a state reads back as written, an older format reads with what it
//! lacked left out, and a foreign, damaged or inconsistent state is refused.

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
