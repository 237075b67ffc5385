//! The control socket's answers at their edges: `show conns` of thousands of rows across
//! workers, in order, with `--limit` choosing the soonest of all, as a table and as JSON, built
//! as the reader takes it (a reader that stalls holds the building of rows, not the whole
//! answer); every answer ends with an empty line, and `idlereaperctl` says "answer truncated"
//! for one that does not; and the control socket's file is removed on stop, or a warning names
//! it.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::thread;

use crate::common::*;
use idlereaper::rows::{reap_order, ConnRow};

fn rows_of(socket: &Path, args: &[&str]) -> Vec<ConnRow> {
    serde_json::from_str(&ctl_stdout(socket, args)).expect("JSON rows")
}

fn in_order(rows: &[ConnRow]) -> bool {
    rows.windows(2).all(|w| reap_order(w[0].reap_in_ms, w[0].id) <= reap_order(w[1].reap_in_ms, w[1].id))
}

#[test]
fn show_conns_merges_the_workers_rows_soonest_first_and_limit_takes_the_soonest_of_all() {
    let (soon, late) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let (control, socket) = control_at(dir.path());
    let config = daemon_section(dir.path(), "2s").replace("[daemon]\n", "[daemon]\nworkers = 2\n")
        + &sink_listener("soon", soon, "30s")
        + &sink_listener("late", late, "60s")
        + &control;
    let _daemon = Daemon::start_in(dir, &config);
    // More rows than a worker builds in a turn, and than the table's columns are fitted to.
    let mut held: Vec<TcpStream> = Vec::new();
    for i in 0..1300 {
        held.push(connect(if i % 20 == 0 { soon } else { late }));
    }
    let all = wait_for(std::time::Duration::from_secs(10), || {
        let rows = rows_of(&socket, &["show", "conns", "--json"]);
        (rows.len() == held.len()).then_some(rows)
    })
    .expect("a row per connection");
    assert!(in_order(&all), "soonest to be reaped first, then by id");
    let ids: BTreeSet<u64> = all.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), all.len(), "each connection once");
    // The 65 of listener `soon` come first, from both workers (a connection id's parity is its worker's).
    let soonest: BTreeSet<u64> = all.iter().filter(|r| r.listener == "soon").map(|r| r.id).collect();
    assert_eq!(soonest.len(), 65);
    assert!(all[..65].iter().all(|r| r.listener == "soon"), "the 30 s ones before the 60 s ones");
    assert_eq!(soonest.iter().map(|id| id % 2).collect::<BTreeSet<_>>().len(), 2, "both workers");
    // --limit: the soonest 65 of all, whichever worker holds them; as JSON and as a table.
    let limited = rows_of(&socket, &["show", "conns", "--limit", "65", "--json"]);
    assert!(in_order(&limited));
    assert_eq!(limited.iter().map(|r| r.id).collect::<BTreeSet<_>>(), soonest);
    let table = ctl_stdout(&socket, &["show", "conns", "--limit", "65"]);
    assert_eq!(table.lines().count(), 66, "{table}");
    assert!(table.lines().skip(1).all(|l| l.split_whitespace().nth(1) == Some("soon")), "{table}");
    // The whole table: every connection once, the columns aligned over the first 1,024 rows.
    let table = ctl_stdout(&socket, &["show", "conns"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("id ") && lines.len() == held.len() + 1, "{} lines", lines.len());
    let table_ids: BTreeSet<u64> =
        lines[1..].iter().map(|l| l.split_whitespace().next().unwrap().parse().unwrap()).collect();
    assert_eq!(table_ids, ids);
    let state_column = lines[1].find(" sink ").unwrap();
    assert!(lines[1..1025].iter().all(|l| l.find(" sink ") == Some(state_column)), "aligned");
}

#[test]
fn a_reader_that_stalls_holds_the_building_of_rows_not_the_whole_answer() {
    // The rows the daemon builds ahead of a stalled reader fit its socket buffer and 64 KiB.
    let wmem: usize = std::fs::read_to_string("/proc/sys/net/core/wmem_default")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(usize::MAX);
    if wmem > 1 << 20 {
        return skip(&format!("net.core.wmem_default is {wmem}: 4,000 rows fit the socket buffers"));
    }
    let listen = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let (control, socket) = control_at(dir.path());
    let config = daemon_section(dir.path(), "2s") + &sink_listener("sink", listen, "10m") + &control;
    let _daemon = Daemon::start_in(dir, &config);
    let held: Vec<TcpStream> = (0..4000).map(|_| connect(listen)).collect();
    let counted = wait_for(std::time::Duration::from_secs(10), || {
        (rows_of(&socket, &["show", "conns", "--limit", "1", "--json"]).len() == 1
            && ctl_stdout(&socket, &["show", "listeners"]).contains(" 4000 "))
        .then_some(())
    });
    assert!(counted.is_some(), "4000 connections open");

    let mut reader = UnixStream::connect(&socket).unwrap();
    reader.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    reader.write_all(b"show conns --json\n").unwrap();
    let mut first = vec![0u8; 1000];
    reader.read_exact(&mut first).unwrap();
    // The newest connection is the last to be reaped: its row is the answer's last.
    let newest = held.last().unwrap().local_addr().unwrap().to_string();
    assert_eq!(ctl_stdout(&socket, &["kill", "--client", &newest]), "killed 1\n");
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    first.extend(rest);
    let answer = String::from_utf8(first).unwrap();
    let rows: Vec<ConnRow> = serde_json::from_str(&answer).unwrap();
    assert!(in_order(&rows));
    assert!(rows.iter().all(|r| r.client != newest), "{newest} was closed before its row was built");
    assert_eq!(rows.len(), held.len() - 1, "the connection killed before its row was built has none");
    assert!(answer.ends_with("]\n\n"), "the whole answer");
}

/// A stand-in for the daemon: answers one request with `answer`, then closes.
fn fake_daemon(dir: &Path, answer: &'static [u8]) -> (std::path::PathBuf, thread::JoinHandle<String>) {
    let path = dir.join(format!("fake{}.sock", answer.len()));
    let listener = UnixListener::bind(&path).unwrap();
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut request = String::new();
        BufReader::new(&stream).read_line(&mut request).unwrap();
        (&stream).write_all(answer).unwrap();
        request
    });
    (path, server)
}

#[test]
fn an_answer_without_its_end_is_an_error_not_a_shorter_answer() {
    let dir = tempfile::tempdir().unwrap();
    for (answer, status, stdout, stderr) in [
        // Cut short: after some rows, or inside one.
        (&b"id  listener\n17  pg\n"[..], 1, "", "answer truncated"),
        (&b"[{\"id\":17,\"listener\":\"pg\""[..], 1, "", "answer truncated"),
        (&b"error: busy\n"[..], 1, "", "answer truncated"),
        // Whole: printed without the empty line that ends it; a refusal is exit status 2.
        (&b"id  listener\n17  pg\n\n"[..], 0, "id  listener\n17  pg\n", ""),
        (&b"error: busy: 32 clients already\n\n"[..], 2, "", "busy: 32 clients already"),
    ] {
        let (socket, server) = fake_daemon(dir.path(), answer);
        let out = ctl_run(&socket, &["show", "conns"]);
        assert_eq!(server.join().unwrap(), "show conns\n");
        let (out_text, err_text) =
            (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(status), "{answer:?}: {err_text}");
        assert_eq!(out_text, stdout, "{answer:?}");
        assert!(err_text.contains(stderr), "{answer:?}: {err_text}");
        std::fs::remove_file(&socket).unwrap();
    }
}

#[test]
fn every_answer_ends_with_an_empty_line() {
    let listen = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let (control, socket) = control_at(dir.path());
    let config = daemon_section(dir.path(), "2s") + &sink_listener("sink", listen, "10m") + &control;
    let _daemon = Daemon::start_in(dir, &config);
    let _held = connect(listen);
    let requests = [
        "help",
        "ping",
        "show conns",
        "show conns --json",
        "show listeners --json",
        "show info",
        "show info --json",
        "show config",
        "show config --json",
        "reload",
        "kill 0",
        "bogus",
    ];
    for request in requests {
        let answer = control_answer(&socket, format!("{request}\n").as_bytes());
        assert!(answer.ends_with("\n\n"), "{request}: {answer:?}");
        assert_eq!(answer.matches("\n\n").count(), 1, "{request}: one empty line, at the end: {answer:?}");
    }
}

#[test]
fn a_control_socket_the_daemon_user_cannot_remove_is_named_in_a_warning() {
    if !require(
        "root, to start a daemon that drops to nobody",
        nix::unistd::geteuid().is_root(),
        "run the tests as root",
    ) {
        return;
    }
    let listen = free_addr();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    // The socket in a directory of root's that nobody may write to.
    let sockets = tempfile::tempdir().unwrap();
    std::fs::set_permissions(sockets.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (control, socket) = control_at(sockets.path());
    let config = daemon_section(dir.path(), "2s")
        .replace("[daemon]\n", "[daemon]\nuser = \"nobody\"\ngroup = \"nogroup\"\n")
        + &sink_listener("sink", listen, "10m")
        + &control;
    let mut daemon = Daemon::start_in(dir, &config);
    assert!(ctl_stdout(&socket, &["show", "listeners"]).contains("sink "));
    assert!(daemon.stop().success(), "{}", daemon.log());
    let warning = format!("WARN cannot remove control socket {}: ", socket.display());
    assert!(daemon.log().contains(&warning), "{warning} in\n{}", daemon.log());
    assert!(socket.exists(), "left in place, as the warning says");
}
