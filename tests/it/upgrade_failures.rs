//! A live upgrade whose new image fails after the `execve` loses nothing. Real binaries fail in
//! each way a new image can once it runs: one that exits on `--handover`, one that crashes
//! (SIGSEGV), one that cannot take over and says why, one that hangs past the takeover
//! deadline, and a file replaced between the pre-flight checks and the exec by a program that
//! is not idlereaper. Each passes the pre-flight checks (they are delegated to the real binary).
//! After each: every idle connection still echoes, checked streams flow on in both directions,
//! the listeners accept (TCP and Unix), the pidfile names the process that now serves (the
//! upgrade's guardian, running the old code), the control socket answers, the failure is logged
//! with its cause, counted and told to the `idlereaperctl upgrade` that asked; a good upgrade
//! then succeeds, the bytes the relay held for a stalled reader all arrive, and
//! `kill -TERM $(cat pidfile)` stops the daemon cleanly.
//!
//! And the failure that made a real upgrade exit: a daemon that drops privileges, whose log file
//! was rotated away in a directory only root may write to, cannot open its log again; that is
//! now a warning, and the upgrade succeeds.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use crate::common::*;

/// From the signal to the failure's log line: the pre-flight checks, then at most the takeover
/// deadline (10 s) for a new image that hangs, on a loaded machine.
const FAILURE_DEADLINE: Duration = Duration::from_secs(40);

/// Whether the kernel tells how a process that is not one's child ended (`PIDFD_GET_INFO`,
/// Linux 6.15): else a failure says "ended" where it would say "exited with status 1".
fn kernel_tells_exit_status() -> bool {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut numbers = release.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u32>().ok());
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0)) >= (6, 15)
}

/// The pid the pidfile names.
fn pid_in(pidfile: &Path) -> u32 {
    let text = fs::read_to_string(pidfile).unwrap_or_else(|e| panic!("{}: {e}", pidfile.display()));
    text.trim_end().parse().unwrap_or_else(|_| panic!("pidfile holds {text:?}"))
}

/// The answer of the control socket at `socket` to `request`, with idlereaperctl's exit status.
fn ctl(socket: &Path, request: &[&str]) -> (i32, String) {
    let out = Command::new(CTL).arg("-s").arg(socket).args(request).output().expect("run idlereaperctl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// One way a new image fails: the script that stands in for it, what the failure line says,
/// and whether `idlereaperctl upgrade` asks (else SIGUSR2).
struct Case {
    name: &'static str,
    script: Vec<u8>,
    says: &'static str,
    by_ctl: bool,
}

fn cases() -> Vec<Case> {
    // The descriptor limit lowered to one free number: the loader and the runtime start (one
    // descriptor at a time), then the daemon cannot open the descriptors it rebuilds with.
    let starved = "n=0; while [ -e /proc/$$/fd/$n ]; do n=$((n + 1)); done; ulimit -n $((n + 1))";
    vec![
        Case {
            name: "exits 1",
            script: image_script(":", "echo 'this build gives up' >&2; exit 1"),
            says: "exited with status 1 before taking over",
            by_ctl: true,
        },
        Case {
            name: "crashes",
            script: image_script(":", "kill -SEGV $$"),
            says: "was killed by signal 11 (SIGSEGV) before taking over",
            by_ctl: false,
        },
        Case {
            name: "runs out of descriptors",
            script: image_script(":", starved),
            says: "could not take over: ",
            by_ctl: false,
        },
        Case {
            name: "hangs",
            script: image_script(":", "exec sleep 3600"),
            says: "did not take over within 10 s: killed",
            by_ctl: true,
        },
        Case {
            name: "replaced after the checks",
            script: image_script("cp /bin/true \"$0.new\" && mv \"$0.new\" \"$0\"", ":"),
            says: "exited with status 0 before taking over",
            by_ctl: false,
        },
    ]
}

/// The processes a failed upgrade leaves: the new image that failed (an exited child of this
/// process, the subreaper) is reaped, so that the guardian can tell how it ended.
fn reap(daemon: &mut Daemon, pid: u32) {
    if pid == daemon.pid() {
        daemon.poll_exit();
    } else {
        let _ = nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(pid as i32),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
    }
}

#[test]
fn a_new_image_that_fails_after_the_exec_loses_nothing() {
    become_child_subreaper();
    let echo = patient_echo();
    // An upstream that reads nothing until told, then checks every byte the client sent.
    let (stall_go, stall_total) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let (stall_tx, stall_done) = mpsc::channel();
    let stall_upstream = {
        let (go, total) = (stall_go.clone(), stall_total.clone());
        Upstream::start(move |mut s| {
            hold_until(&go, Duration::from_secs(120));
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let total = total.load(Ordering::SeqCst);
            let _ = stall_tx.send(recv_stream(&mut s, 31, total, full_speed));
        })
    };
    let (listen, stall, metrics) = (free_addr(), free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let exe = copy_binary(&root);
    let (unix, control) = (root.join("relay.sock"), root.join("control.sock"));
    let config = daemon_section(&root, "2s")
        + &relay_listener("relay", listen, echo.addr, "120s")
        + &relay_listener("stall", stall, stall_upstream.addr, "120s")
        + &format!(
            "[[listener]]\nname = \"unix\"\nlisten = \"unix:{}\"\nupstream = \"{}\"\nidle_timeout = \"120s\"\n\n",
            unix.display(),
            echo.addr
        )
        + &format!("[metrics]\nlisten = \"{metrics}\"\n\n[control]\nsocket = \"{}\"\n", control.display());
    let mut daemon = Daemon::start_program(&exe, dir, &config, |_, _| {});
    let _cleanup = KillLeftovers(daemon.config_path.clone());
    let pidfile = daemon.pidfile.clone();

    let mut idle = open_idle(listen, 50);
    let streams: Vec<EchoStream> = (0..2).map(|i| EchoStream::start(listen, 200 + i)).collect();
    let stall_client = connect(stall);
    let stalled = write_until_stalled(&stall_client, 31, 256 * 1024 * 1024);
    stall_client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut unix_client = UnixStream::connect(&unix).unwrap();
    unix_client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();

    let mut serving = daemon.pid();
    for (n, case) in cases().into_iter().enumerate() {
        replace_file(&exe, &case.script);
        let received: Vec<u64> = streams.iter().map(EchoStream::received).collect();
        let asked = match case.by_ctl {
            true => Some(std::thread::spawn({
                let control = control.clone();
                move || ctl(&control, &["upgrade"])
            })),
            false => {
                send_signal(serving, libc::SIGUSR2);
                None
            }
        };
        let line = wait_for(FAILURE_DEADLINE, || {
            reap(&mut daemon, serving);
            daemon.log().lines().filter(|l| l.contains(" ERROR upgrade failed: ")).nth(n).map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("{}: no failure line; log:\n{}", case.name, daemon.log()));
        let says = match case.says.ends_with(" before taking over") && !kernel_tells_exit_status() {
            true => "ended before taking over",
            false => case.says,
        };
        assert!(line.contains(says), "{}: the failure should say {says:?}: {line}", case.name);
        if let Some(asked) = asked {
            let (status, answer) = asked.join().unwrap();
            assert_eq!(status, 2, "{}: idlereaperctl upgrade: {answer}", case.name);
            assert!(
                answer.contains("upgrade failed: ") && answer.contains(case.says),
                "{}: {answer}",
                case.name
            );
        }

        // The guardian serves now, with the old code, and names itself in the pidfile.
        let now = pid_in(&pidfile);
        assert_ne!(now, serving, "{}: the pidfile still names the process that failed", case.name);
        assert!(
            is_running(now),
            "{}: pid {now} of the pidfile does not run; log:\n{}",
            case.name,
            daemon.log()
        );
        assert!(line.contains(&format!("pid={now} ")), "{}: {line}", case.name);
        assert_eq!(fs::read_to_string(format!("/proc/{now}/comm")).unwrap().trim(), "idlereaper");
        assert!(wait_for(Duration::from_secs(5), || (!is_running(serving)).then_some(())).is_some());
        serving = now;

        assert_all_echo(&mut idle, case.name, &daemon);
        let flowing = wait_for(Duration::from_secs(10), || {
            streams.iter().zip(&received).all(|(s, b)| s.received() >= b + 64 * 1024).then_some(())
        });
        let now_received: Vec<u64> = streams.iter().map(EchoStream::received).collect();
        assert!(
            flowing.is_some(),
            "{}: the streams did not flow on: {received:?} then {now_received:?}; log:\n{}",
            case.name,
            tail(&daemon.log(), 30)
        );
        let mut fresh = connect(listen);
        assert_echo(&mut fresh, format!("a new client after {}", case.name).as_bytes());
        idle.push(fresh);
        unix_client.write_all(b"unix").unwrap();
        let mut back = [0u8; 4];
        unix_client.read_exact(&mut back).unwrap();
        let mut unix_fresh = UnixStream::connect(&unix).expect("the Unix listener accepts");
        unix_fresh.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        unix_fresh.write_all(b"unix").unwrap();
        unix_fresh.read_exact(&mut back).unwrap();
        let (status, answer) = ctl(&control, &["show", "listeners"]);
        assert_eq!(status, 0, "{}: the control socket: {answer}", case.name);
        let samples = scrape(metrics);
        assert_eq!(sample(&samples, "idlereaper_upgrades_total{result=\"failed\"}"), (n + 1) as f64);
        assert_eq!(sample(&samples, "idlereaper_upgrades_total{result=\"success\"}"), 0.0);
    }

    // A good binary: the upgrade succeeds, in the process that serves now.
    replace_file(&exe, &fs::read(BIN).unwrap());
    send_signal(serving, libc::SIGUSR2);
    daemon.wait_log(" INFO upgraded ", Duration::from_secs(20));
    assert_eq!(pid_in(&pidfile), serving, "an upgrade keeps the pid");
    assert_all_echo(&mut idle, "after the good upgrade", &daemon);
    let samples = scrape(metrics);
    assert_eq!(sample(&samples, "idlereaper_upgrades_total{result=\"success\"}"), 1.0);
    assert_eq!(sample(&samples, "idlereaper_upgrades_total{result=\"failed\"}"), 5.0);

    // The stalled upstream reads at last: every byte the relay held, through five failed
    // upgrades and a good one, arrives in order.
    stall_total.store(stalled, Ordering::SeqCst);
    stall_go.store(true, Ordering::SeqCst);
    let drained = stall_done.recv_timeout(Duration::from_secs(40)).expect("the stalled upstream's result");
    drained.unwrap_or_else(|e| panic!("the stalled stream ({stalled} bytes): {e}"));
    for (i, stream) in streams.into_iter().enumerate() {
        stream.finish(i);
    }
    let log = daemon.log();
    assert!(!log.contains("panicked") && !log.contains("could not be taken over"), "log:\n{log}");

    // kill -TERM $(cat pidfile) stops it cleanly.
    let running = DetachedDaemon::from_pidfile(&pidfile, &daemon.config_path);
    send_signal(running.pid, libc::SIGTERM);
    let status = running.wait_gone(Duration::from_secs(15));
    assert_eq!(status, Some(Some(0)), "exit after TERM; log:\n{}", tail(&daemon.log(), 30));
    assert!(!pidfile.exists(), "the pidfile is removed");
    assert!(!control.exists() && !unix.exists(), "the socket files are removed");
}

/// The failure that made a real upgrade exit, and lose every connection: the daemon drops
/// privileges, its log file lives in a directory only root may write to, and logrotate has moved
/// the file away. The new image cannot create the file again; it warns, logs on to the file the
/// old image had open (as a SIGUSR1 that cannot reopen it does), and the upgrade succeeds.
#[test]
fn a_log_file_the_new_image_cannot_open_again_is_a_warning_not_a_failure() {
    if !nix::unistd::Uid::effective().is_root() {
        skip("needs root (daemon.user, and a log directory only root may write to)");
        return;
    }
    let echo = patient_echo();
    let (listen, metrics) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    // The user reaches the binary and the configuration; the log directory stays root's.
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
    let exe = copy_binary(&root);
    let logs = root.join("logs");
    fs::create_dir(&logs).unwrap();
    fs::set_permissions(&logs, fs::Permissions::from_mode(0o755)).unwrap();
    let (log, rotated) = (logs.join("idlereaper.log"), logs.join("idlereaper.log.1"));
    // The pidfile in a directory of the user's (as systemd's RuntimeDirectory= makes).
    let nobody = nix::unistd::User::from_name("nobody").unwrap().expect("user nobody");
    let run = root.join("run");
    fs::create_dir(&run).unwrap();
    std::os::unix::fs::chown(&run, Some(nobody.uid.as_raw()), Some(nobody.gid.as_raw())).unwrap();
    let pidfile = run.join("idlereaper.pid");
    let config = format!(
        "[daemon]\npidfile = \"{}\"\nlog = \"{}\"\nlog_level = \"info\"\nuser = \"nobody\"\n\
         group = \"nogroup\"\nshutdown_timeout = \"2s\"\n\n",
        pidfile.display(),
        log.display()
    ) + &relay_listener("relay", listen, echo.addr, "120s")
        + &format!("[metrics]\nlisten = \"{metrics}\"\n");
    let mut daemon = Daemon::start_logging_to(&exe, dir, &config, &log, |_, _| {});
    let _cleanup = KillLeftovers(daemon.config_path.clone());
    daemon.pidfile = pidfile.clone();
    let pid = daemon.pid();
    let mut idle = open_idle(listen, 20);
    let stream = EchoStream::start(listen, 300);

    fs::rename(&log, &rotated).unwrap();
    daemon.log_path = rotated.clone();
    replace_binary(&exe);
    let received = stream.received();
    daemon.signal(libc::SIGUSR2);
    daemon.wait_log(" INFO upgraded ", Duration::from_secs(20));
    let text = daemon.log();
    let warning = format!(" WARN cannot open log file {}: Permission denied", log.display());
    assert!(text.contains(&warning), "no {warning:?} in the log:\n{text}");
    assert!(text.contains("logging on to the file the previous image had open"), "{text}");
    assert!(!log.exists(), "the log file was created again");
    assert!(daemon.poll_exit().is_none() && is_running(pid), "same process; log:\n{text}");
    assert_eq!(pid_in(&pidfile), pid);
    let exe_now = exe_of(pid);
    assert!(!exe_now.ends_with(" (deleted)"), "the new file runs: {exe_now}");
    let samples = scrape(metrics);
    assert_eq!(sample(&samples, "idlereaper_upgrades_total{result=\"success\"}"), 1.0);
    assert_eq!(sample(&samples, "idlereaper_upgrades_total{result=\"failed\"}"), 0.0);

    assert_all_echo(&mut idle, "after the upgrade", &daemon);
    let flowing =
        wait_for(Duration::from_secs(10), || (stream.received() >= received + 64 * 1024).then_some(()));
    assert!(flowing.is_some(), "the stream did not flow on");
    stream.finish(0);
    let status = daemon.stop_within(Duration::from_secs(15));
    assert!(status.success(), "exit after TERM: {status}; log:\n{}", daemon.log());
    assert!(!pidfile.exists(), "the pidfile is removed");
}
