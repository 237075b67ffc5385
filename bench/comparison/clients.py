"""The real clients, run through a relay (or direct) with the relay's CPU read around them:
`pgbench -S -c 8 -j 2 -T SECS` (select only; `-C`: a new connection per transaction) and
`redis-benchmark -t get -c 50 -P PIPELINE -n N --csv`, whose CSV line gives requests/s and
latency (ms: avg, min, p50, p95, p99, max). redis-benchmark spins forever when it cannot
connect, hence the bound on every run."""

import re
from dataclasses import dataclass

from rig import measure


@dataclass
class Outcome:
    status: int
    out: str
    cpu_s: float  # the measured processes' CPU over the run


def cpu_fields(cpu_s, count):
    """The relay's CPU over a client's run, and per 100,000 transactions or requests."""
    per = cpu_s * 100000 / count if count > 0 else 0
    return f" relay_cpu_s={cpu_s:.3f} cpu_s_per_100k={per:.4f}"


def timed(run, tag, argv, limit_s, pids):
    cpu0 = measure.cpu_s(pids)
    status, out = run.tool(tag, argv, limit_s)
    return Outcome(status, out, measure.cpu_s(pids) - cpu0)


def pgbench(run, tag, port, pids, connect=False):
    """(tps, transactions, failed) or None, reported, when pgbench failed."""
    secs = run.settings.pgbench_secs
    flags = ["-S", "-c", "8", "-j", "2", "-T", str(secs), *(["-C"] if connect else [])]
    argv = [run.servers.pgbench(), *flags, "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "postgres"]
    got = timed(run, tag, argv, secs + 60, pids)
    tps = re.search(r"(?m)^tps = ([0-9.]+) ", got.out)
    xacts = re.search(r"(?m)^number of transactions actually processed: ([0-9]+)", got.out)
    failed = re.search(r"(?m)^number of failed transactions: ([0-9]+)", got.out)
    xacts = int(xacts.group(1)) if xacts else 0
    failed = failed.group(1) if failed else None
    if got.status != 0 or not tps or xacts == 0 or (failed or "0") != "0":
        return None, got, failed
    return (tps.group(1), xacts, failed or "0"), got, failed


def redis_benchmark(run, tag, port, pids, pipeline, n):
    """The CSV fields [rps, avg, min, p50, p95, p99, max] and the run, or None when it failed."""
    argv = [
        "redis-benchmark",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-t",
        "get",
        "-c",
        "50",
        "-P",
        str(pipeline),
        "-n",
        str(n),
        "--csv",
    ]
    got = timed(run, tag, argv, 60 + n // 10000, pids)
    line = next((ln.replace('"', "") for ln in got.out.splitlines() if ln.startswith('"GET"')), "")
    parts = line.split(",")
    try:
        ok = parts[0] == "GET" and float(parts[1]) > 0
    except (IndexError, ValueError):
        ok = False
    return (parts[1:] if ok and got.status == 0 else None), got
