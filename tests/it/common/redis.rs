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

/// A command as an array of bulk strings, as clients send it.
pub fn resp_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend(format!("${}\r\n", arg.len()).into_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One RESP2 or RESP3 value, as a test reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    /// An array, a set, or a push (`push` true).
    Array {
        push: bool,
        items: Vec<Resp>,
    },
    /// A map, as its keys and values in turn.
    Map(Vec<Resp>),
    /// Any other scalar line (`#t`, `,1.5`, …), as written.
    Other(String),
}

/// A client of raw RESP: sends bytes and reads values, keeping every byte received, so that the
/// bytes of the values read can be compared.
pub struct RespConn {
    pub stream: super::Stream,
    /// Every byte received; `data[..pos]` has been read.
    data: Vec<u8>,
    pos: usize,
}

impl RespConn {
    pub fn connect(to: &Endpoint) -> RespConn {
        RespConn { stream: to.connect(), data: Vec::new(), pos: 0 }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to redis");
    }

    /// Sends one command and reads its reply.
    pub fn call(&mut self, args: &[&str]) -> Resp {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.send(&resp_command(&args));
        self.read()
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 65536];
        let n = self.stream.read(&mut chunk).expect("read from redis");
        let unread = String::from_utf8_lossy(&self.data[self.pos..]).into_owned();
        assert!(n > 0, "redis closed the connection; unread: {unread:?}");
        self.data.extend_from_slice(&chunk[..n]);
    }

    fn line(&mut self) -> String {
        loop {
            if let Some(end) = self.data[self.pos..].windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.data[self.pos..self.pos + end]).into_owned();
                self.pos += end + 2;
                return line;
            }
            self.fill();
        }
    }

    /// Reads one value.
    pub fn read(&mut self) -> Resp {
        let line = self.line();
        let (kind, rest) = line.split_at(1);
        let count = || rest.parse::<i64>().unwrap_or_else(|_| panic!("a count: {line:?}"));
        match kind {
            "+" => Resp::Simple(rest.to_owned()),
            "-" => Resp::Error(rest.to_owned()),
            ":" => Resp::Int(count()),
            "_" => Resp::Nil,
            "$" | "=" | "!" if count() < 0 => Resp::Nil,
            "$" | "=" | "!" => {
                let n = count() as usize;
                while self.data.len() < self.pos + n + 2 {
                    self.fill();
                }
                let body = self.data[self.pos..self.pos + n].to_vec();
                self.pos += n + 2;
                Resp::Bulk(body)
            }
            "*" | "~" | ">" if count() < 0 => Resp::Nil,
            "*" | "~" | ">" => {
                Resp::Array { push: kind == ">", items: (0..count()).map(|_| self.read()).collect() }
            }
            "%" => Resp::Map((0..2 * count()).map(|_| self.read()).collect()),
            _ => Resp::Other(line),
        }
    }

    /// Reads `count` values and returns the bytes they took, as received.
    pub fn read_raw(&mut self, count: usize) -> Vec<u8> {
        let start = self.pos;
        for _ in 0..count {
            self.read();
        }
        self.data[start..self.pos].to_vec()
    }

    /// Reads until the server closes (within `timeout`): the bytes that came, and when.
    pub fn until_closed(&mut self, timeout: Duration) -> (Vec<u8>, std::time::Instant) {
        let rest = self.stream.read_until_closed(timeout);
        (rest, std::time::Instant::now())
    }
}
