//! What a scrape reads from the process rather than from counters: the standard `process_*`
//! family, as the Prometheus client libraries export it on Linux, read when a scrape asks.
//!
//! Each number costs a bounded read: `getrusage` for the CPU time (every thread of the process,
//! to the microsecond), `/proc/self/status` (about a kilobyte) for the memory sizes, a listing
//! of `/proc/self/fd` (at most the descriptor limit) and `getrlimit` for the descriptors. A
//! number that cannot be read is left out of the scrape, as the client libraries do.

use std::time::Duration;

use nix::sys::resource::{getrlimit, getrusage, Resource, UsageWho};

/// The process's readings for one scrape; `None` where one could not be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Process {
    /// User and system CPU time of every thread so far (`process_cpu_seconds_total`).
    pub(super) cpu: Option<Duration>,
    /// `process_resident_memory_bytes`.
    pub(super) resident_bytes: Option<u64>,
    /// `process_virtual_memory_bytes`.
    pub(super) virtual_bytes: Option<u64>,
    /// `process_open_fds`.
    pub(super) open_fds: Option<u64>,
    /// The soft `RLIMIT_NOFILE` (`process_max_fds`).
    pub(super) max_fds: Option<u64>,
}

impl Process {
    /// The readings now.
    pub(super) fn read() -> Process {
        let cpu = getrusage(UsageWho::RUSAGE_SELF).ok().map(|usage| {
            let time = |t: nix::sys::time::TimeVal| {
                let micros = u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000
                    + u64::try_from(t.tv_usec()).unwrap_or(0);
                Duration::from_micros(micros)
            };
            time(usage.user_time()) + time(usage.system_time())
        });
        let status = std::fs::read_to_string("/proc/self/status").ok();
        let memory = |key: &str| status.as_deref().and_then(|s| status_kib(s, key)).map(|kib| kib * 1024);
        // The listing holds a descriptor of its own while it runs: not one of ours.
        let open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count().saturating_sub(1) as u64);
        let max_fds = getrlimit(Resource::RLIMIT_NOFILE).ok().map(|(soft, _hard)| soft);
        Process { cpu, resident_bytes: memory("VmRSS"), virtual_bytes: memory("VmSize"), open_fds, max_fds }
    }
}

/// The value of `key` in a `/proc/PID/status` text, in KiB: the line `VmRSS:\t  1234 kB`.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?;
    let number = line.trim().strip_suffix("kB")?;
    number.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_read_in_kib() {
        let status = "Name:\tidlereaper\nVmPeak:\t  20000 kB\nVmSize:\t   18432 kB\nVmRSS:\t    5120 kB\n\
                      RssAnon:\t 1 kB\n";
        assert_eq!(status_kib(status, "VmSize"), Some(18_432));
        assert_eq!(status_kib(status, "VmRSS"), Some(5_120));
        assert_eq!(status_kib(status, "VmSwap"), None);
        assert_eq!(status_kib("VmRSS:\tlots kB\n", "VmRSS"), None);
        assert_eq!(status_kib("VmRSS:\t12 pages\n", "VmRSS"), None);
        assert_eq!(status_kib("VmRSSx:\t12 kB\n", "VmRSS"), None, "a longer key is another key");
    }

    #[test]
    fn this_process_has_every_reading() {
        let before = Process::read();
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let after = Process::read();
        let (cpu_before, cpu_after) = (before.cpu.unwrap(), after.cpu.unwrap());
        assert!(cpu_after > cpu_before, "{cpu_before:?} then {cpu_after:?} after 30 ms of spinning");
        let (rss, vsize) = (after.resident_bytes.unwrap(), after.virtual_bytes.unwrap());
        assert!(rss > 1 << 20 && vsize >= rss, "resident {rss}, virtual {vsize}");
        let (open, max) = (after.open_fds.unwrap(), after.max_fds.unwrap());
        assert!(open >= 3 && max >= open, "open {open}, max {max}");
    }
}
