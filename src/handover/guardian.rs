//! The guardian of a live upgrade: a process that holds a copy of every descriptor of the state
//! from just before the `execve` until the new image says that it has taken over, so that a new
//! image that fails after the exec — exits, crashes, hangs, cannot open its log — loses nothing:
//! the guardian then takes the state back and carries on as the daemon, with the old code.
//!
//! Who does what:
//! - The old image, once frozen, [`spawn`]s the guardian: the old binary again
//!   (`/proc/self/exe`, which stays executable when the file on disk was replaced or deleted),
//!   with `--handover MEMFD --handover-guard PIPE PID PIDFD`, its signals blocked. It inherits
//!   the memory file, every descriptor of the state (close-on-exec cleared), a process
//!   descriptor of this process (the new image to be) and the read end of a pipe —
//!   the same open sockets, pipes, pidfile (and so its lock), not copies of their contents. The
//!   write end crosses the exec ([`Guardian::hand_over`]), named in the state with the
//!   guardian's pid. If the `execve` fails, the old image [`Guardian::release`]s it.
//! - The new image (the same process) reads the state and rebuilds the daemon with no I/O on a
//!   socket, then says so ([`Handshake::taken`]: `ok`) and waits for the guardian to exit
//!   before its loops start. A failure it can name it says first ([`Handshake::failed`]:
//!   `failed: <why>`).
//! - The guardian ([`watch`]) exits on `ok`. On anything else — a `failed:` line, the end of the
//!   pipe (the new image exited or crashed), or no word within [`TAKEOVER_DEADLINE`] — it makes
//!   sure the new image is gone (SIGKILL through a process descriptor, which cannot hit another
//!   process), then resumes from the memory file as a new image would, saying why ([`Failure`]).
//!
//! Whatever the guardian decides, the new image has not yet read or written a byte of any
//! socket, so nothing it took is lost: until `ok` it has done no socket I/O, and after `ok` it
//! waits for the guardian's exit.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::exec::HANDOVER_ARG;
use crate::os::sys;

/// The command-line option that makes the old binary a guardian: `--handover-guard FD PID PIDFD`
/// (the pipe's read end, the new image's pid and a process descriptor of it, or -1), with
/// `--handover MEMFD`.
pub const GUARD_ARG: &str = "--handover-guard";

/// How long the new image has, from the exec to its `ok`, before the guardian kills it and the
/// old code carries on. Reading the state and rebuilding the daemon takes milliseconds (at
/// 10,000 connections, about a hundred in a debug build: `tests/it/upgrade.rs` logs `pause_ms`),
/// and the pre-flight checks have already run the new binary on a sample of the state, so a
/// healthy image is never near it, even on a loaded machine. Yet it is the longest a hung image
/// stops the relay: bytes wait in kernel buffers and new clients in the listen backlog
/// meanwhile, and 10 s is well within what TCP itself rides out (a dropped SYN is retried at 1,
/// 3 and 7 s) and below a typical client timeout (30 s).
pub const TAKEOVER_DEADLINE: Duration = Duration::from_secs(10);
/// How long a new image that said it failed, or closed the pipe, has to exit by itself before
/// the guardian kills it.
const EXIT_GRACE: Duration = Duration::from_secs(1);
/// How long a killed new image may take to be gone, and a guardian told `ok` to exit.
const EXIT_WAIT: Duration = Duration::from_secs(5);
/// How long the guardian, carrying on, waits for the failed new image to be reaped by its parent
/// (systemd, init, a subreaper: at once, as a rule), whose wait status it can then tell.
const REAP_WAIT: Duration = Duration::from_secs(1);
/// The longest line the guardian reads from the pipe.
const MAX_LINE: usize = 4096;
const TAKEN: &str = "ok";
const FAILED: &str = "failed: ";

/// The old image's handle on the guardian it started.
pub struct Guardian {
    pid: u32,
    /// The pipe's write end (close-on-exec until [`Guardian::hand_over`]).
    pipe: OwnedFd,
}

/// Starts the guardian: this process's binary, with `argv0` and `args` as the daemon was started
/// (so that, should it carry on as the daemon, `ps` shows what it showed), then
/// `--handover MEMFD --handover-guard PIPE PID PIDFD` (this process's pid, and a process
/// descriptor of it: opened here, it names this process even once it has exited, however soon),
/// with `blocked` signals blocked until it runs as the daemon. Every descriptor without
/// close-on-exec goes with it: call after `exec::inherit`.
pub fn spawn(argv0: &Path, args: &[OsString], memfd: &impl AsRawFd, blocked: &[i32]) -> io::Result<Guardian> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    sys::inherit(read.as_raw_fd())?;
    // Without process descriptors (Linux before 5.3) the guardian makes do with the pid.
    let pidfd = sys::pidfd_open(std::process::id()).ok();
    if let Some(pidfd) = &pidfd {
        sys::inherit(pidfd.as_raw_fd())?;
    }
    let mut command = Command::new("/proc/self/exe");
    command.arg0(argv0).args(args);
    command.arg(HANDOVER_ARG).arg(memfd.as_raw_fd().to_string());
    command.arg(GUARD_ARG).arg(read.as_raw_fd().to_string()).arg(std::process::id().to_string());
    command.arg(pidfd.as_ref().map_or(-1, AsRawFd::as_raw_fd).to_string());
    let child = sys::spawn_blocking(&mut command, blocked)?;
    Ok(Guardian { pid: child.id(), pipe: write })
}

impl Guardian {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Keeps the pipe's write end across the exec; returns what the state names: its number and
    /// the guardian's pid.
    pub fn hand_over(&self) -> io::Result<(RawFd, u32)> {
        sys::inherit(self.pipe.as_raw_fd())?;
        Ok((self.pipe.as_raw_fd(), self.pid))
    }

    /// The `execve` failed, and this image keeps everything: the guardian is told so and waited
    /// for. `Err` says what went wrong meanwhile (for a warning).
    pub fn release(self) -> Result<(), String> {
        Handshake { pipe: File::from(self.pipe), guardian: self.pid }.taken()
    }
}

/// The new image's end of the pipe to the guardian.
pub struct Handshake {
    pipe: File,
    guardian: u32,
}

impl Handshake {
    /// The pipe and the guardian a state names (`State::guardian`).
    pub fn adopt((fd, guardian): (RawFd, u32)) -> io::Result<Handshake> {
        Ok(Handshake { pipe: File::from(sys::adopt(fd)?), guardian })
    }

    /// Everything is taken over: says `ok`, then waits for the guardian to exit (it is this
    /// process's child: the wait reaps it), killing it if it has not within [`EXIT_WAIT`].
    /// `Err` says what went wrong, for a warning: the daemon runs on either way.
    pub fn taken(mut self) -> Result<(), String> {
        let said = self.pipe.write_all(format!("{TAKEN}\n").as_bytes());
        drop(self.pipe);
        let exited = wait_child(self.guardian, EXIT_WAIT);
        match (said, exited) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(e), _) => Err(format!("the guardian (pid {}) was not told: {e}", self.guardian)),
            (_, Err(e)) => Err(format!("the guardian (pid {}) {e}", self.guardian)),
        }
    }

    /// This image cannot take over: says why (on one line), for the guardian to say it too.
    pub fn failed(mut self, why: &str) {
        let line: String = why.chars().map(|c| if c == '\n' { ' ' } else { c }).take(MAX_LINE - 16).collect();
        let _ = self.pipe.write_all(format!("{FAILED}{line}\n").as_bytes());
    }
}

/// Waits up to `limit` for child `pid` to exit, then kills it; reaps it either way.
fn wait_child(pid: u32, limit: Duration) -> Result<(), String> {
    let child = Pid::from_raw(pid as i32);
    let exited = match sys::pidfd_open(pid) {
        Ok(pidfd) => readable(&pidfd, limit),
        Err(_) => {
            let until = Instant::now() + limit;
            loop {
                match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) if Instant::now() < until => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Ok(WaitStatus::StillAlive) => break false,
                    _ => return Ok(()),
                }
            }
        }
    };
    if !exited {
        let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
    }
    let _ = waitpid(child, None);
    match exited {
        true => Ok(()),
        false => Err(format!("did not exit within {limit:?} of being told: killed")),
    }
}

/// Whether `fd` becomes readable within `limit` (a process descriptor: its process exited).
fn readable(fd: &impl AsFd, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)) {
            Ok(n) if n > 0 => return true,
            Ok(_) if left.is_zero() => return false,
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
}

/// What the guardian saw.
pub enum Outcome {
    /// The new image (pid `image`, the guardian's parent) took over: the guardian exits.
    TakenOver { image: u32 },
    /// It did not: the guardian carries on as the daemon.
    Failed(Failure),
}

/// Why a new image did not take over, and the process descriptor to ask how it ended.
pub struct Failure {
    pub cause: Cause,
    /// The new image's pid.
    pub image: u32,
    pidfd: Option<OwnedFd>,
}

/// What the new image did instead of `ok`.
#[derive(Debug, PartialEq, Eq)]
pub enum Cause {
    /// It said why (`failed: …`).
    Said(String),
    /// It closed the pipe: it exited, or crashed.
    Ended,
    /// No word within [`TAKEOVER_DEADLINE`]: it was killed.
    Silent,
    /// The guardian could not watch it (its pipe failed): it was killed.
    Unwatched(String),
}

impl Failure {
    /// Why the upgrade failed, for the log and the control client that asked: the cause, and
    /// how the new image ended where the kernel tells (once its parent has reaped it: waits up
    /// to [`REAP_WAIT`] for that).
    pub fn describe(&self) -> String {
        let image = format!("the new image (pid {})", self.image);
        match &self.cause {
            Cause::Said(why) => format!("{image} could not take over: {why}"),
            Cause::Ended => match self.ended() {
                Some(how) => format!("{image} {how} before taking over"),
                None => format!("{image} ended before taking over"),
            },
            Cause::Silent => {
                format!("{image} did not take over within {} s: killed", TAKEOVER_DEADLINE.as_secs())
            }
            Cause::Unwatched(why) => format!("the guardian could not watch {image} ({why}): killed"),
        }
    }

    /// How the new image ended ("exited with status 1"), if the kernel tells.
    fn ended(&self) -> Option<String> {
        let pidfd = self.pidfd.as_ref()?;
        wait_reaped(pidfd, REAP_WAIT);
        let status = sys::pidfd_exit_status(pidfd)?;
        Some(match WaitStatus::from_raw(Pid::from_raw(self.image as i32), status) {
            Ok(WaitStatus::Exited(_, code)) => format!("exited with status {code}"),
            Ok(WaitStatus::Signaled(_, signal, _)) => {
                format!("was killed by signal {} ({signal})", signal as i32)
            }
            _ => format!("ended (wait status {status:#x})"),
        })
    }
}

/// Waits up to `limit` for a process descriptor to report its process reaped (`POLLHUP`).
fn wait_reaped(pidfd: &impl AsFd, limit: Duration) {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(_) if fds[0].revents().is_some_and(|r| r.contains(PollFlags::POLLHUP)) => return,
            Ok(_) | Err(nix::errno::Errno::EINTR) => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => return,
        }
    }
}

/// The guardian's watch, in the process [`spawn`] started: reads the word of the new image (pid
/// `image`, this process's parent, and `pidfd` a process descriptor of it, if not negative) on
/// `pipe` until [`TAKEOVER_DEADLINE`]. Unless it took over, the new image is gone when this
/// returns.
pub fn watch(pipe: RawFd, image: u32, pidfd: RawFd) -> Outcome {
    let pidfd = (pidfd >= 0).then(|| sys::adopt(pidfd).ok()).flatten();
    let cause = match sys::adopt(pipe).map(File::from) {
        Ok(pipe) => match read_word(&pipe, Instant::now() + TAKEOVER_DEADLINE) {
            Word::Taken => return Outcome::TakenOver { image },
            Word::Failed(cause) => cause,
        },
        Err(e) => Cause::Unwatched(e.to_string()),
    };
    let grace = match cause {
        Cause::Said(_) | Cause::Ended => EXIT_GRACE,
        Cause::Silent | Cause::Unwatched(_) => Duration::ZERO,
    };
    end(image, pidfd.as_ref(), grace);
    Outcome::Failed(Failure { cause, image, pidfd })
}

enum Word {
    Taken,
    Failed(Cause),
}

/// The first line on `pipe` (or its end), waiting until `until`.
fn read_word(mut pipe: &File, until: Instant) -> Word {
    let mut line = Vec::new();
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)) {
            Ok(0) if left.is_zero() => return Word::Failed(Cause::Silent),
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Word::Failed(Cause::Unwatched(format!("poll: {e}"))),
        }
        let mut buf = [0u8; 512];
        let n = match pipe.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Word::Failed(Cause::Unwatched(format!("read: {e}"))),
        };
        line.extend_from_slice(&buf[..n]);
        let end = line.iter().position(|&b| b == b'\n');
        if n == 0 || end.is_some() || line.len() >= MAX_LINE {
            let text = String::from_utf8_lossy(&line[..end.unwrap_or(line.len())]).into_owned();
            return match (text.as_str(), text.strip_prefix(FAILED)) {
                (TAKEN, _) => Word::Taken,
                (_, Some(why)) => Word::Failed(Cause::Said(why.to_owned())),
                ("", None) => Word::Failed(Cause::Ended),
                (other, None) => Word::Failed(Cause::Said(format!("it said {other:?}"))),
            };
        }
    }
}

/// Makes sure the new image is gone: it gets `grace` to exit, then SIGKILL.
fn end(image: u32, pidfd: Option<&OwnedFd>, grace: Duration) {
    match pidfd {
        Some(pidfd) => {
            if !readable(pidfd, grace) {
                let _ = sys::pidfd_kill(pidfd);
                readable(pidfd, EXIT_WAIT);
            }
        }
        // No process descriptor (Linux before 5.3): while the image is this process's parent
        // it has not exited, so its pid is its own; once it has, this process is reparented.
        None => {
            let parent = Pid::from_raw(image as i32);
            let until = Instant::now() + grace;
            while nix::unistd::getppid() == parent && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            if nix::unistd::getppid() == parent {
                let _ = nix::sys::signal::kill(parent, nix::sys::signal::Signal::SIGKILL);
            }
            let until = Instant::now() + EXIT_WAIT;
            while nix::unistd::getppid() == parent && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

#[cfg(test)]
#[path = "guardian_tests.rs"]
mod tests;
