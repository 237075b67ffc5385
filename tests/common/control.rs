//! Talking to the daemon's control socket as an operator does: `idlereaperctl` run with `-s`,
//! the `[control]` section that makes the daemon listen, and one raw request over the socket
//! (as `socat` sends it) with the answer read to the end.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::IO_TIMEOUT;

/// The client binary under test.
pub const CTL: &str = env!("CARGO_BIN_EXE_idlereaperctl");

/// `idlereaperctl -s SOCKET args…`, bounded by the socket timeouts it sets itself.
pub fn ctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(CTL)
        .arg("-s")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run idlereaperctl")
}

/// `idlereaperctl -s SOCKET args…`, which must succeed: its standard output.
pub fn ctl_ok(socket: &Path, args: &[&str]) -> String {
    let out = ctl(socket, args);
    assert!(
        out.status.success(),
        "idlereaperctl {args:?}: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A `[control]` section with a socket in `dir` of that mode, and the socket's path.
pub fn control_section(dir: &Path, mode: &str) -> (String, PathBuf) {
    let socket = dir.join("control.sock");
    (format!("[control]\nsocket = \"{}\"\nmode = \"{mode}\"\n\n", socket.display()), socket)
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
