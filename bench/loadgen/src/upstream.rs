//! The upstream server the benchmarks put behind every relay: echo or discard, one mio loop.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Echo,
    Discard,
}

const LISTENER: Token = Token(usize::MAX);

struct Peer {
    stream: TcpStream,
    /// Echo bytes not yet written back.
    pending: Vec<u8>,
}

/// Serves until killed.
pub fn serve(listen: SocketAddr, mode: Mode) -> io::Result<String> {
    let mut poll = Poll::new()?;
    let mut listener = idlereaper::os::net::listen(listen, false)?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut peers: Slab<Peer> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match poll.poll(&mut events, None) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => r?,
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            let entry = peers.vacant_entry();
                            let interest = Interest::READABLE | Interest::WRITABLE;
                            poll.registry().register(&mut stream, Token(entry.key()), interest)?;
                            entry.insert(Peer { stream, pending: Vec::new() });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            eprintln!("loadgen upstream: accept: {e}");
                            break;
                        }
                    }
                }
                continue;
            }
            let key = event.token().0;
            let Some(peer) = peers.get_mut(key) else { continue };
            if !drive(peer, mode, &mut buf) {
                let mut peer = peers.remove(key);
                let _ = poll.registry().deregister(&mut peer.stream);
            }
        }
    }
}

/// Reads until WouldBlock, echoing or discarding; false when the peer is finished.
fn drive(peer: &mut Peer, mode: Mode, buf: &mut [u8]) -> bool {
    if !flush(peer) {
        return false;
    }
    loop {
        if !peer.pending.is_empty() {
            return true; // wait for writable before reading more
        }
        match peer.stream.read(buf) {
            Ok(0) => return false,
            Ok(n) => {
                if mode == Mode::Echo {
                    peer.pending.extend_from_slice(&buf[..n]);
                    if !flush(peer) {
                        return false;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

fn flush(peer: &mut Peer) -> bool {
    while !peer.pending.is_empty() {
        match peer.stream.write(&peer.pending) {
            Ok(n) => {
                peer.pending.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}
