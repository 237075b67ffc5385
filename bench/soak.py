#!/usr/bin/env python3
"""bench/soak.py (run as `bash bench/soak.sh`): a soak test for idlereaper (to run by hand, not
in CI).

Runs a release idlereaper with three relay listeners and puts mixed load on all of them at once
for DURATION seconds:
  churn  short connections (connect, 64-byte request, response, close): `loadgen churn`
  idle   rounds of HOLD_CONNS connections that relay one byte and then sit idle for HOLD_SECS,
         longer than the listener's idle timeout, so the daemon reaps them: `loadgen hold`
  bulk   BULK_STREAMS parallel iperf3 streams in rounds of BULK_ROUND seconds (without iperf3:
         `loadgen pingpong` with 64 KiB messages)
Every SAMPLE seconds it records the daemon's descriptors (/proc/<pid>/fd: total and sockets),
RSS and CPU time (bench/rig/measure.py).

Growth is judged between two resting points, so that pools filled on first use (relay buffers,
splice pipes; both bounded) do not count as growth: "start" is measured after a WARMUP-second
round of the same load has finished and its connections have drained; "end" after the main
load has finished and drained. It fails if descriptors grew by more than FD_TOLERANCE or RSS by
more than RSS_TOLERANCE_KIB between the two, if the daemon died, or if it did not stop cleanly on
TERM.

Usage: bench/soak.sh                 (10 minutes)
       DURATION=60 bench/soak.sh     (a quick proof that it works)
Other knobs (environment): WARMUP=20 SAMPLE=10 FD_TOLERANCE=4 RSS_TOLERANCE_KIB=2048
CHURN_THREADS=2 HOLD_CONNS=1000 HOLD_SECS=8 HOLD_IDLE_TIMEOUT=5s BULK_STREAMS=2 BULK_ROUND=15
BULK_RATE=2G (per iperf3 stream, bits/s; 0 = unlimited) DRAIN_TIMEOUT=60 SOAK_IP=127.0.99.1
BASE_PORT=19900.
Output: a table of samples on stdout; everything (config, daemon log, load tool output,
samples.csv) in a temporary directory that is printed and kept.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from rig import measure  # noqa: E402
from rig import procs as P  # noqa: E402
from rig.idlereaper import Idlereaper  # noqa: E402
from rig.relay import Listener  # noqa: E402

KNOBS = {
    "DURATION": "600",
    "WARMUP": "20",
    "SAMPLE": "10",
    "FD_TOLERANCE": "4",
    "RSS_TOLERANCE_KIB": "2048",
    "CHURN_THREADS": "2",
    "HOLD_CONNS": "1000",
    "HOLD_SECS": "8",
    "HOLD_IDLE_TIMEOUT": "5s",
    "BULK_STREAMS": "2",
    "BULK_ROUND": "15",
    "BULK_RATE": "2G",
    "DRAIN_TIMEOUT": "60",
    "SOAK_IP": "127.0.99.1",
    "BASE_PORT": "19900",
}


class Failed(Exception):
    """The soak failed; the message says why."""


def say(msg):
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


def seconds(text):
    """ "5s", "500ms", "2m" as seconds."""
    for suffix, scale in (("ms", 0.001), ("s", 1), ("m", 60)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * scale
    return float(text)


class Quiet(Idlereaper):
    """idlereaper at log level warn: a close line per connection would be gigabytes at this churn."""

    def config_text(self):
        return super().config_text().replace('log_level = "info"', 'log_level = "warn"')


class Soak:
    def __init__(self, k, work, procs, bin_dir):
        self.k, self.work, self.procs = k, work, procs
        self.binary, self.loadgen = os.path.join(bin_dir, "idlereaper"), os.path.join(bin_dir, "loadgen")
        ip, base = k["SOAK_IP"], int(k["BASE_PORT"])
        self.churn, self.hold, self.bulk = (f"{ip}:{base + i}" for i in (1, 2, 3))
        self.echo, self.iperf = f"{ip}:{base + 11}", f"{ip}:{base + 13}"
        self.bulk_tool = "iperf3" if shutil.which("iperf3") else "loadgen"
        self.relay = None
        self.samples = os.path.join(work, "samples.csv")

    def start(self):
        k, ip = self.k, self.k["SOAK_IP"]
        self.procs.start("echo", [self.loadgen, "echo", "--listen", self.echo])
        if self.bulk_tool == "iperf3":
            self.procs.start("iperf3-server", ["iperf3", "-s", "-B", ip, "-p", self.iperf.rsplit(":", 1)[1]])
        bulk_upstream = self.iperf if self.bulk_tool == "iperf3" else self.echo
        self.relay = Quiet(self.procs, os.path.join(self.work, "idlereaper"), binary=self.binary)
        self.relay.start(
            [
                Listener("churn", self.churn, self.echo, idle_s=10),
                Listener("idle", self.hold, self.echo, idle_s=seconds(k["HOLD_IDLE_TIMEOUT"])),
                Listener("bulk", self.bulk, bulk_upstream, idle_s=60),
            ]
        )
        time.sleep(0.5)  # the upstreams' listeners
        self.pid = self.relay.main_pid()
        say(f"idlereaper pid {self.pid}, bulk via {self.bulk_tool}")
        with open(self.samples, "w") as f:
            f.write("phase,elapsed_s,fds,sockets,rss_kib,cpu_s\n")
        self.rest_sockets = self.now()["sockets"]

    def now(self):
        if not P.alive(self.pid):
            raise Failed(f"idlereaper (pid {self.pid}) died; log: {self.relay.log_tail(5)}")
        return measure.sample([self.pid])

    def sample(self, phase, elapsed):
        s = self.now()
        with open(self.samples, "a") as f:
            f.write(f"{phase},{elapsed},{s['fds']},{s['sockets']},{s['rss_kib']},{s['cpu_s']:.2f}\n")
        print(
            f"  {phase:<8} t={elapsed:>5}s  fds={s['fds']:<6} sockets={s['sockets']:<6} "
            f"rss_kib={s['rss_kib']:<7} cpu_s={s['cpu_s']:.2f}",
            flush=True,
        )
        return s

    def drain(self):
        """Until the daemon holds no connection (only its resting sockets)."""
        limit = float(self.k["DRAIN_TIMEOUT"])
        if not P.wait_until(lambda: self.now()["sockets"] <= self.rest_sockets, limit, 0.1):
            raise Failed(
                f"connections did not drain: {self.now()['sockets']} sockets, {self.rest_sockets} at rest"
            )

    # ----- load -------------------------------------------------------------------------------

    def round(self, name, argv, limit_s, out, last_lines=None):
        """One client run, tracked (stopped with the rest), its output appended to `out` (only its
        last lines, if asked)."""
        path = out if last_lines is None else f"{out}.{threading.get_ident()}"
        with open(path, "ab" if last_lines is None else "wb") as f:
            p = self.procs.start(name, argv, stdout=f)
        try:
            status = p.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            self.procs.stop(p, 1.0)
            status = None
        if last_lines is not None:
            with open(path, errors="replace") as f, open(out, "a") as o:
                o.writelines(f.readlines()[-last_lines:])
            os.remove(path)
        return status

    def holders(self, until, out):
        k = self.k
        argv = [
            self.loadgen,
            "hold",
            "--connect",
            self.hold,
            "--conns",
            k["HOLD_CONNS"],
            "--pid",
            str(self.pid),
            "--hold",
            f"{k['HOLD_SECS']}s",
        ]
        while time.time() + int(k["HOLD_SECS"]) + 2 <= until:
            status = self.round("hold", argv, int(k["HOLD_SECS"]) + 120, out)
            if status != 0:
                with open(out, "a") as f:
                    f.write(f"hold round failed: {status}\n")

    def bulk_rounds(self, until, out):
        k = self.k
        while (left := int(until - time.time())) >= 2:
            secs = min(left, int(k["BULK_ROUND"]))
            if self.bulk_tool == "iperf3":
                ip, port = self.bulk.rsplit(":", 1)
                argv = [
                    "iperf3",
                    "-c",
                    ip,
                    "-p",
                    port,
                    "-P",
                    k["BULK_STREAMS"],
                    "-b",
                    k["BULK_RATE"],
                    "-t",
                    str(secs),
                    "--connect-timeout",
                    "5000",
                ]
                # Its summary: the last lines (the streams' sum, sender and receiver).
                if self.round("bulk", argv, secs + 30, out, last_lines=4) != 0:
                    with open(out, "a") as f:
                        f.write("iperf3 round failed\n")
                continue
            argv = [
                self.loadgen,
                "pingpong",
                "--connect",
                self.bulk,
                "--size",
                "65536",
                "--count",
                str(secs * 2000),
            ]
            streams = [
                threading.Thread(target=self.round, args=("bulk", argv, secs + 10, out))
                for _ in range(int(k["BULK_STREAMS"]))
            ]
            for t in streams:
                t.start()
            for t in streams:
                t.join()

    def load(self, secs, label):
        """The three loads at once for `secs` seconds; returns the threads to wait for."""
        until = time.time() + secs
        out = {kind: os.path.join(self.work, f"{kind}-{label}.out") for kind in ("churn", "hold", "bulk")}
        churn = [
            self.loadgen,
            "churn",
            "--connect",
            self.churn,
            "--threads",
            self.k["CHURN_THREADS"],
            "--duration",
            f"{secs}s",
        ]
        jobs = [
            threading.Thread(target=self.round, args=("churn", churn, secs + 60, out["churn"])),
            threading.Thread(target=self.holders, args=(until, out["hold"])),
            threading.Thread(target=self.bulk_rounds, args=(until, out["bulk"])),
        ]
        for t in jobs:
            t.daemon = True
            t.start()
        return jobs


def run(soak, k):
    soak.sample("idle", 0)
    idle = soak.now()
    say(f"warm-up: {k['WARMUP']}s of the same load, then drain")
    for t in soak.load(int(k["WARMUP"]), "warmup"):
        t.join()
    soak.drain()
    start = soak.sample("start", 0)
    say(
        f"soak: {k['DURATION']}s of churn ({k['CHURN_THREADS']} threads), idle holders ({k['HOLD_CONNS']} × "
        f"{k['HOLD_SECS']}s, reaped at {k['HOLD_IDLE_TIMEOUT']}), bulk ({k['BULK_STREAMS']} streams)"
    )
    t0, duration = time.time(), int(k["DURATION"])
    jobs = soak.load(duration, "soak")
    peak = dict(start)
    while time.time() - t0 < duration:
        time.sleep(int(k["SAMPLE"]))
        s = soak.sample("load", int(time.time() - t0))
        peak["fds"], peak["rss_kib"] = max(peak["fds"], s["fds"]), max(peak["rss_kib"], s["rss_kib"])
    for t in jobs:
        t.join()
    soak.drain()
    end = soak.sample("end", int(time.time() - t0))
    # Stop: TERM, and the daemon's exit status.
    P.signal_pids([soak.pid], signal.SIGTERM)
    try:
        status = soak.relay.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        status = "none within 30 s"
    return idle, start, peak, end, status


def report(soak, k, idle, start, peak, end, status):
    def read(name):
        path = os.path.join(soak.work, name)
        return open(path, errors="replace").read() if os.path.exists(path) else ""

    churn = " ".join(line for line in read("churn-soak.out").splitlines() if "scenario=churn" in line)
    holds = read("hold-soak.out").count("scenario=hold")
    bulk_rounds = read("bulk-soak.out").count("receiver")
    log = soak.relay.log_text()
    warns = sum(1 for line in log.splitlines() if " WARN " in line)
    errors = sum(1 for line in log.splitlines() if " ERROR " in line)
    print()
    print(f"== idlereaper soak: {k['DURATION']}s ==")
    print(f"load:        {churn}")
    print(
        f"             {holds} idle-holder rounds of {k['HOLD_CONNS']} connections; {bulk_rounds} bulk rounds ({soak.bulk_tool})"
    )
    print(f"log:         {warns} warnings, {errors} errors (log_level warn)")
    print(
        f"descriptors: before warm-up {idle['fds']}, start {start['fds']}, max under load {peak['fds']}, end {end['fds']}"
    )
    print(
        f"rss (KiB):   before warm-up {idle['rss_kib']}, start {start['rss_kib']}, max under load {peak['rss_kib']}, end {end['rss_kib']}"
    )
    print(f"cpu (s):     start {start['cpu_s']:.2f}, end {end['cpu_s']:.2f}")
    print(f"exit:        {status} after TERM")
    print(f"details:     {soak.work}")
    fails = []
    if end["fds"] > start["fds"] + int(k["FD_TOLERANCE"]):
        fails.append(f"descriptors grew from {start['fds']} to {end['fds']} (tolerance {k['FD_TOLERANCE']})")
    if end["rss_kib"] > start["rss_kib"] + int(k["RSS_TOLERANCE_KIB"]):
        fails.append(
            f"RSS grew from {start['rss_kib']} KiB to {end['rss_kib']} KiB (tolerance {k['RSS_TOLERANCE_KIB']} KiB)"
        )
    if status != 0:
        fails.append(f"exit status {status} after TERM")
    if errors:
        fails.append(f"{errors} errors in the log")
    for f in fails:
        say(f"FAIL: {f}")
    if not fails:
        say("PASS")
    return 1 if fails else 0


def main():
    k = {key: os.environ.get(key) or default for key, default in KNOBS.items()}
    root = os.path.dirname(HERE)
    say("building (release)")
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "--bin", "idlereaper", "--bin", "loadgen"],
        cwd=root,
        check=True,
    )
    work = tempfile.mkdtemp(prefix="idlereaper-soak.")
    say(f"work directory: {work}")
    procs = P.Procs(work)
    soak = Soak(k, work, procs, os.path.join(root, "target", "release"))
    P.interruptible()
    try:
        soak.start()
        status = report(soak, k, *run(soak, k))
    except (Failed, RuntimeError, P.Interrupted) as e:
        say(f"FAIL: {e}")
        status = 1
    finally:
        P.uninterruptible()
        procs.close()
    sys.exit(status)


if __name__ == "__main__":
    main()
