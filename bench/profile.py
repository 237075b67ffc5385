#!/usr/bin/env python3
"""bench/profile.py (run as `bash bench/profile.sh`): where each relay's CPU goes on a
request/response load, from the kernel's own sampling. idlereaper, HAProxy (nbthread 1) and
nginx (1 worker) each relay `redis-benchmark -t get -c 50 -P 1 -n 300000` to one redis-server,
one after the other, with `perf record -g` on the relay's process alone (HAProxy's and nginx's
worker); for each it prints the share of the relay's samples under each path (a syscall's share
includes the loopback TCP work done inside it). Then the TCP segments each relay's traffic takes
(nstat around 100,000 GETs, direct too): the kernel work a relay cannot avoid.

    bash bench/profile.sh          # as root, ~1 minute; needs perf (linux-perf), redis,
                                   # haproxy, nginx with the stream module (compare.sh installs
                                   # all but perf), and a release build (cargo build --release)

Environment: BIN (idlereaper, default target/release/idlereaper). The relays are bench/rig's
(bench/rig/relays.py), one listener each. Loopback only (127.0.0.1:16002-16004 and 16379);
everything it starts is stopped on the way out.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from rig import procs as P  # noqa: E402
from rig.redis_server import RedisServer  # noqa: E402
from rig.relay import Listener  # noqa: E402
from rig.relays import relay  # noqa: E402

REDIS = "127.0.0.1:16379"
PORTS = {"direct": 16379, "idlereaper": 16002, "nginx": 16003, "haproxy": 16004}
PATHS = re.compile(
    r"^(entry_SYSCALL_64_after_hwframe|__x64_sys_sendto|do_writev|__x64_sys_recvfrom|__x64_sys_epoll_wait"
    r"|net_rx_action|sock_def_readable|__schedule)$"
)
TOOLS = ("perf", "nstat", "redis-server", "redis-benchmark", "redis-cli", "haproxy", "nginx")


def start_relays(procs, work, idlereaper_bin):
    """Each relay in front of the one redis-server; {name: the process to profile}."""
    out = {}
    for kind in ("idlereaper", "nginx", "haproxy"):
        binary = idlereaper_bin if kind == "idlereaper" else None
        r = relay(kind, procs, os.path.join(work, kind), binary=binary)
        r.start([Listener("redis", f"127.0.0.1:{PORTS[kind]}", REDIS, idle_s=600)])
        # idlereaper's one process; HAProxy's worker (under its master); nginx's worker.
        out[kind] = (
            r.main_pid()
            if kind == "idlereaper"
            else P.children(r.proc.pid if kind == "haproxy" else r.master())[0]
        )
    return out


def benchmark(port, n, quiet=False):
    argv = ["redis-benchmark", "-p", str(port), "-t", "get", "-c", "50", "-P", "1", "-n", str(n)]
    try:
        done = subprocess.run([*argv, "-q" if quiet else "--csv"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return ""
    lines = done.stdout.strip().splitlines()
    return lines[-1].split(",")[1].strip('"') if lines and not quiet and "," in lines[-1] else ""


def perf_report(path, *args):
    done = subprocess.run(["perf", "report", "-i", path, *args], capture_output=True, text=True, timeout=300)
    return [line for line in done.stdout.splitlines() if re.match(r"^ +[0-9.]+%", line)]


def profile(name, pid, work):
    data = os.path.join(work, f"perf.{name}")
    perf = subprocess.Popen(
        ["perf", "record", "-q", "-g", "-p", str(pid), "-o", data, "--", "sleep", "8"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        rps = benchmark(PORTS[name], 300000)
        perf.wait(timeout=60)
    finally:
        if perf.poll() is None:
            perf.kill()
            perf.wait()
    print(f"== {name} ({rps} requests/s); share of the relay's samples (children included)")
    for line in perf_report(data, "--children", "--sort", "symbol"):
        words = line.split()
        for w in words:
            if PATHS.match(w):
                print(f"  {w:<32} {words[0]}")
    for line in perf_report(data, "--no-children", "--sort", "dso")[:4]:
        words = line.split()
        print(f"  self in {words[1]:<30} {words[0]}")


def segments(name):
    subprocess.run(["nstat", "-n"], capture_output=True, timeout=10)
    benchmark(PORTS[name], 100000, quiet=True)
    counters = {}
    for line in subprocess.run(["nstat"], capture_output=True, text=True, timeout=10).stdout.splitlines():
        words = line.split()
        if len(words) >= 2:
            counters[words[0]] = words[1]
    print(
        f"  {name:<12} TcpOutSegs {counters.get('TcpOutSegs', '')}  TcpExtTCPPureAcks {counters.get('TcpExtTCPPureAcks', '')}"
    )


def main():
    idlereaper_bin = os.environ.get("BIN") or os.path.join(
        os.path.dirname(HERE), "target", "release", "idlereaper"
    )
    for tool in TOOLS:
        if not shutil.which(tool):
            sys.exit(f"profile: {tool} is missing")
    if not os.access(idlereaper_bin, os.X_OK):
        sys.exit(f"profile: {idlereaper_bin} is missing (cargo build --release)")
    work = tempfile.mkdtemp(prefix="idlereaper-profile.")
    procs = P.Procs(os.path.join(work, "logs"))
    P.interruptible()
    try:
        redis = RedisServer(procs, "127.0.0.1", PORTS["direct"]).start()
        redis.cli("set", "key:__rand_int__", "xxx")
        pids = start_relays(procs, work, idlereaper_bin)
        time.sleep(1)
        commit = subprocess.run(
            ["git", "-C", HERE, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        print(f"# bench/profile.sh at {commit or '?'}, {stamp}, kernel {os.uname().release}")
        print(
            "# redis-benchmark -t get -c 50 -P 1 -n 300000 through each relay; perf record -g -p RELAY",
            flush=True,
        )
        for name in ("idlereaper", "nginx", "haproxy"):
            profile(name, pids[name], work)
        print("== TCP segments around 100,000 GETs (-c 50 -P 1), all of this machine's (nstat)")
        for name in ("direct", "idlereaper", "nginx", "haproxy"):
            segments(name)
    except (P.Interrupted, RuntimeError) as e:
        sys.exit(f"profile: {e}")
    finally:
        P.uninterruptible()
        procs.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
