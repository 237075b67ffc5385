//! A live upgrade asked for by `SIGUSR2` (`idlereaperctl upgrade --pid PID`), for a daemon
//! without a control socket, its outcome read from `/proc` within a bounded wait:
//!
//! - **upgraded**: the process executed another image — its `/proc/PID/exe` is another file,
//!   or its auxiliary vector changed (a new image at the same path gets new random addresses) —
//!   and the upgrade's guardian (its child with `--handover-guard`) has gone: the new image
//!   said it took over;
//! - **failed**: the process is gone, and the guardian, or the process the pidfile names, carries
//!   on with the previous version and every connection;
//! - **gone**: the process exited and nothing carries on;
//! - **no outcome** within the wait: the process runs its previous image still — the daemon
//!   refused the upgrade (its log says why: `upgrade refused: <reason>`), or is still checking.
//!
//! Without a control socket the daemon cannot tell why, so a refusal is known only as no
//! outcome; `idlereaperctl upgrade` through the control socket answers with the reason.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::Failure;
use crate::handover::guardian::GUARD_ARG;

/// How often `/proc` is looked at while waiting.
const POLL: Duration = Duration::from_millis(20);
/// How long a guardian that carries on may take to name itself in the pidfile.
const CARRIER_GRACE: Duration = Duration::from_secs(5);

/// What tells one executed image of a process from the next.
#[derive(Debug, PartialEq, Eq)]
struct Image {
    /// Device and inode of the file it runs (a file replaced on disk is another inode).
    file: (u64, u64),
    /// Its auxiliary vector, where it may be read (root): new addresses for each exec.
    auxv: Option<Vec<u8>>,
}

impl Image {
    fn of(pid: u32) -> std::io::Result<Image> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(format!("/proc/{pid}/exe"))?;
        let auxv = std::fs::read(format!("/proc/{pid}/auxv")).ok();
        Ok(Image { file: (meta.dev(), meta.ino()), auxv })
    }
}

/// The process is there and not a zombie.
fn alive(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let state = status.lines().find_map(|l| l.strip_prefix("State:")).map(str::trim_start);
    state.is_some_and(|s| !s.starts_with('Z') && !s.starts_with('X'))
}

/// A running idlereaper process (by the name the kernel keeps for it).
fn is_idlereaper(pid: u32) -> bool {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    comm.trim_end() == "idlereaper" && alive(pid)
}

/// The upgrade guardians `pid` started (its children with `--handover-guard`).
fn guardians(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let children = entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()).filter(|&p| {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        // After the command name, which may hold anything: state, then the parent's pid.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        after.split_whitespace().nth(1).and_then(|ppid| ppid.parse::<u32>().ok()) == Some(pid)
    });
    children
        .filter(|&child| {
            let cmdline = std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
            cmdline.split(|&b| b == 0).any(|arg| arg == GUARD_ARG.as_bytes())
        })
        .collect()
}

/// The pid in `pidfile`, if it names a running idlereaper other than `not`.
fn carrier_in(pidfile: &Path, not: u32) -> Option<u32> {
    let pid = std::fs::read_to_string(pidfile).ok()?.trim().parse::<u32>().ok()?;
    (pid != not && is_idlereaper(pid)).then_some(pid)
}

/// The process that carries on after `pid` failed to take over: the guardian seen, or the
/// process the pidfile names once the guardian has written its pid there (waited for a few
/// seconds at most, and not past `deadline`).
fn carrier(guardian: Option<u32>, pidfile: &Path, pid: u32, deadline: Instant) -> Option<u32> {
    let until = deadline.min(Instant::now() + CARRIER_GRACE);
    loop {
        if let Some(carrier) = guardian.filter(|&g| alive(g)).or_else(|| carrier_in(pidfile, pid)) {
            return Some(carrier);
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// Sends `SIGUSR2` to the idlereaper `pid` and waits up to `wait` for the outcome; `pidfile` is
/// where a process that carries on after a failed upgrade writes its pid. `Ok`: the line to
/// print.
pub fn upgrade(pid: u32, pidfile: &Path, wait: Duration) -> Result<String, Failure> {
    if !is_idlereaper(pid) {
        return Err(Failure::Unreachable(format!("pid {pid} is not a running idlereaper")));
    }
    let denied = |what: &str, e: &dyn std::fmt::Display| {
        Failure::Unreachable(format!("cannot {what} pid {pid}: {e}; run as root, or as the daemon's user"))
    };
    let before = Image::of(pid).map_err(|e| denied("watch", &e))?;
    kill(Pid::from_raw(pid as i32), Signal::SIGUSR2).map_err(|e| denied("signal", &e))?;
    let deadline = Instant::now() + wait;
    let mut guardian = None;
    loop {
        // The image first, then the guardians: one that ran the new image was started before
        // the exec, so if none is left after it, the new image has taken over.
        let executed = Image::of(pid).is_ok_and(|now| now != before);
        let running = guardians(pid);
        guardian = running.first().copied().or(guardian);
        if !is_idlereaper(pid) {
            return Err(match carrier(guardian, pidfile, pid, deadline) {
                Some(carrier) => Failure::Refused(format!(
                    "upgrade failed: the new binary did not take over; pid {carrier} carries on with \
                     the previous version and every connection (its log says why: 'upgrade failed: \
                     <reason>')"
                )),
                None => Failure::Unreachable(format!("pid {pid} exited during the upgrade")),
            });
        }
        if executed && running.is_empty() {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            return Ok(format!("upgraded pid={pid} binary={}", exe.display()));
        }
        if Instant::now() >= deadline {
            let wait = humantime::format_duration(wait);
            return Err(Failure::NoAnswer(match executed {
                true => format!(
                    "no outcome within {wait}: pid {pid} runs the new binary, which has not yet said \
                     that it took over (its guardian, pid {}, still waits)",
                    running.first().map_or_else(|| "?".to_owned(), u32::to_string)
                ),
                false => format!(
                    "no outcome within {wait}: pid {pid} still runs its previous binary; the upgrade \
                     was refused, or is still under way (its log says why: 'upgrade refused: <reason>')"
                ),
            }));
        }
        std::thread::sleep(POLL);
    }
}
