//! The byte format's tests: a state reads back as written, an older format reads with what it
//! lacked left out, and a foreign, damaged or inconsistent state is refused.

use super::*;

/// A connection with every field set, one direction holding bytes in each way it can.
fn sample_conn() -> ConnState {
    let half = HalfState {
        pending: Some(b"held".to_vec()),
        pipe: Some((10, 11, 300, 262_144)),
        bulk: true,
        urgent: Some(b'!'),
        read_eof: true,
        write_shut: false,
        bytes: 1 << 40,
    };
    ConnState {
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
    }
}

/// A relay listener whose upstreams have each kind of health, and a Unix sink.
fn sample_listeners() -> Vec<ListenerState> {
    vec![
        ListenerState {
            text: 0,
            position: 0,
            counters: vec![1, 2, 3],
            unix_path: None,
            targets: vec![vec!["127.0.0.1:6379".into(), "[::1]:6379".into()], vec![]],
            upstream_health: vec![
                UpstreamHealthState {
                    address: "127.0.0.1:6379".into(),
                    disabled: true,
                    failures: 3,
                    backoff: Some((4_000_000_000, 1_500_000_000)),
                },
                UpstreamHealthState {
                    address: "unix:/run/up.sock".into(),
                    disabled: false,
                    failures: 1,
                    backoff: Some((1_000_000_000, 0)),
                },
                UpstreamHealthState { address: "[::1]:6379".into(), disabled: true, ..Default::default() },
            ],
        },
        ListenerState {
            text: 1,
            position: 2,
            counters: vec![],
            unix_path: Some("/run/s".into()),
            targets: vec![],
            upstream_health: vec![],
        },
    ]
}

/// A state with every field set, and one of each kind of control client.
fn sample() -> State {
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
        listeners: sample_listeners(),
        in_force: vec![0],
        counters: Counters {
            started: 1,
            reloads_ok: 2,
            reloads_failed: 3,
            upgrades_ok: 4,
            upgrades_refused: 5,
            upgrades_failed: 6,
        },
        workers: vec![WorkerState {
            listeners: vec![Some(5), None],
            conns: vec![sample_conn()],
            next_id: 43,
        }],
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
    same.listeners[0].upstream_health.clear();
    assert_eq!(back, same, "everything else as written");
    assert_eq!(State::decode(&same.encode()).unwrap(), same, "none in format 3 too");
}

#[test]
fn a_state_of_format_2_reads_with_every_upstream_address_up() {
    let back = State::decode(&sample().encode_as(2)).unwrap();
    assert!(back.listeners.iter().all(|l| l.upstream_health.is_empty()), "no upstream health");
    let mut same = sample();
    same.listeners[0].upstream_health.clear();
    assert_eq!(back, same, "everything else as written");
}

/// A small state as a binary that wrote format 2 wrote it: one worker, one listener whose
/// upstream entry resolved to one address, no connection.
const FORMAT_2: &str = concat!(
    "495248414e444f56020000000500000000000000302e312e303003000000000000000014000000000000002f6574632f",
    "69646c657265617065722e746f6d6c1e000000000000002f72756e2f69646c657265617065722f69646c657265617065",
    "722e70696400030000000000000000000000000000010000000000000062000000000000005b5b6c697374656e65725d",
    "5d0a6e616d65203d202272220a6c697374656e203d20223132372e302e302e313a36333830220a757073747265616d20",
    "3d20223132372e302e302e313a36333739220a69646c655f74696d656f7574203d2022356d220a010000000000000000",
    "000000000000000000000000000000020000000000000001000000000000000200000000000000000100000000000000",
    "01000000000000000e000000000000003132372e302e302e313a36333739010000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000001000000000000000100",
    "0000000000000105000000000000000000000007000000000000000114000000000000002f7573722f7362696e2f6964",
    "6c65726561706572000000000000000000000000000000000000",
);

#[test]
fn the_bytes_a_format_2_binary_wrote_still_read() {
    let bytes: Vec<u8> = (0..FORMAT_2.len() / 2)
        .map(|i| u8::from_str_radix(&FORMAT_2[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    let state = State::decode(&bytes).unwrap();
    assert_eq!(state.from, "0.1.0");
    assert_eq!(state.listeners.len(), 1);
    assert_eq!(state.listeners[0].targets, vec![vec!["127.0.0.1:6379".to_owned()]]);
    assert!(state.listeners[0].upstream_health.is_empty());
    assert_eq!(state.encode_as(2), bytes, "and write back the same");
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
    assert!(State::decode(&bytes[..bytes.len() - 8]).is_err(), "format 2 without its control clients' list");
    let mut state = sample();
    state.listeners[0].upstream_health.truncate(1);
    let mut bytes = state.encode();
    let health = bytes.windows(14).position(|w| w == b"127.0.0.1:6379").expect("the address") + 14;
    let at = bytes[health..].windows(14).position(|w| w == b"127.0.0.1:6379").expect("again") + health + 14;
    bytes[at] = 2; // `disabled` is not a bool
    let e = State::decode(&bytes).unwrap_err().to_string();
    assert!(e.contains("neither 0 nor 1"), "a damaged upstream health: {e}");
    let mut state = sample();
    state.workers[0].conns[0].listener = 5;
    assert!(State::decode(&state.encode()).is_err(), "a connection of no listener");
    let mut state = sample();
    state.control_clients[0].phase = 3;
    assert!(State::decode(&state.encode()).is_err(), "a control client in no known phase");
}
