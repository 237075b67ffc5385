//! Load the tests put on the daemon while they inject faults, and what they measure of it: a
//! well-behaved ping-pong client (its worst round trip), and the daemon's peak memory.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{connect, rss_kib};

/// Size of one ping.
pub const PING_SIZE: usize = 64;

/// What a [`PingPong`] client saw.
#[derive(Debug)]
pub struct PingReport {
    pub round_trips: u64,
    pub worst: Duration,
    /// The first failed round trip (a write or read error, a timeout, wrong bytes), if any.
    pub failure: Option<String>,
}

/// A client that keeps 64-byte round trips going through an echo relay on its own thread, one
/// right after the other (a 1 ms pause between them, so it measures the daemon's responsiveness
/// rather than competing with it for a core), until stopped or `max_duration` has passed.
pub struct PingPong {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<PingReport>>,
}

impl PingPong {
    /// Connects (and makes one round trip, so that the connection is established through the
    /// relay) before returning.
    pub fn start(addr: SocketAddr, max_duration: Duration) -> PingPong {
        let mut stream = connect(addr);
        stream.set_nodelay(true).unwrap();
        let mut first = PingReport { round_trips: 0, worst: Duration::ZERO, failure: None };
        if let Err(e) = round_trip(&mut stream, 0) {
            panic!("first ping through {addr}: {e}");
        }
        first.round_trips = 1;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut report = first;
                let start = Instant::now();
                while !stop.load(Ordering::Relaxed) && start.elapsed() < max_duration {
                    let t = Instant::now();
                    if let Err(e) = round_trip(&mut stream, report.round_trips) {
                        report.failure = Some(format!(
                            "round trip {} ({:?} into the run): {e}",
                            report.round_trips,
                            start.elapsed()
                        ));
                        break;
                    }
                    report.worst = report.worst.max(t.elapsed());
                    report.round_trips += 1;
                    thread::sleep(Duration::from_millis(1));
                }
                report
            })
        };
        PingPong { stop, thread: Some(thread) }
    }

    /// Stops the client and returns what it saw.
    pub fn finish(mut self) -> PingReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().expect("not finished yet").join().expect("ping-pong thread")
    }
}

impl Drop for PingPong {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One 64-byte message, numbered so that a stale or misplaced echo is noticed.
fn round_trip(stream: &mut TcpStream, n: u64) -> Result<(), String> {
    let mut msg = [0u8; PING_SIZE];
    for (i, chunk) in msg.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&(n.wrapping_mul(31).wrapping_add(i as u64)).to_le_bytes());
    }
    stream.write_all(&msg).map_err(|e| format!("write: {e}"))?;
    let mut back = [0u8; PING_SIZE];
    stream.read_exact(&mut back).map_err(|e| format!("read: {e}"))?;
    if back != msg {
        return Err("the echo differs from the ping".into());
    }
    Ok(())
}

/// Samples a process's RSS every 10 ms on a thread and keeps the maximum.
pub struct PeakRss {
    stop: Arc<AtomicBool>,
    max_kib: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl PeakRss {
    /// Samples for at most two minutes.
    pub fn start(pid: u32) -> PeakRss {
        let stop = Arc::new(AtomicBool::new(false));
        let max_kib = Arc::new(AtomicU64::new(rss_kib(pid).unwrap_or(0)));
        let thread = {
            let (stop, max_kib) = (stop.clone(), max_kib.clone());
            thread::spawn(move || {
                for _ in 0..12_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Some(kib) = rss_kib(pid) {
                        max_kib.fetch_max(kib, Ordering::Relaxed);
                    }
                    thread::sleep(Duration::from_millis(10));
                }
            })
        };
        PeakRss { stop, max_kib, thread: Some(thread) }
    }

    /// The peak so far, in KiB (sampling goes on).
    pub fn peak_kib(&self) -> u64 {
        self.max_kib.load(Ordering::Relaxed)
    }

    /// Stops sampling and returns the peak, in KiB.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("RSS sampler thread");
        }
        self.peak_kib()
    }
}

impl Drop for PeakRss {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
