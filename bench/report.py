#!/usr/bin/env python3
"""bench/report.py RESULTS_DIR: summary.md and charts/*.png from a bench/compare.sh run.

Reads RESULTS_DIR/results.txt (one `relay=… rep=… scenario=… key=value…` line per measurement),
samples/reap-*.txt (reap lateness, µs, one per line), machine.txt, load.txt and errors.txt.
Quick scenarios are reported as the median over repetitions; reap's max is the max over them
and its early count the sum. The real clients (pgbench, redis-benchmark) add their throughput,
latency and the relay's CPU seconds per 100,000 transactions or requests. The live upgrade
(bench/upgrade.py) reports its worst run: the ping-pong's longest stall, idlereaper's own pause,
and the connections left on an old process, lost, or cut. Ratios are idlereaper against the better of HAProxy and nginx
(both pinned to the same thread count as idlereaper); "haproxy-auto", HAProxy with its default
thread count, is shown for information and not used in ratios.
"""

import math
import os
import statistics
import sys
from collections import defaultdict

RELAYS = ["idlereaper", "haproxy", "nginx", "haproxy-auto", "direct"]
PEERS = ["haproxy", "nginx"]
COLORS = {
    "idlereaper": "#1b9e77",
    "haproxy": "#d95f02",
    "nginx": "#7570b3",
    "haproxy-auto": "#e6ab02",
    "direct": "#999999",
}


def parse_kv(line):
    out = {}
    for tok in line.split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            out[k] = v.strip('"')
    return out


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def load(outdir):
    rows = []
    with open(os.path.join(outdir, "results.txt")) as f:
        for line in f:
            if line.strip():
                rows.append(parse_kv(line))
    machine = {}
    path = os.path.join(outdir, "machine.txt")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if "=" in line:
                    # Lines hold one key=value, or several space-separated ones.
                    k, v = line.rstrip("\n").split("=", 1)
                    if " " in v and "=" in v:
                        machine.update(parse_kv(line))
                    else:
                        machine[k] = v
    return rows, machine


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


class Results:
    """Aggregates per relay: medians over repetitions."""

    def __init__(self, rows, machine):
        self.rows = rows
        self.machine = machine
        self.relays = [r for r in RELAYS if any(row.get("relay") == r for row in rows)]

    def select(self, relay, scenario, **match):
        return [
            row
            for row in self.rows
            if row.get("relay") == relay
            and row.get("scenario") == scenario
            and all(row.get(k) == str(v) for k, v in match.items())
        ]

    def med(self, relay, scenario, key, **match):
        return median([num(r.get(key)) for r in self.select(relay, scenario, **match)])

    def hold(self, relay, conns):
        """(bytes per connection, idle CPU s, alive_after) at `conns`, or Nones."""
        rows = self.select(relay, "hold", conns=conns)
        if not rows:
            return None, None, None
        row = rows[-1]
        multi = int(row.get("processes", "1")) > 1
        per_conn = num(row.get("tree_bytes_per_conn" if multi else "bytes_per_conn"))
        cpu = num(row.get("tree_idle_cpu_s" if multi else "idle_cpu_s"))
        return per_conn, cpu, num(row.get("alive_after"))

    def upgrade(self, relay):
        """The live upgrade over its runs: worst stall and pause, sums of lost and cut."""
        rows = self.select(relay, "upgrade")
        if not rows:
            return {}
        vals = lambda k: [v for v in (num(r.get(k)) for r in rows) if v is not None]  # noqa: E731
        worst = max(rows, key=lambda r: num(r.get("stall_ms")) or 0.0)
        return {
            "stall": max(vals("stall_ms"), default=None),
            "stall_rep": worst.get("rep"),
            "base_max": max(vals("pp_base_max_ms"), default=None),
            "stall_wait": max(vals("stall_wait_ms"), default=None),
            "pause": max(vals("pause_ms"), default=None),
            "reload": max(vals("reload_ms"), default=None),
            "old": int(max(vals("old_conns"))) if vals("old_conns") else None,
            "lost": int(sum(vals("lost"))) if vals("lost") else None,
            "cut": int(sum(vals("stop_cut"))) if vals("stop_cut") else None,
            "conns": sum(vals("conns")),
            "rows": rows,
        }

    def hold_ns(self):
        return sorted({int(r["conns"]) for r in self.rows if r.get("scenario") == "hold"})

    def reap(self, relay):
        rows = self.select(relay, "reap")
        if not rows:
            return {}
        vals = lambda k: [num(r.get(k)) for r in rows]  # noqa: E731
        return {
            "p50": median(vals("p50_ms")),
            "p99": median(vals("p99_ms")),
            "max": max(v for v in vals("max_ms") if v is not None),
            "min": min(v for v in vals("min_ms") if v is not None),
            "early": sum(int(v) for v in vals("early") if v is not None),
            "sent_p50": median(vals("sent_p50_ms")),
            "sent_p99": median(vals("sent_p99_ms")),
            "lag_p50": median(vals("echo_lag_p50_ms")),
            "closed": sum(int(v) for v in vals("closed") if v is not None),
            "conns": sum(int(v) for v in vals("conns") if v is not None),
            "reps": len(rows),
        }


# The real-client scenarios: (scenario, match, table name, throughput metric, throughput key,
# chart title).
REAL_CLIENTS = [
    ("pgbench", {}, "pgbench -S -c 8 -j 2", "transactions/s", "tps", "pgbench -S"),
    (
        "pgbench_connect",
        {},
        "pgbench -S -C -c 8 -j 2 (a connection per transaction)",
        "transactions/s",
        "tps",
        "pgbench -S -C",
    ),
    ("redis", {"pipeline": 16}, "redis-benchmark -t get -c 50 -P 16", "requests/s", "rps", "redis GET, -P 16"),
    ("redis", {"pipeline": 1}, "redis-benchmark -t get -c 50 -P 1", "requests/s", "rps", "redis GET, -P 1"),
]


def pg_version(machine):
    """"15.18" out of "postgres (PostgreSQL) 15.18 (Debian …)"."""
    words = machine.get("postgres", "?").split()
    return words[2] if len(words) > 2 else words[0]


def fmt(v, digits=2):
    if v is None:
        return "—"
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) >= 100):
        return f"{int(v):,}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def ratio(ir, peers, higher_is_better):
    """idlereaper / better peer, and the better peer's value."""
    peers = [p for p in peers if p is not None]
    if ir is None or not peers:
        return None, None
    best = max(peers) if higher_is_better else min(peers)
    if best == 0:
        return None, best
    return ir / best, best


def summary(res, outdir, errors, load_lines):
    m = res.machine
    workers = m.get("workers", "unset")
    threads = "1" if workers == "unset" else workers
    label = {
        "idlereaper": "idlereaper" + ("" if workers == "unset" else f" ({workers} workers)"),
        "haproxy": f"HAProxy (nbthread {threads})",
        "nginx": f"nginx ({threads} worker{'s' if threads != '1' else ''})",
        "haproxy-auto": "HAProxy (default threads)",
        "direct": "direct, no relay",
    }
    cols = [r for r in res.relays]
    hold_n = int(m.get("hold_n", "0") or 0)
    hold_secs = m.get("hold_secs", "?")
    reps = m.get("reps", "?")
    tick_plus_1 = 2.0  # daemon.tick 1 ms + 1 ms

    lines = []
    add = lines.append
    add(f"# Benchmark summary ({m.get('date_utc', '?')})")
    add("")
    add(
        f"Scale `{m.get('scale', '?')}`, quick scenarios repeated {reps}× (median; reap max = max over runs, "
        f"early = sum over runs). Machine: {m.get('nproc', '?')} × {m.get('cpu', '?')}, kernel {m.get('kernel', '?')}, "
        f"{m.get('mem_total', '?')}; relay, upstream and load tool share these cores. idlereaper commit "
        f"{m.get('commit', '?')}" + (" (with uncommitted changes in src/)" if m.get("src_dirty_files", "0") != "0" else "") + "."
    )
    add("")
    head = ["scenario", "metric"] + [label[c] for c in cols] + ["idlereaper ÷ better peer", "target", "met"]
    add("| " + " | ".join(head) + " |")
    add("|" + "---|" * len(head))

    def row(scenario, metric, values, higher_is_better=None, check=None, met=None, absolute=None, digits=2):
        """One table row; `check(ratio)` or `absolute(idlereaper's value)` decides "met"."""
        ir = values.get("idlereaper")
        r, _ = ratio(ir, [values.get(p) for p in PEERS], higher_is_better) if higher_is_better is not None else (None, None)
        if met is None and check is not None and r is not None:
            met = check(r)
        if absolute is not None and ir is not None:
            met = absolute(ir)
        cells = [scenario, metric] + [fmt(values.get(c), digits) for c in cols]
        cells.append("—" if r is None else f"{r:.2f}×")
        cells.append(row.target_text or "")
        cells.append("" if met is None else ("yes" if met else "**no**"))
        add("| " + " | ".join(cells) + " |")
        row.target_text = ""

    row.target_text = ""

    def target(text):
        row.target_text = text

    # hold
    if hold_n and any(res.select(c, "hold", conns=hold_n) for c in cols):
        per = {c: res.hold(c, hold_n)[0] for c in cols}
        per_kib = {c: (v / 1024 if v is not None else None) for c, v in per.items()}
        target("≤ 0.50×")
        row(f"hold {hold_n:,}", "KiB per idle connection (RSS Δ / N)", per_kib, False, lambda r: r <= 0.5)
        cpu = {c: res.hold(c, hold_n)[1] for c in cols}
        ir, peers = cpu.get("idlereaper"), [cpu.get(p) for p in PEERS if cpu.get(p) is not None]
        target("≤ peer")
        row(
            f"hold {hold_n:,}",
            f"CPU s over {hold_secs} s idle",
            cpu,
            False,
            met=(ir <= min(peers) + 0.02) if ir is not None and peers else None,
        )
    # reap
    reap = {c: res.reap(c) for c in cols}
    if any(reap.values()):
        g = lambda k: {c: (reap[c].get(k) if reap[c] else None) for c in cols}  # noqa: E731
        conns = m.get("reap_conns", "?")
        timeout = m.get("reap_timeout", "?")
        name = f"reap {conns} @ {timeout}"
        target("")
        # No ratio: a peer that closes early can show a smaller (even negative) lateness.
        row(name, "lateness p50 (ms), from the relay's last write", g("p50"), None)
        target("≤ 2 ms (tick + 1 ms)")
        row(name, "lateness p99 (ms), from the relay's last write", g("p99"), None, absolute=lambda v: v <= tick_plus_1)
        row(name, "lateness max (ms), from the relay's last write", g("max"), None)
        target("0")
        row(name, "closed early (all runs)", g("early"), None, absolute=lambda v: v == 0)
        row(name, "earliest close (ms)", g("min"), None)
        target("")
        if any(reap[c].get("sent_p50") is not None for c in cols if reap[c]):
            row(name, "lateness p50 (ms), from the client's send", g("sent_p50"), False)
            row(name, "lateness p99 (ms), from the client's send", g("sent_p99"), False)
            row(name, "burst absorption: echo delay p50 (ms)", g("lag_p50"), False)
    # bulk
    for streams in ("1", "4"):
        vals = {c: res.med(c, "bulk", "gbytes_per_s", streams=streams) for c in cols}
        if any(v is not None for v in vals.values()):
            target("≥ 1.20×")
            row(f"bulk, {streams} stream{'s' if streams != '1' else ''}", "GB/s (iperf3)", vals, True, lambda r: r >= 1.2)
    # ping-pong
    p50 = {c: res.med(c, "pingpong", "p50_us") for c in cols}
    if any(v is not None for v in p50.values()):
        row("ping-pong 64 B", "round trip p50 (µs)", p50, False)
        target("≤ 1.00×")
        row("ping-pong 64 B", "round trip p99 (µs)", {c: res.med(c, "pingpong", "p99_us") for c in cols}, False, lambda r: r <= 1.0)
    p50 = {c: res.med(c, "pingpong_1cpu", "p50_us") for c in cols}
    if any(v is not None for v in p50.values()):
        row("ping-pong 64 B, all on CPU 0", "round trip p50 (µs)", p50, False)
        target("(≤ 1.00×)")
        row(
            "ping-pong 64 B, all on CPU 0",
            "round trip p99 (µs)",
            {c: res.med(c, "pingpong_1cpu", "p99_us") for c in cols},
            False,
            lambda r: r <= 1.0,
        )
    # churn
    churn = {c: res.med(c, "churn", "conns_per_s") for c in cols}
    if any(v is not None for v in churn.values()):
        target("≥ 1.00×")
        row(f"churn, {m.get('churn_threads', '?')} threads", "connections/s", churn, True, lambda r: r >= 1.0)
        fails = {c: sum(int(r.get("failed", 0)) for r in res.select(c, "churn")) for c in cols}
        if any(fails.values()):
            row(f"churn, {m.get('churn_threads', '?')} threads", "failed connections (all runs)", fails, None)
    # live upgrade
    up = {c: res.upgrade(c) for c in cols}
    if any(up.values()):
        g = lambda k: {c: (up[c].get(k) if up[c] else None) for c in cols}  # noqa: E731
        name = f"upgrade, {fmt(num(m.get('upgrade_conns')))} idle + ping-pong"
        target("≤ 50 ms")
        row(name, "ping-pong stall during the upgrade (ms), worst run", g("stall"), False, absolute=lambda v: v <= 50)
        target("")
        row(name, f"ping-pong longest round trip over the {m.get('upgrade_wait', '?')} s after the signal (ms)", g("stall_wait"), None)
        row(name, "ping-pong longest round trip in the second before (ms)", g("base_max"), None)
        row(name, "pause logged by idlereaper (ms), worst run", g("pause"), None)
        row(name, "signal to upgraded / new worker up (ms), worst run", g("reload"), None, digits=1)
        row(name, f"connections on an old process {m.get('upgrade_wait', '?')} s after, worst run", g("old"), None)
        target("0")
        row(name, "connections lost by the upgrade (all runs)", g("lost"), None, absolute=lambda v: v == 0)
        target("")
        row(name, "connections cut by a hard stop of the old process (all runs)", g("cut"), None)

    # real clients
    for scenario, match, name, unit, key, _ in REAL_CLIENTS:
        tput = {c: res.med(c, scenario, key, **match) for c in cols}
        if not any(v is not None for v in tput.values()):
            continue
        target("≥ 1.00×")
        row(name, unit, tput, True, lambda r: r >= 1.0)
        if scenario == "redis":
            target("")
            row(name, "latency p99 (ms)", {c: res.med(c, scenario, "p99_ms", **match) for c in cols}, False)
        target("≤ 0.80×")
        row(
            name,
            "relay CPU s per 100k " + ("requests" if scenario == "redis" else "transactions"),
            {c: res.med(c, scenario, "cpu_s_per_100k", **match) for c in cols},
            False,
            lambda r: r <= 0.8,
            digits=3,
        )

    add("")
    add(
        "Ratios: idlereaper ÷ the better of HAProxy and nginx in this run (lower is better for memory, CPU and latency; "
        "higher for throughput and churn). HAProxy with its default thread count, where shown, is for information."
    )
    if any(up.values()):
        add("")
        add(
            f"Live upgrade: {fmt(num(m.get('upgrade_conns')))} idle connections through each relay's echo listener and "
            "a 64-byte ping-pong on one more; the relay's binary (its own copy) is replaced by a fresh copy, then "
            "idlereaper gets `kill -USR2` (re-executes in the same process and takes over every connection), HAProxy "
            "in master-worker mode `kill -USR2` to its master (a new worker; the old one keeps its connections), nginx "
            "`kill -USR2` then `-WINCH` to its master (binary upgrade; the old workers keep theirs). Stall: the longest "
            "ping-pong round trip under way from the signal to 1 s after the relay said it was done (idlereaper's "
            "`upgraded` line, HAProxy's new worker, nginx's new master and workers); over the whole "
            f"{m.get('upgrade_wait', '?')} s it also catches other processes' hiccups. Old process: one still running the replaced binary. Cut: "
            "connections that saw EOF or a reset when the old HAProxy worker or the old nginx master was sent SIGTERM "
            "(a graceful stop would wait for them to end)."
        )
    if any(res.select(c, s) for c in cols for s in ("pgbench", "pgbench_connect", "redis")):
        add("")
        add(
            "Real clients: every relay in front of the same servers, started by this run on loopback "
            f"(PostgreSQL {pg_version(m)}, `initdb` into a temporary directory, **fsync, synchronous_commit and "
            f"full_page_writes off**: a benchmark setting, and `-S` only reads; `pgbench -i -s {m.get('pgbench_scale', '?')}`; "
            f"redis-server {m.get('redis', '?')} without persistence); \"direct\" is the client without a relay. "
            f"pgbench runs {m.get('pgbench_secs', '?')} s per test; redis-benchmark {fmt(num(m.get('redis_n_p16')))} GETs "
            f"with `-P 16`, {fmt(num(m.get('redis_n_p1')))} with `-P 1`. Relay CPU: utime + stime of the relay's "
            "processes (`/proc/PID/stat`, 10 ms ticks) over the client's run, per 100,000 pgbench transactions or "
            "redis requests; on these shared cores it is steadier than throughput."
        )

    # Hold curve
    ns = res.hold_ns()
    if len(ns) > 1:
        add("")
        add("Memory per idle relayed connection (KiB) by number held:")
        add("")
        hcols = [c for c in cols if c != "direct" and any(res.select(c, "hold"))]
        add("| N | " + " | ".join(label[c] for c in hcols) + " |")
        add("|---|" + "---|" * len(hcols))
        for n in ns:
            vals = [res.hold(c, n)[0] for c in hcols]
            add(f"| {n:,} | " + " | ".join(fmt(v / 1024 if v is not None else None) for v in vals) + " |")

    # Anomalies
    notes = []
    for c in cols:
        rp = reap.get(c) or {}
        if rp.get("early"):
            notes.append(f"{label[c]}: {rp['early']} of {rp['conns']} reaped connections closed early (earliest {rp['min']:.3f} ms).")
        if rp and rp.get("closed") != rp.get("conns"):
            notes.append(f"{label[c]}: only {rp['closed']} of {rp['conns']} idle connections were closed.")
        if rp and rp.get("max", 0) > 10 * tick_plus_1:
            notes.append(f"{label[c]}: reap lateness outlier, max {rp['max']:.1f} ms.")
        for r in res.select(c, "churn"):
            if int(r.get("failed", 0)):
                notes.append(f"{label[c]}: churn rep {r.get('rep')}: {r['failed']} failed connections of {int(r['failed']) + int(r['conns'])}.")
        for r in (up.get(c) or {}).get("rows", []):
            what = f"{label[c]}: upgrade rep {r.get('rep')}"
            if r.get("outcome") not in ("upgraded", "reloaded"):
                notes.append(f"{what}: no upgrade (outcome {r.get('outcome')}" + (f", refused {r['refused']}" if r.get("refused") else "") + ").")
            if r.get("lost") not in (None, "0"):
                notes.append(f"{what}: {r['lost']} of {r.get('conns')} connections no longer relay after it.")
            if c == "idlereaper" and r.get("same_pid") != "1":
                if r.get("pid_before") == r.get("pid_after"):
                    notes.append(f"{what}: process {r.get('pid_before')} is gone.")
                else:
                    notes.append(f"{what}: pid {r.get('pid_before')} before, {r.get('pid_after')} after.")
            if r.get("pp_broken") == "1":
                notes.append(f"{what}: the ping-pong connection broke.")
        for r in res.select(c, "hold"):
            if r.get("alive_after") != r.get("conns"):
                notes.append(f"{label[c]}: hold {r.get('conns')}: {r.get('alive_after')} still relaying after the hold.")
    for e in errors:
        notes.append("error: " + e)
    add("")
    add("## Anomalies")
    add("")
    add("\n".join("- " + n for n in notes) if notes else "None: every connection held, reaped and relayed as expected.")

    # Load during the run
    loads = [parse_kv(l) for l in load_lines]
    others = [num(l.get("others_cores")) for l in loads if num(l.get("others_cores")) is not None]
    add("")
    add("## Machine load during the run")
    add("")
    if others:
        tops = defaultdict(float)
        for l in loads:
            for item in (l.get("top_others") or "-").split(","):
                if ":" in item:
                    comm, v = item.rsplit(":", 1)
                    tops[comm] += num(v) or 0.0
        top = ", ".join(c for c, _ in sorted(tops.items(), key=lambda kv: -kv[1])[:4]) or "none"
        busy = sum(1 for o in others if o >= 0.25)
        contended = statistics.median(others) >= 0.2 or busy >= 0.1 * len(others)
        add(
            f"CPU used by processes other than this benchmark, sampled every 5 s: median {statistics.median(others):.2f} "
            f"cores, max {max(others):.2f}, of {m.get('nproc', '?')}; above a quarter of a core in {busy} of "
            f"{len(others)} samples (mostly: {top})."
            + (
                " **Contended: other work shared the cores during this run; treat the numbers as noisy.**"
                if contended
                else " Quiet enough: the benchmark had the machine to itself."
            )
        )
        # compare.sh does not publish a contended run unless told to (PUBLISH=1).
        marker = os.path.join(outdir, "contended")
        if contended:
            open(marker, "w").write("other processes used the cores during this run; see summary.md\n")
        elif os.path.exists(marker):
            os.remove(marker)
    else:
        add("not recorded")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(outdir, "summary.md"), "w") as f:
        f.write(text)
    return label


def charts(res, outdir, label):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    cdir = os.path.join(outdir, "charts")
    os.makedirs(cdir, exist_ok=True)
    made = []
    relays = [r for r in res.relays if r != "direct"]

    def save(fig, name, rect=None):
        fig.tight_layout(rect=rect)
        path = os.path.join(cdir, name)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(name)

    # Memory per connection vs N
    ns = res.hold_ns()
    if ns:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for r in relays:
            pts = [(n, res.hold(r, n)[0]) for n in ns]
            pts = [(n, v / 1024) for n, v in pts if v is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=COLORS[r], label=label[r])
                n, v = pts[-1]
                ax.annotate(f"{v:.2f}", (n, v), textcoords="offset points", xytext=(6, 0), fontsize=8)
        ax.set_xlabel("idle relayed connections held (N)")
        ax.set_ylabel("relay RSS growth / N (KiB per connection)")
        ax.set_title("Memory per idle relayed connection (lower is better)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
        save(fig, "hold_memory.png")

    # Reap lateness CDF
    samples = {}
    sdir = os.path.join(outdir, "samples")
    for r in relays:
        vals = []
        if os.path.isdir(sdir):
            for name in sorted(os.listdir(sdir)):
                if name.startswith(f"reap-{r}-") and name.endswith(".txt") and name[len(f"reap-{r}-"):-4].isdigit():
                    with open(os.path.join(sdir, name)) as f:
                        vals += [float(x) / 1000.0 for x in f if x.strip()]
        if vals:
            samples[r] = sorted(vals)
    if samples:
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
        allv = [v for vs in samples.values() for v in vs]
        lo = min(min(allv), 0.0)
        hi_q = max(vs[min(len(vs) - 1, int(math.ceil(0.995 * len(vs))) - 1)] for vs in samples.values())
        hi = max(hi_q * 1.15, 2.5)
        for r, vs in samples.items():
            ys = [(i + 1) / len(vs) for i in range(len(vs))]
            ax.step(vs, ys, where="post", color=COLORS[r], label=f"{label[r]} (max {vs[-1]:.2f} ms)")
        ax.axvline(0, color="black", lw=0.8)
        ax.axvline(2.0, color="red", lw=0.8, ls="--", label="target p99: tick + 1 ms")
        ax.set_xlim(lo - 0.1, hi)
        ax.set_xlabel("lateness: close − relay's last write − idle timeout (ms)")
        ax.set_ylabel("fraction of connections closed")
        ax.set_title(f"Idle-close lateness CDF ({res.machine.get('reap_conns', '?')} conns, {res.machine.get('reap_timeout', '?')})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        bins = 60
        width = (hi - lo) / bins
        edges = [lo + i * width for i in range(bins + 1)]
        for r, vs in samples.items():
            ax2.hist([min(v, hi) for v in vs], bins=edges, histtype="step", color=COLORS[r], label=label[r], lw=1.4)
        ax2.axvline(0, color="black", lw=0.8)
        ax2.set_xlabel("lateness (ms; the last bin holds everything later)")
        ax2.set_ylabel("connections")
        ax2.set_title("Idle-close lateness histogram (left of 0 = closed early)")
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=8)
        save(fig, "reap_lateness.png")

    def bars(ax, groups, series, values, errs, unit_fmt, legend=True):
        n = len(series)
        width = 0.8 / max(n, 1)
        for i, s in enumerate(series):
            xs = [g + (i - (n - 1) / 2) * width for g in range(len(groups))]
            ys = [values[s][g] if values[s][g] is not None else 0 for g in range(len(groups))]
            lo = [max(0, ys[g] - errs[s][g][0]) if errs[s][g] else 0 for g in range(len(groups))]
            hi = [max(0, errs[s][g][1] - ys[g]) if errs[s][g] else 0 for g in range(len(groups))]
            ax.bar(xs, ys, width, color=COLORS[s], label=label[s], yerr=[lo, hi], capsize=3)
            for x, y, v in zip(xs, ys, [values[s][g] for g in range(len(groups))]):
                if v is not None:
                    ax.annotate(unit_fmt(v), (x, y), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=7)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(groups)
        ax.grid(axis="y", alpha=0.3)
        if legend:
            ax.legend(fontsize=8)

    def spread(relay, scenario, key, **match):
        vs = [num(r.get(key)) for r in res.select(relay, scenario, **match)]
        vs = [v for v in vs if v is not None]
        return (min(vs), max(vs)) if vs else None

    series_all = [r for r in res.relays]
    # Throughput
    series = [s for s in series_all if res.select(s, "bulk")]
    if series:
        groups = ["1 stream", "4 streams"]
        vals = {s: [res.med(s, "bulk", "gbytes_per_s", streams=k) for k in ("1", "4")] for s in series}
        errs = {s: [spread(s, "bulk", "gbytes_per_s", streams=k) for k in ("1", "4")] for s in series}
        fig, ax = plt.subplots(figsize=(8, 4.2))
        bars(ax, groups, series, vals, errs, lambda v: f"{v:.2f}")
        ax.set_ylabel("GB/s (median; whiskers min–max)")
        ax.set_title("Bulk throughput through the relay, iperf3 (higher is better)")
        save(fig, "bulk.png")
    # Churn
    series = [s for s in series_all if res.select(s, "churn")]
    if series:
        vals = {s: [res.med(s, "churn", "conns_per_s")] for s in series}
        errs = {s: [spread(s, "churn", "conns_per_s")] for s in series}
        fig, ax = plt.subplots(figsize=(7, 4.2))
        bars(ax, [f"{res.machine.get('churn_threads', '?')} client threads"], series, vals, errs, lambda v: f"{v:,.0f}")
        ax.set_ylabel("connections per second (median; whiskers min–max)")
        ax.set_title("Churn: connect, 64 B request, response, close (higher is better)")
        save(fig, "churn.png")
    # Ping-pong
    series = [s for s in series_all if res.select(s, "pingpong")]
    if series:
        kinds = [("pingpong", "p50_us", "p50"), ("pingpong", "p99_us", "p99")]
        if any(res.select(s, "pingpong_1cpu") for s in series):
            kinds += [("pingpong_1cpu", "p50_us", "p50, all on CPU 0"), ("pingpong_1cpu", "p99_us", "p99, all on CPU 0")]
        vals = {s: [res.med(s, sc, k) for sc, k, _ in kinds] for s in series}
        errs = {s: [spread(s, sc, k) for sc, k, _ in kinds] for s in series}
        fig, ax = plt.subplots(figsize=(10 if len(kinds) > 2 else 8, 4.2))
        bars(ax, [g for _, _, g in kinds], series, vals, errs, lambda v: f"{v:.0f}")
        ax.set_ylabel("round trip, µs (median; whiskers min–max)")
        ax.set_title("64-byte ping-pong latency (lower is better)")
        save(fig, "pingpong.png")
    # Live upgrade: the ping-pong's round trips around the signal, each relay's worst run.
    ups = {r: res.upgrade(r) for r in relays}
    ups = {r: u for r, u in ups.items() if u}
    if ups:
        fig, ax = plt.subplots(figsize=(9, 4.2))
        plotted = False
        for r, u in ups.items():
            path = os.path.join(sdir, f"upgrade-{r}-{u['stall_rep']}.txt")
            if not os.path.exists(path):
                continue
            xs, ys = [], []
            with open(path) as f:
                for line in f:
                    if line.startswith("#") or not line.strip():
                        continue
                    t, v = line.split()
                    xs.append(float(t))
                    ys.append(float(v))
            if xs:
                ax.scatter(xs, ys, s=4, color=COLORS[r], label=f"{label[r]} (longest {u['stall']:.1f} ms)")
                plotted = True
        if plotted:
            ax.axvline(0, color="black", lw=0.8, label="signal")
            ax.axhline(50, color="red", lw=0.8, ls="--", label="target: stall ≤ 50 ms")
            ax.set_yscale("log")
            ax.set_xlabel("time from the upgrade signal (ms)")
            ax.set_ylabel("ping-pong round trip (ms, log)")
            ax.set_title(
                f"64-byte ping-pong during a live upgrade with {fmt(num(res.machine.get('upgrade_conns')))} idle connections\n"
                "(every round trip ≥ 1 ms, one in ten of the rest; worst run per relay)",
                fontsize=10,
            )
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            save(fig, "upgrade_pingpong.png")
        else:
            plt.close(fig)
    # Real clients: throughput above, the relay's CPU per 100k transactions below; a column each.
    tests = [t for t in REAL_CLIENTS if any(res.select(s, t[0], **t[1]) for s in series_all)]
    if tests:
        fig, axes = plt.subplots(2, len(tests), figsize=(3.4 * len(tests) + 0.6, 7.2), squeeze=False)
        for i, (scenario, match, _, unit, key, title) in enumerate(tests):
            series = [s for s in series_all if res.select(s, scenario, **match)]
            panels = [
                (key, unit, series, lambda v: f"{v / 1000:.1f}k" if v >= 1000 else f"{v:.0f}", "higher is better"),
                ("cpu_s_per_100k", "relay CPU s per 100k", [s for s in series if s != "direct"], lambda v: f"{v:.3f}", "lower is better"),
            ]
            for j, (k, ylabel, sers, vfmt, better) in enumerate(panels):
                ax = axes[j][i]
                vals = {s: [res.med(s, scenario, k, **match)] for s in sers}
                errs = {s: [spread(s, scenario, k, **match)] for s in sers}
                bars(ax, [""], sers, vals, errs, vfmt, legend=False)
                ax.set_xticks([])
                if k != "cpu_s_per_100k":
                    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
                ax.set_ylabel(ylabel, fontsize=9)
                ax.set_title(f"{title}\n{ylabel} ({better})", fontsize=9)
        handles = [plt.Rectangle((0, 0), 1, 1, color=COLORS[s]) for s in series_all]
        fig.legend(handles, [label[s] for s in series_all], loc="lower center", ncol=len(series_all), fontsize=9)
        fig.suptitle("Real clients through each relay (median; whiskers min–max)")
        save(fig, "real_clients.png", rect=(0, 0.05, 1, 1))
    return made


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: report.py RESULTS_DIR")
    outdir = sys.argv[1]
    rows, machine = load(outdir)
    res = Results(rows, machine)
    errors = []
    epath = os.path.join(outdir, "errors.txt")
    if os.path.exists(epath):
        errors = [l.strip() for l in open(epath) if l.strip()]
    lpath = os.path.join(outdir, "load.txt")
    load_lines = open(lpath).read().splitlines() if os.path.exists(lpath) else []
    label = summary(res, outdir, errors, load_lines)
    made = charts(res, outdir, label)
    with open(os.path.join(outdir, "summary.md"), "a") as f:
        if made:
            f.write("\n## Charts\n\n" + "\n".join(f"![{m}](charts/{m})" for m in made) + "\n")
    print("wrote summary.md and", ", ".join(made) or "no charts")


if __name__ == "__main__":
    main()
