//! What the metrics endpoint's `/healthz` and `/readyz` learn from the supervisor: whether a
//! graceful stop has begun, how to wake the workers, and which of them have ended.

use super::{broadcast, Threads};
use crate::metrics::health::Vitals;
use crate::worker::Command;

/// The supervisor's side of the probes, for one turn of its loop.
pub(super) struct Probed<'a> {
    pub(super) stopping: bool,
    pub(super) threads: &'a Threads,
}

impl Vitals for Probed<'_> {
    fn ready(&self) -> bool {
        !self.stopping
    }

    fn wake_loops(&self) {
        broadcast(&self.threads.remotes, || Command::Ping);
    }

    /// A worker's thread that has finished (its connections drained after a stop); one the
    /// supervisor does not know of counts as ended too.
    fn loop_ended(&self, worker: usize) -> bool {
        self.threads.handles.get(worker).is_none_or(|h| h.is_finished())
    }
}
