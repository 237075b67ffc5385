//! A real PostgreSQL behind a `protocol = "postgres"` listener: idle as PostgreSQL means it.
//! Long queries (simple, extended, pipelined) outlive `idle_timeout`; an idle session is closed
//! in its window and told so as PostgreSQL tells it (57P05, the same fields in the same order as
//! the server's own idle-session timeout); idle in a transaction has its own timer and 25P03,
//! and its work is rolled back without the server logging a lost client; LISTEN/NOTIFY and COPY
//! both ways pass; TLS passes and is shown opaque; a busy session that is killed has its query
//! cancelled; a stop past `shutdown_timeout` tells the client 57P01.

use std::fs::{self, File};
use std::io::Write;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const PROTOCOL: &str = "protocol = \"postgres\"\n";
/// A second past `idle_timeout`, the tick, and a loaded machine's slack: how late a close may be.
const SLACK: Duration = Duration::from_millis(500);
const IDLE_SESSION: &str = "terminating connection due to idle-session timeout";

/// The relay with a control socket and a metrics endpoint; their addresses.
fn relay_with_control(
    pg: &Postgres,
    idle_timeout: &str,
    extra: &str,
    shutdown_timeout: &str,
) -> (Relay, std::path::PathBuf, std::net::SocketAddr) {
    let metrics = free_addr();
    let mut socket = None;
    let relay = Relay::start_with(Route::Ip, &pg.addrs(), &pg.socket_name(), idle_timeout, extra, |dir| {
        let (control, path) = control_at(dir);
        socket = Some(path);
        (shutdown_timeout.to_owned(), control + &metrics_at(metrics))
    });
    (relay, socket.unwrap(), metrics)
}

/// Asserts a close no earlier than `timeout` after `sent` (the daemon's last activity cannot
/// precede it) and no later than `timeout` and the slack after `received`.
fn assert_window(closed_at: Instant, sent: Instant, received: Instant, timeout: Duration) {
    let after = closed_at.duration_since(sent);
    assert!(after >= timeout, "closed {after:?} after the last query was sent, before {timeout:?}");
    let late = closed_at.duration_since(received);
    assert!(late <= timeout + SLACK, "closed {late:?} after the last answer; the timeout is {timeout:?}");
}

/// The one message a closed session got: an ErrorResponse with this SQLSTATE.
fn the_error(messages: &[PgMessage], sqlstate: &str) -> PgMessage {
    assert_eq!(messages.len(), 1, "one message before EOF: {messages:?}");
    let error = messages[0].clone();
    assert_eq!((error.kind, error.field(b'C').as_deref()), (b'E', Some(sqlstate)), "{:?}", error.fields());
    assert_eq!(error.field(b'V').as_deref(), Some("FATAL"));
    error
}

fn server_log_is_clean(pg: &Postgres) {
    let log = pg.log();
    for abrupt in ["unexpected EOF", "connection reset", "could not receive data", "could not send data"] {
        assert!(!log.contains(abrupt), "the server logged {abrupt:?}:\n{log}");
    }
}

#[test]
fn long_queries_outlive_idle_timeout_by_simple_extended_and_pipelined_protocol() {
    let Some(pg) = Postgres::start() else { return };
    let relay = Relay::start(Route::Ip, &pg.addrs(), &pg.socket_name(), "1s", PROTOCOL);
    let mut psql = pg.psql_command(&relay.front);
    psql.args(["-At", "-c", "select 'slept', pg_sleep(4)"]);
    let run = run_tool(&mut psql, pg.dir(), Duration::from_secs(60));
    assert!(run.assert_success("a 4 s query by the simple protocol").stdout.starts_with("slept|"));
    let scripts = [
        ("extended", "select pg_sleep(4);\n"),
        (
            "pipelined",
            "\\startpipeline\nselect pg_sleep(1.5);\nselect pg_sleep(1.5);\nselect 1;\n\\endpipeline\n",
        ),
    ];
    for (name, script) in scripts {
        let path = pg.dir().join(format!("{name}.sql"));
        fs::write(&path, script).unwrap();
        let args = ["-n", "-M", "extended", "-t", "1", "-f", path.to_str().unwrap()];
        let run = pg.pgbench(&relay.front, &args, Duration::from_secs(60));
        run.assert_success(name);
        let summary = PgbenchSummary::parse(&run.stdout).expect("pgbench's summary");
        assert_eq!((summary.processed, summary.failed), (1, Some(0)), "{name}: {}", run.stdout);
    }
    let closes = relay.daemon.closes();
    assert!(closes.iter().all(|c| c.reason() == "client_closed"), "{closes:?}");
}

#[test]
fn an_idle_session_is_closed_in_its_window_and_told_as_postgresql_tells_it() {
    let Some(pg) = Postgres::start() else { return };
    let relay = Relay::start(Route::Ip, &pg.addrs(), &pg.socket_name(), "1s", PROTOCOL);
    let mut client = PgWire::connect(&relay.front, Postgres::DATABASE, "");
    let sent = Instant::now();
    assert_eq!(PgWire::status(&client.query("select 1")), Some(b'I'));
    let received = Instant::now();
    let (messages, closed_at) = client.until_closed(Duration::from_secs(10));
    assert_window(closed_at, sent, received, Duration::from_secs(1));
    let ours = the_error(&messages, "57P05");
    assert_eq!(ours.field(b'M').as_deref(), Some(IDLE_SESSION));
    // PostgreSQL's own, for the same reason: the same fields, in the same order (it adds where
    // in its source the error was raised).
    let mut direct =
        PgWire::connect(&Endpoint::Tcp(pg.addr), Postgres::DATABASE, "-c idle_session_timeout=300");
    direct.query("select 1");
    let (theirs, _) = direct.until_closed(Duration::from_secs(10));
    let theirs: Vec<_> = theirs[0].fields().into_iter().filter(|(code, _)| b"SVCM".contains(code)).collect();
    assert_eq!(ours.fields(), theirs);
    let close =
        relay.daemon.closes().into_iter().find(|c| c.reason() != "client_closed").expect("a close line");
    close.assert_reason("idle");
    let gone = || {
        (pg.psql("select count(*) from pg_stat_activity where query = 'select 1'").trim() == "0")
            .then_some(())
    };
    assert!(wait_for(Duration::from_secs(5), gone).is_some(), "both backends exited");
    server_log_is_clean(&pg);
}

#[test]
fn psql_prints_postgresqls_own_words_for_an_idle_session() {
    let Some(pg) = Postgres::start() else { return };
    let relay = Relay::start(Route::Ip, &pg.addrs(), &pg.socket_name(), "1s", PROTOCOL);
    let (out, err) = (pg.dir().join("psql.out"), pg.dir().join("psql.err"));
    let mut psql = pg.psql_command(&relay.front);
    psql.stdin(Stdio::piped()).stdout(File::create(&out).unwrap()).stderr(File::create(&err).unwrap());
    let mut child = psql.spawn().expect("spawn psql");
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "select 'first answer';").unwrap();
    let closed = wait_for(Duration::from_secs(10), || relay.daemon.closes().into_iter().next());
    closed.expect("the idle session closed").assert_reason("idle");
    let _ = writeln!(stdin, "select 'second answer';");
    drop(stdin);
    let status = finish(&mut child);
    let (stdout, stderr) = (fs::read_to_string(out).unwrap(), fs::read_to_string(err).unwrap());
    assert!(stdout.contains("first answer") && !stdout.contains("second answer"), "{stdout}");
    assert!(stderr.contains(&format!("FATAL:  {IDLE_SESSION}")), "psql says why:\n{stderr}");
    assert_eq!(status, Some(2), "psql's status for a lost connection; stderr:\n{stderr}");
}

/// Waits (up to 10 s) for a child to exit; its exit code.
fn finish(child: &mut Child) -> Option<i32> {
    let status = wait_for(Duration::from_secs(10), || child.try_wait().unwrap());
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("still running 10 s on");
    }
    status.and_then(|s| s.code())
}

#[test]
fn idle_in_a_transaction_has_its_own_timer_and_25p03_and_is_rolled_back() {
    let Some(pg) = Postgres::start() else { return };
    pg.psql("create table work (n int)");
    let extra = format!("{PROTOCOL}idle_in_transaction_timeout = \"1s\"\n");
    let relay = Relay::start(Route::Ip, &pg.addrs(), &pg.socket_name(), "5s", &extra);
    let mut outside = PgWire::connect(&relay.front, Postgres::DATABASE, "");
    outside.query("select 'outside'");
    let mut inside = PgWire::connect(&relay.front, Postgres::DATABASE, "");
    inside.query("begin");
    let sent = Instant::now();
    assert_eq!(PgWire::status(&inside.query("insert into work values (1)")), Some(b'T'));
    let received = Instant::now();
    let (messages, closed_at) = inside.until_closed(Duration::from_secs(10));
    assert_window(closed_at, sent, received, Duration::from_secs(1));
    let error = the_error(&messages, "25P03");
    assert_eq!(
        error.field(b'M').as_deref(),
        Some("terminating connection due to idle-in-transaction timeout")
    );
    // The session outside a transaction runs idle_timeout (5 s): still open.
    assert_eq!(PgWire::status(&outside.query("select 'still here'")), Some(b'I'));
    assert_eq!(pg.psql("select count(*) from work").trim(), "0", "the transaction's work is rolled back");
    let gone = || {
        (pg.psql("select count(*) from pg_stat_activity where query like 'insert%'").trim() == "0")
            .then_some(())
    };
    assert!(wait_for(Duration::from_secs(5), gone).is_some(), "the backend exited");
    server_log_is_clean(&pg);
    let closes = relay.daemon.closes();
    assert!(closes.iter().any(|c| c.reason() == "idle_in_transaction"), "{closes:?}");
}

#[test]
fn listen_notify_and_copy_of_50_mb_both_ways_pass_intact() {
    let Some(pg) = Postgres::start() else { return };
    pg.psql("create table lines (line text)");
    let relay = Relay::start(Route::Ip, &pg.addrs(), &pg.socket_name(), "3s", PROTOCOL);
    let mut listener = PgWire::connect(&relay.front, Postgres::DATABASE, "");
    listener.query("listen news");
    pg.psql("notify news, 'hello'");
    let note = listener.read().expect("a notification").expect("not closed");
    assert_eq!(note.kind, b'A');
    assert!(note.body.ends_with(b"news\0hello\0"), "{note:?}");
    assert_eq!(PgWire::status(&listener.query("select 1")), Some(b'I'));
    // 50 MB of lines, in and out.
    let mut rng = Prng::new(20);
    let text: String = (0..520_000)
        .map(|_| {
            let line: String = (0..99).map(|_| char::from(b'a' + (rng.next_u64() % 26) as u8)).collect();
            line + "\n"
        })
        .collect();
    let (input, output) = (pg.dir().join("in.txt"), pg.dir().join("out.txt"));
    fs::write(&input, &text).unwrap();
    for copy in [
        format!("\\copy lines from '{}'", input.display()),
        format!("\\copy lines to '{}'", output.display()),
    ] {
        let mut psql = pg.psql_command(&relay.front);
        psql.args(["-c", &copy]);
        run_tool(&mut psql, pg.dir(), Duration::from_secs(120)).assert_success(&copy);
    }
    assert!(fs::read(&output).unwrap() == text.as_bytes(), "COPY out gave back what COPY in took");
}

#[test]
fn a_tls_session_passes_and_is_shown_opaque() {
    let Some(pg) = Postgres::start_with_tls() else { return };
    let (relay, socket, metrics) = relay_with_control(&pg, "30s", PROTOCOL, "2s");
    let out = pg.dir().join("tls.out");
    let mut psql = pg.psql_command(&relay.front);
    psql.args(["-At"]).env("PGSSLMODE", "require").stdin(Stdio::piped());
    psql.stdout(File::create(&out).unwrap()).stderr(Stdio::null());
    let mut child = psql.spawn().expect("spawn psql");
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "select 'over tls', ssl from pg_stat_ssl where pid = pg_backend_pid();").unwrap();
    let answered = wait_for(Duration::from_secs(10), || {
        fs::read_to_string(&out).ok().filter(|o| o.contains("over tls"))
    });
    assert_eq!(answered.as_deref().map(str::trim), Some("over tls|t"), "a TLS session through the relay");
    let rows = show_conns(&socket);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].protocol.as_str(), rows[0].state.as_str(), rows[0].timer.as_str()),
        ("postgres", "opaque", "idle")
    );
    let body = scrape_metrics(metrics);
    assert_eq!(
        metric(&body, "idlereaper_protocol_opaque_total", "listener=\"svc\",cause=\"tls\""),
        Some(1),
        "{body}"
    );
    drop(stdin);
    assert_eq!(finish(&mut child), Some(0));
}

#[test]
fn a_busy_session_killed_has_its_query_cancelled() {
    let Some(pg) = Postgres::start() else { return };
    let (relay, socket, _) = relay_with_control(&pg, "1s", PROTOCOL, "2s");
    let mut client = PgWire::connect(&relay.front, Postgres::DATABASE, "");
    client.stream.write_all(&pg_query("select pg_sleep(30)")).unwrap();
    let sleeping =
        "select count(*) from pg_stat_activity where query = 'select pg_sleep(30)' and state = 'active'";
    assert!(wait_for(Duration::from_secs(10), || (pg.psql(sleeping).trim() == "1").then_some(())).is_some());
    std::thread::sleep(Duration::from_millis(1500)); // past idle_timeout: busy is not idle
    let rows = show_conns(&socket);
    assert_eq!(rows.len(), 1, "busy, not reaped as idle: {rows:?}");
    let row = &rows[0];
    assert_eq!((row.state.as_str(), row.timer.as_str(), row.reap_reason.as_str()), ("busy", "none", "none"));
    assert_eq!(row.reap_in_ms, None);
    let killed_at = Instant::now();
    ctl_stdout(&socket, &["kill", &row.id.to_string()]);
    let (messages, _) = client.until_closed(Duration::from_secs(10));
    let error = the_error(&messages, "57P01");
    assert_eq!(error.field(b'M').as_deref(), Some("terminating connection due to administrator command"));
    let gone = wait_for(Duration::from_secs(1), || {
        (pg.psql(sleeping.trim_end_matches(" and state = 'active'")).trim() == "0").then_some(())
    });
    assert!(gone.is_some(), "the query still runs {:?} after the kill", killed_at.elapsed());
    relay.daemon.wait_log("reason=killed", Duration::from_secs(5));
}

#[test]
fn a_stop_past_shutdown_timeout_tells_the_client_57p01() {
    let Some(pg) = Postgres::start() else { return };
    let (mut relay, _, _) = relay_with_control(&pg, "30s", PROTOCOL, "1s");
    let mut client = PgWire::connect(&relay.front, Postgres::DATABASE, "");
    client.query("select 1");
    relay.daemon.signal(libc::SIGTERM);
    let (messages, _) = client.until_closed(Duration::from_secs(10));
    let error = the_error(&messages, "57P01");
    assert_eq!(error.field(b'M').as_deref(), Some("terminating connection due to administrator command"));
    assert!(relay.daemon.wait_exit(Duration::from_secs(10)).is_some_and(|s| s.success()));
    relay.daemon.closes()[0].assert_reason("shutdown");
    server_log_is_clean(&pg);
}

#[test]
fn a_sessions_state_crosses_a_live_upgrade() {
    let Some(pg) = Postgres::start() else { return };
    let mut relay = Relay::start(Route::Ip, &pg.addrs(), &pg.socket_name(), "2s", PROTOCOL);
    let mut busy = PgWire::connect(&relay.front, Postgres::DATABASE, "");
    busy.stream.write_all(&pg_query("select 'done', pg_sleep(4)")).unwrap();
    let mut idle = PgWire::connect(&relay.front, Postgres::DATABASE, "");
    idle.query("select 1");
    relay.daemon.signal(libc::SIGUSR2);
    relay.daemon.wait_log(" INFO upgraded ", Duration::from_secs(20));
    // Still busy after the upgrade: not reaped at idle_timeout, the query's answer comes.
    let answer = busy.until_ready().expect("the 4 s query's answer");
    assert!(answer.iter().any(|m| m.kind == b'D' && m.body.windows(4).any(|w| w == b"done")), "{answer:?}");
    // Still known to be idle: reaped and told so in PostgreSQL's words.
    let (messages, _) = idle.until_closed(Duration::from_secs(10));
    the_error(&messages, "57P05");
}
