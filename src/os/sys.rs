//! Linux socket queries that neither std, mio, socket2 nor nix wrap: `TCP_INFO` (what the kernel
//! moved on a socket's behalf while the relay made no call) and `SIOCATMARK` (whether the next
//! read starts at TCP urgent data). Both are read-only queries of a socket we own. And the
//! process calls of a live upgrade that no crate wraps: the two ends of its descriptor passing,
//! [`inherit`] (keep a descriptor across `execve`) and [`adopt`] (own a descriptor inherited by
//! number); process descriptors ([`pidfd_open`], [`pidfd_kill`], [`pidfd_exit_status`]) with
//! which its guardian watches the new image; and [`spawn_blocking`], a child started with
//! signals blocked. This module is, with `daemon/`, one of the two places that use `unsafe`.

#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;

/// `SIOCATMARK` from `<asm-generic/sockios.h>` (the same on every Linux architecture we build).
const SIOCATMARK: libc::c_ulong = 0x8905;

/// TCP states (`<netinet/tcp.h>`) in which the peer's FIN has arrived.
const TCP_TIME_WAIT: u8 = 6;
const TCP_CLOSE: u8 = 7;
const TCP_CLOSE_WAIT: u8 = 8;
const TCP_LAST_ACK: u8 = 9;
const TCP_CLOSING: u8 = 11;

/// What the kernel did on one TCP socket, from `TCP_INFO`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpProgress {
    /// Bytes the peer acknowledged plus bytes received from it: grows whenever a byte moves on
    /// the wire in either direction, whether or not the relay made a call.
    pub moved: u64,
    /// Milliseconds since the kernel last took in data from the peer (`tcpi_last_data_recv`;
    /// jiffies-based, as the two below: see [`JIFFY_SLACK_MS`]). Only data the connection
    /// accepts moves it: not a keepalive or zero-window probe, nor data beyond the window.
    pub since_data_ms: u32,
    /// Milliseconds since the kernel last sent a data segment (`tcpi_last_data_sent`), new
    /// bytes or sent again. Keepalive and zero-window probes carry no data and do not move it.
    pub since_sent_ms: u32,
    /// Milliseconds since the kernel last received an acknowledgement (`tcpi_last_ack_recv`):
    /// of data, or the answer to a keepalive or zero-window probe.
    pub since_ack_ms: u32,
    /// Bytes written to the socket and not yet acknowledged by the peer (in flight or unsent).
    pub unacknowledged: bool,
    /// The peer's FIN has arrived (or the connection is gone), whether or not it was read.
    pub peer_finished: bool,
}

impl TcpProgress {
    /// For a socket the kernel reports nothing of (not TCP): no movement ever.
    pub fn quiet() -> TcpProgress {
        TcpProgress {
            since_data_ms: u32::MAX,
            since_sent_ms: u32::MAX,
            since_ack_ms: u32::MAX,
            ..TcpProgress::default()
        }
    }

    /// Milliseconds since a byte last moved on this socket, at the least, as far as the
    /// kernel's timestamps tell: the last data received, or the last data sent that the peer
    /// has acknowledged — sent no later than the last data segment and no later than the last
    /// acknowledgement, so the later of the two "ago"s. Probes carry no data and their answers
    /// acknowledge none: a reader that stopped, whose kernel answers zero-window probes, and a
    /// keepalive's answers move neither the data received nor the data sent, so they are no
    /// movement; every window a slow reader opens is (the data sent into it).
    pub fn since_movement_ms(&self) -> u32 {
        self.since_data_ms.min(self.since_sent_ms.max(self.since_ack_ms))
    }
}

/// The kernel's `tcpi_last_*` fields are differences of jiffies converted to milliseconds, so an
/// event may be up to one jiffy more recent than they say: 10 ms covers `HZ` = 100 and above.
pub const JIFFY_SLACK_MS: u32 = 10;

/// Reads `TCP_INFO` of a TCP socket.
pub fn tcp_progress(socket: &impl AsFd) -> io::Result<TcpProgress> {
    let mut info = MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a writable, zero-initialised `tcp_info` of `len` bytes that outlives the
    // call; the kernel writes at most `len` bytes into it and stores the length it wrote.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: zero-initialised, then (partly) filled by the kernel: every bit pattern is a valid
    // `tcp_info` (integers only). Fields past `len` stay zero (an older kernel), which reads as
    // "nothing moved": the relay then falls back to its own view of activity.
    let info = unsafe { info.assume_init() };
    Ok(TcpProgress {
        moved: info.tcpi_bytes_acked.wrapping_add(info.tcpi_bytes_received),
        since_data_ms: info.tcpi_last_data_recv,
        since_sent_ms: info.tcpi_last_data_sent,
        since_ack_ms: info.tcpi_last_ack_recv,
        unacknowledged: info.tcpi_unacked > 0 || info.tcpi_notsent_bytes > 0,
        peer_finished: matches!(
            info.tcpi_state,
            TCP_CLOSE_WAIT | TCP_LAST_ACK | TCP_CLOSING | TCP_TIME_WAIT | TCP_CLOSE
        ),
    })
}

/// Whether the next byte to read from a TCP socket is at its urgent mark (`sockatmark(3)`).
pub fn at_urgent_mark(socket: &impl AsFd) -> io::Result<bool> {
    let mut at_mark: libc::c_int = 0;
    // SAFETY: SIOCATMARK writes one `int` through the pointer, which points at a live `c_int`.
    let rc =
        unsafe { libc::ioctl(socket.as_fd().as_raw_fd(), SIOCATMARK as _, &mut at_mark as *mut libc::c_int) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(at_mark != 0)
}

/// Clears close-on-exec on a descriptor this process owns, so that it survives `execve` with its
/// number (the live upgrade hands it to the new image). One system call per descriptor.
pub fn inherit(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_SETFD sets the descriptor flags of a number (close-on-exec is the only one); one
    // that is not open fails with EBADF.
    match unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Takes ownership of descriptor `fd`, inherited across `execve` (see [`inherit`]), setting
/// close-on-exec on it again — one system call, which also fails for a number that is not open.
pub fn adopt(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_SETFD on a number: an unopened one fails with EBADF (and a negative one with
    // EBADF too).
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("inherited descriptor {fd}: {e}")));
    }
    // SAFETY: `fd` is open (checked above) and owned by nobody else in this process: the
    // handover state names each descriptor once and is read once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets close-on-exec again on a descriptor this process keeps (one [`inherit`] cleared for an
/// `execve` that failed).
pub fn close_on_exec(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_SETFD sets the descriptor flags of a number; one that is not open fails (EBADF).
    match unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// A process descriptor of `pid` (`pidfd_open(2)`, Linux 5.3), close-on-exec: it names that
/// process and no other, even once its number is reused.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: pidfd_open takes a pid and flags (none) and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just created this descriptor (it fits an int), and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sends SIGKILL to the process of a process descriptor (`pidfd_send_signal(2)`); one that has
/// exited already is not an error.
pub fn pidfd_kill(pidfd: &impl AsFd) -> io::Result<()> {
    let fd = pidfd.as_fd().as_raw_fd();
    // SAFETY: pidfd_send_signal takes a descriptor, a signal number, a null siginfo (the kernel
    // fills in one as kill(2) would) and flags (none).
    let rc =
        unsafe { libc::syscall(libc::SYS_pidfd_send_signal, fd, libc::SIGKILL, std::ptr::null::<u8>(), 0) };
    match rc {
        0 => Ok(()),
        _ => match io::Error::last_os_error() {
            e if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            e => Err(e),
        },
    }
}

/// `struct pidfd_info` of `<linux/pidfd.h>` as Linux 6.15 first defined it (64 bytes).
#[repr(C)]
#[derive(Default)]
struct PidfdInfo {
    mask: u64,
    cgroupid: u64,
    ids: [u32; 11],
    exit_code: i32,
}

/// `PIDFD_GET_INFO`: `_IOWR(0xFF, 11, struct pidfd_info)`, for the 64-byte structure above.
const PIDFD_GET_INFO: libc::c_ulong = 0xC040_FF0B;
/// The `mask` bit that asks for (and reports) the exit status.
const PIDFD_INFO_EXIT: u64 = 1 << 3;

/// How the process of a process descriptor ended, as a wait status (`WIFEXITED` …), once its
/// parent has reaped it (`PIDFD_GET_INFO`, Linux 6.15; it works for a process that is not our
/// child). `None` while it runs or is not reaped yet, or on an older kernel.
pub fn pidfd_exit_status(pidfd: &impl AsFd) -> Option<i32> {
    let mut info = PidfdInfo { mask: PIDFD_INFO_EXIT, ..PidfdInfo::default() };
    // SAFETY: PIDFD_GET_INFO writes at most the size its number encodes (64 bytes, the size of
    // `info`) into the structure it is given, which lives through the call.
    let rc =
        unsafe { libc::ioctl(pidfd.as_fd().as_raw_fd(), PIDFD_GET_INFO as _, &mut info as *mut PidfdInfo) };
    (rc == 0 && info.mask & PIDFD_INFO_EXIT != 0).then_some(info.exit_code)
}

/// Spawns `command` with `signals` blocked in the child from its first instruction on (std
/// clears the signal mask of the children it starts; a signal meant for the daemon then waits
/// in the child's pending set instead of killing it).
pub fn spawn_blocking(
    command: &mut std::process::Command,
    signals: &[i32],
) -> io::Result<std::process::Child> {
    // SAFETY: sigemptyset and sigaddset only write the set they are given.
    let set = unsafe {
        let mut set = MaybeUninit::<libc::sigset_t>::zeroed();
        libc::sigemptyset(set.as_mut_ptr());
        for &signal in signals {
            libc::sigaddset(set.as_mut_ptr(), signal);
        }
        set.assume_init()
    };
    // SAFETY: the closure runs in the child between fork and exec, where only async-signal-safe
    // calls are allowed: it makes one, pthread_sigmask, on a set prepared before the fork, and
    // neither allocates nor takes a lock.
    unsafe {
        command.pre_exec(move || match libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) {
            0 => Ok(()),
            e => Err(io::Error::from_raw_os_error(e)),
        });
    }
    command.spawn()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{recv, MsgFlags};
    use socket2::SockRef;
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        (a, b)
    }

    #[test]
    fn tcp_progress_counts_bytes_both_ways_and_sees_the_peers_fin() {
        let (mut a, mut b) = pair();
        let before = tcp_progress(&b).unwrap();
        a.write_all(&[7; 1000]).unwrap();
        let mut buf = [0; 1000];
        b.read_exact(&mut buf).unwrap();
        b.write_all(&[8; 500]).unwrap();
        a.read_exact(&mut buf[..500]).unwrap();
        let after = tcp_progress(&b).unwrap();
        assert_eq!(after.moved - before.moved, 1500, "{before:?} → {after:?}");
        assert!(!after.peer_finished);
        a.shutdown(Shutdown::Write).unwrap();
        assert_eq!(b.read(&mut buf).unwrap(), 0);
        assert!(tcp_progress(&b).unwrap().peer_finished);
    }

    /// What the liveness review relies on, checked on the running kernel: a peer that stopped
    /// reading answers zero-window probes, which move the time of the last acknowledgement but
    /// not the time of the last data sent, nor the byte counters (once the window is shut: a
    /// probe into a window too small to fill carries data, and is movement).
    #[test]
    fn zero_window_probe_answers_move_no_data_timestamp() {
        let (a, b) = pair();
        a.set_nonblocking(true).unwrap();
        let chunk = [5u8; 64 * 1024];
        // Until the peer's window and our buffer are full (a few MiB at most).
        for _ in 0..10_000 {
            if (&a).write(&chunk).is_err() {
                break;
            }
        }
        // The first persist timer may still send what fits a window too small to fill: wait
        // until nothing has moved for 300 ms.
        let mut full = tcp_progress(&a).unwrap();
        for _ in 0..20 {
            std::thread::sleep(std::time::Duration::from_millis(300));
            let now = tcp_progress(&a).unwrap();
            if now.moved == full.moved {
                break;
            }
            full = now;
        }
        std::thread::sleep(std::time::Duration::from_millis(1000));
        let later = tcp_progress(&a).unwrap();
        assert_eq!(later.moved, full.moved, "{full:?} → {later:?}");
        assert!(later.unacknowledged);
        assert!(later.since_sent_ms >= 1000 && later.since_movement_ms() >= 1000, "{later:?}");
        assert!(later.since_ack_ms < later.since_sent_ms, "probes were answered since: {later:?}");
        drop(b);
    }

    /// The same for keepalive answers on an idle connection.
    #[test]
    fn keepalive_answers_move_no_data_timestamp() {
        let (mut a, mut b) = pair();
        a.write_all(b"ping").unwrap();
        b.read_exact(&mut [0; 4]).unwrap();
        let every_second = socket2::TcpKeepalive::new()
            .with_time(std::time::Duration::from_secs(1))
            .with_interval(std::time::Duration::from_secs(1));
        SockRef::from(&a).set_tcp_keepalive(&every_second).unwrap();
        let before = tcp_progress(&a).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let after = tcp_progress(&a).unwrap();
        assert_eq!(after.moved, before.moved, "{before:?} → {after:?}");
        assert!(after.since_ack_ms < 1000, "a keepalive was answered: {after:?}");
        assert!(after.since_movement_ms() >= 1500, "{after:?}");
    }

    #[test]
    fn the_urgent_mark_is_seen_where_the_urgent_byte_is() {
        let (a, mut b) = pair();
        (&a).write_all(b"before").unwrap();
        SockRef::from(&a).send_out_of_band(b"!").unwrap();
        (&a).write_all(b"after").unwrap();
        b.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let mut buf = [0; 64];
        assert!(!at_urgent_mark(&b).unwrap());
        let n = b.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"before", "a read stops at the mark");
        assert!(at_urgent_mark(&b).unwrap());
        let mut oob = [0u8];
        assert_eq!(recv(b.as_raw_fd(), &mut oob, MsgFlags::MSG_OOB).unwrap(), 1);
        assert_eq!(oob[0], b'!');
        let n = b.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"after");
        assert!(!at_urgent_mark(&b).unwrap());
    }

    #[test]
    fn a_child_spawned_blocking_starts_with_those_signals_blocked() {
        let mut command = std::process::Command::new("grep");
        command.args(["^SigBlk:", "/proc/self/status"]).stdout(std::process::Stdio::piped());
        let child = spawn_blocking(&mut command, &[libc::SIGUSR2, libc::SIGTERM]).unwrap();
        let out = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
        let mask = u64::from_str_radix(out.trim_start_matches("SigBlk:").trim(), 16).unwrap();
        assert_eq!(mask, 1 << (libc::SIGUSR2 - 1) | 1 << (libc::SIGTERM - 1), "{out}");
    }

    #[test]
    fn a_process_descriptor_kills_its_process_and_tells_how_it_ended() {
        use std::os::unix::process::ExitStatusExt;
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pidfd = pidfd_open(child.id()).unwrap();
        assert_eq!(pidfd_exit_status(&pidfd), None, "running");
        pidfd_kill(&pidfd).unwrap();
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
        pidfd_kill(&pidfd).unwrap(); // gone: not an error
                                     // PIDFD_GET_INFO tells the wait status once reaped (Linux 6.15; before, nothing).
        assert!(matches!(pidfd_exit_status(&pidfd), None | Some(libc::SIGKILL)));
    }
}
