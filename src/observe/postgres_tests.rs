//! Hand-picked conversations with a PostgreSQL server, each fed whole and one byte at a time.

use super::*;
use crate::observe::pg_messages::fatal;

pub(super) fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

pub(super) fn packet(code: u32, rest: &[u8]) -> Vec<u8> {
    let mut p = (rest.len() as u32 + 8).to_be_bytes().to_vec();
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(rest);
    p
}

pub(super) fn startup() -> Vec<u8> {
    packet(196_608, b"user\0postgres\0database\0db\0\0")
}

pub(super) fn rfq(status: u8) -> Vec<u8> {
    msg(b'Z', &[status])
}

/// The server's side of a successful startup, with BackendKeyData pid 4242, key 7.
pub(super) fn welcome() -> Vec<u8> {
    let mut key = 4242u32.to_be_bytes().to_vec();
    key.extend_from_slice(&7u32.to_be_bytes());
    [msg(b'R', &[0, 0, 0, 0]), msg(b'S', b"server_version\x0015.0\0"), msg(b'K', &key), rfq(b'I')].concat()
}

/// A script: `(true, bytes)` from the client, `(false, bytes)` from the server.
type Script<'a> = &'a [(bool, Vec<u8>)];

/// Plays `script` whole and one byte at a time; both must end in the same session.
fn play(script: Script) -> Session {
    let mut whole = Session::new();
    let mut bytewise = Session::new();
    for (from_client, bytes) in script {
        match from_client {
            true => whole.client_sent(bytes),
            false => whole.server_sent(bytes),
        }
        for b in bytes.chunks(1) {
            match from_client {
                true => bytewise.client_sent(b),
                false => bytewise.server_sent(b),
            }
        }
    }
    assert_eq!(whole, bytewise, "the same, however the bytes are cut");
    whole
}

fn ready() -> Vec<(bool, Vec<u8>)> {
    vec![(true, startup()), (false, welcome())]
}

fn with(mut script: Vec<(bool, Vec<u8>)>, more: &[(bool, Vec<u8>)]) -> Vec<(bool, Vec<u8>)> {
    script.extend_from_slice(more);
    script
}

fn query(sql: &str) -> Vec<u8> {
    msg(b'Q', format!("{sql}\0").as_bytes())
}

fn results() -> Vec<u8> {
    [msg(b'T', &[0, 1, b'x', 0]), msg(b'D', &[0, 1, 0, 0, 0, 1, b'1']), msg(b'C', b"SELECT 1\0")].concat()
}

#[test]
fn a_session_starts_then_idles_with_its_key() {
    let s = play(&[(true, startup())]);
    assert_eq!(s.state(), State::Starting);
    let s = play(&ready());
    assert_eq!(s.state(), State::Idle);
    assert_eq!(s.backend_key(), Some(BackendKey { pid: 4242, secret: 7 }));
}

#[test]
fn a_query_is_busy_until_its_ready_for_query() {
    let s = play(&with(ready(), &[(true, query("select pg_sleep(4)"))]));
    assert_eq!(s.state(), State::Busy);
    let s = play(&with(ready(), &[(true, query("select 1")), (false, results()), (false, rfq(b'I'))]));
    assert_eq!(s.state(), State::Idle);
    // Pipelined: busy until the last one's answer.
    let three = [query("a"), query("b"), query("c")].concat();
    let s = play(&with(ready(), &[(true, three.clone()), (false, [rfq(b'I'), rfq(b'I')].concat())]));
    assert_eq!(s.state(), State::Busy);
    let s = play(&with(ready(), &[(true, three), (false, [rfq(b'I'), rfq(b'I'), rfq(b'I')].concat())]));
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn a_transaction_and_an_open_batch_are_idle_in_transaction() {
    let s = play(&with(ready(), &[(true, query("begin")), (false, rfq(b'T'))]));
    assert_eq!(s.state(), State::IdleInTransaction);
    let s =
        play(&with(ready(), &[(true, query("oops")), (false, msg(b'E', b"SERROR\0\0")), (false, rfq(b'E'))]));
    assert_eq!(s.state(), State::IdleInTransaction);
    let batch = [msg(b'P', b"\0select 1\0\0\0"), msg(b'B', &[0; 10]), msg(b'E', &[0; 5])].concat();
    let s = play(&with(ready(), &[(true, batch.clone())]));
    assert_eq!(s.state(), State::IdleInTransaction, "an extended batch without its Sync");
    let s = play(&with(ready(), &[(true, batch.clone()), (true, msg(b'S', b""))]));
    assert_eq!(s.state(), State::Busy);
    let answer = [msg(b'1', b""), msg(b'2', b""), results(), rfq(b'I')].concat();
    let s = play(&with(ready(), &[(true, batch), (true, msg(b'S', b"")), (false, answer)]));
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn copy_is_busy_both_ways_and_the_ignored_sync_is_not_owed() {
    let copy_in = [msg(b'G', &[0, 0, 0])].concat();
    let data = [msg(b'd', b"1\n"), msg(b'd', b"2\n"), msg(b'c', b"")].concat();
    let mut script = with(ready(), &[(true, query("copy t from stdin")), (false, copy_in.clone())]);
    assert_eq!(play(&script).state(), State::Busy);
    script.push((true, data.clone()));
    assert_eq!(play(&script).state(), State::Busy, "CommandComplete not yet back");
    script.push((false, [msg(b'C', b"COPY 2\0"), rfq(b'I')].concat()));
    assert_eq!(play(&script).state(), State::Idle);
    // libpq's extended COPY: Parse..Execute, Sync (ignored in COPY), data, CopyDone, Sync.
    let batch =
        [msg(b'P', b"\0copy\0\0\0"), msg(b'B', &[0; 10]), msg(b'E', &[0; 5]), msg(b'S', b"")].concat();
    let mut script = with(ready(), &[(true, batch), (false, copy_in)]);
    assert_eq!(play(&script).state(), State::Busy);
    script.push((true, [data, msg(b'S', b"")].concat()));
    script.push((false, [msg(b'C', b"COPY 2\0"), rfq(b'I')].concat()));
    assert_eq!(play(&script).state(), State::Idle);
    // COPY TO STDOUT.
    let out = [msg(b'H', &[0, 0, 0]), msg(b'd', b"1\n"), msg(b'c', b"")].concat();
    let mut script = with(ready(), &[(true, query("copy t to stdout")), (false, out)]);
    assert_eq!(play(&script).state(), State::Busy);
    script.push((false, [msg(b'C', b"COPY 1\0"), rfq(b'I')].concat()));
    assert_eq!(play(&script).state(), State::Idle);
}

#[test]
fn asynchronous_messages_change_nothing() {
    let noise = [msg(b'A', b"\0\0\0\x01ch\0\0"), msg(b'N', b"SNOTICE\0\0"), msg(b'S', b"a\0b\0")].concat();
    assert_eq!(play(&with(ready(), &[(false, noise.clone())])).state(), State::Idle);
    let s = play(&with(ready(), &[(true, query("begin")), (false, rfq(b'T')), (false, noise)]));
    assert_eq!(s.state(), State::IdleInTransaction);
}

#[test]
fn what_cannot_be_followed_is_opaque_with_its_cause() {
    let ssl = packet(SSL_REQUEST, b"");
    assert_eq!(play(&[(true, ssl.clone()), (false, b"S".to_vec())]).state(), State::Opaque(Cause::Tls));
    let gss = packet(GSSENC_REQUEST, b"");
    assert_eq!(play(&[(true, gss), (false, b"G".to_vec())]).state(), State::Opaque(Cause::Gss));
    assert_eq!(play(&[(true, vec![0x16, 3, 1, 0, 200])]).state(), State::Opaque(Cause::Tls));
    let s = play(&with(ready(), &[(true, query("start_replication")), (false, msg(b'W', &[0, 0, 0]))]));
    assert_eq!(s.state(), State::Opaque(Cause::Replication));
    for junk in [msg(b'?', b""), rfq(b'I'), vec![b'D', 0xff, 0, 0, 0]] {
        assert_eq!(play(&with(ready(), &[(false, junk)])).state(), State::Opaque(Cause::Unparsable));
    }
    assert_eq!(play(&with(ready(), &[(true, msg(b'~', b""))])).state(), State::Opaque(Cause::Unparsable));
    assert_eq!(play(&[(true, packet(2 << 16, b""))]).state(), State::Opaque(Cause::Unparsable));
    // Refused, then a plain startup: followed.
    let s = play(&[(true, ssl), (false, b"N".to_vec()), (true, startup()), (false, welcome())]);
    assert_eq!(s.state(), State::Idle);
    // A cancel connection passes through as starting.
    let cancel = BackendKey { pid: 1, secret: 2 }.cancel_request();
    assert_eq!(play(&[(true, cancel.to_vec())]).state(), State::Starting);
    assert_eq!(&cancel[..8], &[0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e]);
}

#[test]
fn an_error_response_is_the_one_postgresql_writes() {
    let m = fatal("57P05", "terminating connection due to idle-session timeout");
    let body = b"SFATAL\0VFATAL\0C57P05\0Mterminating connection due to idle-session timeout\0\0";
    assert_eq!(m[0], b'E');
    assert_eq!(u32::from_be_bytes([m[1], m[2], m[3], m[4]]) as usize, body.len() + 4);
    assert_eq!(&m[5..], body);
}

#[test]
fn the_farewell_fits_between_messages() {
    let idle = play(&ready());
    let f = idle.farewell(Closing::Idle);
    assert_eq!(f.to_client, Some(&IDLE_SESSION[..]));
    assert_eq!(f.to_server, Some(TERMINATE));
    assert_eq!(f.cancel, None);
    let tx = play(&with(ready(), &[(true, query("begin")), (false, rfq(b'T'))]));
    assert_eq!(tx.farewell(Closing::IdleInTransaction).to_client, Some(&IDLE_IN_TRANSACTION[..]));
    // Half a message each way: nothing may be put in the middle of it.
    let half = play(&with(ready(), &[(true, query("sel")[..3].to_vec()), (false, vec![b'N', 0, 0])]));
    let f = half.farewell(Closing::Idle);
    assert_eq!((f.to_client, f.to_server), (None, None));
    // Busy: the key to cancel its query; the client hears of the administrator.
    let busy = play(&with(ready(), &[(true, query("select pg_sleep(30)"))]));
    let f = busy.farewell(Closing::Administrator);
    assert_eq!(f.cancel, Some(BackendKey { pid: 4242, secret: 7 }));
    assert_eq!(f.to_client, Some(&ADMINISTRATOR[..]));
    // Before the session is established: nothing.
    assert_eq!(play(&[(true, startup())]).farewell(Closing::Administrator), Farewell::default());
}
