//! A live upgrade, the connection's side: the state machine given up with both sockets and
//! every byte it holds, and taken over again in the new image.

use std::io;

use super::{Conn, State};
use crate::buffer::Pool;
use crate::handover::state::RelayState;
use crate::observe::Observer;
use crate::os::pipe::PipePool;
use crate::relay::{Half, Socket};
use crate::side::Side;

impl Conn {
    /// Gives up the connection for a live upgrade: both sockets open, every byte it holds, and
    /// where the state machine stood.
    pub fn freeze(self, pool: &mut Pool, pipes: &mut PipePool) -> RelayState {
        let Conn { client, upstream, state, mut to_upstream, mut to_client, first_fin, preamble, observer } =
            self;
        RelayState {
            phase: match state {
                State::Connecting => 0,
                State::Relaying => 1,
                State::Sink => 2,
            },
            client: client.freeze(),
            upstream: upstream.map(Socket::freeze),
            to_upstream: to_upstream.freeze(pool, pipes),
            to_client: to_client.freeze(pool, pipes),
            first_fin: first_fin.map(|side| side.index() as u8),
            preamble: preamble.map(Vec::from),
            observer: observer.map(|o| o.to_bytes()),
        }
    }

    /// The connection a live upgrade handed over, as the old image left it.
    pub fn thaw(r: &RelayState, pool: &mut Pool, pipes: &mut PipePool) -> io::Result<Conn> {
        let state = match (r.phase, &r.upstream) {
            (0, Some(_)) => State::Connecting,
            (1, Some(_)) => State::Relaying,
            (2, None) => State::Sink,
            _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "a relay without an upstream")),
        };
        let mut conn = Conn {
            client: Socket::thaw(&r.client)?,
            upstream: r.upstream.as_ref().map(Socket::thaw).transpose()?,
            state,
            to_upstream: Half::default(),
            to_client: Half::default(),
            first_fin: r.first_fin.map(|i| if i == 0 { Side::Client } else { Side::Upstream }),
            preamble: r.preamble.as_deref().map(Box::from),
            observer: r.observer.as_deref().and_then(Observer::from_bytes),
        };
        conn.to_upstream = Half::thaw(&r.to_upstream, pool, pipes)?;
        match Half::thaw(&r.to_client, pool, pipes) {
            Ok(half) => conn.to_client = half,
            Err(e) => {
                conn.release(pool, pipes);
                return Err(e);
            }
        }
        Ok(conn)
    }
}
