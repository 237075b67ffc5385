//! The client side of each scenario. Each returns its result as one `key=value` line.

use std::io::{self, IoSliceMut, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::{Events, Interest, Poll, Token};
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use nix::sys::time::TimeSpec;
use socket2::{Domain, Protocol, Socket, Type};

use crate::stats::Summary;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Source addresses rotate over 127.1.0.0/16 (or ::1 for IPv6): the daemon closes idle
/// connections first, so its side keeps them in TIME_WAIT, and a new connection from the same
/// address and port would have its SYN ignored for a second. Spreading the source addresses
/// makes such collisions vanish, for idlereaper and the peers alike.
static NEXT_SOURCE: AtomicU32 = AtomicU32::new(0);

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.ip().is_loopback() && addr.is_ipv4() {
        let n =
            NEXT_SOURCE.fetch_add(1, Ordering::Relaxed).wrapping_add(std::process::id().wrapping_mul(7919));
        let source = Ipv4Addr::new(127, 1, (n >> 8) as u8, n as u8);
        socket.bind(&SocketAddr::new(source.into(), 0).into())?;
    }
    socket.connect_timeout(&addr.into(), CONNECT_TIMEOUT)?;
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

fn context(what: String) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Opens `conns` connections, sends one byte on each (to a discarding upstream or a sink, so that
/// the byte is the connection's last activity), and times each close against `timeout`.
///
/// Lateness = close seen − last activity − timeout. Without `echo`, the last activity is the send
/// of the byte: under a burst of connections that includes how long the relay took to get to the
/// byte. With `echo` (an echo upstream behind the relay), it is the kernel's receive timestamp
/// (`SO_TIMESTAMPNS`) of the echoed byte, which the relay wrote just before: its own last
/// activity, so that the number measures its timer. Both are reported then (`sent_*` for the
/// send), with the echo's delay after the send (`echo_lag_*`: burst absorption). Closes are seen
/// by this loop, after the kernel delivered them, so lateness is if anything overstated.
pub fn reap(
    addr: SocketAddr,
    conns: usize,
    timeout: Duration,
    samples: Option<&Path>,
    echo: bool,
) -> io::Result<String> {
    let mut poll = Poll::new()?;
    // The kernel stamps received packets only while some socket asks for it, and switches that
    // on asynchronously: ask first, and give it a moment, so that the first echo has its stamp.
    let _stamping = match echo {
        true => {
            let socket = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
            setsockopt(&socket, sockopt::ReceiveTimestampns, &true)?;
            std::thread::sleep(Duration::from_millis(50));
            Some(socket)
        }
        false => None,
    };
    let started = Instant::now();
    let (streams, sent) = connect_and_send(&poll, addr, conns, echo)?;
    let connect_ms = started.elapsed().as_secs_f64() * 1e3;
    let seen = watch_closes(&mut poll, &streams, timeout, echo)?;
    let (headline, mut extra) = lateness(&seen, &sent, timeout, echo);
    if let Some(path) = samples {
        let text: String = headline.iter().map(|l| format!("{:.3}\n", l * 1e3)).collect();
        std::fs::write(path, text)?;
    }
    let l = Summary::of(headline);
    let closed = conns - seen.open;
    if echo && l.count < closed {
        extra.push_str(&format!(" no_echo={}", closed - l.count));
    }
    Ok(format!(
        "scenario=reap conns={conns} connect_ms={connect_ms:.0} closed={closed} early={} min_ms={:.3} p50_ms={:.3} p99_ms={:.3} max_ms={:.3}{extra}",
        l.below_zero,
        l.min,
        l.p50,
        l.p99,
        l.max,
    ))
}

/// Opens `conns` connections, each registered with `poll` under its index, and sends each its
/// byte as soon as it exists; returns them with the instant each byte was sent.
fn connect_and_send(
    poll: &Poll,
    addr: SocketAddr,
    conns: usize,
    echo: bool,
) -> io::Result<(Vec<mio::net::TcpStream>, Vec<Instant>)> {
    let mut streams = Vec::with_capacity(conns);
    let mut sent = Vec::with_capacity(conns);
    for i in 0..conns {
        let mut stream = connect(addr).map_err(context(format!("connect {i}")))?;
        if echo {
            setsockopt(&stream, sockopt::ReceiveTimestampns, &true)?;
        }
        // The byte goes out as soon as the connection exists, so that it is the last activity
        // whatever the time the other connects take. The time is taken before the write: the
        // relay may read the byte before `write` returns here.
        sent.push(Instant::now());
        stream.write_all(b"x")?;
        stream.set_nonblocking(true)?;
        let mut stream = mio::net::TcpStream::from_std(stream);
        poll.registry().register(&mut stream, Token(i), Interest::READABLE)?;
        streams.push(stream);
    }
    Ok((streams, sent))
}

/// What [`watch_closes`] saw of each connection: when it was closed, when its echo arrived (by
/// the kernel's stamp), and how many were still open when it gave up.
struct Seen {
    closed: Vec<Option<Instant>>,
    echoed: Vec<Option<Instant>>,
    open: usize,
}

/// Reads every connection until the daemon closes it, noting when; gives up after twice the
/// timeout and 10 s more.
fn watch_closes(
    poll: &mut Poll,
    streams: &[mio::net::TcpStream],
    timeout: Duration,
    echo: bool,
) -> io::Result<Seen> {
    let conns = streams.len();
    let mut seen = Seen { closed: vec![None; conns], echoed: vec![None; conns], open: conns };
    let give_up = Instant::now() + timeout * 2 + Duration::from_secs(10);
    let mut events = Events::with_capacity(1024);
    let mut buf = [0u8; 64];
    while seen.open > 0 && Instant::now() < give_up {
        poll.poll(&mut events, Some(Duration::from_millis(100)))?;
        let now = Instant::now();
        for event in events.iter() {
            let i = event.token().0;
            if seen.closed[i].is_some() {
                continue;
            }
            if echo && seen.echoed[i].is_none() {
                seen.echoed[i] = received_at(&streams[i], &mut buf)?;
            }
            if drained_to_the_end(&streams[i], &mut buf) {
                seen.closed[i] = Some(now);
                seen.open -= 1;
            }
        }
    }
    Ok(seen)
}

/// Reads what waits on `stream`; true if its read side is finished (EOF or an error).
fn drained_to_the_end(mut stream: &mio::net::TcpStream, buf: &mut [u8]) -> bool {
    loop {
        match stream.read(buf) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break, // reset: closed too
        }
    }
    let mut probe = [0u8; 1];
    match stream.peek(&mut probe) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    }
}

/// Each close's lateness in milliseconds (the headline: from the echo with `echo`, else from
/// the send), and with `echo` the figures from the send and the echo's lag, as `key=value`s.
fn lateness(seen: &Seen, sent: &[Instant], timeout: Duration, echo: bool) -> (Vec<f64>, String) {
    let timeout_ms = timeout.as_secs_f64() * 1e3;
    let lateness_from = |from: &mut dyn Iterator<Item = Option<Instant>>| -> Vec<f64> {
        let pairs = seen.closed.iter().zip(from);
        pairs.filter_map(|(c, f)| Some(signed_ms((*c)?, f?) - timeout_ms)).collect()
    };
    let from_sent = lateness_from(&mut sent.iter().copied().map(Some));
    if !echo {
        return (from_sent, String::new());
    }
    let pairs = seen.echoed.iter().zip(sent);
    let lag = Summary::of(pairs.filter_map(|(e, s)| Some(signed_ms((*e)?, *s))).collect());
    let sent = Summary::of(from_sent);
    let extra = format!(
        " echoed={} echo_lag_p50_ms={:.3} echo_lag_max_ms={:.3} sent_early={} sent_p50_ms={:.3} sent_p99_ms={:.3} sent_max_ms={:.3}",
        lag.count, lag.p50, lag.max, sent.below_zero, sent.p50, sent.p99, sent.max,
    );
    (lateness_from(&mut seen.echoed.iter().copied()), extra)
}

/// Reads the first bytes waiting on `stream` and returns when the kernel received them, as an
/// `Instant` (the timestamp is on the real-time clock); `None` if nothing was there yet.
fn received_at(stream: &mio::net::TcpStream, buf: &mut [u8]) -> io::Result<Option<Instant>> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!(TimeSpec);
    // Nothing yet (EAGAIN, EINTR), or a reset, which the close loop sees.
    let Ok(msg) = recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty()) else {
        return Ok(None);
    };
    if msg.bytes == 0 {
        return Ok(None);
    }
    let (now, wall) = (Instant::now(), SystemTime::now());
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmTimestampns(ts) = cmsg {
            let at = UNIX_EPOCH + Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32);
            let age = wall.duration_since(at).unwrap_or_default();
            return Ok(Some(now.checked_sub(age).unwrap_or(now)));
        }
    }
    Err(io::Error::other("no SO_TIMESTAMPNS control message on the echo"))
}

fn signed_ms(later: Instant, earlier: Instant) -> f64 {
    match later.checked_duration_since(earlier) {
        Some(d) => d.as_secs_f64() * 1e3,
        None => -(earlier.duration_since(later).as_secs_f64() * 1e3),
    }
}

/// Opens `conns` relayed connections to an echo upstream, proves each relays a byte, holds them,
/// and measures the relay process `pid`: resident memory per connection and CPU time while idle.
pub fn hold(addr: SocketAddr, conns: usize, pid: u32, hold: Duration) -> io::Result<String> {
    let rss_before = rss_kib(pid)?;
    let mut streams = Vec::with_capacity(conns);
    let mut byte = [0u8; 1];
    for i in 0..conns {
        let mut stream = connect(addr).map_err(context(format!("connect {i}")))?;
        stream.write_all(b"h")?;
        stream.read_exact(&mut byte).map_err(context(format!("echo on connection {i}")))?;
        streams.push(stream);
    }
    std::thread::sleep(Duration::from_secs(1)); // let the relay settle
    let rss_after = rss_kib(pid)?;
    let cpu_before = cpu_seconds(pid)?;
    std::thread::sleep(hold);
    let cpu = cpu_seconds(pid)? - cpu_before;
    // Still open and relaying after the hold?
    let mut alive = 0;
    for stream in &mut streams {
        if stream.write_all(b"h").is_ok() && stream.read_exact(&mut byte).is_ok() {
            alive += 1;
        }
    }
    let per_conn = (rss_after.saturating_sub(rss_before)) as f64 * 1024.0 / conns.max(1) as f64;
    Ok(format!(
        "scenario=hold conns={conns} alive_after={alive} rss_before_kib={rss_before} rss_after_kib={rss_after} \
         bytes_per_conn={per_conn:.0} idle_cpu_s={cpu:.3} hold_s={}",
        hold.as_secs()
    ))
}

/// Resident set size of `pid`, KiB.
fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no VmRSS for pid {pid}")))
}

/// User + system CPU seconds of `pid` and its threads.
fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command: state is field 3; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    Ok((ticks(14) + ticks(15)) as f64 / hz)
}

/// `count` round trips of `size` bytes on one connection through an echo upstream.
pub fn pingpong(addr: SocketAddr, count: usize, size: usize) -> io::Result<String> {
    let mut stream = connect(addr)?;
    let out = vec![0x5au8; size];
    let mut back = vec![0u8; size];
    let warmup = (count / 10).min(1000);
    let mut rtts = Vec::with_capacity(count);
    for i in 0..warmup + count {
        let t = Instant::now();
        stream.write_all(&out)?;
        stream.read_exact(&mut back).map_err(context(format!("round trip {i}")))?;
        if i >= warmup {
            rtts.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    let r = Summary::of(rtts);
    Ok(format!(
        "scenario=pingpong count={count} size={size} p50_us={:.1} p99_us={:.1} max_us={:.1}",
        r.p50, r.p99, r.max
    ))
}

/// Short connections from `threads` threads for `duration`: connect, 64-byte request, 64-byte
/// response (echo), close. With `rate` > 0, at most `rate` connections a second in all: each
/// thread starts its next connection no sooner than its share of the rate allows.
pub fn churn(addr: SocketAddr, threads: usize, duration: Duration, rate: u32) -> io::Result<String> {
    let start = Instant::now();
    let until = start + duration;
    let threads = threads.max(1);
    let gap = (rate > 0).then(|| Duration::from_secs_f64(threads as f64 / f64::from(rate)));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0u64, 0u64);
                let mut back = [0u8; 64];
                let mut next = Instant::now();
                while Instant::now() < until {
                    if let Some(gap) = gap {
                        std::thread::sleep(next.saturating_duration_since(Instant::now()));
                        // No burst to catch up after a slow connection: the next one is a gap
                        // after this one at the earliest.
                        next = next.max(Instant::now()) + gap;
                    }
                    let done = connect(addr).and_then(|mut s| {
                        s.write_all(&[0x42; 64])?;
                        s.read_exact(&mut back)
                    });
                    match done {
                        Ok(()) => ok += 1,
                        Err(_) => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut ok, mut failed) = (0, 0);
    for w in workers {
        let (o, f) = w.join().map_err(|_| io::Error::other("churn thread panicked"))?;
        ok += o;
        failed += f;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(format!(
        "scenario=churn threads={threads} rate={rate} conns={ok} failed={failed} secs={secs:.2} conns_per_s={:.0}",
        ok as f64 / secs
    ))
}
