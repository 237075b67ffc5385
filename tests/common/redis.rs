//! The test's own Redis server ([`Redis`]) and its client tools, `redis-cli` and
//! `redis-benchmark`.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::services::{free_localhost_port, Server, START_TRIES};
use super::{
    ipv6_loopback_available, require_program, run_tool, Endpoint, ServiceAddrs, ToolRun, SERVICES_INSTALL,
};

/// The test's own `redis-server`: no persistence, TCP on 127.0.0.1 (and ::1) and a Unix socket
/// (mode 777) in its temp directory.
pub struct Redis {
    pub addr: SocketAddr,
    pub socket: PathBuf,
    server: Server,
}

impl Redis {
    pub const SERVER: &str = "/usr/bin/redis-server";
    pub const CLI: &str = "/usr/bin/redis-cli";
    pub const BENCHMARK: &str = "/usr/bin/redis-benchmark";

    /// Starts a Redis server and waits until it answers PING on TCP and on its socket; `None`
    /// (the test skipped, see [`require_program`]) if Redis is not installed.
    pub fn start() -> Option<Redis> {
        if ![Redis::SERVER, Redis::CLI, Redis::BENCHMARK].iter().all(|p| require_program(p, SERVICES_INSTALL))
        {
            return None;
        }
        let mut failures = Vec::new();
        for _ in 0..START_TRIES {
            match Redis::try_start() {
                Ok(redis) => return Some(redis),
                Err(log) => failures.push(log),
            }
        }
        panic!("redis-server did not start in {START_TRIES} tries:\n{}", failures.join("\n"));
    }

    fn try_start() -> Result<Redis, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_localhost_port();
        let socket = dir.path().join("redis.sock");
        let log = dir.path().join("redis.log");
        let bind = if ipv6_loopback_available() { "127.0.0.1 ::1" } else { "127.0.0.1" };
        let child = Command::new(Redis::SERVER)
            .args(["--port", &port.to_string(), "--bind", bind, "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--dir"])
            .arg(dir.path())
            .arg("--unixsocket")
            .arg(&socket)
            .args(["--unixsocketperm", "777", "--logfile"])
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", Redis::SERVER));
        let mut server = Server { name: "redis-server", child, log, stop_signal: libc::SIGKILL, dir };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let (tcp, unix) = (Endpoint::Tcp(addr), Endpoint::Unix(socket.clone()));
        server.wait_ready(|| pong(&tcp) && pong(&unix))?;
        Ok(Redis { addr, socket, server })
    }

    /// Where this server answers.
    pub fn addrs(&self) -> ServiceAddrs {
        ServiceAddrs { tcp: self.addr, unix: self.socket.clone() }
    }

    /// `redis-cli -h <ip> -p <port> args...` straight to the server; its stdout, or a panic if
    /// it fails.
    pub fn cli(&self, args: &[&str]) -> String {
        let run = self.cli_at(&Endpoint::Tcp(self.addr), args);
        run.assert_success(&format!("redis-cli {args:?}"));
        run.stdout
    }

    /// `redis-cli` with `args` to `to` (the server or a relay in front of it), within 30 s.
    pub fn cli_at(&self, to: &Endpoint, args: &[&str]) -> ToolRun {
        let mut command = Command::new(Redis::CLI);
        command.args(redis_target(to)).args(args);
        run_tool(&mut command, self.server.dir.path(), Duration::from_secs(30))
    }

    /// `redis-benchmark` with `args` to `to`, within `timeout` (it may spin forever when its
    /// connections fail, so the deadline matters).
    pub fn benchmark_at(&self, to: &Endpoint, args: &[&str], timeout: Duration) -> ToolRun {
        let mut command = Command::new(Redis::BENCHMARK);
        command.args(redis_target(to)).args(args);
        run_tool(&mut command, self.server.dir.path(), timeout)
    }

    /// A field of `INFO <section>`, as a number.
    pub fn info_field(&self, section: &str, field: &str) -> u64 {
        let info = self.cli(&["INFO", section]);
        let prefix = format!("{field}:");
        let value = info.lines().find_map(|l| l.trim().strip_prefix(&prefix).map(str::to_string));
        value
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no numeric {field} in INFO {section}:\n{info}"))
    }

    /// `connected_clients` of `INFO clients` (which counts the redis-cli that asks).
    pub fn info_clients(&self) -> u64 {
        self.info_field("clients", "connected_clients")
    }

    /// How many times `command` ran, from `INFO commandstats` (`cmdstat_set:calls=2000,...`).
    pub fn command_calls(&self, command: &str) -> u64 {
        let stats = self.cli(&["INFO", "commandstats"]);
        let prefix = format!("cmdstat_{command}:calls=");
        let line = stats.lines().find_map(|l| l.trim().strip_prefix(&prefix).map(str::to_string));
        line.and_then(|rest| rest.split(',').next()?.parse().ok()).unwrap_or(0)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.server.log()
    }
}

/// The `redis-cli`/`redis-benchmark` arguments that address `to`.
fn redis_target(to: &Endpoint) -> Vec<String> {
    match to {
        Endpoint::Tcp(addr) => vec!["-h".into(), addr.ip().to_string(), "-p".into(), addr.port().to_string()],
        Endpoint::Unix(path) => vec!["-s".into(), path.display().to_string()],
    }
}

/// Sends a RESP PING to `at` and checks the answer is `+PONG`.
fn pong(at: &Endpoint) -> bool {
    let Ok(mut s) = at.try_connect() else {
        return false;
    };
    let mut answer = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}
