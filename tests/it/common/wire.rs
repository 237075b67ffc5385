//! A client socket's own view of the wire, from the kernel (`TCP_INFO`): how many bytes have
//! arrived, whether the peer has ended the connection; and a client whose receive buffer has a
//! chosen size (the kernel opens the window in steps of it, so it sets how often bytes move on
//! the wire for a reader that reads slowly).

use std::mem::{size_of, MaybeUninit};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use super::with_timeouts;

/// What a TCP socket's kernel says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireView {
    /// Bytes received from the peer (read by the application or not).
    pub received: u64,
    /// The peer's FIN or reset has arrived.
    pub ended: bool,
}

/// `TCP_INFO` of `stream`: panics if the kernel will not say.
pub fn wire_view(stream: &TcpStream) -> WireView {
    let mut info = MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a writable, zeroed `tcp_info` of `len` bytes that outlives the call.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    // SAFETY: zeroed, then filled by the kernel; a `tcp_info` is integers only.
    let info = unsafe { info.assume_init() };
    // TCP_CLOSE_WAIT (the peer's FIN) and TCP_CLOSE (a reset, or both FINs).
    WireView { received: info.tcpi_bytes_received, ended: matches!(info.tcpi_state, 7 | 8) }
}

/// Connects to `addr` with a receive buffer of `bytes` (set before the handshake, so that the
/// window scale fits it; the kernel doubles the figure for its bookkeeping). Sets the
/// [`IO_TIMEOUT`](super::IO_TIMEOUT)s.
pub fn connect_with_receive_buffer(addr: SocketAddr, bytes: usize) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
    socket
        .connect_timeout(&addr.into(), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let stream = TcpStream::from(socket);
    with_timeouts(&stream);
    stream
}
