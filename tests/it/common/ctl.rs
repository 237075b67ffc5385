//! The daemon's control socket and metrics endpoint as a test reaches them: the `[control]` and
//! `[metrics]` sections, `idlereaperctl` run against the socket (or with the configuration file
//! to find it in), its `show conns --json` and `show listeners --json` rows, raw clients of the
//! socket (as `socat` is one: a request sent, the answer read to the end), and a scrape of
//! `/metrics`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use idlereaper::rows::{ConnRow, ListenerRow, UpstreamRow};

use super::{wait_for, Daemon, IO_TIMEOUT};

pub const CTL: &str = env!("CARGO_BIN_EXE_idlereaperctl");

/// A `[control]` section with its socket in `dir`, and the socket's path.
pub fn control_at(dir: &Path) -> (String, PathBuf) {
    control_with_mode(dir, "0660")
}

/// [`control_at`], the socket file of that mode.
pub fn control_with_mode(dir: &Path, mode: &str) -> (String, PathBuf) {
    let socket = dir.join("control.sock");
    (format!("[control]\nsocket = \"{}\"\nmode = \"{mode}\"\n\n", socket.display()), socket)
}

/// A `[metrics]` section on `listen`.
pub fn metrics_at(listen: SocketAddr) -> String {
    format!("[metrics]\nlisten = \"{listen}\"\n\n")
}

/// `idlereaperctl -s SOCKET args…`, bounded by the socket timeouts it sets itself.
pub fn ctl_run(socket: &Path, args: &[&str]) -> Output {
    Command::new(CTL)
        .arg("-s")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run idlereaperctl")
}

/// `idlereaperctl -c CONFIG args…`: the socket found as an operator's would be.
pub fn ctl_with_config(config: &Path, args: &[&str]) -> Output {
    Command::new(CTL)
        .arg("-c")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run idlereaperctl")
}

/// [`ctl_run`], which must succeed: its stdout.
pub fn ctl_stdout(socket: &Path, args: &[&str]) -> String {
    let out = ctl_run(socket, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "idlereaperctl {args:?}: {:?} {stderr}", out.status);
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Every open connection, as `show conns --json` gives it.
pub fn show_conns(socket: &Path) -> Vec<ConnRow> {
    serde_json::from_str(&ctl_stdout(socket, &["show", "conns", "--json"])).expect("JSON rows")
}

/// Every listener in force, as `show listeners --json` gives it.
pub fn show_listeners(socket: &Path) -> Vec<ListenerRow> {
    serde_json::from_str(&ctl_stdout(socket, &["show", "listeners", "--json"])).expect("JSON rows")
}

/// Upstream `address` of listener `name`, as `show listeners --json` gives it (`None` when the
/// listener does not list it).
pub fn upstream_row(socket: &Path, name: &str, address: SocketAddr) -> Option<UpstreamRow> {
    let listeners = show_listeners(socket);
    let listener = listeners.into_iter().find(|l| l.name == name)?;
    listener.upstreams.into_iter().find(|u| u.address == address.to_string())
}

/// Sends `bytes` over the control socket and reads the answer until the daemon closes (a read
/// error ends it too: what came before is returned).
pub fn control_answer(socket: &Path, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let _ = s.write_all(bytes);
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
}

/// A control client connected and accepted by the daemon (its descriptor is open there).
pub fn accepted_client(daemon: &Daemon, socket: &Path) -> UnixStream {
    let before = daemon.fds().total();
    let client = UnixStream::connect(socket).unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let accepted = wait_for(Duration::from_secs(5), || (daemon.fds().total() > before).then_some(()));
    assert!(accepted.is_some(), "the daemon did not accept the control client");
    client
}

/// The rest of the answer, to the daemon's close (a read error fails the test).
pub fn read_rest(client: &mut UnixStream) -> String {
    let mut answer = String::new();
    if let Err(e) = client.read_to_string(&mut answer) {
        panic!("reading the answer: {e} after {answer:?}");
    }
    answer
}

/// The body of `GET /metrics` from `addr`.
pub fn scrape_metrics(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect to /metrics");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read /metrics");
    let (_, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    body.to_owned()
}

/// The value of the sample of `family` with exactly these labels, from a scrape's `body`.
pub fn metric(body: &str, family: &str, labels: &str) -> Option<u64> {
    let prefix = format!("{family}{{{labels}}} ");
    body.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok())
}
