//! What a scrape reads: every family of the text exposition (version 0.0.4), written with
//! [`super::exposition`] from the counters and, for the `process_*` family, from the process
//! ([`super::process`]).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::exposition::{Exposition, Seconds};
use super::process::Process;
use super::{reason_index, ListenerMetrics, Metrics, CLOSES, LIFETIME_BUCKETS, SHOWN};
use crate::observe::Cause;

/// Every family a scrape can show, in the order it shows them. With at least one listener and
/// every process reading at hand a scrape shows each of them (a unit test holds the renderer to
/// this list); without listeners the per-listener ones are left out, and a process reading that
/// cannot be taken leaves its family out. The documentation, the packaged alerting rules and
/// the dashboard are checked against it.
pub const FAMILIES: [&str; 19] = [
    "idlereaper_connections_accepted_total",
    "idlereaper_connections_active",
    "idlereaper_connections_closed_total",
    "idlereaper_connections_refused_total",
    "idlereaper_protocol_opaque_total",
    "idlereaper_upstream_connect_errors_total",
    "idlereaper_upstream_up",
    "idlereaper_relayed_bytes_total",
    "idlereaper_connection_lifetime_seconds",
    "idlereaper_timers",
    "idlereaper_reloads_total",
    "idlereaper_upgrades_total",
    "idlereaper_build_info",
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_virtual_memory_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
];

impl Metrics {
    /// The Prometheus text exposition (version 0.0.4) of everything, with the process-wide
    /// numbers read now.
    pub fn render(&self) -> String {
        self.render_with(Process::read())
    }

    pub(super) fn render_with(&self, process: Process) -> String {
        let listeners = self.inner.listeners.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut out = Exposition {
            text: String::with_capacity(2048 + 4096 * listeners.len()),
            family: "",
            families: &FAMILIES,
        };
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
        let help = "Whether new connections go to the upstream address: 1 up, 0 disabled or in backoff after a failed connect.";
        let now = std::time::Instant::now();
        out.per_listener(ls, "idlereaper_upstream_up", "gauge", help, |o, l| {
            for row in l.upstreams().map_or(Vec::new(), |u| u.rows(now)) {
                o.sample("", &[l.label(), ("upstream", &row.address)], u8::from(row.state == "up"));
            }
        });
        let help = "Bytes relayed, by direction.";
        out.per_listener(ls, "idlereaper_relayed_bytes_total", "counter", help, |o, l| {
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
        out.family("idlereaper_build_info", "gauge", "Always 1; the version of idlereaper is a label.");
        out.sample("", &[("version", env!("CARGO_PKG_VERSION"))], 1);
        out.process(&process, i.started);
        out.text
    }
}

impl Exposition {
    /// The `process_*` family, with the names, types and help texts of the Prometheus client
    /// libraries' process collector; `started` is since the Unix epoch.
    fn process(&mut self, process: &Process, started: Duration) {
        if let Some(cpu) = process.cpu {
            self.family(
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
            );
            self.sample("", &[], Seconds(cpu));
        }
        let gauges = [
            ("process_open_fds", "Number of open file descriptors.", process.open_fds),
            ("process_max_fds", "Maximum number of open file descriptors.", process.max_fds),
            ("process_virtual_memory_bytes", "Virtual memory size in bytes.", process.virtual_bytes),
            ("process_resident_memory_bytes", "Resident memory size in bytes.", process.resident_bytes),
        ];
        for (name, help, value) in gauges {
            if let Some(n) = value {
                self.family(name, "gauge", help);
                self.sample("", &[], n);
            }
        }
        self.family(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
        );
        self.sample("", &[], Seconds(started));
    }
}

impl ListenerMetrics {
    fn label(&self) -> (&'static str, &str) {
        ("listener", &self.name)
    }

    /// One sample per reason of `SHOWN[expected]`, and one for any other reason counted here.
    fn reasons(&self, out: &mut Exposition, counts: &[AtomicU64], expected: std::ops::Range<usize>) {
        for (shown, reason) in SHOWN.iter().enumerate() {
            let n = counts[reason_index(*reason)].load(Relaxed);
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
