//! A real PostgreSQL behind the daemon, as a user runs it: `pgbench` runs (long sessions, and a
//! new connection per transaction) with no failed transaction, and an idle `psql` session
//! closed: its backend leaves `pg_stat_activity` and psql reports the lost connection; and the
//! `idle_notice` a client reads before that close.
//!
//! Each check is a function of the [`Route`]: the listener and upstream written in one of the
//! config's address forms: `pgbench` and the idle session run by IP address, by host name and
//! Unix socket to Unix socket; the notice by IP address.

use std::fs::{self, File};
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;

/// What psql prints to stderr when the server side of its connection closes without a word
/// (checked with psql 15): the libpq message, then psql's own.
const LOST: [&str; 2] = ["server closed the connection unexpectedly", "connection to server was lost"];

/// `pgbench -i`, then `-c 8 -T 5 -S` (eight long sessions) and `-C -c 4 -T 3 -S` (a connection
/// per transaction) through the relay: each exits 0, with transactions done and none failed.
fn pgbench_runs_clean(route: Route) {
    let Some(pg) = Postgres::start() else { return };
    let relay = Relay::start(route, &pg.addrs(), &pg.socket_name(), "5s", "");
    pg.pgbench(&relay.front, &["-i", "-s", "1", "-q"], Duration::from_secs(120)).assert_success("pgbench -i");
    for args in [&["-c", "8", "-T", "5", "-S"][..], &["-C", "-c", "4", "-T", "3", "-S"]] {
        let closes_before = relay.daemon.closes().len();
        let run = pg.pgbench(&relay.front, args, Duration::from_secs(60));
        let what = format!("pgbench {}", args.join(" "));
        run.assert_success(&what);
        let summary = PgbenchSummary::parse(&run.stdout)
            .unwrap_or_else(|| panic!("{what}: no summary in its stdout:\n{}", run.stdout));
        assert_eq!(summary.failed, Some(0), "{what}: failed transactions; stdout:\n{}", run.stdout);
        assert!(summary.processed > 0 && summary.tps > 0.0, "{what}: nothing done; stdout:\n{}", run.stdout);
        if args.contains(&"-C") {
            // The last closes may still be on their way to the log when pgbench exits.
            let closed = || (relay.daemon.closes().len() - closes_before) as u64;
            let all = wait_for(Duration::from_secs(5), || (closed() >= summary.processed).then_some(()));
            assert!(all.is_some(), "{what}: {} connections relayed for {summary:?}", closed());
        }
    }
    assert!(!relay.closed_one_as_idle(), "no session idle for 5 s; log:\n{}", relay.daemon.log());
}

/// A `psql` session (its queries on a pipe) that runs one query and then says nothing past the
/// 1 s `idle_timeout`: its backend leaves `pg_stat_activity`; the next query finds the connection
/// gone, and psql says so and exits with status 2.
fn idle_psql_session_is_closed(route: Route) {
    let Some(pg) = Postgres::start() else { return };
    let relay = Relay::start(route, &pg.addrs(), &pg.socket_name(), "1s", "");
    let (out_path, err_path) = (pg.dir().join("idle-psql.stdout"), pg.dir().join("idle-psql.stderr"));
    let mut psql = pg.psql_command(&relay.front);
    psql.env("PGAPPNAME", "idle-session").stdin(Stdio::piped());
    psql.stdout(File::create(&out_path).unwrap()).stderr(File::create(&err_path).unwrap());
    let mut child = psql.spawn().expect("spawn psql");
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "SELECT 'first answer';").unwrap();

    let backend = |state: &str| {
        let sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'idle-session' \
                   AND state = 'idle' AND query LIKE '%first answer%'";
        (pg.psql(sql).trim() == state).then_some(())
    };
    let output = |p: &std::path::Path| fs::read_to_string(p).unwrap_or_default();
    if wait_for(Duration::from_secs(10), || backend("1")).is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("no idle backend after its first query; psql stderr:\n{}", output(&err_path));
    }
    let gone = wait_for(Duration::from_secs(10), || backend("0"));
    assert!(
        gone.is_some(),
        "the idle backend is still in pg_stat_activity 10 s on; log:\n{}",
        relay.daemon.log()
    );

    // psql notices only when it uses the connection again. The write may fail if it has exited.
    let _ = writeln!(stdin, "SELECT 'second answer';");
    drop(stdin);
    let status = wait_for(Duration::from_secs(10), || child.try_wait().unwrap());
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("psql still runs 10 s after its connection was closed");
    };
    let (stdout, stderr) = (output(&out_path), output(&err_path));
    assert!(stdout.contains("first answer"), "psql printed the first answer; stdout:\n{stdout}");
    assert!(!stdout.contains("second answer"), "no second answer; stdout:\n{stdout}");
    for line in LOST {
        assert!(stderr.contains(line), "psql reports {line:?}; stderr:\n{stderr}");
    }
    assert_eq!(status.code(), Some(2), "psql's exit status for a lost connection; stderr:\n{stderr}");
    assert!(relay.closed_one_as_idle(), "the daemon logs reason=idle; log:\n{}", relay.daemon.log());
}

/// With `idle_notice`, a client that asked for TLS (and was told `N`, no) and then said nothing
/// reads the notice, and then the close.
fn idle_notice_comes_before_the_close(route: Route) {
    let Some(pg) = Postgres::start() else { return };
    let notice = "idle timeout: closed by idlereaper\n";
    let extra = format!("idle_notice = {notice:?}\n");
    let relay = Relay::start(route, &pg.addrs(), &pg.socket_name(), "1s", &extra);
    let mut client = relay.front.connect();
    // SSLRequest: length 8, code 80877103.
    client.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).unwrap();
    let got = client.read_until_closed(Duration::from_secs(10));
    assert_eq!(String::from_utf8_lossy(&got), format!("N{notice}"), "the answer, the notice, then EOF");
}

#[test]
fn pgbench_runs_clean_by_ip() {
    pgbench_runs_clean(Route::Ip);
}

#[test]
fn pgbench_runs_clean_by_host_name() {
    pgbench_runs_clean(Route::HostName);
}

#[test]
fn pgbench_runs_clean_unix_to_unix() {
    pgbench_runs_clean(Route::Unix);
}

#[test]
fn idle_psql_session_is_closed_by_ip() {
    idle_psql_session_is_closed(Route::Ip);
}

#[test]
fn idle_psql_session_is_closed_by_host_name() {
    idle_psql_session_is_closed(Route::HostName);
}

#[test]
fn idle_psql_session_is_closed_unix_to_unix() {
    idle_psql_session_is_closed(Route::Unix);
}

#[test]
fn postgres_idle_notice_comes_before_the_close_by_ip() {
    idle_notice_comes_before_the_close(Route::Ip);
}

#[test]
fn pgbench_summary_is_parsed() {
    let stdout =
        "transaction type: <builtin: select only>\nnumber of transactions actually processed: 41234\n\
                  number of failed transactions: 0 (0.000%)\nlatency average = 0.970 ms\n\
                  tps = 8245.123456 (without initial connection time)\n";
    let summary = PgbenchSummary::parse(stdout).unwrap();
    assert_eq!(summary, PgbenchSummary { processed: 41234, failed: Some(0), tps: 8245.123456 });
    assert_eq!(PgbenchSummary::parse("pgbench: error: connection failed\n"), None);
}
