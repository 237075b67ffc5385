//! What an observed connection says last, as the daemon closes it: the protocol's own goodbye
//! (`observe::Farewell`), written after every byte relayed to each peer and only where the
//! observer vouched that the stream stands between two messages.

use super::Conn;
use crate::observe::Farewell;
use crate::side::Side;

impl Conn {
    /// Writes what a closing observed connection says last, each part only to a peer that is
    /// not being reset (`abort`, `[client, upstream]`) and that the daemon holds no byte for
    /// (so it comes after everything relayed to it, at a message boundary the observer vouched
    /// for), and only if its socket takes it at once. Returns the peers that took part of it
    /// only: a cut message must end in a reset, not a FIN.
    pub fn farewell(&mut self, farewell: &Farewell, abort: [bool; 2]) -> [bool; 2] {
        let mut cut = [false; 2];
        let parts = [(Side::Client, farewell.to_client), (Side::Upstream, farewell.to_server)];
        for (side, bytes) in parts {
            let Some(bytes) = bytes.filter(|_| !abort[side.index()]) else { continue };
            let (socket, half) = match side {
                Side::Client => (Some(&mut self.client), &self.to_client),
                Side::Upstream => (self.upstream.as_mut(), &self.to_upstream),
            };
            let Some(socket) = socket.filter(|_| !half.holds_bytes() && !half.write_shut) else { continue };
            match std::io::Write::write(&mut socket.stream, bytes) {
                Ok(n) if n < bytes.len() && n > 0 => cut[side.index()] = true,
                _ => {}
            }
        }
        cut
    }
}
