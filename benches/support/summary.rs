//! The closing summary, in markdown: ns per operation per structure and size (criterion's
//! estimates from this run), memory per live timer, and the wheel's performance targets (the
//! cost per operation and per timer it is built to stay under, and flat from 1k to 1M timers)
//! with verdicts.

use idlereaper::wheel::Wheel;

use super::memory::{footprint, Footprint};
use super::{Recorder, LINEAR_MAX, SIZES};
use crate::baselines::{LazyHeap, SortedList, Timers, TreeTimers};

/// Memory per live timer of one structure, per size.
pub struct MemoryRow {
    name: &'static str,
    sizes: Vec<(usize, Footprint)>,
}

pub fn memory(sizes: &[usize]) -> Vec<MemoryRow> {
    fn row<T: Timers>(sizes: &[usize]) -> MemoryRow {
        MemoryRow { name: T::NAME, sizes: sizes.iter().map(|&n| (n, footprint::<T>(n))).collect() }
    }
    vec![row::<Wheel<u32>>(sizes), row::<LazyHeap>(sizes), row::<TreeTimers>(sizes), row::<SortedList>(sizes)]
}

fn size_label(n: usize) -> String {
    match n {
        1_000 => "1k".into(),
        65_536 => "64k".into(),
        1_000_000 => "1M".into(),
        n => n.to_string(),
    }
}

fn time(ns: f64) -> String {
    match ns {
        ns if ns.is_nan() => "—".into(),
        ns if ns < 100.0 => format!("{ns:.1} ns"),
        ns if ns < 10_000.0 => format!("{ns:.0} ns"),
        ns if ns < 10_000_000.0 => format!("{:.0} µs", ns / 1e3),
        ns => format!("{:.0} ms", ns / 1e6),
    }
}

/// "met (0.42× the limit)" or "NOT met: 1.8× the limit".
fn verdict(value: f64, limit: f64) -> String {
    match value <= limit {
        true => format!("met ({:.2}× the limit)", value / limit),
        false => format!("**NOT met**: {:.2}× the limit", value / limit),
    }
}

pub fn print(rec: &Recorder, memory: &[MemoryRow], test: bool) {
    let ns = |group: &str, function: &str, n: usize| rec.ns_per_op(group, function, n);
    let (small, big) = (SIZES[0], SIZES[2]);
    println!("\n## Timing wheel and baselines\n");
    if test {
        println!("Test mode: each benchmark ran once at {}, no timings.\n", size_label(small));
    } else {
        println!("ns per operation (criterion's estimate, this run). \"—\": not run.\n");
        println!("| operation | structure | 1k | 64k | 1M | 1M ÷ 1k |");
        println!("|---|---|--:|--:|--:|--:|");
        for (group, function) in rec.rows() {
            let cells: Vec<String> =
                SIZES.iter().map(|&n| ns(&group, &function, n).map_or("—".into(), time)).collect();
            let ratio = match (ns(&group, &function, small), ns(&group, &function, big)) {
                (Some(a), Some(b)) => format!("{:.2}", b / a),
                _ => "—".into(),
            };
            println!("| {group} | {function} | {} | {ratio} |", cells.join(" | "));
        }
        println!(
            "\nThe sorted list's insert, insert_cancel and reset are O(n) and were run at up to {} timers \
             only.",
            size_label(LINEAR_MAX)
        );
        lazy_rearm(rec);
    }

    println!("\n### Memory per live timer (bytes)\n");
    println!(
        "Counted by the allocator: capacity held (growth slack included) plus the structure's own \
         size, over live timers. Built: n inserts into an empty structure, random deadlines. After \
         churn: plus n eager resets to a later deadline and n insert + cancel pairs.\n"
    );
    let sizes: Vec<usize> = memory.first().map(|r| r.sizes.iter().map(|s| s.0).collect()).unwrap_or_default();
    let header: Vec<String> =
        sizes.iter().map(|&n| format!("{} built | {0} churned", size_label(n))).collect();
    println!("| structure | {} |", header.join(" | "));
    println!("|---|{}", "--:|".repeat(2 * sizes.len()));
    for row in memory {
        let cells: Vec<String> = row
            .sizes
            .iter()
            .map(|(_, f)| format!("{:.1} | {}", f.built, f.churned.map_or("—".into(), |c| format!("{c:.1}"))))
            .collect();
        println!("| {} | {} |", row.name, cells.join(" | "));
    }
    println!("\n(sorted_list churned: not run; its nodes are reused in place, and its inserts are O(n).)");

    if !test {
        targets(rec, memory);
    }
}

/// What the lazy re-arm benchmark saw: how many handed-out timers were re-armed, and what the
/// deferred work comes to per activity.
fn lazy_rearm(rec: &Recorder) {
    let k = crate::ACTIVITY_PER_IDLE as f64;
    println!(
        "\n`expire/wheel_lazy`: each connection active {k} times per idle timeout on average. The \
         deferred cost of an activity is its share of re-arms, each a timer handed out early and \
         inserted again; set against the eager `reset/wheel`, lazy wins once a connection is active \
         more than the break-even number of times per idle timeout (re-arms stay at about one per \
         idle timeout however active it is; eager pays a reset for every activity)."
    );
    for n in SIZES {
        let handed = rec.counter(&format!("lazy_handed/{n}"));
        let rearmed = rec.counter(&format!("lazy_rearmed/{n}"));
        let activities = rec.counter(&format!("lazy_activities/{n}"));
        let (Some(per_handout), true) = (rec.ns_per_op("expire", "wheel_lazy", n), handed > 0) else {
            continue;
        };
        let store = rec.ns_per_op("activity", "wheel_lazy_store", n).unwrap_or(f64::NAN);
        let eager = rec.ns_per_op("reset", "wheel", n).unwrap_or(f64::NAN);
        let per_activity = rearmed as f64 / activities.max(1) as f64;
        let break_even = per_activity * k * per_handout / (eager - store);
        println!(
            "- {}: {:.0}% of the timers handed out were re-armed, {per_activity:.2} re-arms per activity; \
             activity ≈ store {} + {per_activity:.2} × {} = {} amortized; eager reset {}; break-even at \
             {break_even:.0} activities per idle timeout",
            size_label(n),
            100.0 * rearmed as f64 / handed as f64,
            time(store),
            time(per_handout),
            time(store + per_activity * per_handout),
            time(eager),
        );
    }
}

fn targets(rec: &Recorder, memory: &[MemoryRow]) {
    let big = SIZES[2];
    let at = |group: &str, function: &str| rec.ns_per_op(group, function, big);
    println!("\n### The wheel's targets, at 1M timers\n");
    println!("| target | measured | verdict |");
    println!("|---|---|---|");
    let limits = [
        ("insert ≤ 30 ns", "insert", 30.0),
        ("cancel ≤ 20 ns", "cancel", 20.0),
        ("expire ≤ 40 ns per timer", "expire", 40.0),
    ];
    for (label, group, limit) in limits {
        if let Some(value) = at(group, "wheel") {
            let inorder =
                at(group, "wheel_inorder").map_or(String::new(), |v| format!(" (in order: {})", time(v)));
            println!("| {label} | {}{inorder} | {} |", time(value), verdict(value, limit));
        }
    }
    if let Some(value) = at("activity", "wheel_lazy_store") {
        let postpone =
            at("activity", "wheel_postpone").map_or(String::new(), |v| format!("; `postpone`: {}", time(v)));
        println!("| activity path ≤ 5 ns | {} (store){postpone} | {} |", time(value), verdict(value, 5.0));
    }
    let wheel_memory =
        memory.iter().find(|r| r.name == "wheel").and_then(|r| r.sizes.iter().find(|s| s.0 == big));
    if let Some((_, f)) = wheel_memory {
        let worst = f.churned.unwrap_or(f.built).max(f.built);
        println!("| memory ≤ 32 B per timer | {:.1} B | {} |", worst, verdict(worst, 32.0));
    }
    for (group, function) in rec.rows().into_iter().filter(|(_, f)| f.starts_with("wheel")) {
        let (Some(small), Some(large)) = (rec.ns_per_op(&group, &function, SIZES[0]), at(&group, &function))
        else {
            continue;
        };
        println!(
            "| flat: {group}/{function} 1M ≤ 1.5 × 1k | {} vs {} | {} |",
            time(large),
            time(small),
            match large / small {
                r if r <= 1.5 => format!("met ({r:.2}×)"),
                r => format!("**NOT met**: {r:.2}×"),
            }
        );
    }
    for n in SIZES {
        let (Some(wheel), Some(tree)) =
            (rec.ns_per_op("insert_cancel", "wheel", n), rec.ns_per_op("insert_cancel", "btreemap", n))
        else {
            continue;
        };
        let speedup = tree / wheel;
        let verdict = match speedup >= 3.0 {
            true => format!("met ({speedup:.1}×)"),
            false => format!("**NOT met**: {speedup:.1}×"),
        };
        println!(
            "| insert+cancel ≥ 3× faster than BTreeMap at {} | {} vs {} | {verdict} |",
            size_label(n),
            time(wheel),
            time(tree)
        );
    }
}
