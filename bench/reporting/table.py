"""The summary's table: one row per metric, a column per relay, then idlereaper ÷ the better
peer, the target, and whether idlereaper met it. One function per scenario adds its rows."""

from .results import PEERS, REAL_CLIENTS, fmt, num, ratio

TICK_PLUS_1 = 2.0  # ms: daemon.tick 1 ms + 1 ms


class Table:
    def __init__(self, res, cols, label):
        self.res, self.cols = res, cols
        self.lines = []
        self.target_text = ""
        head = (
            ["scenario", "metric"] + [label[c] for c in cols] + ["idlereaper ÷ better peer", "target", "met"]
        )
        self.lines.append("| " + " | ".join(head) + " |")
        self.lines.append("|" + "---|" * len(head))

    def target(self, text):
        """The target of the next row (then none again)."""
        self.target_text = text

    def row(
        self, scenario, metric, values, higher_is_better=None, check=None, met=None, absolute=None, digits=2
    ):
        """One row; `check(ratio)` or `absolute(idlereaper's value)` decides "met"."""
        ir = values.get("idlereaper")
        r = None
        if higher_is_better is not None:
            r, _ = ratio(ir, [values.get(p) for p in PEERS], higher_is_better)
        if met is None and check is not None and r is not None:
            met = check(r)
        if absolute is not None and ir is not None:
            met = absolute(ir)
        cells = [scenario, metric] + [fmt(values.get(c), digits) for c in self.cols]
        cells.append("—" if r is None else f"{r:.2f}×")
        cells.append(self.target_text or "")
        cells.append("" if met is None else ("yes" if met else "**no**"))
        self.lines.append("| " + " | ".join(cells) + " |")
        self.target_text = ""

    def each(self, f):
        return {c: f(c) for c in self.cols}


def hold_rows(t, m):
    res, hold_n = t.res, int(m.get("hold_n", "0") or 0)
    if not (hold_n and any(res.select(c, "hold", conns=hold_n) for c in t.cols)):
        return
    per = t.each(lambda c: res.hold(c, hold_n)[0])
    per_kib = {c: (v / 1024 if v is not None else None) for c, v in per.items()}
    t.target("≤ 0.50×")
    t.row(f"hold {hold_n:,}", "KiB per idle connection (RSS Δ / N)", per_kib, False, lambda r: r <= 0.5)
    cpu = t.each(lambda c: res.hold(c, hold_n)[1])
    ir, peers = cpu.get("idlereaper"), [cpu.get(p) for p in PEERS if cpu.get(p) is not None]
    t.target("≤ peer")
    met = (ir <= min(peers) + 0.02) if ir is not None and peers else None
    t.row(f"hold {hold_n:,}", f"CPU s over {m.get('hold_secs', '?')} s idle", cpu, False, met=met)


def reap_rows(t, m, reap):
    if not any(reap.values()):
        return
    g = lambda k: {c: (reap[c].get(k) if reap[c] else None) for c in t.cols}  # noqa: E731
    name = f"reap {m.get('reap_conns', '?')} @ {m.get('reap_timeout', '?')}"
    t.target("")
    # No ratio: a peer that closes early can show a smaller (even negative) lateness.
    t.row(name, "lateness p50 (ms), from the relay's last write", g("p50"), None)
    t.target("≤ 2 ms (tick + 1 ms)")
    t.row(
        name,
        "lateness p99 (ms), from the relay's last write",
        g("p99"),
        None,
        absolute=lambda v: v <= TICK_PLUS_1,
    )
    t.row(name, "lateness max (ms), from the relay's last write", g("max"), None)
    t.target("0")
    t.row(name, "closed early (all runs)", g("early"), None, absolute=lambda v: v == 0)
    t.row(name, "earliest close (ms)", g("min"), None)
    t.target("")
    if any(reap[c].get("sent_p50") is not None for c in t.cols if reap[c]):
        t.row(name, "lateness p50 (ms), from the client's send", g("sent_p50"), False)
        t.row(name, "lateness p99 (ms), from the client's send", g("sent_p99"), False)
        t.row(name, "burst absorption: echo delay p50 (ms)", g("lag_p50"), False)


def bulk_rows(t):
    for streams in ("1", "4"):
        vals = t.each(lambda c: t.res.med(c, "bulk", "gbytes_per_s", streams=streams))
        if any(v is not None for v in vals.values()):
            t.target("≥ 1.20×")
            name = f"bulk, {streams} stream{'s' if streams != '1' else ''}"
            t.row(name, "GB/s (iperf3)", vals, True, lambda r: r >= 1.2)


def pingpong_rows(t):
    res = t.res
    for scenario, name, target in (
        ("pingpong", "ping-pong 64 B", "≤ 1.00×"),
        ("pingpong_1cpu", "ping-pong 64 B, all on CPU 0", "(≤ 1.00×)"),
    ):
        p50 = t.each(lambda c: res.med(c, scenario, "p50_us"))
        if any(v is not None for v in p50.values()):
            t.row(name, "round trip p50 (µs)", p50, False)
            t.target(target)
            p99 = t.each(lambda c: res.med(c, scenario, "p99_us"))
            t.row(name, "round trip p99 (µs)", p99, False, lambda r: r <= 1.0)


def churn_rows(t, m):
    res = t.res
    churn = t.each(lambda c: res.med(c, "churn", "conns_per_s"))
    if any(v is not None for v in churn.values()):
        name = f"churn, {m.get('churn_threads', '?')} threads"
        t.target("≥ 1.00×")
        t.row(name, "connections/s", churn, True, lambda r: r >= 1.0)
        fails = t.each(lambda c: sum(int(r.get("failed", 0)) for r in res.select(c, "churn")))
        if any(fails.values()):
            t.row(name, "failed connections (all runs)", fails, None)


def upgrade_rows(t, m, up):
    if not any(up.values()):
        return
    g = lambda k: {c: (up[c].get(k) if up[c] else None) for c in t.cols}  # noqa: E731
    name = f"upgrade, {fmt(num(m.get('upgrade_conns')))} idle + ping-pong"
    wait = m.get("upgrade_wait", "?")
    t.target("≤ 50 ms")
    t.row(
        name,
        "ping-pong stall during the upgrade (ms), worst run",
        g("stall"),
        False,
        absolute=lambda v: v <= 50,
    )
    t.target("")
    t.row(
        name, f"ping-pong longest round trip over the {wait} s after the signal (ms)", g("stall_wait"), None
    )
    t.row(name, "ping-pong longest round trip in the second before (ms)", g("base_max"), None)
    t.row(name, "pause logged by idlereaper (ms), worst run", g("pause"), None)
    t.row(name, "signal to upgraded / new worker up (ms), worst run", g("reload"), None, digits=1)
    t.row(name, f"connections on an old process {wait} s after, worst run", g("old"), None)
    t.target("0")
    t.row(name, "connections lost by the upgrade (all runs)", g("lost"), None, absolute=lambda v: v == 0)
    t.target("")
    t.row(name, "connections cut by a hard stop of the old process (all runs)", g("cut"), None)


def real_client_rows(t):
    res = t.res
    for scenario, match, name, unit, key, _ in REAL_CLIENTS:
        tput = t.each(lambda c: res.med(c, scenario, key, **match))
        if not any(v is not None for v in tput.values()):
            continue
        t.target("≥ 1.00×")
        t.row(name, unit, tput, True, lambda r: r >= 1.0)
        if scenario == "redis":
            t.target("")
            t.row(name, "latency p99 (ms)", t.each(lambda c: res.med(c, scenario, "p99_ms", **match)), False)
        t.target("≤ 0.80×")
        per = "relay CPU s per 100k " + ("requests" if scenario == "redis" else "transactions")
        cpu = t.each(lambda c: res.med(c, scenario, "cpu_s_per_100k", **match))
        t.row(name, per, cpu, False, lambda r: r <= 0.8, digits=3)
