//! The `log` backend, chosen in one place: stderr, an append-only file, or syslog (`/dev/log`,
//! RFC 3164). In the foreground, "syslog" and "stderr" both mean stderr (a supervisor such as
//! systemd captures it); a file stays a file. A log file is reopened on request (SIGUSR1), for
//! `logrotate`. Each line is text or JSON (`daemon.log_format`, changed by a reload), written by
//! [`format`](mod@format) from the record's message and fields.
//!
//! A daemon writes nothing to the terminal it was started from once the start command has
//! returned. So daemonizing is refused, before anything is done, when its log lines could only
//! go there: "syslog" without a syslog socket (a container, say), or "stderr" when stderr is a
//! terminal ([`detached_problem`]); and a syslog socket that refuses the connection fails the
//! start rather than falling back to stderr.

mod format;

pub use format::text;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::config::{LogFormat, LogTarget};

type Syslog = syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>;

/// Where syslog listens (a constant: the C library's `syslog(3)` knows no other place either).
pub const SYSLOG_SOCKET: &str = "/dev/log";

/// Why a daemon that detaches from its terminal cannot log to `target` on this machine, if it
/// cannot (see [`detached_problem_with`]).
pub fn detached_problem(target: &LogTarget) -> Option<String> {
    use std::io::IsTerminal;
    detached_problem_with(target, Path::new(SYSLOG_SOCKET).exists(), io::stderr().is_terminal())
}

/// Why a daemon that detaches from its terminal cannot log to `target`, if it cannot: "syslog"
/// needs the syslog socket (`syslog_socket`: whether it exists), and "stderr" must not be the
/// terminal (`stderr_terminal`), which nothing may write to after the start command returned.
/// (Daemonized, "stderr" that is a file or a pipe stays in use: the caller redirected it.)
pub fn detached_problem_with(
    target: &LogTarget,
    syslog_socket: bool,
    stderr_terminal: bool,
) -> Option<String> {
    match target {
        LogTarget::Syslog if !syslog_socket => Some(format!(
            "\"syslog\" needs the syslog socket {SYSLOG_SOCKET}, which does not exist on this machine, \
             and a daemon must not log to the terminal it was started from: set daemon.log to a file \
             path, such as \"/var/log/idlereaper/idlereaper.log\", or run idlereaper with \
             --foreground and daemon.log = \"stderr\""
        )),
        LogTarget::Stderr if stderr_terminal => Some(
            "\"stderr\" is the terminal idlereaper was started from, which a daemon must not write to \
             once the start command has returned: run idlereaper with --foreground, or set \
             daemon.log to \"syslog\" or a file path"
                .to_owned(),
        ),
        _ => None,
    }
}

/// Where log lines go, decided (and any file opened) before privileges are dropped.
pub enum Destination {
    Stderr,
    File {
        path: PathBuf,
        file: File,
    },
    /// Connected when installed, so that the pid in each line is the daemon's.
    Syslog,
}

impl Destination {
    /// The destination for `target`, opening a log file now.
    pub fn open(target: &LogTarget, foreground: bool) -> Result<Destination, crate::error::Error> {
        Ok(match target {
            LogTarget::File(path) => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o640)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(path)
                    .map_err(|e| {
                        crate::error::Error::io(format!("cannot open log file {}", path.display()), e)
                    })?;
                Destination::File { path: path.clone(), file }
            }
            LogTarget::Syslog if !foreground => Destination::Syslog,
            LogTarget::Syslog | LogTarget::Stderr => Destination::Stderr,
        })
    }
}

impl Destination {
    /// [`Destination::open`] in a daemon rebuilt by a live upgrade, which may have the log file
    /// the previous image had open (`kept`, a descriptor it inherited): a file it cannot open
    /// again — a directory only root may write to, the file rotated away — is a warning (the
    /// second value), and the lines go on to the kept file, as after a SIGUSR1 that cannot
    /// reopen it. A kept file not needed is closed.
    pub fn reopen(
        target: &LogTarget,
        foreground: bool,
        kept: Option<RawFd>,
    ) -> Result<(Destination, Option<String>), crate::error::Error> {
        let kept = kept.and_then(|fd| crate::os::sys::adopt(fd).ok());
        match (Destination::open(target, foreground), kept, target) {
            (Ok(destination), _, _) => Ok((destination, None)),
            (Err(e), Some(kept), LogTarget::File(path)) => {
                let warning = format!(
                    "{e}; logging on to the file the previous image had open (SIGUSR1 tries {} again)",
                    path.display()
                );
                Ok((Destination::File { path: path.clone(), file: File::from(kept) }, Some(warning)))
            }
            (Err(e), _, _) => Err(e),
        }
    }

    /// The log file, if logging to one.
    pub fn file(&self) -> Option<&File> {
        match self {
            Destination::File { file, .. } => Some(file),
            _ => None,
        }
    }
}

enum Output {
    Stderr,
    File { path: PathBuf, file: File },
    Syslog(Syslog),
}

/// The installed logger.
struct Logger {
    /// A `LevelFilter` as `usize`, so that a reload can change it.
    level: AtomicUsize,
    /// [`LogFormat::Json`] rather than text (a reload can change it too).
    json: AtomicBool,
    output: Mutex<Output>,
}

/// A handle on the installed logger, for reopening its file.
#[derive(Clone, Copy)]
pub struct LogHandle {
    logger: Option<&'static Logger>,
    on_stderr: bool,
}

impl LogHandle {
    /// Whether lines go to stderr: a daemon must then keep its stderr (a file or a pipe, see
    /// [`detached_problem`]) instead of pointing it at /dev/null.
    pub fn on_stderr(&self) -> bool {
        self.on_stderr
    }

    /// The log file's descriptor, if logging to one (a live upgrade carries it over).
    pub fn descriptor(&self) -> Option<RawFd> {
        let output = self.logger?.output.lock().ok()?;
        match &*output {
            Output::File { file, .. } => Some(file.as_raw_fd()),
            _ => None,
        }
    }

    /// Changes the level (a reload).
    pub fn set_level(&self, level: LevelFilter) {
        if let Some(logger) = self.logger {
            logger.level.store(level as usize, Ordering::Relaxed);
            log::set_max_level(level);
        }
    }

    /// Changes the format (a reload).
    pub fn set_format(&self, format: LogFormat) {
        if let Some(logger) = self.logger {
            logger.json.store(format == LogFormat::Json, Ordering::Relaxed);
        }
    }

    /// Reopens a log file (after `logrotate` moved it); a no-op for stderr and syslog. On
    /// failure the old file stays in use and the error is logged there.
    pub fn reopen(&self) {
        let Some(logger) = self.logger else { return };
        let Ok(mut output) = logger.output.lock() else { return };
        let Output::File { path, file } = &mut *output else { return };
        match open_log_file(path) {
            Ok(new) => *file = new,
            Err(e) => {
                let message = format_args!("cannot reopen log file {}: {e}", path.display());
                let record = Record::builder().level(Level::Error).args(message).build();
                let _ = file.write_all(format::line(logger.format(), now(), &record).as_bytes());
            }
        }
    }
}

/// Logs `message` with `fields` at `level`: for a line whose fields are built as a list, because
/// its text form (see [`text`]) is also shown elsewhere; the `log` macros take fields too
/// (`info!(id, listener; "conn closed")`).
pub fn log_fields(level: Level, message: &str, fields: &dyn log::kv::Source) {
    if level <= log::max_level() {
        log::logger().log(
            &Record::builder()
                .level(level)
                .target(module_path!())
                .args(format_args!("{message}"))
                .key_values(fields)
                .build(),
        );
    }
}

/// Installs the global logger. Call once, in the process that will log (after daemonizing). Fails
/// only when syslog cannot be reached: a daemon has no terminal to fall back to.
pub fn install(
    destination: Destination,
    level: LevelFilter,
    format: LogFormat,
) -> Result<LogHandle, crate::error::Error> {
    let output = match destination {
        Destination::Stderr => Output::Stderr,
        Destination::File { path, file } => Output::File { path, file },
        Destination::Syslog => {
            let formatter = syslog::Formatter3164 {
                facility: syslog::Facility::LOG_DAEMON,
                hostname: None,
                process: "idlereaper".into(),
                pid: std::process::id(),
            };
            let logger = syslog::unix(formatter).map_err(|e| {
                crate::error::Error::Message(format!(
                    "daemon.log: cannot connect to syslog at {SYSLOG_SOCKET}: {e}"
                ))
            })?;
            Output::Syslog(logger)
        }
    };
    // The logger lives as long as the process; leaking it gives the `&'static` that both the
    // `log` facade and the reopen handle need, without a global of our own.
    let logger: &'static Logger = Box::leak(Box::new(Logger {
        level: AtomicUsize::new(level as usize),
        json: AtomicBool::new(format == LogFormat::Json),
        output: Mutex::new(output),
    }));
    let installed = log::set_logger(logger).is_ok();
    if installed {
        log::set_max_level(level);
    }
    let on_stderr = matches!(logger.output.lock().as_deref(), Ok(Output::Stderr));
    Ok(LogHandle { logger: installed.then_some(logger), on_stderr })
}

impl Logger {
    fn format(&self) -> LogFormat {
        match self.json.load(Ordering::Relaxed) {
            true => LogFormat::Json,
            false => LogFormat::Text,
        }
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        (metadata.level() as usize) <= self.level.load(Ordering::Relaxed)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let Ok(mut output) = self.output.lock() else {
            return;
        };
        let format = self.format();
        // A log write that fails has nowhere to be reported; dropping the line is the only option.
        // Each line is one `write`, so that lines never interleave.
        let _ = match &mut *output {
            Output::Stderr => io::stderr().lock().write_all(format::line(format, now(), record).as_bytes()),
            Output::File { file, .. } => file.write_all(format::line(format, now(), record).as_bytes()),
            Output::Syslog(syslog) => {
                let message = format::syslog_message(format, now(), record);
                match record.level() {
                    Level::Error => syslog.err(message),
                    Level::Warn => syslog.warning(message),
                    Level::Info => syslog.info(message),
                    Level::Debug | Level::Trace => syslog.debug(message),
                }
                .map_err(|e| io::Error::other(e.to_string()))
            }
        };
    }

    fn flush(&self) {
        if let Ok(mut output) = self.output.lock() {
            let _ = match &mut *output {
                Output::Stderr => io::stderr().flush(),
                Output::File { file, .. } => file.flush(),
                Output::Syslog(_) => Ok(()),
            };
        }
    }
}

fn now() -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_millis(SystemTime::now())
}

/// Opens (creating, mode 0640) a log file for appending.
fn open_log_file(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o640).custom_flags(libc::O_CLOEXEC).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemon_never_logs_to_its_terminal() {
        let file = LogTarget::File("/var/log/idlereaper/idlereaper.log".into());
        for (syslog_socket, terminal) in [(true, true), (true, false), (false, true), (false, false)] {
            let problem = |target: &LogTarget| detached_problem_with(target, syslog_socket, terminal);
            assert_eq!(problem(&file), None, "a file is always fine");
            assert_eq!(problem(&LogTarget::Syslog).is_some(), !syslog_socket, "syslog needs its socket");
            assert_eq!(problem(&LogTarget::Stderr).is_some(), terminal, "stderr must not be a terminal");
        }
        let msg = detached_problem_with(&LogTarget::Syslog, false, false).unwrap();
        for words in ["/dev/log", "a file path", "--foreground", "daemon.log = \"stderr\""] {
            assert!(msg.contains(words), "{words:?} in {msg}");
        }
        let msg = detached_problem_with(&LogTarget::Stderr, true, true).unwrap();
        assert!(msg.contains("--foreground") && msg.contains("\"syslog\" or a file path"), "{msg}");
    }

    #[test]
    fn a_log_file_that_cannot_be_opened_again_is_written_on_to_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let kept_path = dir.path().join("rotated.log");
        let kept = || {
            let file = open_log_file(&kept_path).unwrap();
            let fd = std::os::fd::IntoRawFd::into_raw_fd(file);
            crate::os::sys::inherit(fd).unwrap();
            fd
        };
        let gone = LogTarget::File(dir.path().join("no-such-dir").join("idlereaper.log"));
        let (destination, warning) = Destination::reopen(&gone, false, Some(kept())).unwrap();
        let warning = warning.unwrap();
        assert!(warning.contains("cannot open log file") && warning.contains("no-such-dir"), "{warning}");
        let Destination::File { mut file, .. } = destination else { panic!("a file destination") };
        file.write_all(b"on\n").unwrap();
        assert_eq!(std::fs::read_to_string(&kept_path).unwrap(), "on\n", "written to the kept file");
        assert!(Destination::reopen(&gone, false, None).is_err(), "nothing kept: the error stands");
        // A file that opens is used (the kept descriptor is closed).
        let fine = LogTarget::File(dir.path().join("idlereaper.log"));
        let (destination, warning) = Destination::reopen(&fine, false, Some(kept())).unwrap();
        assert!(warning.is_none() && destination.file().is_some());
    }
}
