//! The control socket across live upgrades: a request made while the daemon upgrades is
//! answered — by the old image, or by the new one, which takes over every client with what it
//! sent and what it is still to read, or by the guardian when the new image fails after the
//! exec — and an `upgrade` asked for while one is under way is told that upgrade's result. What
//! an operator would notice is checked: every `idlereaperctl` run succeeds, every answer is
//! whole.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use idlereaper::rows::{reap_order, ConnRow};

/// How long an upgrade may take, from USR2 to the `upgraded` line (it runs the new binary's
/// checks first), on a loaded 2-core machine with a debug build.
const UPGRADE_DEADLINE: Duration = Duration::from_secs(20);

fn upgraded_lines(daemon: &Daemon) -> Vec<String> {
    daemon.log().lines().filter(|l| l.contains(" INFO upgraded from=")).map(str::to_owned).collect()
}

/// Waits until the log has `n` `upgraded` lines.
fn wait_upgrades(daemon: &Daemon, n: usize) {
    let done = wait_for(UPGRADE_DEADLINE, || (upgraded_lines(daemon).len() >= n).then_some(()));
    assert!(done.is_some(), "{n} upgrades expected; log:\n{}", daemon.log());
}

fn sink_daemon(workers: usize) -> (Daemon, std::net::SocketAddr, std::path::PathBuf) {
    let listen = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let (control, socket) = control_at(dir.path());
    let config = daemon_section(dir.path(), "2s")
        .replace("[daemon]\n", &format!("[daemon]\nworkers = {workers}\n"))
        + &sink_listener("sink", listen, "10m")
        + &control;
    (Daemon::start_in(dir, &config), listen, socket)
}

#[test]
fn clients_caught_by_an_upgrade_are_answered_and_an_upgrade_asked_meanwhile_joins_it() {
    let (mut daemon, listen, socket) = sink_daemon(2);
    // Enough connections for a `show conns --json` answer larger than the socket's buffers.
    let held: Vec<TcpStream> = (0..1500).map(|_| connect(listen)).collect();
    let open = wait_for(Duration::from_secs(10), || {
        let listed: Vec<ConnRow> =
            serde_json::from_str(&ctl_stdout(&socket, &["show", "conns", "--json"])).ok()?;
        (listed.len() == held.len()).then_some(())
    });
    assert!(open.is_some(), "1500 connections listed");

    // One client has sent half its request, one nothing yet; one has read a byte of a long answer.
    let mut halfway = accepted_client(&daemon, &socket);
    halfway.write_all(b"show lis").unwrap();
    let mut asker = accepted_client(&daemon, &socket);
    let mut reader = accepted_client(&daemon, &socket);
    reader.write_all(b"show conns --json\n").unwrap();
    let mut first = [0u8; 1];
    reader.read_exact(&mut first).unwrap();

    daemon.signal(libc::SIGUSR2);
    // Asked while the upgrade is under way (it checks the new binary for tens of milliseconds).
    asker.write_all(b"upgrade\n").unwrap();
    halfway.write_all(b"teners\n").unwrap();

    let told = read_rest(&mut asker);
    assert!(told.starts_with("upgraded from=") && told.ends_with("\n\n"), "{told:?}");
    wait_upgrades(&daemon, 1);
    let lines = upgraded_lines(&daemon);
    assert!(lines[0].ends_with(told.trim_end()), "told the upgrade that happened: {told:?}, log: {lines:?}");
    let listeners = read_rest(&mut halfway);
    assert!(listeners.starts_with("name ") && listeners.contains("\nsink ") && listeners.ends_with("\n\n"));
    let rest = read_rest(&mut reader);
    let whole = format!("{}{rest}", first[0] as char);
    assert!(whole.ends_with("]\n\n"), "the answer's end: {:?}", &whole[whole.len().saturating_sub(40)..]);
    let rows: Vec<ConnRow> = serde_json::from_str(&whole).expect("the whole answer");
    assert_eq!(rows.len(), held.len(), "a row per connection");
    assert!(rows
        .windows(2)
        .all(|w| reap_order(w[0].reap_in_ms, w[0].id) <= reap_order(w[1].reap_in_ms, w[1].id)));
    assert_eq!(upgraded_lines(&daemon).len(), 1, "one upgrade for the signal and the request");
}

/// One request as a slow client sends it: its first word, a pause, the rest; the answer read
/// to the end. `Err` says what went wrong.
fn ask_slowly(socket: &Path, request: &str) -> Result<String, String> {
    let mut client = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let (first, rest) = request.split_at(request.find(' ').unwrap_or(0));
    client.write_all(first.as_bytes()).map_err(|e| format!("write: {e}"))?;
    thread::sleep(Duration::from_millis(1));
    client.write_all(format!("{rest}\n").as_bytes()).map_err(|e| format!("write: {e}"))?;
    let mut answer = String::new();
    client.read_to_string(&mut answer).map_err(|e| format!("read: {e} after {answer:?}"))?;
    match answer.ends_with("\n\n") && !answer.starts_with("error:") {
        true => Ok(answer),
        false => Err(format!("answer {answer:?}")),
    }
}

#[test]
fn show_requests_in_a_loop_across_upgrades_all_succeed() {
    let (mut daemon, listen, socket) = sink_daemon(1);
    let _held: Vec<TcpStream> = (0..20).map(|_| connect(listen)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    // idlereaperctl as an operator runs it, and clients that send their request in two parts.
    let requests = ["show listeners", "show conns", "show conns --json", "show listeners", "show conns"];
    let askers: Vec<_> = requests
        .into_iter()
        .enumerate()
        .map(|(i, request)| {
            let (socket, stop) = (socket.clone(), Arc::clone(&stop));
            thread::spawn(move || {
                let (mut runs, mut failures) = (0, Vec::new());
                let since = Instant::now();
                while !stop.load(Ordering::SeqCst)
                    && runs < 5000
                    && since.elapsed() < Duration::from_secs(120)
                {
                    runs += 1;
                    if i >= 3 {
                        failures.extend(ask_slowly(&socket, request).err());
                        continue;
                    }
                    let out = ctl_run(&socket, &request.split(' ').collect::<Vec<_>>());
                    if !out.status.success() || out.stdout.is_empty() {
                        failures.push(format!("{:?}: {}", out.status, String::from_utf8_lossy(&out.stderr)));
                    }
                }
                (
                    format!("{request} ({})", if i >= 3 { "in two parts" } else { "idlereaperctl" }),
                    runs,
                    failures,
                )
            })
        })
        .collect();
    const UPGRADES: usize = 20;
    for n in 1..=UPGRADES {
        daemon.signal(libc::SIGUSR2);
        wait_upgrades(&daemon, n);
    }
    stop.store(true, Ordering::SeqCst);
    for asker in askers {
        let (request, runs, failures) = asker.join().unwrap();
        eprintln!("{request}: {runs} runs across {UPGRADES} upgrades");
        assert!(runs >= UPGRADES, "{request}: only {runs} runs");
        assert!(failures.is_empty(), "{request}: {} of {runs} failed: {failures:?}", failures.len());
    }
}

#[test]
fn idlereaperctl_upgrade_racing_a_sigusr2_reports_the_upgrade() {
    let (mut daemon, _listen, socket) = sink_daemon(1);
    for round in 0..5 {
        let ctl = Command::new(CTL)
            .arg("-s")
            .arg(&socket)
            .arg("upgrade")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        daemon.signal(libc::SIGUSR2);
        let out = ctl.wait_with_output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "round {round}: {:?} {stderr}; log:\n{}", out.status, daemon.log());
        assert!(stdout.starts_with("upgraded from="), "round {round}: {stdout:?}");
        assert!(
            daemon.log().contains(stdout.trim_end()),
            "round {round}: the upgrade that happened: {stdout}"
        );
    }
    let status = daemon.stop();
    assert!(status.success(), "{status:?}; log:\n{}", daemon.log());
}

#[test]
fn an_upgrade_refused_or_whose_exec_fails_is_told_and_clients_caught_in_it_are_answered() {
    let listen = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("idlereaper");
    std::fs::copy(BIN, &exe).unwrap();
    let (control, socket) = control_at(dir.path());
    let config = daemon_section(dir.path(), "2s") + &sink_listener("sink", listen, "10m") + &control;
    let daemon = Daemon::start_program(&exe, dir, &config, |_, _| {});

    // Refused at the checks: no binary.
    std::fs::rename(&exe, exe.with_extension("away")).unwrap();
    let out = ctl_run(&socket, &["upgrade"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("upgrade refused: ") && err.contains("No such file"), "{err}");

    // Every check passes, then the binary is gone when the exec comes: the old code takes the
    // state back, control clients with it, and tells the asker.
    let exec_real = format!(
        "#!/bin/sh\ncase \"$1\" in\n--handover-check) mv \"$0\" \"$0.gone\";;\nesac\nexec {BIN} \"$@\"\n"
    );
    std::fs::write(&exe, exec_real).unwrap();
    std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut halfway = accepted_client(&daemon, &socket);
    halfway.write_all(b"show lis").unwrap();
    let mut asker = accepted_client(&daemon, &socket);
    asker.write_all(b"upgrade\n").unwrap();
    let told = read_rest(&mut asker);
    assert!(
        told.starts_with("error: upgrade refused: cannot execute ") && told.ends_with("\n\n"),
        "{told:?}"
    );
    halfway.write_all(b"teners\n").unwrap();
    let listeners = read_rest(&mut halfway);
    assert!(listeners.starts_with("name ") && listeners.ends_with("\n\n"), "{listeners:?}");
    assert!(!daemon.log().contains("upgraded from="), "{}", daemon.log());
}

/// The control clients an upgrade hands over when its new image then fails: the guardian takes
/// them over with the rest of the state. A client half-way through its request finishes it and
/// is answered, one that had read a byte of a long answer reads the rest of it, and the
/// `idlereaperctl upgrade` that asked is told the upgrade failed and why (exit status 2).
#[test]
fn control_clients_caught_by_an_upgrade_whose_new_image_fails_are_answered_by_the_guardian() {
    become_child_subreaper();
    let listen = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let exe = copy_binary(&root);
    let (control, socket) = control_at(&root);
    let config = daemon_section(&root, "2s") + &sink_listener("sink", listen, "10m") + &control;
    let mut daemon = Daemon::start_program(&exe, dir, &config, |_, _| {});
    let _cleanup = KillLeftovers(daemon.config_path.clone());
    let image = daemon.pid();
    // Enough connections for a `show conns --json` answer larger than the socket's buffers.
    let held: Vec<TcpStream> = (0..1500).map(|_| connect(listen)).collect();
    let open = wait_for(Duration::from_secs(10), || (show_conns(&socket).len() == held.len()).then_some(()));
    assert!(open.is_some(), "1500 connections listed");

    // The new image says it runs (a file next to it), waits, and exits before taking over.
    let ran = exe.with_extension("ran");
    replace_file(&exe, &image_script(":", &format!("touch '{}'; sleep 1; exit 1", ran.display())));
    let mut halfway = accepted_client(&daemon, &socket);
    halfway.write_all(b"show lis").unwrap();
    let mut reader = accepted_client(&daemon, &socket);
    reader.write_all(b"show conns --json\n").unwrap();
    let mut first = [0u8; 1];
    reader.read_exact(&mut first).unwrap();
    let asker = thread::spawn({
        let socket = socket.clone();
        move || ctl_run(&socket, &["upgrade"])
    });
    // The rest of the request only once the state is handed over: the guardian reads it.
    let exec = wait_for(UPGRADE_DEADLINE, || ran.exists().then_some(()));
    assert!(exec.is_some(), "the new image did not run; log:\n{}", daemon.log());
    halfway.write_all(b"teners\n").unwrap();

    let line = wait_for(UPGRADE_DEADLINE, || {
        daemon.poll_exit(); // the image that failed, reaped: the guardian can tell how it ended
        daemon.log().lines().find(|l| l.contains(" ERROR upgrade failed: ")).map(str::to_owned)
    })
    .unwrap_or_else(|| panic!("no failure line; log:\n{}", daemon.log()));
    assert!(line.contains(" before taking over"), "{line}");
    let out = asker.join().unwrap();
    let answer = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "idlereaperctl upgrade: {answer}");
    let (_, reason) = answer.split_once("upgrade failed: ").unwrap_or_else(|| panic!("{answer:?}"));
    assert!(
        reason.starts_with("the new image (pid ") && reason.ends_with(" before taking over\n"),
        "{answer:?}"
    );
    assert!(
        line.contains(&format!("upgrade failed: {}; ", reason.trim_end())),
        "told as logged: {line}\n{answer}"
    );
    let listeners = read_rest(&mut halfway);
    assert!(listeners.starts_with("name ") && listeners.contains("\nsink ") && listeners.ends_with("\n\n"));
    let rest = read_rest(&mut reader);
    let whole = format!("{}{rest}", first[0] as char);
    assert!(whole.ends_with("]\n\n"), "the answer's end: {:?}", &whole[whole.len().saturating_sub(40)..]);
    let rows: Vec<ConnRow> = serde_json::from_str(&whole).expect("the whole answer");
    assert_eq!(rows.len(), held.len(), "a row per connection");

    // The guardian serves, with the old code: it answers as before, and stops cleanly.
    let serving: u32 = read_pidfile(&daemon).trim_end().parse().expect("a pid");
    assert_ne!(serving, image, "the pidfile still names the image that failed");
    assert!(line.contains(&format!("pid={serving} ")), "{line}");
    assert_eq!(show_conns(&socket).len(), held.len());
    let running = DetachedDaemon::from_pidfile(&daemon.pidfile, &daemon.config_path);
    send_signal(running.pid, libc::SIGTERM);
    let status = running.wait_gone(Duration::from_secs(15));
    assert_eq!(status, Some(Some(0)), "exit after TERM: {status:?}; log:\n{}", tail(&daemon.log(), 30));
    assert!(!socket.exists(), "the control socket file is removed");
}
