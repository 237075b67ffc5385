//! Signals as a closed enum, delivered through a self-pipe that the event loop polls like any
//! socket (signal-hook-mio), so no work happens in a signal handler.

use std::io;

use nix::sys::signal::{SigSet, SigmaskHow, Signal as Raw};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};

/// What a signal asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// TERM or INT: stop gracefully; a second one stops at once.
    Stop,
    /// HUP: reload the configuration.
    Reload,
    /// USR1: reopen the log file and log a statistics line.
    Stats,
    /// USR2: upgrade to the binary on disk, in the same process (live handover).
    Upgrade,
}

/// The signals the daemon handles (also blocked in a live upgrade's guardian).
pub const HANDLED: [i32; 5] = [SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2];

fn handled_set() -> SigSet {
    let mut set = SigSet::empty();
    for raw in HANDLED {
        if let Ok(signal) = Raw::try_from(raw) {
            set.add(signal);
        }
    }
    set
}

/// Blocks the handled signals in the calling thread: every thread but the supervisor's does
/// this, so that the supervisor alone receives them, and the supervisor does it before a live
/// upgrade's `execve`, so that a signal sent meanwhile stays pending for the new image (the
/// mask and the pending set survive the exec).
pub fn block() {
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&handled_set()), None);
}

/// Undoes [`block`] (once the handlers are installed): what is pending is delivered now.
pub fn unblock() {
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&handled_set()), None);
}

impl Signal {
    fn from_raw(raw: i32) -> Option<Signal> {
        match raw {
            SIGTERM | SIGINT => Some(Signal::Stop),
            SIGHUP => Some(Signal::Reload),
            SIGUSR1 => Some(Signal::Stats),
            SIGUSR2 => Some(Signal::Upgrade),
            _ => None,
        }
    }
}

/// The signals the daemon handles, as a pollable source.
pub struct Signals(signal_hook_mio::v1_0::Signals);

impl Signals {
    /// Installs the handlers. From here on these signals no longer have their default action.
    pub fn new() -> io::Result<Signals> {
        signal_hook_mio::v1_0::Signals::new(HANDLED).map(Signals)
    }

    /// The source to register with the poll (readable when a signal has arrived).
    pub fn source(&mut self) -> &mut signal_hook_mio::v1_0::Signals {
        &mut self.0
    }

    /// The signals that arrived since the last call, in order.
    pub fn pending(&mut self) -> impl Iterator<Item = Signal> + '_ {
        self.0.pending().filter_map(Signal::from_raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_handled_signal_maps_to_its_action() {
        assert_eq!(Signal::from_raw(SIGTERM), Some(Signal::Stop));
        assert_eq!(Signal::from_raw(SIGINT), Some(Signal::Stop));
        assert_eq!(Signal::from_raw(SIGHUP), Some(Signal::Reload));
        assert_eq!(Signal::from_raw(SIGUSR1), Some(Signal::Stats));
        assert_eq!(Signal::from_raw(SIGUSR2), Some(Signal::Upgrade));
        assert_eq!(Signal::from_raw(signal_hook::consts::SIGWINCH), None);
    }
}
