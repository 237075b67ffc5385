"""results.txt (one `relay=… rep=… scenario=… key=value…` line per measurement) and
machine.txt read, and aggregated per relay: quick scenarios as the median over repetitions;
reap's max is the max over them and its early count the sum; the live upgrade (bench/upgrade.py)
its worst run. Ratios are idlereaper against the better of HAProxy and nginx (both pinned to the
same thread count as idlereaper); "haproxy-auto", HAProxy with its default thread count, is shown
for information and not used in ratios."""

import os
import statistics

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
    (
        "redis",
        {"pipeline": 16},
        "redis-benchmark -t get -c 50 -P 16",
        "requests/s",
        "rps",
        "redis GET, -P 16",
    ),
    ("redis", {"pipeline": 1}, "redis-benchmark -t get -c 50 -P 1", "requests/s", "rps", "redis GET, -P 1"),
]


def pg_version(machine):
    """ "15.18" out of "postgres (PostgreSQL) 15.18 (Debian …)"."""
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


def labels(machine):
    """Each relay's name in the table and the charts, with its thread or worker count."""
    workers = machine.get("workers", "unset")
    threads = "1" if workers == "unset" else workers
    return {
        "idlereaper": "idlereaper" + ("" if workers == "unset" else f" ({workers} workers)"),
        "haproxy": f"HAProxy (nbthread {threads})",
        "nginx": f"nginx ({threads} worker{'s' if threads != '1' else ''})",
        "haproxy-auto": "HAProxy (default threads)",
        "direct": "direct, no relay",
    }


def lines_of(path):
    """The non-empty lines of a file, stripped (none if it is missing)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]
