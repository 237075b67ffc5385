#!/usr/bin/env python3
"""bench/protocols_report.py RESULTS_DIR: the table of the "protocols" scenario of compare.py.

Reads the scenario=proto_* lines of RESULTS_DIR/results.txt and writes RESULTS_DIR/protocols.md:
for each workload, idlereaper's listener with protocol "tcp" and with "postgres" or "redis"
(medians over the rounds, min-max beside), the ratio of the protocol listener to the tcp one
against its target, and HAProxy, nginx and direct beside them.
"""

import statistics
import sys
from pathlib import Path


def parse(line):
    fields = {}
    for part in line.split():
        if "=" in part:
            key, value = part.split("=", 1)
            fields[key] = value
    return fields


def values(rows, relay, scenario, key, **match):
    out = []
    for row in rows:
        if row.get("relay") != relay or row.get("scenario") != scenario:
            continue
        if any(row.get(k) != str(v) for k, v in match.items()):
            continue
        try:
            out.append(float(row[key]))
        except (KeyError, ValueError):
            pass
    return out


def fmt(v, digits):
    if v is None:
        return "—"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def cell(vs, digits):
    if not vs:
        return "—"
    med = statistics.median(vs)
    if len(vs) == 1:
        return fmt(med, digits)
    return f"{fmt(med, digits)} ({fmt(min(vs), digits)}–{fmt(max(vs), digits)})"


def main():
    out = Path(sys.argv[1])
    rows = [parse(l) for l in (out / "results.txt").read_text().splitlines() if "scenario=proto_" in l]
    stamp = out.name
    # (workload, metric, scenario, key, match, protocol listener, digits, higher is better, target)
    tests = [
        ("pgbench -S -c 8 -j 2", "transactions/s", "proto_pgbench", "tps", {}, "postgres", 0, True, 0.97),
        ("pgbench -S -c 8 -j 2", "relay CPU s per 100k transactions", "proto_pgbench", "cpu_s_per_100k", {},
         "postgres", 3, False, 1.10),
        ("redis-benchmark -t get -c 50 -P 16", "requests/s", "proto_redis", "rps", {"pipeline": 16}, "redis", 0,
         True, 0.97),
        ("redis-benchmark -t get -c 50 -P 16", "relay CPU s per 100k requests", "proto_redis", "cpu_s_per_100k",
         {"pipeline": 16}, "redis", 3, False, 1.10),
        ("redis-benchmark -t get -c 50 -P 1", "requests/s", "proto_redis", "rps", {"pipeline": 1}, "redis", 0,
         True, 0.97),
        ("redis-benchmark -t get -c 50 -P 1", "relay CPU s per 100k requests", "proto_redis", "cpu_s_per_100k",
         {"pipeline": 1}, "redis", 3, False, 1.10),
        ("a large value SET", "MB/s", "proto_bigvalue", "set_mb_s", {}, "redis", 0, True, 0.8),
        ("the same value GET back", "MB/s", "proto_bigvalue", "get_mb_s", {}, "redis", 0, True, 0.8),
    ]
    peers = ["haproxy", "nginx", "direct"]
    lines = [
        f"# Protocol observers: the same listener with protocol \"tcp\" and \"postgres\"/\"redis\" ({stamp})",
        "",
        "Medians over the rounds (min–max in brackets). Ratio: the protocol listener ÷ the tcp one.",
        "",
        "| workload | metric | idlereaper, protocol tcp | idlereaper, protocol postgres/redis | ratio | target "
        "| met | HAProxy | nginx | direct |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for workload, metric, scenario, key, match, protocol, digits, higher, target in tests:
        tcp = values(rows, "idlereaper-tcp", scenario, key, **match)
        observed = values(rows, f"idlereaper-{protocol}", scenario, key, **match)
        ratio, met = None, "—"
        if tcp and observed:
            ratio = statistics.median(observed) / statistics.median(tcp)
            met = "yes" if (ratio >= target if higher else ratio <= target) else "**no**"
        sign = "≥" if higher else "≤"
        others = [cell(values(rows, p, scenario, key, **match), digits) for p in peers]
        lines.append(
            f"| {workload} | {metric} | {cell(tcp, digits)} | {cell(observed, digits)} ({protocol}) "
            f"| {fmt(ratio, 2)}× | {sign} {target:.2f}× | {met} | " + " | ".join(others) + " |"
        )
    tcp_mem = values(rows, "idlereaper-tcp", "proto_hold", "bytes_per_conn")
    for protocol in ["postgres", "redis"]:
        mem = values(rows, f"idlereaper-{protocol}", "proto_hold", "bytes_per_conn")
        diff, met = None, "—"
        if tcp_mem and mem:
            diff = statistics.median(mem) - statistics.median(tcp_mem)
            met = "yes" if diff <= 64 else "**no**"
        lines.append(
            f"| idle connections held | resident bytes per connection | {cell(tcp_mem, 0)} | {cell(mem, 0)} "
            f"({protocol}) | {fmt(diff, 0)} bytes more | ≤ 64 bytes more | {met} | — | — | — |"
        )
    (out / "protocols.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
