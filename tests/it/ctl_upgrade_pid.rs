//! `idlereaperctl upgrade --pid PID`, the upgrade the package asks for when the daemon has no
//! control socket: SIGUSR2, then the outcome read from /proc within a bounded wait — exit 0 once
//! the new binary has taken over (connections kept), 3 when the daemon still runs its previous
//! binary at the end of the wait (it refused: its log says why), 1 for a pid that is not an
//! idlereaper. (A new binary that fails after the exec, exit 2 naming the process that carries
//! on, is among the failures of `upgrade_failures.rs`.)

use std::time::Duration;

use crate::common::*;

#[test]
fn upgrade_by_pid_reports_the_new_binary_or_no_outcome_within_the_wait() {
    let upstream = Upstream::echo();
    let (listen, metrics) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let exe = copy_binary(dir.path());
    // No [control] table: the signal is the only way to ask.
    let config = daemon_section(dir.path(), "2s")
        + &relay_listener("r", listen, upstream.addr, "60s")
        + &metrics_at(metrics);
    let mut daemon = Daemon::start_program(&exe, dir, &config, |_, _| {});
    let _cleanup = KillLeftovers(daemon.config_path.clone());
    let mut client = connect(listen);
    assert_echo(&mut client, b"before");
    let pid = daemon.pid().to_string();

    // A package upgrade: the file replaced, the running image now "(deleted)".
    replace_binary(&exe);
    assert!(exe_of(daemon.pid()).ends_with(" (deleted)"));
    let out = ctl_with_config(&daemon.config_path, &["upgrade", "--pid", &pid, "--wait", "60s"]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{said}\n{}", daemon.log());
    assert!(said.starts_with(&format!("upgraded pid={pid} binary={}", exe.display())), "{said}");
    assert_eq!(exe_of(daemon.pid()), exe.display().to_string(), "the new file runs");
    // Said once the guardian has gone: the new image logs its line right after.
    daemon.wait_log(" INFO upgraded ", Duration::from_secs(10));
    assert_echo(&mut client, b"the connection is kept");
    let body = scrape_metrics(metrics);
    assert_eq!(metric(&body, "idlereaper_upgrades_total", "result=\"success\""), Some(1), "{body}");

    // A new binary the pre-flight checks refuse: the daemon runs on; no outcome within the wait.
    replace_file(&exe, &image_script("echo 'not this one' >&2; exit 1", ":"));
    let out = ctl_with_config(&daemon.config_path, &["upgrade", "--pid", &pid, "--wait", "3s"]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(
        said.contains("no outcome within 3s") && said.contains("still runs its previous binary"),
        "{said}"
    );
    daemon.wait_log(" ERROR upgrade refused: ", Duration::from_secs(20));
    assert_echo(&mut client, b"still kept");

    // Not an idlereaper: nothing is signalled.
    let me = std::process::id().to_string();
    let out = ctl_with_config(&daemon.config_path, &["upgrade", "--pid", &me]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("pid {me} is not a running idlereaper")));
    assert!(daemon.stop().success());
}
