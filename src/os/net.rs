//! Socket set-up that std and mio do not offer: listening sockets with a real backlog (mio's
//! `bind` uses 128, too small for a burst of clients; the kernel caps ours at `somaxconn`) and
//! `SO_REUSEPORT` for workers; the tuning of accepted and upstream sockets; and what to do when
//! descriptors run out.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::{debug, error, warn};
use mio::net::{TcpListener, TcpStream, UnixListener};
use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, TcpKeepalive, Type};

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

/// A listening Unix stream socket at `path`, non-blocking and close-on-exec, with the real
/// backlog, its file given `mode` and, when set, `owner` (uid, gid; the daemon's user and group,
/// while it is still root). A stale socket file (one nobody listens on) is replaced; any other
/// file at `path` is an error and is left alone. The file is removed when the returned guard's
/// last handle goes (see [`UnixPath`]).
pub fn listen_unix(
    path: &Path,
    mode: u32,
    owner: Option<(u32, u32)>,
) -> io::Result<(UnixListener, UnixPath)> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(io::ErrorKind::AddrInUse, "a process listens on this socket"))
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path)?,
            Err(e) => return Err(e),
        },
        Ok(_) => {
            let msg = "a file that is not a socket is there (not removed)";
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, msg));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::unix(path)?)?;
    let guard = UnixPath::adopt(path.to_owned());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    }
    socket.listen(BACKLOG)?;
    Ok((UnixListener::from_std(socket.into()), guard))
}

/// The socket file of a Unix listener: removed when the last clone is dropped (the listener is
/// closed on stop, or removed by a reload). A reload that keeps the listener keeps the file. A
/// file that cannot be removed (a directory the daemon's user may not write to) is left in
/// place with a warning that names it, as the pidfile is; the next start replaces it.
#[derive(Debug, Clone)]
pub struct UnixPath {
    path: Arc<PathBuf>,
    /// What the file is, for the warning.
    what: &'static str,
}

impl UnixPath {
    /// The socket file of a listener a live upgrade handed over: removed as if bound here.
    pub fn adopt(path: PathBuf) -> UnixPath {
        UnixPath { path: Arc::new(path), what: "socket file" }
    }

    /// The same file, called `what` in the warning if it cannot be removed.
    pub fn named(mut self, what: &'static str) -> UnixPath {
        self.what = what;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for UnixPath {
    fn drop(&mut self) {
        if Arc::strong_count(&self.path) == 1 {
            match std::fs::remove_file(&*self.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    debug!("{} {} is gone already", self.what, self.path.display())
                }
                Err(e) => warn!("cannot remove {} {}: {e}; left it in place", self.what, self.path.display()),
            }
        }
    }
}

/// How long accepting stops after an accept error that retrying at once cannot clear (the
/// listeners' and the metrics endpoint's).
pub(crate) const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Whether an accept error means the process or system is out of descriptors or memory: then
/// accepting must pause instead of retrying at once.
pub(crate) fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}

/// Opens the reserve descriptor that lets a worker out of descriptors still take a waiting
/// client off the backlog to close it; `None` if even that fails (accepting then only pauses).
pub(crate) fn open_spare() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").map_err(|e| error!("cannot open reserve descriptor: {e}")).ok()
}

/// No Nagle delay on an upstream socket (the relay forwards what it has at once; client sockets
/// inherit `TCP_NODELAY` from their listener, see [`listen`]), then [`tune_tcp`].
pub(crate) fn tune_upstream(stream: &TcpStream, keepalive: Option<Duration>, user_timeout: Option<Duration>) {
    let _ = stream.set_nodelay(true);
    tune_tcp(stream, keepalive, user_timeout);
}

/// Keepalive probes after `keepalive` idle, every quarter of it, four times, if set; and
/// `TCP_USER_TIMEOUT`, if set: a peer that leaves bytes unacknowledged that long is dropped.
pub(crate) fn tune_tcp(stream: &TcpStream, keepalive: Option<Duration>, user_timeout: Option<Duration>) {
    if let Some(idle) = keepalive {
        let interval = (idle / 4).max(Duration::from_secs(1));
        let params = TcpKeepalive::new().with_time(idle).with_interval(interval).with_retries(4);
        if let Err(e) = SockRef::from(stream).set_tcp_keepalive(&params) {
            debug!("tcp_keepalive: {e}");
        }
    }
    if let Some(timeout) = user_timeout {
        if let Err(e) = SockRef::from(stream).set_tcp_user_timeout(Some(timeout)) {
            debug!("tcp_user_timeout: {e}");
        }
    }
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
