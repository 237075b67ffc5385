//! Tests of the exposition text: every family, exactly, and the counters behind it.

use std::sync::Arc;
use std::time::Duration;

use super::exposition::Seconds;
use super::process::Process;
use super::render::FAMILIES;
use super::*;

#[test]
fn reason_indices_match_the_list() {
    for (index, reason) in REASONS.iter().enumerate() {
        assert_eq!(reason_index(*reason), index, "{reason}");
    }
    let refusal = |r: &CloseReason| {
        matches!(
            r,
            CloseReason::Limit
                | CloseReason::PerIpLimit
                | CloseReason::Denied
                | CloseReason::OutOfDescriptors
        )
    };
    assert!(SHOWN[CLOSES..].iter().all(refusal) && !SHOWN[..CLOSES].iter().any(refusal));
    let mut shown = SHOWN.map(reason_index);
    shown.sort_unstable();
    assert_eq!(shown.to_vec(), (0..REASONS.len()).collect::<Vec<_>>(), "every reason shown once");
}

#[test]
fn seconds_are_exact() {
    let s = |d: Duration| Seconds(d).to_string();
    assert_eq!(s(Duration::ZERO), "0");
    assert_eq!(s(Duration::from_secs(3600)), "3600");
    assert_eq!(s(Duration::from_millis(1500)), "1.5");
    assert_eq!(s(Duration::from_micros(1)), "0.000001");
    assert_eq!(s(Duration::from_nanos(999)), "0"); // below the microsecond
    assert_eq!(s(Duration::from_millis(1_700_000_000_250)), "1700000000.25");
}

/// Process readings with every number at hand.
fn every_reading() -> Process {
    Process {
        cpu: Some(Duration::from_millis(12_340)),
        resident_bytes: Some(4 << 20),
        virtual_bytes: Some(20 << 20),
        open_fds: Some(12),
        max_fds: Some(1024),
    }
}

/// The families of an exposition, in order, from its `# TYPE` lines.
fn families_of(text: &str) -> Vec<&str> {
    text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect()
}

#[test]
fn a_scrape_shows_every_family_of_the_list_and_no_other() {
    let metrics = Metrics::new(1);
    metrics.set_listeners(vec![ListenerMetrics::new("a")]);
    assert_eq!(families_of(&metrics.render_with(every_reading())), FAMILIES);
    // Without listeners, the process-wide families only; without readings, fewer of those.
    let bare = Metrics::new(1).render_with(Process::default());
    let process_wide = ["idlereaper_timers", "idlereaper_reloads_total", "idlereaper_upgrades_total"];
    let expected = [&process_wide[..], &["idlereaper_build_info", "process_start_time_seconds"]].concat();
    assert_eq!(families_of(&bare), expected);
}

/// Metrics after a small workload on one listener, `relay`, with two workers, and the relay's
/// upstreams, which a scrape shows while they are in force (the counters hold them weakly).
fn one_listener_workload() -> (Metrics, Arc<crate::upstream::Upstreams>) {
    let metrics = Metrics::started_at(2, Duration::from_millis(1_700_000_000_250));
    let relay = ListenerMetrics::new("relay");
    metrics.set_listeners(vec![Arc::clone(&relay)]);
    let file = "[[listener]]\nname = \"relay\"\nlisten = \"127.0.0.1:7000\"\n\
                upstream = [\"127.0.0.1:7001\", \"127.0.0.1:7002\"]\nidle_timeout = \"1m\"\n";
    let config = crate::config::Config::parse(file, std::path::Path::new("relay.toml")).unwrap();
    let upstreams = Arc::new(crate::upstream::Upstreams::resolve(&config.listeners[0]).unwrap());
    let drained = crate::upstream::Target::parse("127.0.0.1:7002").unwrap();
    upstreams.health().set_disabled(&[drained], true);
    relay.set_upstreams(Some(&upstreams));
    for _ in 0..4 {
        relay.accepted();
        relay.active_add(1);
    }
    relay.closed(CloseReason::ClientClosed, Duration::from_millis(10)); // le 0.01: bounds are inclusive
    relay.closed(CloseReason::ClientClosed, Duration::from_micros(10_001));
    relay.closed(CloseReason::Idle, Duration::from_millis(2500));
    relay.active_add(-3);
    relay.refused(CloseReason::PerIpLimit);
    relay.upstream_connect_error();
    relay.bytes(100, 2000);
    relay.bytes(0, 48);
    metrics.set_worker(0, 4, 1);
    metrics.set_worker(1, 3, 0);
    metrics.reload(true);
    metrics.reload(false);
    metrics.reload(false);
    (metrics, upstreams)
}

/// The families of the listener `relay` after [`one_listener_workload`], as a scrape shows them.
const RELAY_FAMILIES: &str = r#"# HELP idlereaper_connections_accepted_total Connections admitted.
# TYPE idlereaper_connections_accepted_total counter
idlereaper_connections_accepted_total{listener="relay"} 4
# HELP idlereaper_connections_active Connections open now.
# TYPE idlereaper_connections_active gauge
idlereaper_connections_active{listener="relay"} 1
# HELP idlereaper_connections_closed_total Connections closed, by reason (the reason of the close log line).
# TYPE idlereaper_connections_closed_total counter
idlereaper_connections_closed_total{listener="relay",reason="client_closed"} 2
idlereaper_connections_closed_total{listener="relay",reason="upstream_closed"} 0
idlereaper_connections_closed_total{listener="relay",reason="client_reset"} 0
idlereaper_connections_closed_total{listener="relay",reason="upstream_reset"} 0
idlereaper_connections_closed_total{listener="relay",reason="idle"} 1
idlereaper_connections_closed_total{listener="relay",reason="idle_in_transaction"} 0
idlereaper_connections_closed_total{listener="relay",reason="subscriber_idle"} 0
idlereaper_connections_closed_total{listener="relay",reason="max_lifetime"} 0
idlereaper_connections_closed_total{listener="relay",reason="half_close_timeout"} 0
idlereaper_connections_closed_total{listener="relay",reason="connect_timeout"} 0
idlereaper_connections_closed_total{listener="relay",reason="upstream_refused"} 0
idlereaper_connections_closed_total{listener="relay",reason="error"} 0
idlereaper_connections_closed_total{listener="relay",reason="shutdown"} 0
idlereaper_connections_closed_total{listener="relay",reason="killed"} 0
# HELP idlereaper_connections_refused_total Clients closed at accept, by reason (limit, per_ip_limit, denied, out_of_descriptors).
# TYPE idlereaper_connections_refused_total counter
idlereaper_connections_refused_total{listener="relay",reason="limit"} 0
idlereaper_connections_refused_total{listener="relay",reason="per_ip_limit"} 1
idlereaper_connections_refused_total{listener="relay",reason="denied"} 0
idlereaper_connections_refused_total{listener="relay",reason="out_of_descriptors"} 0
# HELP idlereaper_protocol_opaque_total Connections a protocol observer stopped following (byte idleness from then on), by cause.
# TYPE idlereaper_protocol_opaque_total counter
idlereaper_protocol_opaque_total{listener="relay",cause="tls"} 0
idlereaper_protocol_opaque_total{listener="relay",cause="gss"} 0
idlereaper_protocol_opaque_total{listener="relay",cause="replication"} 0
idlereaper_protocol_opaque_total{listener="relay",cause="reply_off"} 0
idlereaper_protocol_opaque_total{listener="relay",cause="unparsable"} 0
# HELP idlereaper_upstream_connect_errors_total Upstream connections that failed or timed out.
# TYPE idlereaper_upstream_connect_errors_total counter
idlereaper_upstream_connect_errors_total{listener="relay"} 1
# HELP idlereaper_upstream_up Whether new connections go to the upstream address: 1 up, 0 disabled or in backoff after a failed connect.
# TYPE idlereaper_upstream_up gauge
idlereaper_upstream_up{listener="relay",upstream="127.0.0.1:7001"} 1
idlereaper_upstream_up{listener="relay",upstream="127.0.0.1:7002"} 0
# HELP idlereaper_relayed_bytes_total Bytes relayed, by direction.
# TYPE idlereaper_relayed_bytes_total counter
idlereaper_relayed_bytes_total{listener="relay",direction="from_client"} 100
idlereaper_relayed_bytes_total{listener="relay",direction="from_upstream"} 2048
# HELP idlereaper_connection_lifetime_seconds Time from accept to close of closed connections.
# TYPE idlereaper_connection_lifetime_seconds histogram
idlereaper_connection_lifetime_seconds_bucket{listener="relay",le="0.01"} 1
idlereaper_connection_lifetime_seconds_bucket{listener="relay",le="0.1"} 2
idlereaper_connection_lifetime_seconds_bucket{listener="relay",le="1"} 2
idlereaper_connection_lifetime_seconds_bucket{listener="relay",le="10"} 3
idlereaper_connection_lifetime_seconds_bucket{listener="relay",le="60"} 3
idlereaper_connection_lifetime_seconds_bucket{listener="relay",le="300"} 3
idlereaper_connection_lifetime_seconds_bucket{listener="relay",le="3600"} 3
idlereaper_connection_lifetime_seconds_bucket{listener="relay",le="86400"} 3
idlereaper_connection_lifetime_seconds_bucket{listener="relay",le="+Inf"} 3
idlereaper_connection_lifetime_seconds_sum{listener="relay"} 2.520001
idlereaper_connection_lifetime_seconds_count{listener="relay"} 3
"#;

/// The process-wide families after [`one_listener_workload`], with the build's `version`.
fn process_families(version: &str) -> String {
    format!(
        r#"# HELP idlereaper_timers Timers live in the timing wheels of all workers.
# TYPE idlereaper_timers gauge
idlereaper_timers 7
# HELP idlereaper_reloads_total Configuration reloads, by result.
# TYPE idlereaper_reloads_total counter
idlereaper_reloads_total{{result="success"}} 1
idlereaper_reloads_total{{result="failure"}} 2
# HELP idlereaper_upgrades_total Live upgrades (SIGUSR2), by result.
# TYPE idlereaper_upgrades_total counter
idlereaper_upgrades_total{{result="success"}} 0
idlereaper_upgrades_total{{result="refused"}} 0
idlereaper_upgrades_total{{result="failed"}} 0
# HELP idlereaper_build_info Always 1; the version of idlereaper is a label.
# TYPE idlereaper_build_info gauge
idlereaper_build_info{{version="{version}"}} 1
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.34
# HELP process_open_fds Number of open file descriptors.
# TYPE process_open_fds gauge
process_open_fds 12
# HELP process_max_fds Maximum number of open file descriptors.
# TYPE process_max_fds gauge
process_max_fds 1024
# HELP process_virtual_memory_bytes Virtual memory size in bytes.
# TYPE process_virtual_memory_bytes gauge
process_virtual_memory_bytes 20971520
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 4194304
# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1700000000.25
"#
    )
}

#[test]
fn render_one_listener_exactly() {
    let (metrics, _in_force) = one_listener_workload();
    let text = metrics.render_with(every_reading());
    let expected = RELAY_FAMILIES.to_owned() + &process_families(env!("CARGO_PKG_VERSION"));
    assert_eq!(text, expected);
}

#[test]
fn families_group_listeners_in_order_and_escape_labels() {
    let metrics = Metrics::new(1);
    let (a, b) = (ListenerMetrics::new("a"), ListenerMetrics::new("we\"ird\\name\nx"));
    metrics.set_listeners(vec![Arc::clone(&b), Arc::clone(&a)]);
    a.accepted();
    b.closed(CloseReason::Denied, Duration::from_secs(100_000)); // a misuse, still shown
    let text = metrics.render();
    let b_label = r#"listener="we\"ird\\name\nx""#;
    let accepted = format!(
        "# TYPE idlereaper_connections_accepted_total counter\n\
         idlereaper_connections_accepted_total{{{b_label}}} 0\n\
         idlereaper_connections_accepted_total{{listener=\"a\"}} 1\n# HELP "
    );
    assert!(text.contains(&accepted), "{text}");
    let denied = format!("idlereaper_connections_closed_total{{{b_label},reason=\"denied\"}} 1\n");
    assert!(text.contains(&denied), "{text}");
    assert!(!text.contains("closed_total{listener=\"a\",reason=\"denied\"}"), "{text}");
    let beyond = format!(
        "le=\"86400\"}} 0\nidlereaper_connection_lifetime_seconds_bucket{{{b_label},le=\"+Inf\"}} 1\n"
    );
    assert!(text.contains(&beyond), "{text}");
    // Every family's samples directly follow its HELP and TYPE, and no family appears twice.
    let mut families = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            families.push(rest.split(' ').next().unwrap().to_owned());
        } else if !line.starts_with('#') {
            let family = families.last().expect("a sample before any TYPE");
            assert!(line.starts_with(family.as_str()), "{line} outside {family}");
        }
    }
    let count = families.len();
    families.sort();
    families.dedup();
    assert_eq!(families.len(), count, "a family appears twice");
    // The process numbers come from the process.
    let fds = text.lines().find_map(|l| l.strip_prefix("process_open_fds ")).expect("open_fds");
    assert!(fds.parse::<u64>().unwrap() >= 3, "{fds}");
}

#[test]
fn without_listeners_only_process_families() {
    let text = Metrics::new(1).render();
    assert!(!text.contains("listener="), "{text}");
    assert!(text.contains("\nidlereaper_timers 0\n"), "{text}");
}

#[test]
fn a_listener_kept_across_reload_keeps_its_counters() {
    let metrics = Metrics::new(1);
    let a = ListenerMetrics::new("a");
    metrics.set_listeners(vec![Arc::clone(&a)]);
    assert!(Arc::ptr_eq(&metrics.listener("a"), &a));
    assert!(!Arc::ptr_eq(&metrics.listener("b"), &a));
}

#[test]
fn counters_carried_by_an_upgrade_keep_their_places_across_versions() {
    let old = ListenerMetrics::new("pg");
    old.accepted();
    old.closed(CloseReason::Idle, Duration::from_millis(5));
    old.refused(CloseReason::Limit);
    old.closed(CloseReason::IdleInTransaction, Duration::from_secs(2));
    old.protocol_opaque(Cause::Tls);
    let carried = old.counters();
    // A binary from before the protocol observers carried the first 46 of them.
    let before = 5 + 2 * REASONS_BEFORE_PROTOCOLS + LIFETIME_BUCKETS.len() + 1;
    let from_older = ListenerMetrics::new("pg");
    from_older.restore(&carried[..before]);
    let shown = |m: &ListenerMetrics| {
        let mut row = crate::rows::ListenerRow {
            name: String::new(),
            listen: String::new(),
            upstream: String::new(),
            open: 0,
            accepted: 0,
            closed: Vec::new(),
            refused: 0,
            idle_timeout_ms: 0,
            bytes_from_client: 0,
            bytes_from_upstream: 0,
            upstreams: Vec::new(),
        };
        m.fill(&mut row);
        (row.accepted, row.closed, row.refused)
    };
    let idle = ("idle".to_owned(), 1);
    assert_eq!(shown(&from_older), (1, vec![idle.clone()], 1), "the older counters in their places");
    let same = ListenerMetrics::new("pg");
    same.restore(&carried);
    assert_eq!(shown(&same), (1, vec![idle, ("idle_in_transaction".to_owned(), 1)], 1));
    assert_eq!(same.opaque[Cause::Tls.index()].load(Relaxed), 1);
}
