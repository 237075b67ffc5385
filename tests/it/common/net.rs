//! Loopback addresses that parallel tests do not share, client sockets with timeouts, and
//! in-process upstream servers (std threads, blocking sockets with timeouts).

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::IO_TIMEOUT;

/// A loopback address no other test (in this process or, very likely, another) uses:
/// 127.A.B.C with A derived from the pid and B.C from a counter. All of 127/8 is local on Linux.
pub fn fresh_ip() -> Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let a = 1 + (std::process::id() % 250) as u8;
    let b = (n / 250 % 250) as u8;
    let c = 2 + (n % 250) as u8;
    Ipv4Addr::new(127, a, b, c)
}

/// An address (on a fresh loopback IP) where nothing listens right now: for the daemon to
/// bind, or as an upstream that refuses connections.
pub fn free_addr() -> SocketAddr {
    let ip = fresh_ip();
    let probe = TcpListener::bind(SocketAddrV4::new(ip, 0)).expect("bind a probe port");
    let addr = probe.local_addr().unwrap();
    drop(probe);
    addr
}

/// True if `addr` can be bound now, i.e. nobody listens on it.
pub fn is_bindable(addr: SocketAddr) -> bool {
    TcpListener::bind(addr).is_ok()
}

/// Connects with a deadline and sets the socket's read and write timeouts.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    with_timeouts(&stream);
    stream
}

/// Sets [`IO_TIMEOUT`] on both directions.
pub fn with_timeouts(stream: &TcpStream) {
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
}

/// What the peer of a socket has done, seen without consuming data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Connected; data may or may not be waiting.
    Open,
    /// The peer closed (FIN) or reset the connection.
    Closed,
}

/// Peeks without blocking: is the connection still open?
pub fn peer_state(stream: &TcpStream) -> PeerState {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let state = match stream.peek(&mut byte) {
        Ok(0) => PeerState::Closed,
        Ok(_) => PeerState::Open,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => PeerState::Open,
        Err(_) => PeerState::Closed,
    };
    stream.set_nonblocking(false).unwrap();
    state
}

/// Blocks (up to `timeout`) until the peer closes: returns when a read gives EOF or a reset,
/// panics if data arrives or the timeout passes.
pub fn wait_closed(stream: &mut TcpStream, timeout: Duration) -> Instant {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 256];
    let result = stream.read(&mut buf);
    let at = Instant::now();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    match result {
        Ok(0) => at,
        Err(e) if is_reset(&e) => at,
        Ok(n) => panic!("expected the connection to close, got {n} bytes"),
        Err(e) => panic!("expected the connection to close within {timeout:?}: {e}"),
    }
}

fn is_reset(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted)
}

/// Reads exactly `n` bytes (with the socket's timeouts).
pub fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf).unwrap_or_else(|e| panic!("reading {n} bytes: {e}"));
    buf
}

/// Writes `msg` and expects it echoed back whole.
pub fn assert_echo(stream: &mut TcpStream, msg: &[u8]) {
    stream.write_all(msg).expect("write to the relay");
    let got = read_n(stream, msg.len());
    assert_eq!(got, msg, "echo through the relay");
}

/// A TCP server on 127.0.0.1 run by a thread of the test: every accepted connection (blocking,
/// with [`IO_TIMEOUT`]s) is handed to `handler` in its own thread. Stops accepting when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Longest an upstream accept loop runs, whatever happens.
const UPSTREAM_LIFETIME: Duration = Duration::from_secs(120);

impl Upstream {
    pub fn start<F>(handler: F) -> Upstream
    where
        F: Fn(TcpStream) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        Upstream::start_on(listener, handler)
    }

    /// Serves on an already bound listener.
    pub fn start_on<F>(listener: TcpListener, handler: F) -> Upstream
    where
        F: Fn(TcpStream) + Send + Sync + 'static,
    {
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let handler = Arc::new(handler);
        let thread = {
            let stop = stop.clone();
            thread::spawn(move || {
                let start = Instant::now();
                while !stop.load(Ordering::Relaxed) && start.elapsed() < UPSTREAM_LIFETIME {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            stream.set_nonblocking(false).unwrap();
                            with_timeouts(&stream);
                            let handler = handler.clone();
                            thread::spawn(move || handler(stream));
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(2))
                        }
                        Err(_) => thread::sleep(Duration::from_millis(2)),
                    }
                }
            })
        };
        Upstream { addr, stop, thread: Some(thread) }
    }

    /// Echoes every byte back; on EOF, shuts down writing after the last byte.
    pub fn echo() -> Upstream {
        Upstream::start(|mut s| {
            let _ = echo_until_eof(&mut s);
        })
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Copies everything read back to the sender until EOF, then shuts down writing.
pub fn echo_until_eof(s: &mut TcpStream) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            s.shutdown(Shutdown::Write)?;
            return Ok(total);
        }
        s.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Reads until EOF (or an error), returning the number of bytes and whether it ended with EOF.
pub fn drain(s: &mut TcpStream) -> (u64, io::Result<()>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (total, Ok(())),
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (total, Err(e)),
        }
    }
}

/// Connects to `addr` from `source` (any port): bind before connect, so that a test can play
/// many clients with distinct source addresses (all of 127/8 is local). Sets [`IO_TIMEOUT`]s.
pub fn connect_from(source: IpAddr, addr: SocketAddr) -> io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.connect_timeout(&addr.into(), Duration::from_secs(5))?;
    let stream = TcpStream::from(socket);
    with_timeouts(&stream);
    Ok(stream)
}

/// Closes `stream` with a reset (SO_LINGER 0, then close) instead of a FIN.
pub fn close_with_reset(stream: TcpStream) {
    socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO)).expect("SO_LINGER 0");
    drop(stream);
}

/// A listener with backlog 0 whose accept queue is full: Linux then drops new SYNs, so a connect
/// to it hangs (no RST) — an upstream that does not answer, without root or firewall rules.
/// Returns it with the connections that fill its queue (keep them), after checking that a probe
/// connect really times out.
pub fn unanswering_upstream() -> (TcpListener, Vec<TcpStream>) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket.bind(&SocketAddr::from((fresh_ip(), 0)).into()).expect("bind");
    socket.listen(0).expect("listen");
    let listener = TcpListener::from(socket);
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(s) => fillers.push(s),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return (listener, fillers),
            Err(e) => panic!("filling the backlog of {addr}: {e}"),
        }
    }
    panic!("could not make a loopback connect hang: {} connections fit in a backlog of 0", fillers.len());
}

/// An echo upstream that also counts the connections it accepted.
pub fn counting_echo_upstream() -> (Upstream, Arc<AtomicU32>) {
    counting_echo_upstream_on(TcpListener::bind("127.0.0.1:0").expect("bind upstream"))
}

/// [`counting_echo_upstream`] on an already bound listener.
pub fn counting_echo_upstream_on(listener: TcpListener) -> (Upstream, Arc<AtomicU32>) {
    let accepted = Arc::new(AtomicU32::new(0));
    let counter = accepted.clone();
    let upstream = Upstream::start_on(listener, move |mut s| {
        counter.fetch_add(1, Ordering::SeqCst);
        let _ = echo_until_eof(&mut s);
    });
    (upstream, accepted)
}

/// True if this machine can bind TCP on ::1.
pub fn ipv6_loopback_available() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

/// How a peer's reading of a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// A clean EOF (the other side's FIN).
    Eof,
    /// A reset (ECONNRESET or ECONNABORTED).
    Reset,
}

/// Reads until EOF or a reset, returning the bytes and how it ended; panics on any other error
/// (a timeout: the relay left the stream hanging).
pub fn read_to_ending(s: &mut TcpStream) -> (Vec<u8>, StreamEnd) {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, StreamEnd::Eof),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_reset(&e) => return (got, StreamEnd::Reset),
            Err(e) => panic!("reading after {} bytes: {e}", got.len()),
        }
    }
}

/// Sends one byte as TCP urgent data (`MSG_OOB`).
pub fn send_urgent(s: &TcpStream, byte: u8) {
    socket2::SockRef::from(s).send_out_of_band(&[byte]).expect("send MSG_OOB");
}

/// Whether the next inline read of `s` starts at its urgent mark (`sockatmark(3)`).
pub fn at_urgent_mark(s: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut at_mark: libc::c_int = 0;
    // SAFETY: SIOCATMARK (0x8905 on Linux) writes one int through a pointer to a live c_int.
    let rc = unsafe { libc::ioctl(s.as_raw_fd(), 0x8905, &mut at_mark as *mut libc::c_int) };
    assert_eq!(rc, 0, "SIOCATMARK: {}", io::Error::last_os_error());
    at_mark != 0
}

/// Takes the urgent byte out of band (`recv(MSG_OOB)`), if one is waiting.
pub fn recv_urgent(s: &TcpStream) -> io::Result<u8> {
    use std::os::fd::AsRawFd;
    let mut byte = [0u8];
    nix::sys::socket::recv(s.as_raw_fd(), &mut byte, nix::sys::socket::MsgFlags::MSG_OOB)?;
    Ok(byte[0])
}

/// Waits (up to `timeout`) until an urgent byte has arrived on `s`, without taking it.
pub fn wait_urgent(s: &TcpStream, timeout: Duration) -> bool {
    use nix::sys::socket::{recv, MsgFlags};
    use std::os::fd::AsRawFd;
    let peek = || recv(s.as_raw_fd(), &mut [0u8], MsgFlags::MSG_OOB | MsgFlags::MSG_PEEK).ok();
    super::wait_for(timeout, peek).is_some()
}

/// Reads `s` inline until EOF or a reset, taking urgent bytes out of band where their mark is:
/// returns the inline bytes, each urgent byte with the inline offset of its mark, and the end.
pub fn read_with_urgent(s: &mut TcpStream) -> (Vec<u8>, Vec<(usize, u8)>, StreamEnd) {
    let mut got = Vec::new();
    let mut urgent = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..1_000_000 {
        if at_urgent_mark(s) {
            if let Ok(byte) = recv_urgent(s) {
                urgent.push((got.len(), byte));
            }
        }
        match s.read(&mut buf) {
            Ok(0) => return (got, urgent, StreamEnd::Eof),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_reset(&e) => return (got, urgent, StreamEnd::Reset),
            Err(e) => panic!("reading after {} bytes: {e}", got.len()),
        }
    }
    panic!("a million reads without an end");
}
