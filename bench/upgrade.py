#!/usr/bin/env python3
"""bench/upgrade.py: the client of bench/compare.py's `upgrade` scenario (bench/scenarios/upgrade.py).

    upgrade.py run --kind idlereaper|haproxy|nginx --connect 127.0.0.1:PORT --conns N
                   --exe PATH --pid PID|--pidfile FILE [--log FILE] [--wait SECS]
                   [--workers N] [--samples FILE]
    upgrade.py pingpong --connect 127.0.0.1:PORT --out FILE      (started by `run`)

`run` measures what a live upgrade costs the connections a relay holds. The relay runs from
its own copy of its binary, EXE. `run` opens N connections through the relay to an echo
upstream, proves each relays a byte, and starts a 64-byte ping-pong on one more connection, in
its own process (`pingpong`), that records every round trip with its start time. One second
later it replaces EXE with a fresh copy (a new inode: copy, then rename over it, as a package
upgrade does) and asks the relay to upgrade to it:
    idlereaper  `kill -USR2 <pidfile>`: the daemon re-executes the new binary in the same
                process and hands it every connection; done when its log says `upgraded …`
                (or `upgrade refused: …`)
    haproxy     master-worker mode (`-W`): `kill -USR2 <master>`; the master re-executes itself
                and forks a new worker; the old worker keeps its connections. Done when the
                new worker exists.
    nginx       binary upgrade ("Upgrading Executable on the Fly"): `kill -USR2 <master>`,
                wait for the new master (nginx.pid) and its workers, then `kill -WINCH` the old
                master (nginx.pid.oldbin): its workers stop accepting and keep their connections.
WAIT seconds after the signal it counts, from /proc, which process holds the relay's side of
each of the N connections: one still running the old binary (its /proc/PID/exe is the old,
replaced inode) or one running the new one. It stops the ping-pong and checks every connection
with a one-byte echo. For HAProxy and nginx it then stops the old processes the hard way
(HAProxy: SIGTERM to the old worker; nginx: SIGTERM to the old master, whose graceful QUIT
would wait for the connections to end) and checks every connection again: the ones that see
EOF or a reset were cut. Finally one new connection must relay a byte.

It prints one line:
    scenario=upgrade kind=… conns=N wait_s=… pid_before=… pid_after=… same_pid=0|1
    reload_ms=… [pause_ms=… log_connections=… log_listeners=… | refused="…"] stall_ms=…
    stall_at_ms=… stall_window_ms=… stall_wait_ms=… stall_wait_at_ms=… pp_base_p50_us=…
    pp_base_max_ms=… pp_trips=… pp_broken=0|1
    old_conns=… new_conns=… gone_conns=… working_after=… lost=…
    [stop_cut=… stop_eof=… stop_reset=… stop_timeout=… working_after_stop=…] new_conn_ok=0|1
stall_ms is the longest round trip of the ping-pong that was under way at any time from the
signal to 1 s after the relay said it was done (stall_window_ms after the signal; the whole
WAIT if it never said so); if the ping-pong broke (pp_broken=1), from its last completed round
trip to the end of that window. stall_at_ms: when it started, from the signal. stall_wait_ms:
the same over the whole WAIT, which on a shared machine also catches other work's hiccups.
pp_base_* are the same stream's round trips in the second before the signal (ended before it).
lost = N - working_after.
--samples writes the ping-pong's round trips from 1 s before the signal to WAIT after it
(`t_ms rtt_ms`, t from the signal; every trip of 1 ms or more, one in ten of the others).

Every phase is bounded in time; the exit status is 0 when the measurement ran (whatever it
found), 1 when it could not (the relay did not accept the connections, for example).
Loopback only: client sockets bind source addresses rotating over 127.2.0.0/16
(bench/rig/held.py); the ping-pong is bench/rig/pingpong.py.
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from rig import held, pingpong  # noqa: E402
from rig import procs as P  # noqa: E402

RELOAD_LIMIT_S = 30  # signal to "upgraded" / new worker
STOP_LIMIT_S = 10  # hard stop of the old processes
UPGRADED = re.compile(r"upgraded from=(\S+) to=(\S+) connections=(\d+) listeners=(\d+) pause_ms=([0-9.]+)")
REFUSED = re.compile(r"upgrade refused: (.*)")
SECOND = 1_000_000_000  # ns


def die(msg):
    sys.stderr.write(f"upgrade.py: {msg}\n")
    sys.exit(1)


def replace_exe(path):
    """A fresh copy of PATH renamed over it: a new inode at the same path."""
    tmp = f"{path}.new.{os.getpid()}"
    shutil.copy2(path, tmp)
    os.rename(tmp, path)
    return os.stat(path).st_ino


class Pingpong:
    """The ping-pong in a process of its own (`upgrade.py pingpong`), recording into a file."""

    def __init__(self, args):
        self.path = f"{args.samples or '/tmp/upgrade-pingpong'}.raw.{os.getpid()}"
        argv = [
            sys.executable,
            os.path.abspath(__file__),
            "pingpong",
            "--connect",
            args.connect,
            "--out",
            self.path,
            "--max-secs",
            str(args.wait + RELOAD_LIMIT_S + 30),
        ]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
        if self.proc.stdout.readline().strip() != b"ready":  # after the warm-up round trips
            self.stop()
            die("the ping-pong did not start")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def record(self, t_sig):
        """What it recorded (then the file goes)."""
        if not os.path.exists(self.path):
            return [], (t_sig, time.monotonic_ns(), "no-samples")
        got = pingpong.read(self.path)
        os.remove(self.path)
        return got


def wait_idlereaper(args, pid0, log_offset, result):
    """Until its log says `upgraded …` or `upgrade refused: …` (details into `result`)."""

    def logged():
        if not P.alive(pid0):
            return "died"
        try:
            with open(args.log, errors="replace") as f:
                f.seek(log_offset)
                text = f.read()
        except OSError:
            return None
        m = UPGRADED.search(text)
        if m:
            result.update(
                pause_ms=m.group(5),
                log_connections=m.group(3),
                log_listeners=m.group(4),
                log_from=m.group(1),
                log_to=m.group(2),
            )
            return "upgraded"
        m = REFUSED.search(text)
        if m:
            result["refused"] = '"' + m.group(1).strip().replace('"', "'").replace(" ", "_") + '"'
            return "refused"
        return None

    return P.wait_until(logged, RELOAD_LIMIT_S, 0.01) or "silent"


def wait_haproxy(pid0, children0, new_ino):
    """Until the master forked a worker from the new binary."""

    def new_worker():
        for c in P.children(pid0):
            if c not in children0 and P.exe_inode(c) == new_ino:
                return c
        return None if P.alive(pid0) else "died"

    w = P.wait_until(new_worker, RELOAD_LIMIT_S, 0.01)
    return "died" if w == "died" else ("reloaded" if w else "silent")


def wait_nginx(args, pid0, new_ino):
    """Until the new master (nginx.pid, the old one's moved to .oldbin) has its workers; then
    WINCH to the old master: its workers stop accepting and keep their connections."""

    def new_master():
        if not P.alive(pid0):
            return "died"
        m = held_pid(args.pidfile)
        if m and m != pid0 and os.path.exists(args.pidfile + ".oldbin") and P.exe_inode(m) == new_ino:
            if len(P.children(m)) >= args.workers:
                return m
        return None

    m = P.wait_until(new_master, RELOAD_LIMIT_S, 0.01)
    if m and m != "died":
        os.kill(pid0, signal.SIGWINCH)
        return "reloaded", "USR2+WINCH"
    return ("died" if m == "died" else "silent"), "USR2"


def held_pid(path):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def upgrade(args, pid0, new_ino, result):
    """USR2, and the wait (bounded) until the relay says it is done: (outcome, signal, t_sig)."""
    log_offset = os.path.getsize(args.log) if args.log and os.path.exists(args.log) else 0
    children0 = set(P.children(pid0))
    t_sig = time.monotonic_ns()
    os.kill(pid0, signal.SIGUSR2)
    sig_name = "USR2"
    if args.kind == "idlereaper":
        outcome = wait_idlereaper(args, pid0, log_offset, result)
    elif args.kind == "haproxy":
        outcome = wait_haproxy(pid0, children0, new_ino)
    else:
        outcome, sig_name = wait_nginx(args, pid0, new_ino)
    return outcome, sig_name, t_sig


def stall_fields(fields, record, outcome, t_sig, t_done, t_end):
    """The ping-pong: the longest round trip under way from the signal to 1 s after the relay
    said it was done (to the end of the window if it never did), and over the whole window."""
    trips, broken = record
    t_win = min(t_end, t_done + SECOND) if outcome in ("upgraded", "reloaded") else t_end
    stall, stall_at, n_during = pingpong.longest(trips, broken, t_sig, t_win)
    stall_wait, stall_wait_at, _ = pingpong.longest(trips, broken, t_sig, t_end)
    fields["stall_ms"] = f"{stall / 1e6:.2f}"
    fields["stall_at_ms"] = f"{(stall_at - t_sig) / 1e6:.1f}"
    fields["stall_window_ms"] = f"{(t_win - t_sig) / 1e6:.0f}"
    fields["stall_wait_ms"] = f"{stall_wait / 1e6:.2f}"
    fields["stall_wait_at_ms"] = f"{(stall_wait_at - t_sig) / 1e6:.1f}"
    fields["pp_base_p50_us"], fields["pp_base_max_ms"] = pingpong.baseline(trips, t_sig)
    fields["pp_trips"] = n_during
    # "unfinished": a round trip still under way when the ping-pong was told to stop (its wait
    # counts as a stall above); anything else is an error on the connection.
    fields["pp_broken"] = 1 if broken and broken[2] != "unfinished" else 0


def hard_stop(args, fields, pid0, old_ino, conns, live):
    """The peers: the old processes stopped the hard way (HAProxy: TERM to the old worker;
    nginx: TERM to the old master, whose graceful QUIT would wait for the connections to end);
    the connections that see EOF or a reset were cut."""
    olds = list(held.procs_running({old_ino}))
    victims = (
        [p for p in olds if p != pid0] if args.kind == "haproxy" else ([pid0] if P.alive(pid0) else olds)
    )
    P.signal_pids(victims, signal.SIGTERM)
    P.wait_until(lambda: not any(P.alive(p) for p in olds), STOP_LIMIT_S)
    time.sleep(0.2)  # let the kernel deliver the closes
    stopped = held.check(conns, live)
    fields["stop_signal"] = "TERM"
    fields["stop_old_left"] = sum(1 for p in olds if P.alive(p))
    fields["stop_eof"] = stopped.count("eof")
    fields["stop_reset"] = stopped.count("reset")
    fields["stop_timeout"] = stopped.count("timeout")
    fields["stop_cut"] = fields["working_after"] - stopped.count("ok")
    fields["working_after_stop"] = stopped.count("ok")


def run_main(args):
    addr = held.loopback(args.connect)
    fields = {"scenario": "upgrade", "kind": args.kind, "conns": args.conns, "wait_s": args.wait}

    def target_pid():
        return held_pid(args.pidfile) if args.pidfile else args.pid

    pid0 = P.wait_until(target_pid, 10)
    if not pid0 or not P.alive(pid0):
        die(f"no relay process to signal (pidfile {args.pidfile}, pid {args.pid})")
    old_ino = os.stat(args.exe).st_ino
    if P.exe_inode(pid0) != old_ino:
        die(f"process {pid0} does not run {args.exe}")
    conns = held.open_conns(addr, args.conns)
    clients = {s.getsockname() for s in conns}
    live = [True] * len(conns)
    first = held.check(conns, live)
    if first.count("ok") != len(conns):
        die(f"only {first.count('ok')} of {len(conns)} connections relay a byte before the upgrade")

    pp = Pingpong(args)
    result = {}
    try:
        time.sleep(1.0)  # the baseline
        new_ino = replace_exe(args.exe)
        outcome, sig_name, t_sig = upgrade(args, pid0, new_ino, result)
        t_done = time.monotonic_ns()
        fields.update(signal=sig_name, outcome=outcome, reload_ms=f"{(t_done - t_sig) / 1e6:.1f}")
        # The observation window; the ping-pong stops first: the scans below would slow it.
        t_end = t_sig + int(args.wait * SECOND)
        while time.monotonic_ns() < t_end:
            time.sleep(min(0.2, max(0.0, (t_end - time.monotonic_ns()) / 1e9)))
        pp.stop()
        old_n, new_n, gone_n = held.ownership(addr[1], clients, old_ino, new_ino)
        pid1 = target_pid()
        fields["pid_before"] = pid0
        fields["pid_after"] = pid1 if pid1 else "-"
        fields["same_pid"] = 1 if pid1 == pid0 and P.alive(pid0) else 0
        fields["exe_new"] = 1 if pid1 and P.exe_inode(pid1) == new_ino else 0
    finally:
        pp.stop()

    record = pp.record(t_sig)
    stall_fields(fields, record, outcome, t_sig, t_done, t_end)
    if args.samples:
        pingpong.write_samples(args.samples, *record, t_sig, t_end, args.kind)
    fields.update(result)
    fields.update(old_conns=old_n, new_conns=new_n, gone_conns=gone_n)
    after = held.check(conns, live)
    fields["working_after"] = after.count("ok")
    fields["lost"] = len(conns) - after.count("ok")
    if args.kind in ("haproxy", "nginx"):
        hard_stop(args, fields, pid0, old_ino, conns, live)
    fields["new_conn_ok"] = held.one_new_conn(addr)
    for s in conns:
        s.close()
    print(" ".join(f"{k}={v}" for k, v in fields.items()), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--kind", choices=["idlereaper", "haproxy", "nginx"], required=True)
    r.add_argument("--connect", required=True)
    r.add_argument("--conns", type=int, required=True)
    r.add_argument(
        "--exe", required=True, help="the relay's binary, replaced by a fresh copy before the signal"
    )
    r.add_argument("--pid", type=int, help="the process to signal (HAProxy's master)")
    r.add_argument("--pidfile", help="or the pidfile that names it (idlereaper, nginx)")
    r.add_argument("--log", help="idlereaper's log file")
    r.add_argument("--wait", type=float, default=10.0)
    r.add_argument("--workers", type=int, default=1, help="nginx: worker processes to wait for")
    r.add_argument("--samples")
    p = sub.add_parser("pingpong")
    p.add_argument("--connect", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--max-secs", type=float, default=60.0)
    args = ap.parse_args()
    try:
        if args.cmd == "pingpong":
            pingpong.serve(held.loopback(args.connect), args.out, args.max_secs)
            return
        if not args.pid and not args.pidfile:
            die("--pid or --pidfile is required")
        if args.kind == "idlereaper" and not args.log:
            die("--log is required for idlereaper")
        run_main(args)
    except (RuntimeError, ValueError) as e:
        die(str(e))


if __name__ == "__main__":
    main()
