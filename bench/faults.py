#!/usr/bin/env python3
"""bench/faults.py: idlereaper, HAProxy and nginx through the same faults, side by side.

    python3 bench/faults.py --short --profile debug    # every row, small (CI: a few minutes)
    flock /tmp/idlereaper-heavy.lock python3 bench/faults.py --write RELIABILITY.md   # full

As root (it makes network namespaces), on Debian 12 with haproxy, nginx, libnginx-mod-stream,
postgresql, iptables and iproute2 installed. It builds the binaries (cargo build --bins, the
profile asked for), makes three namespaces (client, relay, server; bench/rig/netns.py), and runs
every row of bench/faultrows/ for each relay, one cell at a time: the fault, the load, what was
lost, what was closed early, how long it took to notice. Each cell's relay, servers and rules are
removed before the next; everything is removed on exit, also on failure or Ctrl-C.

Prints one line per cell as it goes, then the table. Writes results.json (and the logs) in a
temporary directory it names, kept when something failed (or with --keep). With --write FILE, writes the
table there as Markdown (RELIABILITY.md, with the machine and the command).

Exit status: 1 when an idlereaper cell is judged failed (a byte lost, a connection closed early,
a fault not noticed within its bound), or when a row expected to fail today passes (its note is
out of date); HAProxy's and nginx's figures are reported, not judged. 2 on a usage error.
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from faultrows import ROWS, report  # noqa: E402
from faultrows.common import Cell, Ctx  # noqa: E402
from rig import machine, netns  # noqa: E402
from rig import procs as P  # noqa: E402
from rig.loadgen import Loadgen  # noqa: E402
from rig.relays import KINDS  # noqa: E402

NEEDED = [
    "/usr/sbin/haproxy",
    "/usr/sbin/nginx",
    "/usr/lib/nginx/modules/ngx_stream_module.so",
    "/usr/sbin/iptables",
    "/usr/sbin/ip",
    "/usr/bin/setpriv",
]


def parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--short", action="store_true", help="every row at a small size (CI)")
    ap.add_argument("--profile", choices=["release", "debug"], default="release")
    ap.add_argument("--no-build", action="store_true", help="use the binaries already built")
    ap.add_argument("--only", help="rows to run, comma separated keys (default: all)")
    ap.add_argument("--relays", default=",".join(KINDS), help="relays to run, comma separated")
    ap.add_argument("--write", metavar="FILE", help="write the table as Markdown to FILE")
    ap.add_argument("--list", action="store_true", help="list the rows and exit")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs) even when all passed")
    args = ap.parse_args()
    keys = [r.key for r in ROWS]
    args.only = args.only.split(",") if args.only else keys
    args.relays = args.relays.split(",")
    for k in args.only:
        if k not in keys:
            ap.error(f"unknown row {k!r} (rows: {', '.join(keys)})")
    for k in args.relays:
        if k not in KINDS:
            ap.error(f"unknown relay {k!r} ({', '.join(KINDS)})")
    return args


def build(profile):
    argv = ["cargo", "build", "--bins"] + (["--release"] if profile == "release" else [])
    print(f"faults: {' '.join(argv)}", flush=True)
    done = subprocess.run(argv, cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, timeout=1800)
    if done.returncode != 0:
        sys.exit(f"faults: build failed:\n{done.stderr.decode(errors='replace')[-3000:]}")


def judge(row, kind, cell):
    """The cell's verdict: (failed, label) for the summary."""
    if kind != "idlereaper" or cell.ok is None:
        return False, "reported"
    if row.known_loss:
        if cell.ok:
            cell.why = f"passes now: remove the known_loss note of row {row.key} (bench/faultrows/)"
            return True, "UNEXPECTED PASS"
        return False, "known loss"
    return (False, "ok") if cell.ok else (True, "FAILED")


def run_cell(ctx, row, kind):
    try:
        return row.run(ctx, kind)
    except P.Interrupted:
        raise
    except Exception as e:  # noqa: BLE001 -- one cell's failure is reported, the rest run
        return Cell(f"could not run: {e}".splitlines()[0], ok=False, why=traceback.format_exc())


def run_row(ctx, row, kinds):
    """{kind: (cell, seconds)}: one cell after another, or all at once for a `together` row."""
    out = {}
    if not row.together:
        for kind in kinds:
            t0 = time.monotonic()
            with ctx.cell():
                out[kind] = (run_cell(ctx, row, kind), time.monotonic() - t0)
        return out
    t0 = time.monotonic()
    with ctx.cell():
        threads = {
            kind: threading.Thread(
                target=lambda k=kind: out.__setitem__(k, (run_cell(ctx, row, k), 0)), daemon=True
            )
            for kind in kinds
        }
        for t in threads.values():
            t.start()
        for t in threads.values():
            while t.is_alive():  # joined in slices, so that Ctrl-C is seen
                t.join(timeout=0.5)
    return {k: (cell, time.monotonic() - t0) for k, (cell, _) in out.items()}


def run_rows(args, ctx):
    results = []
    for i, row in enumerate(ROWS):
        if row.key not in args.only:
            continue
        ctx.row_no = i
        kinds = [k for k in row.kinds if k in args.relays]
        for kind, (cell, secs) in run_row(ctx, row, kinds).items():
            failed, label = judge(row, kind, cell)
            print(f"[{row.key:>20}] {kind:<10} {label:<15} {cell.text}  ({secs:.0f} s)", flush=True)
            if failed or (cell.why and label != "ok"):
                print("    " + cell.why.replace("\n", "\n    "), flush=True)
            results.append(
                {
                    "row": row.key,
                    "kind": kind,
                    "text": cell.text,
                    "ok": cell.ok,
                    "label": label,
                    "failed": failed,
                    "why": cell.why,
                    "data": cell.data,
                    "seconds": round(secs, 1),
                }
            )
    return results


def others_load(work):
    """The CPU other processes used during the run, from bench/loadmon.py's samples."""
    cores = []
    try:
        with open(os.path.join(work, "load.txt")) as f:
            for line in f:
                for word in line.split():
                    if word.startswith("others_cores="):
                        cores.append(float(word.split("=", 1)[1]))
    except OSError:
        pass
    if not cores:
        return "not measured"
    cores.sort()
    return (
        f"{cores[len(cores) // 2]:.2f} cores (median of {len(cores)} samples every 10 s), at most "
        f"{cores[-1]:.2f}"
    )


def main():
    args = parse()
    if args.list:
        for r in ROWS:
            print(f"{r.key:>16}  {r.title}")
        return 0
    if os.geteuid() != 0:
        sys.exit("faults: run as root (it makes network namespaces and iptables rules)")
    missing = [f for f in NEEDED if not os.path.exists(f)]
    if missing:
        sys.exit(
            f"faults: missing {' '.join(missing)} (apt-get install haproxy nginx libnginx-mod-stream "
            "postgresql iptables iproute2)"
        )
    # A thousand connections held at once, and the relays started from here inherit the limit.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if not args.no_build:
        build(args.profile)
    target = os.path.join(REPO, "target", args.profile)
    bins = {b: os.path.join(target, b) for b in ("idlereaper", "idlereaperctl", "loadgen")}
    work = tempfile.mkdtemp(prefix="idlereaper-faults.")
    os.chmod(work, 0o755)
    print(f"faults: work directory {work}", flush=True)
    P.interruptible()
    procs = P.Procs(os.path.join(work, "logs"))
    hosts = netns.Hosts()
    started = time.time()
    results = []
    ctx = None
    try:
        # How busy the machine was besides this run (other people's builds share the cores).
        with open(os.path.join(work, "load.txt"), "wb") as samples:
            loadmon = [sys.executable, os.path.join(HERE, "loadmon.py"), str(os.getpid()), "10"]
            procs.start("load", loadmon, stdout=samples)
        hosts.create()
        ctx = Ctx(work, procs, hosts, Loadgen(bins["loadgen"], procs), bins, args.short)
        results = run_rows(args, ctx)
    except P.Interrupted as e:
        print(f"faults: interrupted ({e}); stopping everything", flush=True)
        return 130
    finally:
        P.uninterruptible()
        if ctx is not None:
            ctx.run_scope.close()
        procs.close()
        hosts.remove()
    elapsed = time.time() - started
    with open(os.path.join(work, "results.json"), "w") as f:
        json.dump(
            {"short": args.short, "profile": args.profile, "seconds": round(elapsed), "cells": results},
            f,
            indent=1,
        )
    print()
    print(report.table(ROWS, results, args.relays))
    failed = [r for r in results if r["failed"]]
    if args.write:
        about = machine.describe(REPO, bins["idlereaper"])
        about += [("network", hosts.describe()), ("other processes", others_load(work))]
        report.write(args.write, ROWS, results, args.relays, about, args, elapsed)
        print(f"faults: wrote {args.write}")
    print(f"faults: {len(results)} cells in {elapsed:.0f} s; {len(failed)} failed")
    if failed:
        print(f"faults: logs kept in {work}")
        for r in failed:
            print(f"  {r['row']} {r['kind']}: {r['text']}")
        return 1
    if args.keep:
        print(f"faults: logs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
