//! Becoming a daemon: the pidfile, fork/setsid/fork with a readiness pipe back to the command
//! that started us, the privilege drop, and growing the descriptor table ahead of the workers.
//! This is the one module with `unsafe` (fork, `_exit`, `flock`, owning a descriptor `fcntl`
//! made), each with its `SAFETY:` note.
//!
//! The order matters and is driven by `app`: lock the pidfile (so a second instance is refused
//! with the running pid, before it tries to bind), bind, daemonize, write our pid, drop
//! privileges, and only then report "ready" through the pipe. The starting command exits 0 on
//! "ready", or prints the error the daemon sent and exits 1, so failures reach the terminal and
//! no process is left behind.

#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{umask, Mode};
use nix::unistd::{Gid, Group, Uid, User};

use crate::error::Error;

/// A locked pidfile. The lock lives as long as any descriptor of it in any process, so the
/// daemon keeps it across the forks; the file is removed on a clean stop.
#[derive(Debug)]
pub struct Pidfile {
    path: PathBuf,
    file: File,
}

impl Pidfile {
    /// Opens (without truncating, refusing a symlink) and locks the pidfile. A live lock means
    /// another instance runs: the error names its pid. A stale file (no lock) is taken over.
    pub fn lock(path: &Path) -> Result<Pidfile, Error> {
        let context = || format!("pidfile {}", path.display());
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => {
                    Error::Message(format!("{}: is a symbolic link; refusing to use it", context()))
                }
                _ => Error::io(context(), e),
            })?;
        // SAFETY: flock only reads the descriptor number, which `file` owns and keeps open.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if locked != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let pid = text.trim();
                let pid = if pid.is_empty() { "unknown".to_string() } else { pid.to_string() };
                return Err(Error::Message(format!(
                    "{}: idlereaper is already running (pid {pid})",
                    context()
                )));
            }
            return Err(Error::io(format!("{}: cannot lock", context()), e));
        }
        file.set_permissions(std::fs::Permissions::from_mode(0o644)).map_err(|e| Error::io(context(), e))?;
        Ok(Pidfile { path: path.to_path_buf(), file })
    }

    /// The pidfile, still locked, that a live upgrade handed over by descriptor number.
    pub fn adopt(path: &Path, fd: std::os::fd::RawFd) -> Result<Pidfile, Error> {
        let fd =
            crate::os::sys::adopt(fd).map_err(|e| Error::io(format!("pidfile {}", path.display()), e))?;
        Ok(Pidfile { path: path.to_path_buf(), file: File::from(fd) })
    }

    /// Its descriptor (the lock lives as long as it is open: a live upgrade keeps it open
    /// across the exec).
    pub fn descriptor(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }

    /// Replaces the contents with `pid` and a newline.
    pub fn write_pid(&mut self, pid: u32) -> Result<(), Error> {
        let context = || format!("pidfile {}: cannot write", self.path.display());
        self.file.set_len(0).map_err(|e| Error::io(context(), e))?;
        self.file.write_all_at(format!("{pid}\n").as_bytes(), 0).map_err(|e| Error::io(context(), e))
    }

    /// Removes the file if it is still ours (same inode), then releases the lock.
    pub fn remove(self) {
        let ours = match (std::fs::symlink_metadata(&self.path), self.file.metadata()) {
            (Ok(at_path), Ok(held)) => at_path.dev() == held.dev() && at_path.ino() == held.ino(),
            _ => false,
        };
        if ours {
            if let Err(e) = std::fs::remove_file(&self.path) {
                // A directory we may not write to (after a privilege drop): leave the file
                // empty, so that nothing reads a stale pid from it.
                let emptied = self.file.set_len(0).is_ok();
                let left = if emptied { "left it empty" } else { "left it in place" };
                log::warn!("cannot remove pidfile {}: {e}; {left}", self.path.display());
            }
        }
    }
}

/// Who to run as after binding, resolved from `daemon.user` / `daemon.group`.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: String,
    pub uid: Uid,
    pub gid: Gid,
}

impl Credentials {
    /// Looks the names up. The group defaults to the user's primary group.
    pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Option<Credentials>, Error> {
        let Some(name) = user else {
            if group.is_some() {
                return Err(Error::Message("daemon.group is set without daemon.user".into()));
            }
            return Ok(None);
        };
        let lookup_failed = |what: &str, e: nix::Error| Error::Message(format!("{what}: lookup failed: {e}"));
        let user = User::from_name(name)
            .map_err(|e| lookup_failed("daemon.user", e))?
            .ok_or_else(|| Error::Message(format!("daemon.user: no such user \"{name}\"")))?;
        let gid = match group {
            None => user.gid,
            Some(g) => {
                Group::from_name(g)
                    .map_err(|e| lookup_failed("daemon.group", e))?
                    .ok_or_else(|| Error::Message(format!("daemon.group: no such group \"{g}\"")))?
                    .gid
            }
        };
        Ok(Some(Credentials { user: name.to_string(), uid: user.uid, gid }))
    }

    /// As root: clear supplementary groups, then set gid and uid, and make sure root cannot be
    /// regained. As anyone else: succeed only if we already are that user and group.
    pub fn drop_privileges(&self) -> Result<(), Error> {
        let fail = |what: &str, e: nix::Error| {
            Error::Message(format!("cannot drop privileges to \"{}\": {what}: {e}", self.user))
        };
        if !Uid::effective().is_root() {
            if Uid::effective() == self.uid && Gid::effective() == self.gid {
                return Ok(());
            }
            return Err(Error::Message(format!(
                "daemon.user is \"{}\" (uid {}, gid {}) but idlereaper runs as uid {} gid {}: start it as root or as that user",
                self.user,
                self.uid,
                self.gid,
                Uid::effective(),
                Gid::effective()
            )));
        }
        nix::unistd::setgroups(&[]).map_err(|e| fail("setgroups", e))?;
        nix::unistd::setgid(self.gid).map_err(|e| fail("setgid", e))?;
        nix::unistd::setuid(self.uid).map_err(|e| fail("setuid", e))?;
        if self.uid.is_root() {
            return Ok(());
        }
        if nix::unistd::setuid(Uid::from_raw(0)).is_ok() || Uid::effective().is_root() {
            return Err(Error::Message("privilege drop did not stick: refusing to run on as root".into()));
        }
        Ok(())
    }

    /// Started as root, once the pidfile is locked and the log file open: gives them (and the
    /// pidfile's directory, if it is ours) to the user, so that after the drop the daemon can
    /// still remove its pidfile at stop and reopen its log on SIGUSR1.
    pub fn hand_over(&self, pidfile: &Pidfile, own_dir: bool, log: Option<&File>) -> Result<(), Error> {
        if !Uid::effective().is_root() {
            return Ok(());
        }
        let (uid, gid) = (Some(self.uid.as_raw()), Some(self.gid.as_raw()));
        let chown = |what: String, r: io::Result<()>| r.map_err(|e| Error::io(format!("{what}: chown"), e));
        chown(
            format!("pidfile {}", pidfile.path.display()),
            std::os::unix::fs::fchown(&pidfile.file, uid, gid),
        )?;
        if let (true, Some(dir)) = (own_dir, pidfile.path.parent()) {
            chown(format!("pidfile directory {}", dir.display()), std::os::unix::fs::chown(dir, uid, gid))?;
        }
        if let Some(file) = log {
            chown("log file".into(), std::os::unix::fs::fchown(file, uid, gid))?;
        }
        Ok(())
    }
}

/// Started as root: makes sure the pidfile's directory exists, creating it (one level, mode
/// 0755) if it is missing, as `Config::load` expects. Returns whether it is idlereaper's own —
/// created now, or named `idlereaper` (e.g. `/run/idlereaper`) — and so to be handed over to
/// `daemon.user` by [`Credentials::hand_over`]. Not root: does nothing (a missing directory
/// then fails the pidfile's `open`, naming it).
pub fn make_pidfile_dir(pidfile: &Path) -> Result<bool, Error> {
    let Some(dir) = pidfile.parent() else { return Ok(false) };
    if !Uid::effective().is_root() {
        return Ok(false);
    }
    let context = || format!("pidfile directory {}", dir.display());
    let created = match std::fs::create_dir(dir) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(Error::io(context(), e)),
    };
    let meta = std::fs::symlink_metadata(dir).map_err(|e| Error::io(context(), e))?;
    Ok(meta.is_dir() && (created || dir.file_name().is_some_and(|n| n == "idlereaper")))
}

/// The daemon's end of the readiness pipe.
#[derive(Debug)]
pub struct Notifier {
    pipe: File,
}

impl Notifier {
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
    Daemon(Notifier),
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
            let mut report = String::new();
            let read = File::from(read_end).read_to_string(&mut report);
            let _ = nix::sys::wait::waitpid(child, None);
            Ok(Forked::Starter(match (read, report.as_str()) {
                (Ok(_), "ok") => Ok(()),
                (Ok(_), r) if r.starts_with("error: ") => {
                    Err(Error::Message(r["error: ".len()..].to_string()))
                }
                _ => Err(Error::Message("the daemon exited during startup".into())),
            }))
        }
        nix::unistd::ForkResult::Child => {
            drop(read_end);
            let notifier = Notifier { pipe: File::from(write_end) };
            if let Err(e) = nix::unistd::setsid() {
                notifier.fail(&format!("setsid: {e}"));
                exit_now(1);
            }
            // SAFETY: still single-threaded, as above.
            match unsafe { nix::unistd::fork() } {
                Ok(nix::unistd::ForkResult::Parent { .. }) => exit_now(0),
                Ok(nix::unistd::ForkResult::Child) => {}
                Err(e) => {
                    notifier.fail(&format!("second fork: {e}"));
                    exit_now(1);
                }
            }
            if let Err(e) = nix::unistd::chdir("/") {
                notifier.fail(&format!("chdir /: {e}"));
                exit_now(1);
            }
            umask(Mode::from_bits_truncate(0o022));
            Ok(Forked::Daemon(notifier))
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

/// Grows the process's descriptor table now, to hold `n` descriptors (at most the soft
/// `RLIMIT_NOFILE`), while the process has one thread. Grown later, when accepts need it, with
/// worker threads sharing the table, each doubling of it waits for an RCU grace period (the
/// kernel's `expand_fdtable`), which stalled the first burst of connections after start by tens
/// of milliseconds. Best effort: an error leaves the table to grow on demand, as it would have.
pub fn reserve_descriptors(n: usize) {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(0, |(soft, _)| soft);
    let n = n.min(usize::try_from(soft).unwrap_or(usize::MAX)).min(RawFd::MAX as usize);
    if n <= 64 {
        return; // the table's initial size
    }
    let Ok(null) = File::open("/dev/null") else {
        return;
    };
    // The lowest free descriptor at or above n - 1: never one in use.
    if let Ok(fd) = nix::fcntl::fcntl(&null, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(n as RawFd - 1)) {
        // SAFETY: `fcntl` just created this descriptor, and nothing else knows of it.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}

/// Exits an intermediate process without running destructors or atexit handlers that belong to
/// the process it was forked from.
fn exit_now(status: i32) -> ! {
    // SAFETY: _exit has no preconditions; it never returns.
    unsafe { libc::_exit(status) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_descriptor_table_is_grown_ahead() {
        let fd_size = || {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = status.lines().find_map(|l| l.strip_prefix("FDSize:")).unwrap().trim().to_string();
            line.parse::<usize>().unwrap()
        };
        let (soft, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        let n = usize::try_from(soft).unwrap().min(4000);
        reserve_descriptors(n);
        assert!(fd_size() >= n, "FDSize {} < {n}", fd_size());
        // Beyond the soft limit (or the largest descriptor number): clamped, not an error.
        reserve_descriptors(usize::MAX);
        assert!(fd_size() >= n);
    }

    #[test]
    fn a_second_lock_names_the_first_pid_and_a_stale_file_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pid");
        std::fs::write(&path, "999999\n").unwrap(); // stale: nobody holds a lock
        let mut first = Pidfile::lock(&path).unwrap();
        first.write_pid(4242).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "4242\n");
        let err = Pidfile::lock(&path).unwrap_err().to_string();
        assert!(err.contains("already running (pid 4242)"), "{err}");
        first.remove();
        assert!(!path.exists());
    }

    #[test]
    fn a_symlinked_pidfile_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        let link = dir.path().join("link.pid");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = Pidfile::lock(&link).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(!target.exists());
    }

    #[test]
    fn an_unknown_user_is_a_clear_error() {
        let err = Credentials::resolve(Some("no-such-user-idlereaper"), None).unwrap_err().to_string();
        assert!(err.contains("no such user \"no-such-user-idlereaper\""), "{err}");
        assert!(Credentials::resolve(None, None).unwrap().is_none());
    }
}
