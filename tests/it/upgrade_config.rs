//! A live upgrade reads the configuration file again and applies it as a reload would: an added
//! listener is bound, a removed one closed while its connections run on, a kept one keeps its
//! socket. A Unix socket listener's file stays in place across the exec and is removed on stop;
//! the per-address counts of open connections carry over, so a limit still holds; a PROXY
//! protocol header not yet sent (the upstream connect still in progress) is sent by the new
//! image, before the client's bytes.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::common::*;

#[test]
fn an_upgrade_applies_the_file_keeps_unix_sockets_and_per_address_counts() {
    let upstream = Upstream::echo();
    let (kept, removed, added) = (free_addr(), free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("relay.sock");
    let base = daemon_section(dir.path(), "2s");
    let limited = "max_connections_per_ip = 3\n\n";
    let unix = format!(
        "[[listener]]\nname = \"u\"\nlisten = \"unix:{}\"\nupstream = \"{}\"\nidle_timeout = \"60s\"\n\n",
        socket.display(),
        upstream.addr
    );
    let before = base.clone()
        + &relay_listener("kept", kept, upstream.addr, "60s")
        + limited
        + &relay_listener("removed", removed, upstream.addr, "60s")
        + &unix;
    let mut daemon = Daemon::start_in(dir, &before);

    let mut on_kept: Vec<TcpStream> = (0..3).map(|_| connect(kept)).collect();
    let mut on_removed = connect(removed);
    let mut on_unix = UnixStream::connect(&socket).unwrap();
    for c in on_kept.iter_mut().chain([&mut on_removed]) {
        assert_echo(c, b"before");
    }
    on_unix.write_all(b"before").unwrap();
    let mut buf = [0u8; 6];
    on_unix.read_exact(&mut buf).unwrap();

    // The file now drops one listener and adds another.
    let after = base
        + &relay_listener("kept", kept, upstream.addr, "60s")
        + limited
        + &relay_listener("added", added, upstream.addr, "60s")
        + &unix;
    fs::write(&daemon.config_path, after).unwrap();
    daemon.signal(libc::SIGUSR2);
    daemon.wait_log("upgraded from=", Duration::from_secs(20));
    daemon.wait_log("listeners=3 kept=2 added=1 removed=1", Duration::from_secs(5));
    // `ps` still shows how it was started.
    let cmdline = fs::read(format!("/proc/{}/cmdline", daemon.pid())).unwrap();
    let args: Vec<String> =
        cmdline.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let config = daemon.config_path.display().to_string();
    assert!(args.contains(&"-f".to_owned()) && args.contains(&config), "{args:?}");

    for c in on_kept.iter_mut().chain([&mut on_removed]) {
        assert_echo(c, b"after the upgrade");
    }
    on_unix.write_all(b"after!").unwrap();
    on_unix.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"after!");
    assert_echo(&mut connect(added), b"the added listener serves");
    assert!(TcpStream::connect(removed).is_err(), "the removed listener is closed");
    let mut again = UnixStream::connect(&socket).expect("the Unix listener still listens");
    again.write_all(b"again!").unwrap();
    again.read_exact(&mut buf).unwrap();

    // Three from 127.0.0.1 are open: a fourth is refused, as before the upgrade.
    let mut fourth = connect(kept);
    let (bytes, _) = read_to_ending(&mut fourth); // closed at once: the limit counts the three
    assert!(bytes.is_empty());
    daemon.wait_log("reason=per_ip_limit", Duration::from_secs(5));

    drop((on_kept, on_removed, on_unix, again));
    assert!(daemon.stop().success(), "{}", daemon.log());
    assert!(!socket.exists(), "the socket file is removed on stop");
}

#[test]
fn a_proxy_header_not_yet_sent_crosses_an_upgrade() {
    let (upstream, fillers) = unanswering_upstream();
    let listen = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_section(dir.path(), "2s")
        + &relay_listener("pp", listen, upstream.local_addr().unwrap(), "60s")
        + "proxy_protocol = \"v1\"\nconnect_timeout = \"30s\"\n\n";
    let mut daemon = Daemon::start_in(dir, &config);
    // The upstream's backlog is full: the daemon's connect is in progress, its PROXY header and
    // the client's bytes waiting.
    let mut client = connect(listen);
    client.write_all(b"hello").unwrap();
    daemon.wait_stat("accepted", 1, Duration::from_secs(5));
    daemon.signal(libc::SIGUSR2);
    daemon.wait_log("upgraded from=", Duration::from_secs(20));

    // Make room: the daemon's next SYN is answered, and the new image finishes the connect.
    for _ in &fillers {
        drop(upstream.accept().unwrap());
    }
    upstream.set_nonblocking(true).unwrap();
    let accepted = wait_for(Duration::from_secs(10), || upstream.accept().ok());
    let (mut relayed, _) = accepted.expect("the daemon connects after the upgrade");
    relayed.set_nonblocking(false).unwrap();
    with_timeouts(&relayed);
    let me = client.local_addr().unwrap();
    let header = format!("PROXY TCP4 {} {} {} {}\r\n", me.ip(), listen.ip(), me.port(), listen.port());
    let got = read_n(&mut relayed, header.len() + 5);
    assert_eq!(String::from_utf8_lossy(&got), format!("{header}hello"));
    relayed.write_all(b"world").unwrap();
    assert_eq!(read_n(&mut client, 5), b"world");
    drop((client, relayed, fillers));
    assert!(daemon.stop().success(), "{}", daemon.log());
}
