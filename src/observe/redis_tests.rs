//! Hand-picked conversations with a Redis server, each fed whole and one byte at a time.

use super::*;

/// A command as an array of bulk strings.
pub(super) fn array(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend(format!("${}\r\n", arg.len()).into_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn play(script: &[(bool, &[u8])]) -> Session {
    let (mut whole, mut bytewise) = (Session::new(), Session::new());
    for &(from_client, bytes) in script {
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

const C: bool = true;
const S: bool = false;

#[test]
fn a_command_is_busy_until_its_reply() {
    assert_eq!(play(&[]).state(), State::Idle);
    let get = array(&[b"GET", b"k"]);
    assert_eq!(play(&[(C, &get)]).state(), State::Busy);
    assert_eq!(play(&[(C, &get), (S, b"$-1\r\n")]).state(), State::Idle);
    let blpop = array(&[b"BLPOP", b"nokey", b"4"]);
    let two = [get.clone(), blpop].concat();
    assert_eq!(play(&[(C, &two), (S, b"$1\r\nv\r\n")]).state(), State::Busy, "BLPOP's reply owed");
    assert_eq!(play(&[(C, &two), (S, b"$1\r\nv\r\n*-1\r\n")]).state(), State::Idle);
    // Inline, and MULTI's QUEUED replies counted.
    let multi = b"MULTI\r\nSET a 1\r\nINCR a\r\nEXEC\r\n";
    assert_eq!(play(&[(C, multi), (S, b"+OK\r\n+QUEUED\r\n+QUEUED\r\n")]).state(), State::Busy);
    let answers = b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n:2\r\n";
    assert_eq!(play(&[(C, multi), (S, answers)]).state(), State::Idle);
}

#[test]
fn a_subscriber_is_subscribed_until_its_count_falls_to_zero() {
    let sub = array(&[b"SUBSCRIBE", b"a", b"b"]);
    let first = b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n";
    let both = b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n";
    assert_eq!(play(&[(C, &sub)]).state(), State::Busy);
    assert_eq!(play(&[(C, &sub), (S, first)]).state(), State::Busy, "one confirmation to come");
    assert_eq!(play(&[(C, &sub), (S, both)]).state(), State::Subscribed);
    let message = b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$5\r\nhello\r\n";
    assert_eq!(play(&[(C, &sub), (S, both), (S, message)]).state(), State::Subscribed);
    let ping = array(&[b"PING"]);
    let pong = b"*2\r\n$4\r\npong\r\n$0\r\n\r\n";
    assert_eq!(play(&[(C, &sub), (S, both), (C, &ping), (S, message)]).state(), State::Busy);
    assert_eq!(play(&[(C, &sub), (S, both), (C, &ping), (S, pong)]).state(), State::Subscribed);
    let unsub = array(&[b"UNSUBSCRIBE"]);
    let one_gone = b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n";
    let all_gone = b"*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n";
    let script = [(C, &sub[..]), (S, both), (C, &unsub), (S, one_gone)];
    assert_eq!(play(&script).state(), State::Busy, "one channel left to unsubscribe");
    assert_eq!(play(&[(C, &sub), (S, both), (C, &unsub), (S, one_gone), (S, all_gone)]).state(), State::Idle);
    // Patterns: pmessage has four elements.
    let psub = array(&[b"PSUBSCRIBE", b"n*"]);
    let pconfirm = b"*3\r\n$10\r\npsubscribe\r\n$2\r\nn*\r\n:1\r\n";
    let pmessage = b"*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$2\r\nnx\r\n$1\r\n!\r\n";
    assert_eq!(play(&[(C, &psub), (S, pconfirm), (S, pmessage)]).state(), State::Subscribed);
    // SUBSCRIBE without a channel is an error reply.
    let bad = array(&[b"subscribe"]);
    assert_eq!(play(&[(C, &bad), (S, b"-ERR wrong number of arguments\r\n")]).state(), State::Idle);
}

#[test]
fn resp3_pushes_are_never_replies() {
    let hello = array(&[b"HELLO", b"3"]);
    let map = b"%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n";
    let sub = array(&[b"SUBSCRIBE", b"ch"]);
    let push = b">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n";
    let message = b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n";
    let script = [(C, &hello[..]), (S, map), (C, &sub), (S, push), (S, message)];
    assert_eq!(play(&script).state(), State::Subscribed);
    let get = array(&[b"GET", b"k"]);
    let more = [&script[..], &[(C, &get[..]), (S, message)]].concat();
    assert_eq!(play(&more).state(), State::Busy, "RESP3 lets a subscriber send commands");
    let more = [&more[..], &[(S, &b"|1\r\n+ttl\r\n:9\r\n_\r\n"[..])]].concat();
    assert_eq!(play(&more).state(), State::Subscribed, "an attribute and its null: one reply");
}

#[test]
fn monitor_lasts_until_reset() {
    let monitor = array(&[b"MONITOR"]);
    let line = b"+1700000000.000001 [0 127.0.0.1:6000] \"get\" \"k\"\r\n";
    assert_eq!(play(&[(C, &monitor)]).state(), State::Busy);
    assert_eq!(play(&[(C, &monitor), (S, b"+OK\r\n"), (S, line)]).state(), State::Monitoring);
    let reset = b"RESET\r\n";
    let script = [(C, &monitor[..]), (S, b"+OK\r\n"), (C, reset), (S, line)];
    assert_eq!(play(&script).state(), State::Busy);
    let script = [&script[..], &[(S, &b"+RESET\r\n"[..])]].concat();
    assert_eq!(play(&script).state(), State::Idle);
    // RESET also ends subscriptions.
    let sub = array(&[b"SUBSCRIBE", b"ch"]);
    let confirm = b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n";
    assert_eq!(play(&[(C, &sub), (S, confirm), (C, reset), (S, b"+RESET\r\n")]).state(), State::Idle);
}

#[test]
fn what_cannot_be_followed_is_opaque_with_its_cause() {
    let off = array(&[b"client", b"reply", b"off"]);
    assert_eq!(play(&[(C, &off)]).state(), State::Opaque(Cause::ReplyOff));
    assert_eq!(play(&[(C, b"CLIENT REPLY SKIP\r\n")]).state(), State::Opaque(Cause::ReplyOff));
    assert_eq!(play(&[(C, b"CLIENT REPLY ON\r\n"), (S, b"+OK\r\n")]).state(), State::Idle);
    assert_eq!(
        play(&[(S, b"+OK\r\n")]).state(),
        State::Opaque(Cause::Unparsable),
        "a reply nobody asked for"
    );
    assert_eq!(play(&[(C, b"*1\r\nGET\r\n")]).state(), State::Opaque(Cause::Unparsable));
    let multi = b"MULTI\r\nSUBSCRIBE ch\r\n";
    assert_eq!(play(&[(C, multi)]).state(), State::Opaque(Cause::Unparsable));
}
