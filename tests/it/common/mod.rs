//! The harness shared by the integration tests: the real `idlereaper` binary started in a temp
//! directory and stopped with real signals, its log parsed, in-process upstream servers, loopback
//! addresses that parallel tests do not share, a reproducible byte stream to check relayed data
//! against, scripted peers that record what they observed, real services (Redis, PostgreSQL)
//! started for a test and reached through the daemon in each address form, a client's own view
//! of the wire (`TCP_INFO`), network namespaces a test makes, joined by a veth link, and what
//! live upgrades are tested with (a binary to replace, traffic to keep busy).
//!
//! Rules every test follows: no fixed sleep for readiness (wait for a condition, with a deadline);
//! every loop bounded in count and time; every socket with read and write timeouts, so that a bug
//! fails a test instead of hanging it; only loopback addresses, or network namespaces the test
//! made itself ([`NetnsPair`]: unique names, removed on drop); a test that cannot run here says
//! so with [`skip`] or [`require_program`] (which fails it in CI), never by returning silently.

mod bytes;
mod cli;
mod ctl;
mod daemon;
mod load;
mod log;
mod net;
mod netns;
mod peer;
mod pgwire;
mod postgres;
mod redis;
mod routes;
mod scrape;
mod services;
mod skip;
mod upgrade;
mod wire;

pub use {
    bytes::*, cli::*, ctl::*, daemon::*, load::*, log::*, net::*, netns::*, peer::*, pgwire::*, postgres::*,
    redis::*, routes::*, scrape::*, services::*, skip::*, upgrade::*, wire::*,
};

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_idlereaper");
/// Read/write timeout of every test socket: long enough for a loaded CI machine, short enough
/// that a stuck relay fails the test in seconds.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the daemon may take to become ready.
pub const START_DEADLINE: Duration = Duration::from_secs(10);
/// Polling interval of every wait loop.
pub const POLL: Duration = Duration::from_millis(10);

/// Polls `check` every [`POLL`] until it returns `Some`, or `None` once `timeout` has passed.
pub fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    let max_rounds = timeout.as_millis() / POLL.as_millis() + 2;
    for _ in 0..max_rounds {
        if let Some(v) = check() {
            return Some(v);
        }
        if start.elapsed() >= timeout {
            break;
        }
        thread::sleep(POLL);
    }
    check()
}

/// Holds a thread (an upstream handler, say) until `go` is set, for at most `limit`.
pub fn hold_until(go: &AtomicBool, limit: Duration) {
    let start = Instant::now();
    while !go.load(Ordering::SeqCst) && start.elapsed() < limit {
        thread::sleep(Duration::from_millis(5));
    }
}
