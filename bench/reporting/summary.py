"""summary.md: the table (reporting/table.py), what the live upgrade and the real clients did,
memory per connection by number held, the anomalies (and the run's errors), and how busy the
machine was with other work during the run. A contended run leaves a `contended` file beside
it: bench/compare.py does not publish it unless told to (PUBLISH=1)."""

import os
import statistics
from collections import defaultdict

from . import table as T
from .results import fmt, num, parse_kv, pg_version

RATIOS = (
    "Ratios: idlereaper ÷ the better of HAProxy and nginx in this run (lower is better for memory, CPU and latency; "
    "higher for throughput and churn). HAProxy with its default thread count, where shown, is for information."
)


def summary(res, outdir, errors, load_lines, label):
    m = res.machine
    cols = list(res.relays)
    lines = [f"# Benchmark summary ({m.get('date_utc', '?')})", "", heading(m), ""]
    t = T.Table(res, cols, label)
    reap = {c: res.reap(c) for c in cols}
    up = {c: res.upgrade(c) for c in cols}
    T.hold_rows(t, m)
    T.reap_rows(t, m, reap)
    T.bulk_rows(t)
    T.pingpong_rows(t)
    T.churn_rows(t, m)
    T.upgrade_rows(t, m, up)
    T.real_client_rows(t)
    lines += t.lines
    lines += ["", RATIOS]
    if any(up.values()):
        lines += ["", upgrade_text(m)]
    if any(res.select(c, s) for c in cols for s in ("pgbench", "pgbench_connect", "redis")):
        lines += ["", real_clients_text(m)]
    lines += hold_curve(res, cols, label)
    notes = anomalies(res, cols, label, reap, up) + ["error: " + e for e in errors]
    lines += ["", "## Anomalies", ""]
    lines.append(
        "\n".join("- " + n for n in notes)
        if notes
        else "None: every connection held, reaped and relayed as expected."
    )
    lines += ["", "## Machine load during the run", "", load_text(m, load_lines, outdir)]
    with open(os.path.join(outdir, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def heading(m):
    dirty = " (with uncommitted changes in src/)" if m.get("src_dirty_files", "0") != "0" else ""
    return (
        f"Scale `{m.get('scale', '?')}`, quick scenarios repeated {m.get('reps', '?')}× (median; reap max = max over "
        f"runs, early = sum over runs). Machine: {m.get('nproc', '?')} × {m.get('cpu', '?')}, kernel "
        f"{m.get('kernel', '?')}, {m.get('mem_total', '?')}; relay, upstream and load tool share these cores. "
        f"idlereaper commit {m.get('commit', '?')}{dirty}."
    )


def upgrade_text(m):
    return (
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


def real_clients_text(m):
    return (
        "Real clients: every relay in front of the same servers, started by this run on loopback "
        f"(PostgreSQL {pg_version(m)}, `initdb` into a temporary directory, **fsync, synchronous_commit and "
        f"full_page_writes off**: a benchmark setting, and `-S` only reads; `pgbench -i -s {m.get('pgbench_scale', '?')}`; "
        f'redis-server {m.get("redis", "?")} without persistence); "direct" is the client without a relay. '
        f"pgbench runs {m.get('pgbench_secs', '?')} s per test; redis-benchmark {fmt(num(m.get('redis_n_p16')))} GETs "
        f"with `-P 16`, {fmt(num(m.get('redis_n_p1')))} with `-P 1`. Relay CPU: utime + stime of the relay's "
        "processes (`/proc/PID/stat`, 10 ms ticks) over the client's run, per 100,000 pgbench transactions or "
        "redis requests; on these shared cores it is steadier than throughput."
    )


def hold_curve(res, cols, label):
    ns = res.hold_ns()
    if len(ns) <= 1:
        return []
    hcols = [c for c in cols if c != "direct" and any(res.select(c, "hold"))]
    out = ["", "Memory per idle relayed connection (KiB) by number held:", ""]
    out.append("| N | " + " | ".join(label[c] for c in hcols) + " |")
    out.append("|---|" + "---|" * len(hcols))
    for n in ns:
        vals = [res.hold(c, n)[0] for c in hcols]
        out.append(f"| {n:,} | " + " | ".join(fmt(v / 1024 if v is not None else None) for v in vals) + " |")
    return out


def anomalies(res, cols, label, reap, up):
    notes = []
    for c in cols:
        rp = reap.get(c) or {}
        if rp.get("early"):
            notes.append(
                f"{label[c]}: {rp['early']} of {rp['conns']} reaped connections closed early (earliest {rp['min']:.3f} ms)."
            )
        if rp and rp.get("closed") != rp.get("conns"):
            notes.append(f"{label[c]}: only {rp['closed']} of {rp['conns']} idle connections were closed.")
        if rp and rp.get("max", 0) > 10 * T.TICK_PLUS_1:
            notes.append(f"{label[c]}: reap lateness outlier, max {rp['max']:.1f} ms.")
        for r in res.select(c, "churn"):
            if int(r.get("failed", 0)):
                notes.append(
                    f"{label[c]}: churn rep {r.get('rep')}: {r['failed']} failed connections of {int(r['failed']) + int(r['conns'])}."
                )
        for r in (up.get(c) or {}).get("rows", []):
            notes += upgrade_anomalies(c, f"{label[c]}: upgrade rep {r.get('rep')}", r)
        for r in res.select(c, "hold"):
            if r.get("alive_after") != r.get("conns"):
                notes.append(
                    f"{label[c]}: hold {r.get('conns')}: {r.get('alive_after')} still relaying after the hold."
                )
    return notes


def upgrade_anomalies(relay, what, r):
    notes = []
    if r.get("outcome") not in ("upgraded", "reloaded"):
        refused = f", refused {r['refused']}" if r.get("refused") else ""
        notes.append(f"{what}: no upgrade (outcome {r.get('outcome')}{refused}).")
    if r.get("lost") not in (None, "0"):
        notes.append(f"{what}: {r['lost']} of {r.get('conns')} connections no longer relay after it.")
    if relay == "idlereaper" and r.get("same_pid") != "1":
        if r.get("pid_before") == r.get("pid_after"):
            notes.append(f"{what}: process {r.get('pid_before')} is gone.")
        else:
            notes.append(f"{what}: pid {r.get('pid_before')} before, {r.get('pid_after')} after.")
    if r.get("pp_broken") == "1":
        notes.append(f"{what}: the ping-pong connection broke.")
    return notes


def load_text(m, load_lines, outdir):
    """How busy the machine was besides the benchmark (bench/loadmon.py's samples)."""
    loads = [parse_kv(line) for line in load_lines]
    others = [num(x.get("others_cores")) for x in loads if num(x.get("others_cores")) is not None]
    if not others:
        return "not recorded"
    tops = defaultdict(float)
    for x in loads:
        for item in (x.get("top_others") or "-").split(","):
            if ":" in item:
                comm, v = item.rsplit(":", 1)
                tops[comm] += num(v) or 0.0
    top = ", ".join(c for c, _ in sorted(tops.items(), key=lambda kv: -kv[1])[:4]) or "none"
    busy = sum(1 for o in others if o >= 0.25)
    contended = statistics.median(others) >= 0.2 or busy >= 0.1 * len(others)
    marker = os.path.join(outdir, "contended")
    if contended:
        with open(marker, "w") as f:
            f.write("other processes used the cores during this run; see summary.md\n")
    elif os.path.exists(marker):
        os.remove(marker)
    return (
        f"CPU used by processes other than this benchmark, sampled every 5 s: median {statistics.median(others):.2f} "
        f"cores, max {max(others):.2f}, of {m.get('nproc', '?')}; above a quarter of a core in {busy} of "
        f"{len(others)} samples (mostly: {top})."
        + (
            " **Contended: other work shared the cores during this run; treat the numbers as noisy.**"
            if contended
            else " Quiet enough: the benchmark had the machine to itself."
        )
    )
