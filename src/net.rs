//! Socket set-up that std and mio do not offer: listening sockets with a real backlog (mio's
//! `bind` uses 128, too small for a burst of clients; the kernel caps ours at `somaxconn`) and
//! `SO_REUSEPORT` for workers.

use std::io;
use std::net::SocketAddr;

use mio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};

/// Listen backlog requested; Linux silently caps it at `net.core.somaxconn` (4096 by default).
pub const BACKLOG: i32 = 4096;

/// A non-blocking, close-on-exec listening socket on `addr` with `SO_REUSEADDR`, and with
/// `SO_REUSEPORT` when several workers each bind their own socket to the same address.
/// `TCP_NODELAY` is set here once: Linux copies it to every accepted socket, which saves a
/// `setsockopt` per connection.
pub fn listen(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        // `[::]:port` means IPv6 only, so that `0.0.0.0:port` can be a listener of its own.
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listens_on_an_ephemeral_port_and_accepts() {
        let listener = listen("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        // Non-blocking: the connection is there, or WouldBlock; never a hang.
        for _ in 0..1000 {
            match listener.accept() {
                Ok((stream, _)) => {
                    assert!(stream.nodelay().unwrap(), "accepted sockets inherit TCP_NODELAY");
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("accept: {e}"),
            }
        }
        panic!("no connection accepted");
    }
}
