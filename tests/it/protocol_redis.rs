//! A real Redis behind a `protocol = "redis"` listener: idle as Redis's own `timeout` means it,
//! exactly on time. A blocking command outlives `idle_timeout` and gets its reply; subscribers
//! (channels and patterns, RESP2 and RESP3) outlive it and receive a later PUBLISH, and are idle
//! again once the last subscription is gone; MONITOR survives; MULTI/EXEC and inline commands
//! are counted; a pipeline of values from 0 B to 3 MiB comes back byte for byte as Redis sends
//! it directly; CLIENT REPLY OFF makes the connection opaque, then idle by bytes.

use std::time::{Duration, Instant};

use crate::common::*;
use idlereaper::rows::ConnRow;

const PROTOCOL: &str = "protocol = \"redis\"\n";
const IDLE: Duration = Duration::from_secs(1);
const SLACK: Duration = Duration::from_millis(500);
/// Longer than `idle_timeout`: what a connection that is not idle must outlive.
const PAST_IDLE: Duration = Duration::from_millis(2000);

fn relay(redis: &Redis, extra: &str) -> Relay {
    Relay::start(Route::Ip, &redis.addrs(), "redis.sock", "1s", &format!("{PROTOCOL}{extra}"))
}

fn bulk(text: &str) -> Resp {
    Resp::Bulk(text.as_bytes().to_vec())
}

fn array(items: Vec<Resp>) -> Resp {
    Resp::Array { push: false, items }
}

/// Asserts a close in the idle window: no earlier than `IDLE` after `sent`, no later than
/// `IDLE` and the slack after `received`.
fn closed_in_window(conn: &mut RespConn, sent: Instant, received: Instant) {
    let (rest, closed_at) = conn.until_closed(Duration::from_secs(10));
    assert!(
        rest.is_empty(),
        "a reaped Redis client is sent nothing; got {:?}",
        String::from_utf8_lossy(&rest)
    );
    let after = closed_at.duration_since(sent);
    assert!(after >= IDLE, "closed {after:?} after the last command, before idle_timeout");
    let late = closed_at.duration_since(received);
    assert!(late <= IDLE + SLACK, "closed {late:?} after the last reply");
}

#[test]
fn a_blocking_command_longer_than_idle_timeout_gets_its_reply() {
    let Some(redis) = Redis::start() else { return };
    let relay = relay(&redis, "");
    let run = redis.cli_at(&relay.front, &["BLPOP", "nothing", "3"]);
    assert_eq!(run.assert_success("BLPOP through the relay").stdout.trim(), "", "its nil reply after 3 s");
    let mut waiting = RespConn::connect(&relay.front);
    waiting.send(&resp_command(&[b"BLPOP", b"jobs", b"10"]));
    std::thread::sleep(PAST_IDLE);
    redis.cli(&["LPUSH", "jobs", "job-1"]);
    assert_eq!(waiting.read(), array(vec![bulk("jobs"), bulk("job-1")]));
    assert!(relay.daemon.closes().iter().all(|c| c.reason() != "idle"), "{}", relay.daemon.log());
}

#[test]
fn subscribers_outlive_idle_timeout_until_their_last_subscription_goes() {
    let Some(redis) = Redis::start() else { return };
    let relay = relay(&redis, "");
    let mut channel = RespConn::connect(&relay.front);
    assert_eq!(
        channel.call(&["SUBSCRIBE", "news"]),
        array(vec![bulk("subscribe"), bulk("news"), Resp::Int(1)])
    );
    let mut pattern = RespConn::connect(&relay.front);
    assert_eq!(
        pattern.call(&["PSUBSCRIBE", "n*"]),
        array(vec![bulk("psubscribe"), bulk("n*"), Resp::Int(1)])
    );
    std::thread::sleep(PAST_IDLE);
    assert_eq!(redis.cli(&["PUBLISH", "news", "hello"]).trim(), "2", "both still subscribed");
    assert_eq!(channel.read(), array(vec![bulk("message"), bulk("news"), bulk("hello")]));
    assert_eq!(pattern.read(), array(vec![bulk("pmessage"), bulk("n*"), bulk("news"), bulk("hello")]));
    // The last subscription gone: idle again, and reaped in the window.
    let sent = Instant::now();
    assert_eq!(channel.call(&["UNSUBSCRIBE"]), array(vec![bulk("unsubscribe"), bulk("news"), Resp::Int(0)]));
    closed_in_window(&mut channel, sent, Instant::now());
    assert_eq!(redis.cli(&["PUBLISH", "news", "again"]).trim(), "1", "the pattern subscriber is still there");
    let closes = relay.daemon.closes();
    assert_eq!(closes.len(), 1, "{closes:?}");
    closes[0].assert_reason("idle");
}

#[test]
fn a_resp3_subscriber_gets_pushes_and_a_subscriber_timeout_reaps_it() {
    let Some(redis) = Redis::start() else { return };
    let relay = relay(&redis, "subscriber_idle_timeout = \"3s\"\n");
    let mut client = RespConn::connect(&relay.front);
    assert!(matches!(client.call(&["HELLO", "3"]), Resp::Map(_)));
    let push = |items| Resp::Array { push: true, items };
    assert_eq!(
        client.call(&["SUBSCRIBE", "news"]),
        push(vec![bulk("subscribe"), bulk("news"), Resp::Int(1)])
    );
    std::thread::sleep(PAST_IDLE);
    redis.cli(&["PUBLISH", "news", "pushed"]);
    assert_eq!(client.read(), push(vec![bulk("message"), bulk("news"), bulk("pushed")]));
    // RESP3 lets a subscriber send commands; its reply is counted apart from the pushes.
    assert_eq!(client.call(&["PING"]), Resp::Simple("PONG".into()));
    let received = Instant::now();
    let (_, closed_at) = client.until_closed(Duration::from_secs(10));
    let after = closed_at.duration_since(received);
    assert!(after >= Duration::from_millis(2900) && after <= Duration::from_secs(3) + SLACK, "{after:?}");
    relay.daemon.closes()[0].assert_reason("subscriber_idle");
}

#[test]
fn monitor_survives_idle_timeout() {
    let Some(redis) = Redis::start() else { return };
    let relay = relay(&redis, "");
    let mut monitor = RespConn::connect(&relay.front);
    assert_eq!(monitor.call(&["MONITOR"]), Resp::Simple("OK".into()));
    std::thread::sleep(PAST_IDLE);
    redis.cli(&["SET", "watched", "1"]);
    let line = loop {
        match monitor.read() {
            Resp::Simple(line) if line.contains("\"watched\"") => break line,
            Resp::Simple(_) => {}
            other => panic!("a monitor line, not {other:?}"),
        }
    };
    assert!(line.contains("\"SET\"") || line.contains("\"set\""), "{line}");
    assert!(relay.daemon.closes().is_empty(), "{}", relay.daemon.log());
}

#[test]
fn multi_exec_and_inline_commands_are_counted_then_reaped_on_time() {
    let Some(redis) = Redis::start() else { return };
    let relay = relay(&redis, "");
    let mut client = RespConn::connect(&relay.front);
    client.send(b"MULTI\r\nSET counter 1\r\nINCR counter\r\nEXEC\r\nPING\r\n");
    let answers: Vec<Resp> = (0..5).map(|_| client.read()).collect();
    let queued = Resp::Simple("QUEUED".into());
    let ok = Resp::Simple("OK".into());
    let exec = array(vec![ok.clone(), Resp::Int(2)]);
    assert_eq!(answers, [ok, queued.clone(), queued, exec, Resp::Simple("PONG".into())]);
    // Counted right: an inline blocking command is still a reply owed, past idle_timeout.
    let sent = Instant::now();
    client.send(b"BLPOP nothing 2\r\n");
    assert_eq!(client.read(), Resp::Nil);
    let received = Instant::now();
    assert!(received.duration_since(sent) >= Duration::from_secs(2));
    closed_in_window(&mut client, sent, received);
    relay.daemon.closes()[0].assert_reason("idle");
}

#[test]
fn a_pipeline_of_values_up_to_3_mib_is_byte_identical_to_redis_own_replies() {
    let Some(redis) = Redis::start() else { return };
    let relay = relay(&redis, "");
    let sizes = [0, 1, 2, 100, 65_535, 65_536, 65_537, 1 << 20, 3 << 20];
    let mut rng = Prng::new(6);
    let mut sets = Vec::new();
    let mut gets = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let mut value: Vec<u8> = (0..size).map(|_| rng.next_u64() as u8).collect();
        if size > 10 {
            value[3..5].copy_from_slice(b"\r\n");
            value[6] = b'*';
        }
        let key = format!("value:{i}");
        sets.extend(resp_command(&[b"SET", key.as_bytes(), &value]));
        gets.extend(resp_command(&[b"GET", key.as_bytes()]));
        gets.extend(resp_command(&[b"STRLEN", key.as_bytes()]));
    }
    let mut relayed = RespConn::connect(&relay.front);
    relayed.send(&sets);
    let oks = relayed.read_raw(sizes.len());
    assert_eq!(oks, b"+OK\r\n".repeat(sizes.len()));
    relayed.send(&gets);
    let through = relayed.read_raw(2 * sizes.len());
    let mut direct = RespConn::connect(&Endpoint::Tcp(redis.addr));
    direct.send(&gets);
    let own = direct.read_raw(2 * sizes.len());
    assert!(through == own, "{} bytes through the relay, {} from Redis", through.len(), own.len());
    assert!(through.len() > 4 << 20);
}

#[test]
fn client_reply_off_makes_the_connection_opaque_then_idle_by_bytes() {
    let Some(redis) = Redis::start() else { return };
    let metrics = free_addr();
    let mut socket = None;
    let relay = Relay::start_with(Route::Ip, &redis.addrs(), "redis.sock", "1s", PROTOCOL, |dir| {
        let (control, path) = control_at(dir);
        socket = Some(path);
        ("2s".to_owned(), control + &metrics_at(metrics))
    });
    let socket = socket.unwrap();
    let mut client = RespConn::connect(&relay.front);
    client.send(b"CLIENT REPLY OFF\r\nSET quiet 1\r\n");
    let sent = Instant::now();
    let row =
        wait_for(Duration::from_secs(5), || show_conns(&socket).into_iter().find(|r| r.state == "opaque"));
    let row = row.expect("the connection shown opaque");
    assert_eq!(
        (row.protocol.as_str(), row.timer.as_str(), row.reap_reason.as_str()),
        ("redis", "idle", "idle")
    );
    let body = scrape_metrics(metrics);
    let opaque = metric(&body, "idlereaper_protocol_opaque_total", "listener=\"svc\",cause=\"reply_off\"");
    assert_eq!(opaque, Some(1), "{body}");
    assert_eq!(redis.cli(&["GET", "quiet"]).trim(), "1", "the command ran, unanswered");
    closed_in_window(&mut client, sent, sent);
    relay.daemon.closes()[0].assert_reason("idle");
}

#[test]
fn show_conns_lists_subscribers_no_timer_runs_for_last_across_workers() {
    let Some(redis) = Redis::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let front = Route::Ip.front(dir.path(), "redis.sock");
    let (control, socket) = control_at(dir.path());
    let config = daemon_section(dir.path(), "2s").replace("[daemon]\n", "[daemon]\nworkers = 2\n")
        + &format!(
            "[[listener]]\nname = \"svc\"\nlisten = {}\nupstream = {}\nidle_timeout = \"60s\"\n{PROTOCOL}\n",
            front.config_value(),
            Route::Ip.upstream(&redis.addrs())
        )
        + &control;
    let _daemon = Daemon::start_in(dir, &config);
    // Subscribers first, older than the rest: no timer runs for them (no
    // subscriber_idle_timeout), and they are listed after every connection a deadline runs for.
    let subscribers: Vec<RespConn> = (0..3)
        .map(|_| {
            let mut conn = RespConn::connect(&front);
            let subscribed = array(vec![bulk("subscribe"), bulk("news"), Resp::Int(1)]);
            assert_eq!(conn.call(&["SUBSCRIBE", "news"]), subscribed);
            conn
        })
        .collect();
    let plain: Vec<RespConn> = (0..4)
        .map(|_| {
            let mut conn = RespConn::connect(&front);
            assert_eq!(conn.call(&["PING"]), Resp::Simple("PONG".into()));
            conn
        })
        .collect();
    let rows = wait_for(Duration::from_secs(5), || {
        let rows = show_conns(&socket);
        let settled = rows.len() == 7 && rows.iter().filter(|r| r.state == "subscribed").count() == 3;
        settled.then_some(rows)
    })
    .unwrap_or_else(|| panic!("7 connections, 3 subscribed: {:?}", show_conns(&socket)));
    let (timed, untimed) = rows.split_at(plain.len());
    assert!(timed.iter().all(|r| r.reap_in_ms.is_some() && r.timer == "idle"), "{rows:?}");
    let no_timer = |r: &ConnRow| {
        r.reap_in_ms.is_none() && (r.state.as_str(), r.timer.as_str()) == ("subscribed", "none")
    };
    assert!(untimed.iter().all(no_timer), "no timer last: {rows:?}");
    assert!(timed.windows(2).all(|w| (w[0].reap_in_ms, w[0].id) <= (w[1].reap_in_ms, w[1].id)), "{rows:?}");
    assert!(untimed.windows(2).all(|w| w[0].id < w[1].id), "then by id: {rows:?}");
    // --limit takes the soonest: none of those no timer runs for.
    let limited: Vec<ConnRow> =
        serde_json::from_str(&ctl_stdout(&socket, &["show", "conns", "--limit", "4", "--json"])).unwrap();
    assert_eq!(
        limited.iter().map(|r| r.id).collect::<Vec<_>>(),
        timed.iter().map(|r| r.id).collect::<Vec<_>>()
    );
    // The table, with the observers' columns: `-` where no deadline runs.
    let table = ctl_stdout(&socket, &["show", "conns"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].contains("protocol  state") && lines[0].contains("timer"), "{table}");
    assert_eq!(lines.len(), 8, "{table}");
    for line in &lines[5..] {
        assert!(
            line.contains("redis") && line.contains("subscribed  none") && line.contains("  -  "),
            "{table}"
        );
    }
    drop((subscribers, plain));
}
