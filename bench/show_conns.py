#!/usr/bin/env python3
"""bench/show_conns.py (run as `bash bench/show_conns.sh`): what `idlereaperctl show conns`
costs the relay with 9,000 idle connections open. A 64-byte ping-pong (loadgen, 60,000 round
trips) runs through the same worker while the control socket is asked the same question 10
times, 0.2 s apart; for each question: nothing (the baseline), every row (`show conns --json`),
and what `top` asks (`show conns --json --limit 24`). Prints the answer's size, each answer's
end-to-end time (socat's start included) and the ping-pong's p50/p99/max round trip.

    cargo build --release && bash bench/show_conns.sh      # as root (20,000 descriptors), ~2 min

Environment: B (the binaries' directory, default target/release), CONNS (default 9000).
Loopback only (127.0.0.1:16101-16102) and a control socket in a temporary directory; everything
it starts is stopped on the way out (bench/rig/procs.py).
"""

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from rig import procs as P  # noqa: E402
from rig.idlereaper import Idlereaper  # noqa: E402
from rig.loadgen import Loadgen  # noqa: E402
from rig.relay import Listener  # noqa: E402

UPSTREAM, FRONT = "127.0.0.1:16101", "127.0.0.1:16102"
QUESTIONS = ("", "show conns --json", "show conns --json --limit 24")


def die(msg):
    sys.exit(f"show_conns: {msg}")


def open_conns(ctl, socket_path):
    """The `open` count of the listener, from `idlereaperctl show listeners --json`."""
    done = subprocess.run(
        [ctl, "-s", socket_path, "show", "listeners", "--json"], capture_output=True, timeout=10
    )
    try:
        return int(json.loads(done.stdout)[0]["open"])
    except (ValueError, IndexError, KeyError, TypeError):
        return 0


def ask(question, socket_path, answer_path):
    """The question through socat, as a user would; (milliseconds end to end, answer bytes)."""
    t0 = time.monotonic_ns()
    with open(answer_path, "wb") as out:
        subprocess.run(
            ["socat", "-", f"UNIX-CONNECT:{socket_path}"],
            input=(question + "\n").encode(),
            stdout=out,
            timeout=10,
        )
    return (time.monotonic_ns() - t0) // 1_000_000, os.path.getsize(answer_path)


def measure(lg, relay, work):
    for question in QUESTIONS:
        pp = lg.start("pingpong", ["pingpong", "--connect", FRONT, "--count", "60000"])
        time.sleep(0.5)
        times, size = [], 0
        for _ in range(10):
            if question:
                ms, size = ask(question, relay.control_socket, os.path.join(work, "answer"))
                times.append(f"{ms}ms")
            time.sleep(0.2)
        got = lg.finish(pp, 300)
        print(f"== {question or 'nothing asked'}")
        if question:
            print(f"  answer: {size} bytes; end to end: {' '.join(times)}")
        keys = list(got)
        tail = keys[keys.index("p50_us") :] if "p50_us" in got else keys
        print(f"  ping-pong: {' '.join(f'{k}={got[k]}' for k in tail)}", flush=True)


def main():
    b = os.environ.get("B") or os.path.join(os.path.dirname(HERE), "target", "release")
    conns = int(os.environ.get("CONNS") or 9000)
    for tool in ("socat",):
        if not shutil.which(tool):
            die(f"{tool} is missing")
    for binary in ("idlereaper", "idlereaperctl", "loadgen"):
        if not os.access(os.path.join(b, binary), os.X_OK):
            die(f"{b}/{binary} is missing (cargo build --release)")
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (20000, max(20000, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    )
    work = tempfile.mkdtemp(prefix="idlereaper-show-conns.")
    procs = P.Procs(os.path.join(work, "logs"))
    P.interruptible()
    try:
        lg = Loadgen(os.path.join(b, "loadgen"), procs)
        lg.serve("echo", "echo", UPSTREAM)
        relay = Idlereaper(procs, os.path.join(work, "idlereaper"), binary=os.path.join(b, "idlereaper"))
        relay.start([Listener("echo", FRONT, UPSTREAM, idle_s=600)], control=True)
        lg.start(
            "hold",
            [
                "hold",
                "--connect",
                FRONT,
                "--conns",
                str(conns),
                "--pid",
                str(relay.main_pid()),
                "--hold",
                "600s",
            ],
        )
        ctl = os.path.join(b, "idlereaperctl")
        P.wait_until(lambda: open_conns(ctl, relay.control_socket) >= conns, 120, 1.0)
        n = open_conns(ctl, relay.control_socket)
        if n < conns:
            die(f"only {n} of {conns} connections open")
        commit = subprocess.run(
            ["git", "-C", HERE, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        print(f"# bench/show_conns.sh at {commit or '?'}, {stamp}: {n} connections open", flush=True)
        measure(lg, relay, work)
    except (P.Interrupted, RuntimeError) as e:
        die(str(e))
    finally:
        P.uninterruptible()
        procs.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
