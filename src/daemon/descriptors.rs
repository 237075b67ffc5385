//! The process's descriptor table, grown ahead of the workers. Allowed `unsafe` to own the
//! descriptor `fcntl` made.

#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

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
}
