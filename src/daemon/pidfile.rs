//! The pidfile: opened without following a symbolic link, locked with `flock` (a second
//! instance is refused with the running pid; a stale file is taken over), the pid written once
//! the daemon has forked, removed at a clean stop only if it is still ours. The lock lives as
//! long as any descriptor of it, so it is held across the forks and a live upgrade's `execve`.
//! Allowed `unsafe` for the `flock` call.

#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::Uid;

use crate::error::Error;

/// A locked pidfile. The lock lives as long as any descriptor of it in any process, so the
/// daemon keeps it across the forks; the file is removed on a clean stop.
#[derive(Debug)]
pub struct Pidfile {
    pub(super) path: PathBuf,
    pub(super) file: File,
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

/// Started as root: makes sure the pidfile's directory exists, creating it (one level, mode
/// 0755) if it is missing, as `Config::load` expects. Returns whether it is idlereaper's own —
/// created now, or named `idlereaper` (e.g. `/run/idlereaper`) — and so to be handed over to
/// `daemon.user` by [`Credentials::hand_over`](super::Credentials::hand_over). Not root: does
/// nothing (a missing directory then fails the pidfile's `open`, naming it).
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
