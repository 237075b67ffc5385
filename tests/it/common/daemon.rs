//! The daemon under test: config sections, `idlereaper -f` in a temp directory with its log
//! captured, signals, and what /proc says about processes.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::log::{parse_fields, CloseLine};
use super::{wait_for, BIN, START_DEADLINE};

/// The `[daemon]` section used by the tests: pidfile in `dir`, log to stderr, a 1 ms tick.
pub fn daemon_section(dir: &Path, shutdown_timeout: &str) -> String {
    format!(
        "[daemon]\npidfile = \"{}\"\nlog = \"stderr\"\nlog_level = \"info\"\ntick = \"1ms\"\n\
         shutdown_timeout = \"{shutdown_timeout}\"\n\n",
        dir.join("idlereaper.pid").display()
    )
}

/// A relay `[[listener]]` section.
pub fn relay_listener(name: &str, listen: SocketAddr, upstream: SocketAddr, idle_timeout: &str) -> String {
    format!(
        "[[listener]]\nname = \"{name}\"\nlisten = \"{listen}\"\nupstream = \"{upstream}\"\n\
         idle_timeout = \"{idle_timeout}\"\n\n"
    )
}

/// A sink `[[listener]]` section.
pub fn sink_listener(name: &str, listen: SocketAddr, idle_timeout: &str) -> String {
    format!("[[listener]]\nname = \"{name}\"\nlisten = \"{listen}\"\nidle_timeout = \"{idle_timeout}\"\n\n")
}

/// `idlereaper -f -c <config>` running in its own temp directory, its stderr (the log) in a file.
/// Dropping it kills the process (SIGKILL) if it still runs.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub pidfile: PathBuf,
    pub log_path: PathBuf,
    child: Child,
    status: Option<ExitStatus>,
}

impl Daemon {
    /// Starts with [`daemon_section`] (shutdown_timeout 2 s) followed by `listeners`.
    pub fn start(listeners: &str) -> Daemon {
        Daemon::start_with("2s", listeners)
    }

    /// Starts with the given shutdown timeout and listener sections.
    pub fn start_with(shutdown_timeout: &str, listeners: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let text = daemon_section(dir.path(), shutdown_timeout) + listeners;
        Daemon::start_in(dir, &text)
    }

    /// Writes `config` into `dir` and starts the daemon in the foreground on it; returns once the
    /// log says `started` (listeners bound, pidfile written; text or JSON), or panics with the log.
    pub fn start_in(dir: tempfile::TempDir, config: &str) -> Daemon {
        Daemon::start_in_with(dir, config, |_, _| {})
    }

    /// [`Daemon::start_in`], with `prepare` called on the written config file and the command
    /// before the spawn: to change the file's mode, or to set resource limits (see
    /// [`limit_open_files`]).
    pub fn start_in_with(
        dir: tempfile::TempDir,
        config: &str,
        prepare: impl FnOnce(&Path, &mut Command),
    ) -> Daemon {
        Daemon::start_program(Path::new(BIN), dir, config, prepare)
    }

    /// [`Daemon::start_in_with`], running the binary at `program` (a copy, for a live upgrade
    /// to replace).
    pub fn start_program(
        program: &Path,
        dir: tempfile::TempDir,
        config: &str,
        prepare: impl FnOnce(&Path, &mut Command),
    ) -> Daemon {
        let log_path = dir.path().join("stderr.log");
        Daemon::start_logging_to(program, dir, config, &log_path, prepare)
    }

    /// [`Daemon::start_program`] with a configuration whose `daemon.log` is the file `log_path`
    /// (stderr still goes to `stderr.log`).
    pub fn start_logging_to(
        program: &Path,
        dir: tempfile::TempDir,
        config: &str,
        log_path: &Path,
        prepare: impl FnOnce(&Path, &mut Command),
    ) -> Daemon {
        let config_path = dir.path().join("idlereaper.toml");
        fs::write(&config_path, config).expect("write config");
        let pidfile = dir.path().join("idlereaper.pid");
        let log_path = log_path.to_path_buf();
        let stderr = File::create(dir.path().join("stderr.log")).expect("create the stderr file");
        let mut command = Command::new(program);
        command
            .arg("-f")
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        prepare(&config_path, &mut command);
        let child = command.spawn().expect("spawn idlereaper");
        let mut daemon = Daemon { dir, config_path, pidfile, log_path, child, status: None };
        let ready = wait_for(START_DEADLINE, || {
            if daemon.log().lines().any(is_started_line) {
                return Some(true);
            }
            daemon.poll_exit().map(|_| false)
        });
        match ready {
            Some(true) => daemon,
            Some(false) => panic!(
                "idlereaper exited during startup ({:?}); log:\n{}\nconfig:\n{config}",
                daemon.status,
                daemon.log()
            ),
            None => panic!("idlereaper not ready after {START_DEADLINE:?}; log:\n{}", daemon.log()),
        }
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The `conn closed` lines logged so far.
    pub fn closes(&self) -> Vec<CloseLine> {
        self.log().lines().filter_map(CloseLine::parse).collect()
    }

    /// Waits (up to `timeout`) for the `conn closed` line of the client at `client`.
    pub fn wait_close_of(&self, client: SocketAddr, timeout: Duration) -> CloseLine {
        self.wait_close_matching(&format!("client={client}"), timeout, |c| {
            c.get("client") == Some(&*client.to_string())
        })
    }

    /// [`Daemon::wait_close_of`] on `listener`: for a daemon with several listeners, where two
    /// clients, each of a different listener, may have the same address (the kernel picks a
    /// source port per destination, and every loopback destination is reached from 127.0.0.1).
    pub fn wait_close_on(&self, listener: &str, client: SocketAddr, timeout: Duration) -> CloseLine {
        let client_text = client.to_string();
        let mine =
            |c: &CloseLine| c.get("listener") == Some(listener) && c.get("client") == Some(&*client_text);
        self.wait_close_matching(&format!("listener={listener} client={client}"), timeout, mine)
    }

    /// Waits for the one `conn closed` line that `mine` picks (`what` names it in a failure).
    fn wait_close_matching(
        &self,
        what: &str,
        timeout: Duration,
        mine: impl Fn(&CloseLine) -> bool,
    ) -> CloseLine {
        let line = wait_for(timeout, || self.closes().into_iter().find(|c| mine(c))).unwrap_or_else(|| {
            panic!("no `conn closed` line for {what} within {timeout:?}; log:\n{}", self.log())
        });
        line.assert_well_formed();
        let count = self.closes().iter().filter(|c| mine(c)).count();
        assert_eq!(count, 1, "one close line per connection ({what}); log:\n{}", self.log());
        line
    }

    /// Waits (up to `timeout`) until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        if wait_for(timeout, || self.log().contains(needle).then_some(())).is_none() {
            panic!("log has no {needle:?} after {timeout:?}; log:\n{}", self.log());
        }
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the daemon, if it is still running.
    pub fn signal(&mut self, signal: i32) {
        if self.poll_exit().is_none() {
            send_signal(self.pid(), signal);
        }
    }

    /// Records and returns the exit status if the process has ended.
    pub fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Waits up to `timeout` for the process to end.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_for(timeout, || self.poll_exit())
    }

    /// SIGTERM, then waits up to `timeout` for the exit; panics (with the log) if it does not.
    pub fn stop_within(&mut self, timeout: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(timeout).unwrap_or_else(|| {
            panic!("idlereaper still running {timeout:?} after SIGTERM; log:\n{}", self.log())
        })
    }

    /// SIGTERM and wait (shutdown_timeout of the default config plus slack).
    pub fn stop(&mut self) -> ExitStatus {
        self.stop_within(Duration::from_secs(10))
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if self.poll_exit().is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }

    /// The daemon's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid()).expect("VmRSS of the daemon")
    }

    /// What the daemon's descriptors are, from /proc/<pid>/fd.
    pub fn fds(&self) -> FdCensus {
        fd_census(self.pid()).expect("/proc/<pid>/fd of the daemon")
    }

    /// CPU time (user + system, all threads) the daemon has used so far.
    pub fn cpu_time(&self) -> Duration {
        cpu_time(self.pid()).expect("/proc/<pid>/stat of the daemon")
    }

    /// Sends USR1 and returns the statistics line it logs (the first one after those already in
    /// the log), parsed into its fields.
    pub fn stats(&mut self) -> BTreeMap<String, String> {
        let before = self.log().lines().filter(|l| l.contains(" stats ")).count();
        self.signal(libc::SIGUSR1);
        let line = wait_for(Duration::from_secs(5), || {
            self.log().lines().filter(|l| l.contains(" stats ")).nth(before).map(str::to_string)
        })
        .unwrap_or_else(|| panic!("no stats line after USR1; log:\n{}", self.log()));
        let (_, fields) = line.split_once(" stats ").expect("a stats line");
        parse_fields(fields)
    }

    /// Waits (up to `timeout`) until the statistics line, asked for with USR1 each time, shows
    /// `key=value`: for a step that must come only once the daemon has, say, accepted a client.
    pub fn wait_stat(&mut self, key: &str, value: u64, timeout: Duration) {
        let want = value.to_string();
        let mut last = BTreeMap::new();
        let shown = wait_for(timeout, || {
            last = self.stats();
            (last.get(key) == Some(&want)).then_some(())
        });
        if shown.is_none() {
            panic!(
                "no statistics line with {key}={value} within {timeout:?} (the last: {last:?}); log:\n{}",
                self.log()
            );
        }
    }
}

/// Whether `line` is the daemon's `started` line, in either log format.
pub fn is_started_line(line: &str) -> bool {
    line.contains(" INFO started ") || line.starts_with('{') && line.contains(r#","msg":"started","#)
}

/// For [`Daemon::start_in_with`]: the child gets `RLIMIT_NOFILE` = `limit` (soft and hard).
pub fn limit_open_files(command: &mut Command, limit: u64) {
    use nix::sys::resource::{setrlimit, Resource};
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec; it only calls setrlimit(2),
    // which is async-signal-safe, allocates nothing and takes no lock.
    unsafe {
        command.pre_exec(move || setrlimit(Resource::RLIMIT_NOFILE, limit, limit).map_err(io::Error::from));
    }
}

/// A process's open descriptors by kind, from the targets of the /proc/<pid>/fd links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FdCensus {
    pub sockets: usize,
    pub pipes: usize,
    /// Files, epoll, timerfd, eventfd, /dev/null, ...
    pub other: usize,
}

impl FdCensus {
    pub fn total(&self) -> usize {
        self.sockets + self.pipes + self.other
    }
}

/// Counts the descriptors of `pid` by kind; `None` if the process is gone.
pub fn fd_census(pid: u32) -> Option<FdCensus> {
    let dir = fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let mut census = FdCensus::default();
    for entry in dir.flatten() {
        // A descriptor closed between the listing and the readlink is simply not counted.
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        if target.starts_with("socket:") {
            census.sockets += 1;
        } else if target.starts_with("pipe:") {
            census.pipes += 1;
        } else {
            census.other += 1;
        }
    }
    Some(census)
}

/// Time on CPU of all the threads of `pid`, to the nanosecond, from /proc/<pid>/task/*/schedstat
/// (finer than [`cpu_time`], which counts clock ticks; threads that have exited are not counted).
pub fn cpu_runtime(pid: u32) -> Option<Duration> {
    let mut ns = 0u64;
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Ok(text) = fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        ns += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(ns))
}

/// User + system CPU time of `pid` (all its threads), from fields 14 and 15 of /proc/<pid>/stat.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the parenthesised command name start with field 3 (state).
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |field: usize| fields.get(field - 3).and_then(|f| f.parse::<u64>().ok());
    let total = ticks(14)? + ticks(15)?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&h| h > 0).unwrap_or(100);
    Some(Duration::from_micros(total * 1_000_000 / hz))
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `kill(pid, signal)`.
pub fn send_signal(pid: u32, signal: i32) {
    let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
    // SAFETY: kill has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal}): {}", io::Error::last_os_error());
}

/// Resident set size of `pid` in KiB, from /proc/<pid>/status.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// True if `pid` names a running (not zombie) process.
pub fn is_running(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name, which may itself contain ')'.
    let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, None | Some("Z") | Some("X") | Some("x"))
}

/// Pids of processes whose command line contains `needle` as one argument (e.g. a config path
/// unique to a test), zombies excluded.
pub fn processes_with_arg(needle: &str) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|cmd| cmd.split(|b| *b == 0).any(|arg| arg == needle.as_bytes()))
                .unwrap_or(false)
        })
        .filter(|pid| is_running(*pid))
        .collect()
}
