//! What a scrape reads: every family of the text exposition (version 0.0.4), written with
//! [`super::exposition`] from the counters and from the process.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::exposition::{Exposition, Seconds};
use super::{reason_slot, ListenerMetrics, Metrics, CLOSES, LIFETIME_BUCKETS, SHOWN};
use crate::observe::Cause;

/// What a scrape reads from the process rather than from counters.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Process {
    pub(super) open_fds: Option<u64>,
    pub(super) max_fds: Option<u64>,
}

impl Process {
    fn read() -> Process {
        // The listing holds a descriptor of its own while it runs: not one of ours.
        let open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count().saturating_sub(1) as u64);
        let max_fds = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .ok()
            .map(|(soft, _hard)| soft);
        Process { open_fds, max_fds }
    }
}

impl Metrics {
    /// The Prometheus text exposition (version 0.0.4) of everything, with the process-wide
    /// numbers read now.
    pub fn render(&self) -> String {
        self.render_with(Process::read())
    }

    pub(super) fn render_with(&self, process: Process) -> String {
        let listeners = self.inner.listeners.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut out = Exposition { text: String::with_capacity(2048 + 4096 * listeners.len()), family: "" };
        let ls = &listeners[..];
        out.per_listener(
            ls,
            "idlereaper_connections_accepted_total",
            "counter",
            "Connections admitted.",
            |o, l| o.sample("", &[l.label()], l.accepted.load(Relaxed)),
        );
        out.per_listener(ls, "idlereaper_connections_active", "gauge", "Connections open now.", |o, l| {
            o.sample("", &[l.label()], l.active.load(Relaxed))
        });
        let help = "Connections closed, by reason (the reason of the close log line).";
        out.per_listener(ls, "idlereaper_connections_closed_total", "counter", help, |o, l| {
            l.reasons(o, &l.closed, 0..CLOSES)
        });
        let help = "Clients closed at accept, by reason (limit, per_ip_limit, denied, out_of_descriptors).";
        out.per_listener(ls, "idlereaper_connections_refused_total", "counter", help, |o, l| {
            l.reasons(o, &l.refused, CLOSES..SHOWN.len())
        });
        let help =
            "Connections a protocol observer stopped following (byte idleness from then on), by cause.";
        out.per_listener(ls, "idlereaper_protocol_opaque_total", "counter", help, |o, l| {
            for cause in Cause::ALL {
                o.sample("", &[l.label(), ("cause", cause.as_str())], l.opaque[cause.index()].load(Relaxed));
            }
        });
        let help = "Upstream connections that failed or timed out.";
        out.per_listener(ls, "idlereaper_upstream_connect_errors_total", "counter", help, |o, l| {
            o.sample("", &[l.label()], l.upstream_connect_errors.load(Relaxed))
        });
        out.per_listener(ls, "idlereaper_bytes_total", "counter", "Bytes relayed, by direction.", |o, l| {
            for (direction, n) in
                [("from_client", &l.bytes_from_client), ("from_upstream", &l.bytes_from_upstream)]
            {
                o.sample("", &[l.label(), ("direction", direction)], n.load(Relaxed));
            }
        });
        let help = "Time from accept to close of closed connections.";
        out.per_listener(ls, "idlereaper_connection_lifetime_seconds", "histogram", help, |o, l| {
            l.histogram(o)
        });

        let i = &self.inner;
        out.family("idlereaper_timers", "gauge", "Timers live in the timing wheels of all workers.");
        out.sample("", &[], i.timers.iter().map(|t| t.load(Relaxed)).sum::<u64>());
        out.family("idlereaper_reloads_total", "counter", "Configuration reloads, by result.");
        out.sample("", &[("result", "success")], i.reloads_ok.load(Relaxed));
        out.sample("", &[("result", "failure")], i.reloads_failed.load(Relaxed));
        out.family("idlereaper_upgrades_total", "counter", "Live upgrades (SIGUSR2), by result.");
        out.sample("", &[("result", "success")], i.upgrades_ok.load(Relaxed));
        out.sample("", &[("result", "refused")], i.upgrades_refused.load(Relaxed));
        out.sample("", &[("result", "failed")], i.upgrades_failed.load(Relaxed));
        if let Some(n) = process.open_fds {
            out.family("idlereaper_open_fds", "gauge", "Open file descriptors.");
            out.sample("", &[], n);
        }
        if let Some(n) = process.max_fds {
            out.family("idlereaper_max_fds", "gauge", "Most file descriptors the process may open.");
            out.sample("", &[], n);
        }
        out.family("idlereaper_build_info", "gauge", "Always 1; the version of idlereaper is a label.");
        out.sample("", &[("version", env!("CARGO_PKG_VERSION"))], 1);
        out.family(
            "idlereaper_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch.",
        );
        out.sample("", &[], Seconds(i.started));
        out.text
    }
}

impl ListenerMetrics {
    fn label(&self) -> (&'static str, &str) {
        ("listener", &self.name)
    }

    /// One sample per reason of `SHOWN[expected]`, and one for any other reason counted here.
    fn reasons(&self, out: &mut Exposition, counts: &[AtomicU64], expected: std::ops::Range<usize>) {
        for (shown, reason) in SHOWN.iter().enumerate() {
            let n = counts[reason_slot(*reason)].load(Relaxed);
            if expected.contains(&shown) || n > 0 {
                out.sample("", &[self.label(), ("reason", reason.as_str())], n);
            }
        }
    }

    /// Cumulative `_bucket`s, `_sum` and `_count`, the count being the `+Inf` bucket.
    fn histogram(&self, out: &mut Exposition) {
        let mut cumulative = 0;
        for (i, &(_, le)) in LIFETIME_BUCKETS.iter().enumerate() {
            cumulative += self.lifetimes[i].load(Relaxed);
            out.sample("_bucket", &[self.label(), ("le", le)], cumulative);
        }
        cumulative += self.lifetimes[LIFETIME_BUCKETS.len()].load(Relaxed);
        out.sample("_bucket", &[self.label(), ("le", "+Inf")], cumulative);
        let sum = Seconds(Duration::from_micros(self.lifetime_micros.load(Relaxed)));
        out.sample("_sum", &[self.label()], sum);
        out.sample("_count", &[self.label()], cumulative);
    }
}
