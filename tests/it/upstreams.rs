//! Upstreams as a user writes them: host names, Unix sockets and lists (failover with `first`,
//! an even split with `round_robin`, every address dead), Unix listeners (mode, a stale file
//! replaced, another file left alone, removed on stop), `idle_close = "rst"`, `idle_notice`,
//! and the PROXY header of a Unix client. Each test asserts what the peers observe and what the
//! close line says.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::common::*;

/// Whether the test runs as root, which `what` needs (a visible skip otherwise; CI runs as root).
fn as_root(what: &str) -> bool {
    require(&format!("root, for {what}"), nix::unistd::geteuid().is_root(), "run the tests as root")
}

/// A listener section with `upstream = <value>` written as is (a string or an array).
fn listener_to(name: &str, listen: &str, upstream: &str, idle: &str) -> String {
    format!("[[listener]]\nname = \"{name}\"\nlisten = \"{listen}\"\nupstream = {upstream}\nidle_timeout = \"{idle}\"\n\n")
}

/// A Unix socket echo server at `path` (a thread per connection, each bounded by the sockets'
/// timeouts); it accepts at most `max` connections.
fn unix_echo(path: &std::path::Path, max: usize) -> thread::JoinHandle<()> {
    let listener = UnixListener::bind(path).expect("bind a Unix echo server");
    thread::spawn(move || {
        for stream in listener.incoming().take(max) {
            let Ok(mut s) = stream else { return };
            s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = s.read(&mut buf) {
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                let _ = s.shutdown(Shutdown::Write);
            });
        }
    })
}

#[test]
fn a_host_name_upstream_is_resolved_and_relayed() {
    let upstream = Upstream::echo();
    let listen = free_addr();
    // localhost may resolve to ::1 first, where nothing listens: the next address serves.
    let to = format!("\"localhost:{}\"", upstream.addr.port());
    let daemon = Daemon::start(&listener_to("named", &listen.to_string(), &to, "30s"));
    for i in 0..3 {
        let mut c = connect(listen);
        assert_echo(&mut c, format!("by name {i}").as_bytes());
        let me = c.local_addr().unwrap();
        drop(c);
        // The close line names the address the name resolved to that served, not the name.
        let line = daemon.wait_close_of(me, Duration::from_secs(5));
        let served = line.get("upstream").and_then(|u| u.parse::<std::net::SocketAddr>().ok());
        assert_eq!(served.map(|a| a.port()), Some(upstream.addr.port()), "{}", line.raw);
        assert!(served.is_some_and(|a| a.ip().is_loopback()), "{}", line.raw);
    }
    assert!(
        daemon.log().contains(&format!("named={listen}->localhost:{}", upstream.addr.port())),
        "{}",
        daemon.log()
    );
}

#[test]
fn first_fails_over_a_dead_address_and_every_dead_address_is_counted() {
    let live = Upstream::echo();
    let (dead, dead2) = (free_addr(), free_addr()); // nothing listens there
    let (failover, nowhere) = (free_addr(), free_addr());
    let config =
        listener_to("failover", &failover.to_string(), &format!("[\"{dead}\", \"{}\"]", live.addr), "30s")
            + &listener_to("nowhere", &nowhere.to_string(), &format!("[\"{dead}\", \"{dead2}\"]",), "30s");
    let daemon = Daemon::start(&config);
    for i in 0..5 {
        let mut c = connect(failover);
        assert_echo(&mut c, format!("failover {i}").as_bytes());
        let me = c.local_addr().unwrap();
        drop(c);
        // The first address refused: the close line names the second, which served.
        let line = daemon.wait_close_of(me, Duration::from_secs(5));
        line.assert_reason("client_closed");
        assert_eq!(line.get("upstream"), Some(live.addr.to_string().as_str()), "{}", line.raw);
    }
    let mut c = connect(nowhere);
    let me = c.local_addr().unwrap();
    wait_closed(&mut c, Duration::from_secs(5));
    let line = daemon.wait_close_of(me, Duration::from_secs(5));
    line.assert_reason("upstream_refused");
    assert_eq!(line.get("upstreams_tried"), Some("2"), "{}", line.raw);
    assert_eq!(line.get("upstream"), None, "no upstream served it: {}", line.raw);
    assert!(line.get("error").is_some_and(|e| e.contains("refused")), "the last error: {}", line.raw);
}

#[test]
fn round_robin_splits_connections_evenly() {
    let (a, count_a) = counting_echo_upstream();
    let (b, count_b) = counting_echo_upstream();
    let listen = free_addr();
    let config = listener_to("rr", &listen.to_string(), &format!("[\"{}\", \"{}\"]", a.addr, b.addr), "30s")
        + "balance = \"round_robin\"\n";
    let _daemon = Daemon::start(&config);
    for i in 0..10 {
        let mut c = connect(listen);
        assert_echo(&mut c, format!("rr {i}").as_bytes());
    }
    let (na, nb) = (count_a.load(Ordering::SeqCst), count_b.load(Ordering::SeqCst));
    assert_eq!(na + nb, 10);
    assert!(na.abs_diff(nb) <= 1, "round robin split {na} / {nb}");
}

#[test]
fn a_unix_listener_relays_to_a_unix_upstream_and_its_file_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let (sock, up) = (dir.path().join("in.sock"), dir.path().join("up.sock"));
    let _echo = unix_echo(&up, 4);
    // A stale socket file (nothing listens) is replaced.
    drop(UnixListener::bind(&sock).unwrap());
    let config = listener_to(
        "unix",
        &format!("unix:{}", sock.display()),
        &format!("\"unix:{}\"", up.display()),
        "30s",
    ) + "socket_mode = \"0600\"\n";
    let mut daemon = Daemon::start(&config);
    let meta = std::fs::metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "socket_mode");
    let mut c = UnixStream::connect(&sock).unwrap();
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    c.write_all(b"through two unix sockets").unwrap();
    let mut back = [0u8; 24];
    c.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"through two unix sockets");
    drop(c);
    let closed = wait_for(Duration::from_secs(5), || {
        daemon.closes().into_iter().find(|l| l.get("listener") == Some("unix"))
    });
    let line = closed.expect("a close line");
    line.assert_well_formed();
    assert_eq!(line.get("client"), Some("unix"), "{}", line.raw);
    let served = format!("unix:{}", up.display());
    assert_eq!(line.get("upstream"), Some(served.as_str()), "the upstream socket: {}", line.raw);
    assert_eq!(daemon.stop().code(), Some(0));
    assert!(!sock.exists(), "the socket file is removed on stop");
}

#[test]
fn a_file_that_is_not_a_socket_is_never_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("precious.txt");
    std::fs::write(&path, "keep me").unwrap();
    let config = daemon_section(dir.path(), "1s")
        + &format!(
            "[[listener]]\nname = \"s\"\nlisten = \"unix:{}\"\nidle_timeout = \"30s\"\n",
            path.display()
        );
    let file = dir.path().join("idlereaper.toml");
    std::fs::write(&file, &config).unwrap();
    let run = run_cli(dir.path(), &["-f".as_ref(), "-c".as_ref(), file.as_os_str()], Duration::from_secs(10));
    assert_eq!(run.status.code(), Some(1), "start refused: {run:?}");
    assert!(run.stderr.contains("not a socket"), "{run:?}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
}

#[test]
fn idle_close_rst_resets_both_and_leaves_no_time_wait() {
    let upstream = Upstream::echo();
    let listen = free_addr();
    let config = relay_listener("rst", listen, upstream.addr, "500ms") + "idle_close = \"rst\"\n";
    let daemon = Daemon::start(&config);
    let mut c = connect(listen);
    assert_echo(&mut c, b"then silence");
    let me = c.local_addr().unwrap();
    let (_, end) = read_to_ending(&mut c);
    assert_eq!(end, StreamEnd::Reset, "the client sees ECONNRESET at the idle deadline");
    daemon.wait_close_of(me, Duration::from_secs(5)).assert_reason("idle");
    let ss = std::process::Command::new("ss")
        .args(["-Htan", "state", "time-wait", "src", &listen.to_string()])
        .output()
        .expect("ss");
    let left = String::from_utf8_lossy(&ss.stdout);
    assert!(left.trim().is_empty(), "TIME_WAIT left on the daemon's side: {left}");
}

#[test]
fn idle_notice_reaches_the_client_before_the_idle_close() {
    let listen = free_addr();
    let config = sink_listener("notice", listen, "300ms") + "idle_notice = \"421 idle timeout\\r\\n\"\n";
    let daemon = Daemon::start(&config);
    let mut c = connect(listen);
    let me = c.local_addr().unwrap();
    let (got, end) = read_to_ending(&mut c);
    assert_eq!((got.as_slice(), end), (&b"421 idle timeout\r\n"[..], StreamEnd::Eof));
    daemon.wait_close_of(me, Duration::from_secs(5)).assert_reason("idle");
}

#[test]
fn a_unix_client_is_announced_as_unknown_in_the_proxy_header() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("p.sock");
    let first_bytes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::new(AtomicU32::new(0));
    let upstream = {
        let (first_bytes, seen) = (first_bytes.clone(), seen.clone());
        Upstream::start(move |mut s| {
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).unwrap_or(0);
            first_bytes.lock().unwrap().extend_from_slice(&buf[..n]);
            seen.fetch_add(1, Ordering::SeqCst);
        })
    };
    let config =
        listener_to("proxy", &format!("unix:{}", sock.display()), &format!("\"{}\"", upstream.addr), "30s")
            + "proxy_protocol = \"v1\"\n";
    let _daemon = Daemon::start(&config);
    let mut c = UnixStream::connect(&sock).unwrap();
    c.write_all(b"hi").unwrap();
    assert!(wait_for(Duration::from_secs(5), || (seen.load(Ordering::SeqCst) > 0).then_some(())).is_some());
    let got = first_bytes.lock().unwrap().clone();
    assert!(got.starts_with(b"PROXY UNKNOWN\r\n"), "{:?}", String::from_utf8_lossy(&got));
}

#[test]
fn each_address_has_its_own_connect_timeout_before_the_next_is_tried() {
    let (hanging, _fillers) = unanswering_upstream();
    let live = Upstream::echo();
    let listen = free_addr();
    let to = format!("[\"{}\", \"{}\"]", hanging.local_addr().unwrap(), live.addr);
    let config = listener_to("slow-first", &listen.to_string(), &to, "30s") + "connect_timeout = \"300ms\"\n";
    let daemon = Daemon::start(&config);
    let mut c = connect(listen);
    // Sent while the first address hangs: not lost.
    c.write_all(b"early bytes").unwrap();
    let mut back = [0u8; 11];
    c.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"early bytes");
    let me = c.local_addr().unwrap();
    drop(c);
    let line = daemon.wait_close_of(me, Duration::from_secs(5));
    assert_eq!(line.get("upstream"), Some(live.addr.to_string().as_str()), "the second served: {}", line.raw);
}

/// Runs the command in a mount namespace of its own where `hosts` is bind-mounted over
/// `/etc/hosts`, and a `nsswitch.conf` beside it that resolves names from that file only: the
/// test then decides what a name resolves to without touching the machine's files, and no
/// lookup leaves the machine.
fn in_private_hosts(hosts: &std::path::Path, command: &mut std::process::Command) {
    use std::ffi::CString;
    use std::os::unix::process::CommandExt;
    let nsswitch = hosts.with_file_name("nsswitch.conf");
    std::fs::write(&nsswitch, "hosts: files\n").expect("write nsswitch.conf");
    let c = |p: &std::path::Path| CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let mounts = [
        (c(hosts), CString::new("/etc/hosts").unwrap()),
        (c(&nsswitch), CString::new("/etc/nsswitch.conf").unwrap()),
    ];
    let root = CString::new("/").unwrap();
    // SAFETY: between fork and exec the closure only makes system calls (unshare, mount) on
    // strings allocated before the fork; it allocates nothing and takes no lock.
    unsafe {
        command.pre_exec(move || {
            let fail = || Err(std::io::Error::last_os_error());
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return fail();
            }
            let private = libc::MS_REC | libc::MS_PRIVATE;
            if libc::mount(std::ptr::null(), root.as_ptr(), std::ptr::null(), private, std::ptr::null()) != 0
            {
                return fail();
            }
            for (source, target) in &mounts {
                let bind = libc::MS_BIND;
                if libc::mount(source.as_ptr(), target.as_ptr(), std::ptr::null(), bind, std::ptr::null())
                    != 0
                {
                    return fail();
                }
            }
            Ok(())
        });
    }
}

#[test]
fn a_name_whose_answer_changes_is_followed_without_a_reload() {
    if !as_root("a mount namespace (unshare)") {
        return;
    }
    // Two echo servers on the same port of two loopback addresses; the name points at one.
    let port = free_addr().port();
    let (first, second) = (fresh_ip(), fresh_ip());
    let serve = |ip| {
        let listener = std::net::TcpListener::bind((ip, port)).expect("bind");
        counting_echo_upstream_on(listener)
    };
    let ((_a, on_first), (_b, on_second)) = (serve(first), serve(second));
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, format!("{first} svc.idlereaper.test\n")).unwrap();
    let listen = free_addr();
    let config = daemon_section(dir.path(), "1s")
        .replace("[daemon]\n", "[daemon]\nresolve_interval = \"1s\"\n")
        + &listener_to("svc", &listen.to_string(), &format!("\"svc.idlereaper.test:{port}\""), "30s");
    let daemon = Daemon::start_in_with(dir, &config, |_, command| in_private_hosts(&hosts, command));
    let mut c = connect(listen);
    assert_echo(&mut c, b"to the first");
    assert_eq!((on_first.load(Ordering::SeqCst), on_second.load(Ordering::SeqCst)), (1, 0));
    // The answer changes (same file: the bind mount follows its inode).
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&hosts)
        .and_then(|mut f| f.write_all(format!("{second} svc.idlereaper.test\n").as_bytes()))
        .unwrap();
    let moved = wait_for(Duration::from_secs(5), || {
        let mut c = connect(listen);
        assert_echo(&mut c, b"where to now?");
        (on_second.load(Ordering::SeqCst) > 0).then_some(())
    });
    assert!(moved.is_some(), "new connections still go to {first} 5 s after the name moved to {second}");
    assert_echo(&mut c, b"the open connection keeps its upstream");
    // The name stops resolving: its last addresses stay, with one warning.
    std::fs::write(&hosts, "").unwrap();
    let warned =
        wait_for(Duration::from_secs(5), || daemon.log().contains("cannot be resolved").then_some(()));
    assert!(warned.is_some(), "no warning for a name that stopped resolving: {}", daemon.log());
    let before = on_second.load(Ordering::SeqCst);
    thread::sleep(Duration::from_millis(2500)); // two more resolver rounds
    let mut c = connect(listen);
    assert_echo(&mut c, b"still served by the last good address");
    assert_eq!(on_second.load(Ordering::SeqCst), before + 1);
    assert_eq!(
        daemon.log().matches("cannot be resolved").count(),
        1,
        "one warning per name: {}",
        daemon.log()
    );
}

#[test]
fn a_name_that_does_not_resolve_fails_check_and_start_at_its_key() {
    if !as_root("a mount namespace (unshare)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
    let upstreams = "[\"127.0.0.1:7\", \"ghost.idlereaper.test:5432\"]";
    let config =
        daemon_section(dir.path(), "1s") + &listener_to("ghost", &free_addr().to_string(), upstreams, "30s");
    let file = dir.path().join("idlereaper.toml");
    std::fs::write(&file, &config).unwrap();
    for args in [&["--check", "-c"][..], &["-f", "-c"][..]] {
        let mut command = std::process::Command::new(BIN);
        command.args(args).arg(&file).stdin(std::process::Stdio::null());
        in_private_hosts(&hosts, &mut command);
        let out = command.output().expect("run idlereaper");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        let key = "listener[0].upstream[1]: cannot resolve ghost.idlereaper.test:5432";
        assert!(
            stderr.contains(&format!("{}:", file.display())) && stderr.contains(key),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn a_unix_socket_file_is_the_daemon_users_and_survives_a_reload_that_keeps_it() {
    if !as_root("a socket file created for another user") {
        return;
    }
    let upstream = Upstream::echo();
    let dir = tempfile::tempdir().unwrap();
    // The daemon, as nobody, removes its socket file on stop: the directory lets it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let sock = dir.path().join("shared.sock");
    let config = daemon_section(dir.path(), "1s")
        .replace("[daemon]\n", "[daemon]\nuser = \"nobody\"\ngroup = \"nogroup\"\nworkers = 2\n")
        + &listener_to("u", &format!("unix:{}", sock.display()), &format!("\"{}\"", upstream.addr), "30s");
    let mut daemon = Daemon::start_in(dir, &config);
    let meta = std::fs::metadata(&sock).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (65534, 65534, 0o660),
        "owner and default mode"
    );
    let talk = |i: usize| {
        let mut c = UnixStream::connect(&sock).unwrap();
        c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let msg = format!("through both workers {i}");
        c.write_all(msg.as_bytes()).unwrap();
        let mut back = vec![0u8; msg.len()];
        c.read_exact(&mut back).unwrap();
        assert_eq!(back, msg.as_bytes());
    };
    (0..6).for_each(talk);
    daemon.signal(libc::SIGHUP);
    daemon.wait_log(" INFO reloaded ", Duration::from_secs(5));
    assert!(sock.exists(), "a reload that keeps the listener keeps its socket file");
    (6..8).for_each(talk);
    assert_eq!(daemon.stop().code(), Some(0), "{}", daemon.log());
    assert!(!sock.exists(), "removed on stop");
}
