//! The systemd notification protocol (`sd_notify(3)`), written by hand: one datagram per state
//! change to the Unix socket named by `NOTIFY_SOCKET` (a path, or an abstract name after `@`),
//! only when that variable is set. `READY=1` once every listener is bound and privileges are
//! dropped, `RELOADING=1` (with `MONOTONIC_USEC`) then `READY=1` around a reload, `STOPPING=1`
//! on stop, `STATUS=` lines, `WATCHDOG=1` when `WATCHDOG_USEC` asks for it (see
//! [`Notifier::watchdog_interval`]), and `MAINPID=` around a live upgrade's exec (its guardian
//! is the main process meanwhile). A failed send is logged once and otherwise ignored: the
//! service manager is a listener, not a dependency.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use log::warn;

/// Where the notifications go, if anywhere.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
    failed: AtomicBool,
}

impl Notifier {
    /// From the environment systemd sets: `NOTIFY_SOCKET`, and `WATCHDOG_USEC` (with
    /// `WATCHDOG_PID`, when set, naming this process).
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|var| {
            use std::os::unix::ffi::OsStrExt;
            let addr = match var.as_bytes().strip_prefix(b"@") {
                Some(name) => SocketAddr::from_abstract_name(name),
                None => SocketAddr::from_pathname(std::path::Path::new(&var)),
            };
            match (addr, UnixDatagram::unbound()) {
                (Ok(addr), Ok(socket)) => Some((socket, addr)),
                (Err(e), _) | (_, Err(e)) => {
                    warn!("NOTIFY_SOCKET cannot be used: {e}");
                    None
                }
            }
        });
        let for_us =
            std::env::var("WATCHDOG_PID").map_or(true, |pid| pid.trim() == std::process::id().to_string());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|usec| usec.trim().parse::<u64>().ok())
            .filter(|&usec| usec > 0 && for_us)
            .map(Duration::from_micros);
        Notifier { target, watchdog, failed: AtomicBool::new(false) }
    }

    /// A notifier that sends nothing (no service manager).
    #[cfg(test)]
    pub fn none() -> Notifier {
        Notifier { target: None, watchdog: None, failed: AtomicBool::new(false) }
    }

    /// How often to prove liveness with `WATCHDOG=1`: half the interval systemd asked for.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.target.as_ref().and(self.watchdog).map(|d| d / 2)
    }

    /// Sends `message` (`KEY=value` lines).
    pub fn send(&self, message: &str) {
        let Some((socket, addr)) = &self.target else { return };
        if let Err(e) = socket.send_to_addr(message.as_bytes(), addr) {
            if !self.failed.swap(true, Ordering::Relaxed) {
                warn!("cannot notify the service manager: {e}");
            }
        }
    }

    /// `MAINPID=pid`: the service's main process is `pid` from now on (a live upgrade's
    /// guardian, during the exec, and back).
    pub fn main_pid(&self, pid: u32) {
        self.send(&format!("MAINPID={pid}"));
    }

    /// `RELOADING=1` with the monotonic time, as systemd wants it before a reload.
    pub fn reloading(&self) {
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={}", crate::clock::monotonic_ns() / 1000));
    }
}

/// This process takes the place of `predecessor` as the service's main process (the guardian
/// of a live upgrade whose new image failed): a watchdog systemd asked of `predecessor`
/// (`WATCHDOG_PID`) is asked of this one, and of the images it execs later. Call while the
/// process has one thread (it changes the environment).
pub fn take_over_from(predecessor: u32) {
    if std::env::var("WATCHDOG_PID").is_ok_and(|pid| pid.trim() == predecessor.to_string()) {
        std::env::set_var("WATCHDOG_PID", std::process::id().to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_the_socket_and_nothing_is_sent_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            target: Some((UnixDatagram::unbound().unwrap(), SocketAddr::from_pathname(&path).unwrap())),
            watchdog: Some(Duration::from_secs(10)),
            failed: AtomicBool::new(false),
        };
        notifier.send("READY=1\nSTATUS=ok");
        notifier.reloading();
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=ok");
        let n = server.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(text.starts_with("RELOADING=1\nMONOTONIC_USEC=") && text.len() > 28, "{text}");
        assert_eq!(notifier.watchdog_interval(), Some(Duration::from_secs(5)));
        let quiet = Notifier::none();
        quiet.send("READY=1");
        assert_eq!(quiet.watchdog_interval(), None);
    }
}
