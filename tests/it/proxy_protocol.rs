//! PROXY protocol toward the upstream: the header is the first bytes the upstream reads, byte
//! for byte, with the client's real address; and a real consumer, nginx's stream module with
//! `listen … proxy_protocol`, reads the client address from it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;

fn relay_with(version: &str, listen: SocketAddr, upstream: SocketAddr) -> Daemon {
    Daemon::start(
        &(relay_listener("pp", listen, upstream, "30s") + &format!("proxy_protocol = \"{version}\"\n")),
    )
}

/// Sends `payload`, half-closes, and returns everything the echo upstream sent back.
fn round_trip(listen: SocketAddr, payload: &[u8]) -> (SocketAddr, Vec<u8>) {
    let mut client = connect(listen);
    let me = client.local_addr().unwrap();
    client.write_all(payload).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    client.read_to_end(&mut back).unwrap();
    (me, back)
}

#[test]
fn v1_header_comes_first_byte_for_byte() {
    let upstream = Upstream::echo();
    let listen = free_addr();
    let _daemon = relay_with("v1", listen, upstream.addr);
    let (me, back) = round_trip(listen, b"hello");
    let header = format!("PROXY TCP4 {} {} {} {}\r\n", me.ip(), listen.ip(), me.port(), listen.port());
    assert_eq!(String::from_utf8_lossy(&back), format!("{header}hello"));
}

#[test]
fn v2_header_comes_first_byte_for_byte() {
    let upstream = Upstream::echo();
    let listen = free_addr();
    let _daemon = relay_with("v2", listen, upstream.addr);
    let (me, back) = round_trip(listen, b"payload");
    let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (me, listen) else { panic!("IPv4 test addresses") };
    let mut expected = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    expected.extend_from_slice(&[0x21, 0x11, 0, 12]);
    expected.extend_from_slice(&src.ip().octets());
    expected.extend_from_slice(&dst.ip().octets());
    expected.extend_from_slice(&src.port().to_be_bytes());
    expected.extend_from_slice(&dst.port().to_be_bytes());
    expected.extend_from_slice(b"payload");
    assert_eq!(back, expected);
}

#[test]
fn v1_over_ipv6() {
    if !ipv6_loopback_available() {
        skip("no IPv6 loopback");
        return;
    }
    let upstream = Upstream::start_on(std::net::TcpListener::bind("[::1]:0").unwrap(), |mut s| {
        let _ = echo_until_eof(&mut s);
    });
    let probe = std::net::TcpListener::bind("[::1]:0").unwrap();
    let listen = probe.local_addr().unwrap();
    drop(probe);
    let _daemon = relay_with("v1", listen, upstream.addr);
    let (me, back) = round_trip(listen, b"x");
    assert_eq!(
        String::from_utf8_lossy(&back),
        format!("PROXY TCP6 ::1 ::1 {} {}\r\nx", me.port(), listen.port())
    );
}

/// nginx with the stream module (required in CI, skipped visibly elsewhere): it answers every
/// connection with the client address it read from the PROXY protocol header.
struct Nginx {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    const BIN: &str = "/usr/sbin/nginx";
    const MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";
    const INSTALL: &str = "apt-get install nginx libnginx-mod-stream";

    /// Whether nginx and its stream module are installed; see [`require`].
    fn available() -> bool {
        require_program(Nginx::BIN, Nginx::INSTALL)
            && require(Nginx::MODULE, Path::new(Nginx::MODULE).exists(), Nginx::INSTALL)
    }

    /// Starts nginx, installed, on `listen`; panics (with its error log) if it does not serve.
    fn start(listen: SocketAddr) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let conf = format!(
            "load_module {module};\n\
             daemon off; master_process off; worker_processes 1;\n\
             pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             stream {{ server {{ listen {listen} proxy_protocol; \
             return \"$proxy_protocol_addr $proxy_protocol_port\\n\"; }} }}\n",
            module = Nginx::MODULE
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let child = Command::new(Nginx::BIN)
            .args(["-p", &d.to_string(), "-c", &format!("{d}/nginx.conf")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", Nginx::BIN));
        let nginx = Nginx { child, _dir: dir };
        if wait_for(Duration::from_secs(10), || TcpStream::connect(listen).ok()).is_none() {
            let log = std::fs::read_to_string(nginx._dir.path().join("error.log")).unwrap_or_default();
            panic!("nginx does not serve on {listen} after 10 s; its error.log:\n{log}");
        }
        nginx
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn nginx_reads_the_real_client_address_from_v1_and_v2() {
    if !Nginx::available() {
        return;
    }
    for version in ["v1", "v2"] {
        let nginx_addr = free_addr();
        let _nginx = Nginx::start(nginx_addr);
        let listen = free_addr();
        let _daemon = relay_with(version, listen, nginx_addr);
        let mut client = connect(listen);
        let me = client.local_addr().unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, format!("{} {}\n", me.ip(), me.port()), "proxy_protocol = {version}");
    }
}
