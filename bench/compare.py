#!/usr/bin/env python3
"""bench/compare.py (run as `bash bench/compare.sh`): idlereaper side by side with HAProxy and
nginx (stream), on loopback.

One command from a fresh clone (as root, on Debian 12):
    bash bench/compare.sh                  # full run, ~23 minutes
    SCALE=smoke bash bench/compare.sh      # every scenario at a tiny size, < 2 minutes

It installs what is missing (haproxy, nginx, libnginx-mod-stream, iperf3, matplotlib; for the
real-client scenarios postgresql and redis-server, redis-tools), builds the release binaries,
starts each relay in front of upstreams served by `loadgen` and in front of the run's own
PostgreSQL and redis-server, runs the scenarios (bench/scenarios/: hold, reap, bulk, ping-pong,
churn; pgbench and redis-benchmark; protocols; live upgrade) and writes bench/results/<timestamp>/:
    results.txt   one line per measurement: relay=… rep=… scenario=… key=value…
    summary.md    the table (medians over REPS), ratios and targets, anomalies
    charts/*.png  memory per connection vs N, reap lateness, throughput, churn, ping-pong,
                  real clients
    machine.txt   machine, versions, commit, load during the run; logs/ and configs/ too
Runs stay local (bench/.gitignore). A full run of all relays and scenarios, without errors and
on a quiet machine, also publishes its summaries (summary.md, results.txt, machine.txt,
protocols.md, charts/; not the raw logs, samples and client reports) to bench/results/latest/
(latest-workersN/ with WORKERS=N), which BENCHMARKS.md quotes. PUBLISH=0 keeps it;
PUBLISH=1 publishes whatever the run. PUBLISH_DIR=NAME publishes to bench/results/NAME/
instead, also a run of some scenarios or relays only (real-clients, upgrade, protocols: the
directories BENCHMARKS.md quotes; it gives the command that regenerates each).

Knobs (environment):
    SCALE=full|smoke      sizes (bench/comparison/settings.py); smoke also sets REPS=1
    ONLY="idlereaper"     relays to run, space or comma separated, out of
                          idlereaper haproxy nginx haproxy-auto (default: all; haproxy-auto is
                          HAProxy with its own default thread count, full runs only)
    WORKERS=N             idlereaper `daemon.workers = N`, HAProxy `nbthread N`, nginx
                          `worker_processes N` (+ reuseport); unset: 1 thread each, no
                          `workers` key in idlereaper's config
    SCENARIOS="hold reap bulk pingpong churn pgbench redis upgrade protocols"
    REPS=3                repetitions of the quick scenarios (all but hold)
    HOLD_N=9000 HOLD_SECS=30 HOLD_CURVE="1000 3000" HOLD_CURVE_SECS=5
    REAP_CONNS=2000 REAP_TIMEOUT=2s BULK_SECS=10 CHURN_SECS=10 CHURN_THREADS=4
    PING_COUNT=20000 INSTALL=1 BUILD=1 OUT=bench/results/<timestamp>
    PGBENCH_SECS=10 PGBENCH_SCALE=10 REDIS_N_P16=2000000 REDIS_N_P1=300000
    UPGRADE_CONNS=9000 UPGRADE_WAIT=10
    PROTO_HOLD_N=5000 PROTO_HOLD_SECS=5 PROTO_HOLD_REPS=2 BIGVALUE_MB=100 BIGVALUE_ROUNDS=3

Exit status: 0 when every scenario ran and passed its sanity checks (every held connection
still relays, every reaped connection was closed, no client error); 1 otherwise (the results
and summary are still written); 2 for a knob it cannot use. Everything started is stopped on the
way out, also on Ctrl-C or TERM (bench/rig/procs.py); every wait is bounded. Only loopback
addresses are used.
"""

import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from comparison import prepare, relays, settings  # noqa: E402
from comparison.run import Run  # noqa: E402
from comparison.servers import Servers  # noqa: E402
from rig import procs as P  # noqa: E402
from rig.relay import listening_ports  # noqa: E402
from scenarios import bulk, churn, hold, pgbench, pingpong, protocols, reap, redis, upgrade  # noqa: E402

QUICK = {"reap": reap, "bulk": bulk, "pingpong": pingpong, "churn": churn, "pgbench": pgbench, "redis": redis}


def main():
    try:
        s = settings.from_env()
    except settings.BadSetting as e:
        die(str(e), 2)
    root = os.path.dirname(HERE)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    run = Run(s, root, os.environ.get("OUT") or os.path.join(HERE, "results", stamp))
    P.interruptible()
    try:
        status = measure(run, stamp)
    except P.Interrupted:
        run.say("interrupted")
        status = 130
    except (prepare.Missing, RuntimeError) as e:
        print(f"compare.py: {e}", file=sys.stderr)
        status = 1
    except settings.BadSetting as e:
        print(f"compare.py: {e}", file=sys.stderr)
        status = 2
    finally:
        P.uninterruptible()
        if run.servers:
            run.servers.close()
        run.procs.close()
    sys.exit(status)


def die(msg, status):
    print(f"compare.py: {msg}", file=sys.stderr)
    sys.exit(status)


def measure(run, stamp):
    s = run.settings
    prepare.install(run)
    prepare.build(run)
    fd_limit = prepare.descriptors(s)
    prepare.machine_txt(run, stamp, fd_limit)
    # Load on the machine during the run: others may be building and testing on the same cores.
    # Every 5 s, the CPU used by this run's processes and by everything else (bench/loadmon.py).
    with open(run.path("load.txt"), "wb") as load:
        run.procs.start(
            "loadmon", [sys.executable, os.path.join(HERE, "loadmon.py"), str(os.getpid()), "5"], stdout=load
        )
    busy = set(relays.all_ports(s.relays)) & listening_ports("self")
    if busy:
        raise RuntimeError(f"port {min(busy)} is already in use; is another benchmark running?")

    run.say(f"results in {run.out}")
    run.say(
        f"relays: {' '.join(s.relays)}; scenarios: {' '.join(s.scenarios)}; scale {s.scale}; workers {s.workers or 'unset'}"
    )
    run.relays = relays.Relays(run)
    for r in [*s.relays, "direct"]:
        run.relays.start_upstreams(r)
    if s.has("hold"):
        hold.run_all(run)
    ready = start_servers(run)
    quick_scenarios(run, ready)
    if s.has("protocols") and ready["pgbench"] and ready["redis"]:
        protocols.run_all(run)
    run.relays.stop_all()
    run.servers.close()
    if s.has("upgrade"):
        upgrade.run_all(run)
    run.relays.keep_logs()
    return finish(run)


def start_servers(run):
    """The real clients' servers: started once, after the holds (which they would not disturb,
    but there is no need), stopped after the last scenario that uses them."""
    s = run.settings
    run.servers = Servers(run)
    ready = {"pgbench": False, "redis": False}
    if s.needs_postgres():
        run.say(f"PostgreSQL: initdb, start on 127.0.0.1:{relays.PG_PORT}, pgbench -i -s {s.pgbench_scale}")
        ready["pgbench"] = run.servers.start_postgres()
    if s.needs_redis():
        run.say(f"redis-server: start on 127.0.0.1:{relays.REDIS_PORT}")
        ready["redis"] = run.servers.start_redis()
    return ready


def quick_scenarios(run, ready):
    """Relays started once, fresh; repetitions interleave the relays so that a change in the
    machine's load during the run spreads over all of them."""
    s = run.settings
    for r in s.relays:
        run.relays.start(r)
    for name, scenario in QUICK.items():
        # A server that did not start has been reported already.
        if not s.has(name) or not ready.get(name, True):
            continue
        for rep in range(1, s.reps + 1):
            for r in [*s.relays, "direct"]:
                scenario.measure(run, r, rep)
                if r != "direct":
                    run.relays.check(r, name)


def finish(run):
    s = run.settings
    run.say("writing summary and charts")
    status, out = run.tool("report", [run.python, os.path.join(HERE, "report.py"), run.out], 600)
    if status != 0:
        sys.stderr.write(out + open(run.log("report", "log"), errors="replace").read())
        run.fail("report.py failed")
    contended = os.path.exists(run.path("contended"))
    # Published automatically: a full-scale run without errors on a quiet machine, of every relay
    # and scenario, or of the ones a PUBLISH_DIR run was asked for.
    asked = bool(s.publish_dir) or (not s.only and s.scenarios == settings.ALL_SCENARIOS.split())
    everything = s.scale == "full" and asked
    if s.publish == "1" or (s.publish == "auto" and everything and not run.failures() and not contended):
        publish(run)
    elif s.publish == "auto" and contended:
        run.say(
            "not published: other processes shared the cores during the run (PUBLISH=1 to publish anyway)"
        )
    print()
    if os.path.exists(run.path("summary.md")):
        with open(run.path("summary.md")) as f:
            print(f.read(), end="")
    print()
    run.say(f"done in {int(time.monotonic() - run.t0)} s; results in {shown(run)}")
    errors = run.failures()
    if errors:
        run.say(f"FAILED: {len(errors)} error(s):")
        for e in errors:
            print(f"  {e}")
        return 1
    return 0


def shown(run):
    """The results directory, relative to the repository when it is inside it."""
    inside = run.out.startswith(run.root + os.sep)
    return os.path.relpath(run.out, run.root) if inside else run.out


def publish(run):
    """The published copy: the summaries and charts; the raw output stays in the run's directory."""
    workers = run.settings.workers
    name = run.settings.publish_dir or (f"latest-workers{workers}" if workers else "latest")
    dest = os.path.join(HERE, "results", name)
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(dest)
    for f in ("summary.md", "results.txt", "machine.txt", "protocols.md", "charts"):
        src = run.path(f)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(dest, f))
        elif os.path.exists(src):
            shutil.copy2(src, dest)
    run.say(f"published to {os.path.relpath(dest, run.root)}")


if __name__ == "__main__":
    main()
