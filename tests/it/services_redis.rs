//! A real Redis behind the daemon, as a user runs it: `redis-cli` round trips, a
//! `redis-benchmark` run that completes every request, and an idle client closed, after which
//! Redis counts one client fewer; and the `idle_notice` a client reads before that close.
//!
//! Each check is a function of the [`Route`]: the listener and upstream written in one of the
//! config's address forms: each check runs by IP address, by host name and Unix socket to Unix
//! socket (the round trips also by a list of upstreams; the notice only by IP and Unix socket).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::common::*;

/// What a Unix listener in front of Redis is called in the daemon's temp dir.
const SOCKET: &str = "redis-front.sock";
/// The notice the daemon writes to an idle client before closing it: a RESP error, which
/// `redis-cli` and client libraries show as `(error) ERR idle timeout`.
const NOTICE: &str = "-ERR idle timeout\r\n";

/// SET through the relay, GET back through the relay and straight from Redis.
fn redis_cli_round_trips(route: Route) {
    let Some(redis) = Redis::start() else { return };
    let relay = Relay::start(route, &redis.addrs(), SOCKET, "30s", "");
    let value = format!("through {route:?}");
    let set = redis.cli_at(&relay.front, &["SET", "greeting", &value]);
    assert_eq!(set.assert_success("SET through the relay").stdout.trim(), "OK");
    let get = redis.cli_at(&relay.front, &["GET", "greeting"]);
    assert_eq!(get.assert_success("GET through the relay").stdout.trim(), value);
    assert_eq!(redis.cli(&["GET", "greeting"]).trim(), value, "the relay wrote to the real Redis");
}

/// `redis-benchmark -t set,get -n 2000 -c 10` through the relay: both tests report every
/// request completed, and Redis counts them all.
fn redis_benchmark_completes(route: Route) {
    let Some(redis) = Redis::start() else { return };
    let relay = Relay::start(route, &redis.addrs(), SOCKET, "30s", "");
    let args = ["-t", "set,get", "-n", "2000", "-c", "10"];
    let run = redis.benchmark_at(&relay.front, &args, Duration::from_secs(60));
    run.assert_success("redis-benchmark through the relay");
    let completed = completed_requests(&run.stdout);
    assert_eq!(
        completed,
        [("SET".to_string(), 2000), ("GET".to_string(), 2000)],
        "requests completed per test; stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    // redis-benchmark also sends one SET and one GET of its own (it checks the server first).
    for command in ["set", "get"] {
        let calls = redis.command_calls(command);
        assert!((2000..=2001).contains(&calls), "Redis ran {command} {calls} times");
    }
    assert!(!relay.closed_one_as_idle(), "no connection idle for 30 s; log:\n{}", relay.daemon.log());
}

/// From redis-benchmark's report, each test's `====== NAME ======` and the `N requests
/// completed in ...` that follows it (progress lines end with `\r`, not `\n`).
fn completed_requests(stdout: &str) -> Vec<(String, u64)> {
    let mut found = Vec::new();
    let mut test = None;
    for line in stdout.split(['\r', '\n']).map(str::trim) {
        if let Some(name) = line.strip_prefix("====== ").and_then(|l| l.strip_suffix(" ======")) {
            test = Some(name.to_string());
        } else if let Some(n) = line.split_once(" requests completed in ").and_then(|(n, _)| n.parse().ok()) {
            found.push((test.take().unwrap_or_default(), n));
        }
    }
    found
}

/// A client that answers one PING and then says nothing is closed once `idle_timeout` (1 s)
/// has passed, not before; Redis's connected_clients goes back to what it was.
fn idle_client_is_closed(route: Route) {
    let Some(redis) = Redis::start() else { return };
    let baseline = redis.info_clients();
    let relay = Relay::start(route, &redis.addrs(), SOCKET, "1s", "");
    let mut client = relay.front.connect();
    client.write_all(b"PING\r\n").unwrap();
    let mut pong = [0u8; 7];
    client.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"+PONG\r\n");
    let since = Instant::now();
    assert_eq!(redis.info_clients(), baseline + 1, "Redis counts the relayed client");

    let rest = client.read_until_closed(Duration::from_secs(10));
    let idle_for = since.elapsed();
    assert!(rest.is_empty(), "nothing but the close; got {:?}", String::from_utf8_lossy(&rest));
    assert!(idle_for >= Duration::from_millis(950), "closed after {idle_for:?} of silence, before 1 s");
    let back = wait_for(Duration::from_secs(5), || (redis.info_clients() == baseline).then_some(()));
    assert!(back.is_some(), "connected_clients stays at {} (baseline {baseline})", redis.info_clients());
    assert!(relay.closed_one_as_idle(), "the daemon logs reason=idle; log:\n{}", relay.daemon.log());
}

/// With `idle_notice`, the idle client reads the notice, and then the close.
fn idle_notice_comes_before_the_close(route: Route) {
    let Some(redis) = Redis::start() else { return };
    let extra = format!("idle_notice = {NOTICE:?}\n");
    let relay = Relay::start(route, &redis.addrs(), SOCKET, "1s", &extra);
    let mut client = relay.front.connect();
    client.write_all(b"PING\r\n").unwrap();
    let got = client.read_until_closed(Duration::from_secs(10));
    assert_eq!(
        String::from_utf8_lossy(&got),
        format!("+PONG\r\n{NOTICE}"),
        "the answer, the notice, then EOF"
    );
}

#[test]
fn redis_cli_round_trips_by_ip() {
    redis_cli_round_trips(Route::Ip);
}

#[test]
fn redis_cli_round_trips_by_host_name() {
    redis_cli_round_trips(Route::HostName);
}

#[test]
fn redis_cli_round_trips_unix_to_unix() {
    redis_cli_round_trips(Route::Unix);
}

#[test]
fn redis_cli_round_trips_by_list() {
    redis_cli_round_trips(Route::List);
}

#[test]
fn redis_benchmark_completes_by_ip() {
    redis_benchmark_completes(Route::Ip);
}

#[test]
fn redis_benchmark_completes_by_host_name() {
    redis_benchmark_completes(Route::HostName);
}

#[test]
fn redis_benchmark_completes_unix_to_unix() {
    redis_benchmark_completes(Route::Unix);
}

#[test]
fn redis_idle_client_is_closed_by_ip() {
    idle_client_is_closed(Route::Ip);
}

#[test]
fn redis_idle_client_is_closed_by_host_name() {
    idle_client_is_closed(Route::HostName);
}

#[test]
fn redis_idle_client_is_closed_unix_to_unix() {
    idle_client_is_closed(Route::Unix);
}

#[test]
fn redis_idle_notice_comes_before_the_close_by_ip() {
    idle_notice_comes_before_the_close(Route::Ip);
}

#[test]
fn redis_idle_notice_comes_before_the_close_unix_to_unix() {
    idle_notice_comes_before_the_close(Route::Unix);
}

#[test]
fn benchmark_report_is_parsed() {
    let report = " \rSET: rps=0.0 (overall: 16000.0)\r   \r====== SET ======\n  2000 requests completed in 0.04 \
                  seconds\n  10 parallel clients\n\n \r====== GET ======\n  1999 requests completed in 0.04 seconds\n";
    assert_eq!(completed_requests(report), [("SET".to_string(), 2000), ("GET".to_string(), 1999)]);
}
