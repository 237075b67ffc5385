//! Becoming a daemon: fork, setsid, fork again, with a readiness pipe back to the command that
//! started it, which exits 0 on "ready" or prints the error the daemon sent and exits 1, so that
//! failures reach the terminal and no process is left behind; then stdio pointed at
//! `/dev/null`. Allowed `unsafe` for `fork` and `_exit`.

#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};

use nix::sys::stat::{umask, Mode};

use crate::error::Error;

/// The daemon's end of the readiness pipe.
#[derive(Debug)]
pub struct ReadinessPipe {
    pipe: File,
}

impl ReadinessPipe {
    /// Startup succeeded: the starting command exits 0.
    pub fn ready(mut self) {
        let _ = self.pipe.write_all(b"ok");
    }

    /// Startup failed: the starting command prints `message` and exits 1.
    pub fn fail(mut self, message: &str) {
        let _ = self.pipe.write_all(format!("error: {message}").as_bytes());
    }
}

/// Which process we are after [`daemonize`].
pub enum Forked {
    /// The starting command, after the daemon reported: `Ok` if it is ready.
    Starter(Result<(), Error>),
    /// The daemon: detached, in `/`, with umask 022.
    Daemon(ReadinessPipe),
}

/// fork, setsid, fork again (so the daemon can never reacquire a terminal), chdir /, umask 022.
/// Must be called while the process has a single thread.
pub fn daemonize() -> Result<Forked, Error> {
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::io("readiness pipe", e.into()))?;
    // SAFETY: the process is single-threaded here (no thread has been spawned yet), so the child
    // cannot inherit a lock held by another thread.
    match unsafe { nix::unistd::fork() }.map_err(|e| Error::io("fork", e.into()))? {
        nix::unistd::ForkResult::Parent { child } => {
            drop(write_end);
            let mut message = String::new();
            let read = File::from(read_end).read_to_string(&mut message);
            let _ = nix::sys::wait::waitpid(child, None);
            Ok(Forked::Starter(match (read, message.as_str()) {
                (Ok(_), "ok") => Ok(()),
                (Ok(_), r) if r.starts_with("error: ") => {
                    Err(Error::Message(r["error: ".len()..].to_string()))
                }
                _ => Err(Error::Message("the daemon exited during startup".into())),
            }))
        }
        nix::unistd::ForkResult::Child => {
            drop(read_end);
            let readiness = ReadinessPipe { pipe: File::from(write_end) };
            if let Err(e) = nix::unistd::setsid() {
                readiness.fail(&format!("setsid: {e}"));
                exit_now(1);
            }
            // SAFETY: still single-threaded, as above.
            match unsafe { nix::unistd::fork() } {
                Ok(nix::unistd::ForkResult::Parent { .. }) => exit_now(0),
                Ok(nix::unistd::ForkResult::Child) => {}
                Err(e) => {
                    readiness.fail(&format!("second fork: {e}"));
                    exit_now(1);
                }
            }
            if let Err(e) = nix::unistd::chdir("/") {
                readiness.fail(&format!("chdir /: {e}"));
                exit_now(1);
            }
            umask(Mode::from_bits_truncate(0o022));
            Ok(Forked::Daemon(readiness))
        }
    }
}

/// Points stdin and stdout (and stderr unless it is the log) at /dev/null.
pub fn detach_stdio(keep_stderr: bool) -> Result<(), Error> {
    let null =
        OpenOptions::new().read(true).write(true).open("/dev/null").map_err(|e| Error::io("/dev/null", e))?;
    let to_io = |e: nix::Error| Error::io("redirecting stdio to /dev/null", e.into());
    nix::unistd::dup2_stdin(&null).map_err(to_io)?;
    nix::unistd::dup2_stdout(&null).map_err(to_io)?;
    if !keep_stderr {
        nix::unistd::dup2_stderr(&null).map_err(to_io)?;
    }
    Ok(())
}

/// Exits an intermediate process without running destructors or atexit handlers that belong to
/// the process it was forked from.
fn exit_now(status: i32) -> ! {
    // SAFETY: _exit has no preconditions; it never returns.
    unsafe { libc::_exit(status) }
}
