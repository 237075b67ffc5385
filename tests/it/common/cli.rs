//! The command as an operator runs it: `idlereaper <args>` with a deadline, its output captured
//! in files; and daemonized instances, which the test process reaps as a child subreaper.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::{is_running, processes_with_arg, send_signal, wait_for, BIN};

/// What one run of the command left: its status and output.
#[derive(Debug)]
pub struct CliRun {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `idlereaper args...` with stdout and stderr to files of `dir` (not pipes: a daemon that
/// keeps stderr would hold a pipe open), waiting at most `timeout` for the command to return.
pub fn run_cli(dir: &Path, args: &[&std::ffi::OsStr], timeout: Duration) -> CliRun {
    static COUNT: AtomicU32 = AtomicU32::new(0);
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    let out_path = dir.join(format!("cli{n}.stdout"));
    let err_path = dir.join(format!("cli{n}.stderr"));
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .expect("spawn idlereaper");
    let Some(status) = wait_for(timeout, || child.try_wait().unwrap()) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("`idlereaper {args:?}` did not return within {timeout:?}");
    };
    CliRun {
        status,
        stdout: fs::read_to_string(out_path).unwrap_or_default(),
        stderr: fs::read_to_string(err_path).unwrap_or_default(),
    }
}

/// Makes this process a child subreaper (idempotent), so that daemonized instances are
/// re-parented to it and can be reaped. It is process-wide: once one test has asked, every
/// orphan of any test's processes waits here as a zombie until it is reaped (PID 1 of a container
/// may not reap either), which no other test can tell: [`is_running`] and [`processes_with_arg`]
/// count a zombie as gone.
pub fn become_child_subreaper() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "prctl: {}", io::Error::last_os_error());
}

/// A daemonized idlereaper: killed (SIGKILL) on drop if it still runs and is still ours (its
/// command line names our config file).
pub struct DetachedDaemon {
    pub pid: u32,
    config: PathBuf,
}

impl DetachedDaemon {
    /// Reads the pid from `pidfile`, which must be `<pid>\n`.
    pub fn from_pidfile(pidfile: &Path, config: &Path) -> DetachedDaemon {
        let text =
            fs::read_to_string(pidfile).unwrap_or_else(|e| panic!("pidfile {}: {e}", pidfile.display()));
        assert!(text.ends_with('\n'), "pidfile ends with a newline: {text:?}");
        let pid =
            text.trim_end_matches('\n').parse().unwrap_or_else(|_| panic!("pidfile holds a pid: {text:?}"));
        DetachedDaemon { pid, config: config.to_path_buf() }
    }

    /// Waits up to `timeout` for the process to be gone; reaps it and returns its exit status
    /// (`None` inside when it was not ours to reap or was killed by a signal).
    pub fn wait_gone(&self, timeout: Duration) -> Option<Option<i32>> {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        let pid = nix::unistd::Pid::from_raw(self.pid as i32);
        wait_for(timeout, || {
            if is_running(self.pid) {
                return None;
            }
            // Exited: a zombie until reaped, if it is our (re-parented) child. Its main thread
            // shows as a zombie while the others are still exiting: not reapable yet.
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => None,
                Ok(WaitStatus::Exited(_, code)) => Some(Some(code)),
                _ => Some(None),
            }
        })
    }
}

impl Drop for DetachedDaemon {
    fn drop(&mut self) {
        let config = self.config.to_string_lossy().into_owned();
        if is_running(self.pid) && processes_with_arg(&config).contains(&self.pid) {
            send_signal(self.pid, libc::SIGKILL);
            let _ = self.wait_gone(Duration::from_secs(5));
        }
    }
}
