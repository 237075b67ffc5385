//! Real services for the tests to put behind the daemon, each the test's own instance
//! ([`Redis`], [`Postgres`]), and what they share: started in a temp directory on a free port of
//! 127.0.0.1 (and ::1, as their default configs do) and on a Unix socket in that directory, ready
//! when `start` returns, stopped and their directory removed on drop. Their client tools
//! (`redis-cli`, `redis-benchmark`, `psql`, `pgbench`) run with a deadline ([`run_tool`]).
//!
//! `start` returns `None` when a program is missing: the test is then skipped visibly, or fails
//! in CI ([`super::require_program`]). The system services that installing the packages may
//! start are never used: every instance here has its own port and socket.

use std::fs::{self, File};
use std::net::{Ipv6Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::{ipv6_loopback_available, send_signal, wait_for};

/// How to install every service program the tests use.
pub const SERVICES_INSTALL: &str = "apt-get install redis-server redis-tools postgresql";
/// How long a service may take to start serving.
pub(super) const SERVICE_START: Duration = Duration::from_secs(20);
/// How often a service's start is tried, each on a new port, when it exits while starting (the
/// free port it was given may have been taken meanwhile).
pub(super) const START_TRIES: usize = 3;

/// What one run of a client tool left.
#[derive(Debug)]
pub struct ToolRun {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl ToolRun {
    /// Panics, showing the output, unless the tool exited with status 0.
    pub fn assert_success(&self, what: &str) -> &ToolRun {
        assert!(
            self.status.success(),
            "{what}: {}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `command` with stdin from /dev/null and stdout and stderr in files of `dir`, waiting at
/// most `timeout`; past it, kills the tool and panics with what it printed.
pub fn run_tool(command: &mut Command, dir: &Path, timeout: Duration) -> ToolRun {
    static COUNT: AtomicU32 = AtomicU32::new(0);
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    let (out_path, err_path) = (dir.join(format!("tool{n}.stdout")), dir.join(format!("tool{n}.stderr")));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    let status = wait_for(timeout, || child.try_wait().unwrap());
    let read = |p: &Path| fs::read_to_string(p).unwrap_or_default();
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{command:?} did not return within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
            read(&out_path),
            read(&err_path)
        );
    };
    ToolRun { status, stdout: read(&out_path), stderr: read(&err_path) }
}

/// A port on which nothing listens right now on 127.0.0.1, nor on ::1 where that exists.
pub(super) fn free_localhost_port() -> u16 {
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if !ipv6_loopback_available() || TcpListener::bind((Ipv6Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free on both 127.0.0.1 and ::1 in 100 tries");
}

/// A service's server process: killed on drop (after `stop_signal`, given a moment), then its
/// temp directory removed.
pub(super) struct Server {
    pub name: &'static str,
    pub child: Child,
    pub log: PathBuf,
    pub stop_signal: i32,
    /// Dropped last: the directory goes once the process is gone.
    pub dir: tempfile::TempDir,
}

impl Server {
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `ready` holds: `Ok` then; `Err(log)` if the server exited first; panics if it
    /// still is not ready after [`SERVICE_START`].
    pub fn wait_ready(&mut self, mut ready: impl FnMut() -> bool) -> Result<(), String> {
        let outcome = wait_for(SERVICE_START, || match self.child.try_wait().unwrap() {
            Some(status) => {
                Some(Err(format!("{} exited ({status}) while starting; its log:\n{}", self.name, self.log())))
            }
            None => ready().then_some(Ok(())),
        });
        outcome.unwrap_or_else(|| {
            panic!("{} not ready after {SERVICE_START:?}; its log:\n{}", self.name, self.log())
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            send_signal(self.child.id(), self.stop_signal);
            if wait_for(Duration::from_secs(5), || self.child.try_wait().ok().flatten()).is_none() {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
    }
}
