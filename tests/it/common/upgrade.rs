//! What a live upgrade's tests share: a copy of the binary to run and to replace as a package
//! upgrade does (or by a script standing in for a new binary that fails), the processes a test
//! leaves killed however it ends, and connections to keep busy across it — idle ones that must still echo,
//! checked echo streams moving both ways, a stream the relay holds bytes of — and the
//! `/metrics` samples to compare before and after.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use std::os::unix::fs::PermissionsExt;

use super::{
    assert_echo, connect, echo_until_eof, processes_with_arg, send_signal, ByteStream, Daemon, Upstream, BIN,
};

/// Copies the built daemon into `dir`, for the daemon to run and an upgrade to replace.
pub fn copy_binary(dir: &Path) -> PathBuf {
    let program = dir.join("idlereaper");
    fs::copy(BIN, &program).expect("copy the daemon binary");
    program
}

/// Replaces `program` the way a package manager does: a fresh copy written under another name
/// in the same directory, then renamed over it (a new inode; the running one is now deleted).
pub fn replace_binary(program: &Path) {
    let fresh = program.with_extension("new");
    fs::copy(BIN, &fresh).expect("write the new binary");
    fs::rename(&fresh, program).expect("rename the new binary over the old one");
}

/// Replaces the file at `path` by `contents`, executable (a new inode, as a package upgrade
/// does).
pub fn replace_file(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("new");
    fs::write(&tmp, contents).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
    fs::rename(&tmp, path).unwrap();
}

/// A shell script standing in for a new binary: the pre-flight questions go to the real binary
/// (`--check`, `--handover-versions`, `--handover-check`, after `pre_flight` for the last one);
/// the new image's own run (`--handover` among its arguments) does `run`.
pub fn image_script(pre_flight: &str, run: &str) -> Vec<u8> {
    format!(
        "#!/bin/sh\ncase \" $* \" in\n*\" --handover-check \"*) {pre_flight} ;;\n*\" --handover \"*) {run} ;;\nesac\n\
         exec {BIN} \"$@\"\n"
    )
    .into_bytes()
}

/// Kills, when a test ends, every process whose command line names its configuration file
/// (`.0`): the daemon of the moment, a guardian carrying on, a new image that hangs, should the
/// test fail half-way.
pub struct KillLeftovers(pub PathBuf);

impl Drop for KillLeftovers {
    fn drop(&mut self) {
        for pid in processes_with_arg(&self.0.to_string_lossy()) {
            send_signal(pid, libc::SIGKILL);
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
        }
    }
}

/// Where /proc/<pid>/exe points: the file the process runs, with " (deleted)" once replaced.
pub fn exe_of(pid: u32) -> String {
    fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|e| panic!("/proc/{pid}/exe: {e}"))
}

pub fn read_pidfile(daemon: &Daemon) -> String {
    fs::read_to_string(&daemon.pidfile).unwrap_or_else(|e| panic!("{}: {e}", daemon.pidfile.display()))
}

/// Every sample of `GET /metrics`, by series (`name{labels}`).
pub fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let mut s = connect(addr);
    write!(s, "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read the /metrics answer");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    assert!(head.starts_with("HTTP/1.1 200"), "/metrics answer: {head}");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

pub fn sample(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples.get(series).unwrap_or_else(|| panic!("no {series} in the scrape: {samples:?}"))
}

/// An echo upstream whose connections may stay idle for a minute (the harness's echo gives up
/// after [`IO_TIMEOUT`] without a byte, which would close idle relayed connections).
pub fn patient_echo() -> Upstream {
    Upstream::start(|mut s| {
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let _ = echo_until_eof(&mut s);
    })
}

/// `n` connections to `addr`, each having made one echo round trip.
pub fn open_idle(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut s = connect(addr);
            assert_echo(&mut s, format!("hello {i:05}").as_bytes());
            s
        })
        .collect()
}

/// One echo round trip on each of `conns`; panics naming how many failed and the first failure.
pub fn assert_all_echo(conns: &mut [TcpStream], what: &str, daemon: &Daemon) {
    let mut failures = Vec::new();
    for (i, s) in conns.iter_mut().enumerate() {
        let msg = format!("again {i:05}");
        let result = s.write_all(msg.as_bytes()).and_then(|()| {
            let mut got = vec![0u8; msg.len()];
            s.read_exact(&mut got)?;
            if got == msg.as_bytes() {
                Ok(())
            } else {
                Err(io::Error::other(format!("echoed {:?}", String::from_utf8_lossy(&got))))
            }
        });
        if let Err(e) = result {
            failures.push(format!("connection {i} ({:?}): {e}", s.local_addr().ok()));
        }
    }
    assert!(
        failures.is_empty(),
        "{what}: {} of {} connections failed a round trip, first: {}; log tail:\n{}",
        failures.len(),
        conns.len(),
        failures[0],
        tail(&daemon.log(), 40)
    );
}

pub fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A connection through an echo relay moving data both ways at once: a writer thread sends the
/// stream `seed`, a reader thread checks every byte that comes back, in order.
pub struct EchoStream {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    writer: JoinHandle<io::Result<()>>,
    reader: JoinHandle<Result<u64, String>>,
}

/// Bytes per write of an [`EchoStream`]; it writes one such piece every 2 ms or so (about
/// 4 MB/s), which keeps data moving without taking the machine's two cores from the daemon.
pub const PIECE: usize = 8 * 1024;
/// Read and write timeout of an [`EchoStream`]'s socket.
pub const STREAM_TIMEOUT: Duration = Duration::from_secs(30);

impl EchoStream {
    pub fn start(addr: SocketAddr, seed: u64) -> EchoStream {
        let stream = connect(addr);
        // Longer than an upgrade may hold the relay: a new image that hangs holds it for the
        // takeover deadline (10 s) before the old code carries on.
        stream.set_read_timeout(Some(STREAM_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(STREAM_TIMEOUT)).unwrap();
        let mut rx = stream.try_clone().unwrap();
        let mut tx = stream;
        let stop = Arc::new(AtomicBool::new(false));
        let (sent, received) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let writer = {
            let (stop, sent) = (stop.clone(), sent.clone());
            thread::spawn(move || {
                let mut bytes = ByteStream::new(seed);
                let mut buf = vec![0u8; PIECE];
                let start = Instant::now();
                for _ in 0..1_000_000 {
                    if stop.load(Ordering::Relaxed) || start.elapsed() > Duration::from_secs(60) {
                        break;
                    }
                    bytes.fill(&mut buf);
                    tx.write_all(&buf)?;
                    sent.fetch_add(PIECE as u64, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(2));
                }
                tx.shutdown(Shutdown::Write)
            })
        };
        let reader = {
            let received = received.clone();
            thread::spawn(move || {
                let mut expected = ByteStream::new(seed);
                let mut buf = vec![0u8; 64 * 1024];
                for _ in 0..10_000_000 {
                    let n = match rx.read(&mut buf) {
                        Ok(0) => return Ok(expected.offset),
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(format!("read failed after {} bytes: {e}", expected.offset)),
                    };
                    expected
                        .check(&buf[..n])
                        .map_err(|at| format!("byte {at} came back different from what was sent"))?;
                    received.store(expected.offset, Ordering::SeqCst);
                }
                Err("ten million reads without EOF".to_string())
            })
        };
        EchoStream { stop, sent, received, writer, reader }
    }

    pub fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }

    /// Stops writing (FIN after the last byte) and checks that exactly what was sent came back.
    pub fn finish(self, which: usize) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let wrote = self.writer.join().expect("writer thread");
        wrote.unwrap_or_else(|e| panic!("stream {which}: write failed: {e}"));
        let back = self.reader.join().expect("reader thread");
        let back = back.unwrap_or_else(|e| panic!("stream {which}: {e}"));
        let sent = self.sent.load(Ordering::SeqCst);
        assert_eq!(back, sent, "stream {which}: bytes echoed back vs sent");
        sent
    }
}

/// Writes the stream `seed` to `s` without blocking until the relay stops taking bytes (no
/// progress for half a second), at most `cap` bytes; returns how many it took.
pub fn write_until_stalled(s: &TcpStream, seed: u64, cap: u64) -> u64 {
    s.set_nonblocking(true).unwrap();
    let mut bytes = ByteStream::new(seed);
    let mut buf = vec![0u8; 64 * 1024];
    let (mut at, mut len) = (0, 0);
    let mut sent = 0u64;
    let start = Instant::now();
    let mut progress = Instant::now();
    let mut w = s;
    while sent < cap && start.elapsed() < Duration::from_secs(30) {
        if at == len {
            let n = (cap - bytes.offset).min(buf.len() as u64) as usize;
            bytes.fill(&mut buf[..n]);
            (at, len) = (0, n);
        }
        match w.write(&buf[at..len]) {
            Ok(n) => {
                at += n;
                sent += n as u64;
                progress = Instant::now();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if progress.elapsed() > Duration::from_millis(500) {
                    break;
                }
                thread::sleep(Duration::from_millis(2));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("writing to a stalled upstream, after {sent} bytes: {e}"),
        }
    }
    s.set_nonblocking(false).unwrap();
    sent
}
