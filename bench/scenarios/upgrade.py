"""upgrade: a live upgrade under load. A fresh relay, run from its own copy of its binary
(run/upgrade-RELAY/bin/), holds UPGRADE_CONNS idle connections through its echo listener and a
64-byte ping-pong on one more. bench/upgrade.py replaces the binary with a fresh copy (a new
inode, as a package upgrade does), upgrades the relay the way each one documents (idlereaper:
USR2; HAProxy in master-worker mode: USR2 to the master; nginx: USR2, then WINCH, to the master,
"Upgrading Executable on the Fly"), and measures the ping-pong's longest stall, which processes
(old binary or new) hold the connections UPGRADE_WAIT seconds later, whether each still relays,
and for HAProxy and nginx how many a hard stop of the old processes cuts. nginx runs with
`daemon on` here: it refuses a binary upgrade while the process that started it lives; the
subreaper (bench/rig/subreaper.py) keeps it a descendant of the run, which the load monitor
counts as ours. Run last, with a fresh relay each time (it leaves old processes and a burst of
closed connections behind); HAProxy with its default thread count is not upgraded.
"""

import os
import re

from comparison.relays import bench_relay, port
from comparison.run import field
from rig import procs as P
from rig.relay import established

# The relay's per-connection lines (idlereaper's close lines, nginx's "open socket … left in
# connection" at the hard stop) are counted in its kept log, not copied.
PER_CONNECTION = re.compile(r" conn closed |open socket #[0-9]+ left in connection")


def run_all(run):
    s = run.settings
    for rep in range(1, s.reps + 1):
        for r in s.relays:
            if r == "haproxy-auto":
                continue
            run.say(f"upgrade: {r}, {s.upgrade_conns} connections + ping-pong, rep {rep}")
            upgrade(run, r, rep)


def target_args(relay):
    """How bench/upgrade.py finds the process to signal (and idlereaper's log)."""
    if relay.kind == "idlereaper":
        return ["--pidfile", relay.pidfile, "--log", relay.log_file]
    if relay.kind == "haproxy":
        return ["--pid", str(relay.root_pid())]
    return ["--pidfile", relay.pidfile, "--workers", str(relay.bench_run.settings.threads)]


def upgrade(run, r, rep):
    s = run.settings
    tag = f"upgrade-{r}-{rep}"
    relay = bench_relay(run, r, upgrade=True)
    try:
        relay.start_bench()
    except RuntimeError as e:
        run.fail(f"{r}: upgrade rep {rep}: the relay did not start ({str(e).splitlines()[0]})")
        relay.stop()
        return
    try:
        argv = [
            run.python,
            os.path.join(run.bench, "upgrade.py"),
            "run",
            "--kind",
            r,
            "--connect",
            f"127.0.0.1:{port(r, 'p_echo')}",
            "--conns",
            str(s.upgrade_conns),
            "--wait",
            str(s.upgrade_wait),
            "--exe",
            relay.exe,
            *target_args(relay),
            "--samples",
            run.path("samples", f"{tag}.txt"),
        ]
        status, out = run.tool(tag, argv, s.upgrade_wait + 400)
        line = run.client_result(tag, status, out, f"{r}: upgrade rep {rep}")
        if line:
            run.record(r, rep, line)
            checks(run, r, rep, line)
    finally:
        # Everything that runs either binary (nginx's new master included: all under the subreaper).
        relay.stop()
    keep_logs(run, relay, rep)
    # Let the upstream see the closes before the next relay.
    P.wait_until(lambda: established(port(r, "u_echo")) < 10, 20)


def checks(run, r, rep, line):
    """What must hold whatever the timings. idlereaper: it upgraded (no refusal), in the same
    process, which now runs the new binary. The peers: the reload happened. For all: every
    connection still relays UPGRADE_WAIT s later, a new connection relays, and the ping-pong
    did not break."""
    want = "upgraded" if r == "idlereaper" else "reloaded"
    if field(line, "outcome") != want:
        refused = f" refused={field(line, 'refused')}" if field(line, "refused") else ""
        run.fail(f"{r}: upgrade rep {rep}: no upgrade (outcome={field(line, 'outcome')}{refused})")
        return
    if r == "idlereaper":
        if field(line, "same_pid") != "1":
            run.fail(
                f"{r}: upgrade rep {rep}: the pid changed ({field(line, 'pid_before')} -> {field(line, 'pid_after')})"
            )
        if field(line, "exe_new") != "1":
            run.fail(
                f"{r}: upgrade rep {rep}: the process does not run the binary now on disk (/proc/PID/exe)"
            )
    if field(line, "lost") != "0":
        lost = field(line, "lost")
        run.fail(
            f"{r}: upgrade rep {rep}: {lost} of {run.settings.upgrade_conns} connections no longer relay after the upgrade"
        )
    if field(line, "pp_broken") != "0":
        run.fail(f"{r}: upgrade rep {rep}: the ping-pong connection broke")
    if field(line, "new_conn_ok") != "1":
        run.fail(f"{r}: upgrade rep {rep}: a new connection does not relay afterwards")


def keep_logs(run, relay, rep):
    """The relay's own logs, less its per-connection lines, which are counted instead."""
    for name in sorted(os.listdir(relay.run_dir)):
        src = os.path.join(relay.run_dir, name)
        if not name.endswith(".log") or os.path.getsize(src) == 0:
            continue
        left_out = 0
        with (
            open(src, errors="replace") as a,
            open(run.path("logs", f"{relay.label}-upgrade-{rep}-{name}"), "w") as b,
        ):
            for line in a:
                if PER_CONNECTION.search(line):
                    left_out += 1
                else:
                    b.write(line)
            if left_out:
                b.write(f"(compare.py: {left_out} per-connection lines left out)\n")
