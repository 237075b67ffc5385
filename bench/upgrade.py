#!/usr/bin/env python3
"""bench/upgrade.py: the client of bench/compare.sh's `upgrade` scenario (a live upgrade of
the relay's binary under load: the pause, the connections kept, lost or left on the old code).

    upgrade.py run --kind idlereaper|haproxy|nginx --connect 127.0.0.1:PORT --conns N
                   --exe PATH --pid PID|--pidfile FILE [--log FILE] [--wait SECS]
                   [--workers N] [--samples FILE]
    upgrade.py pingpong --connect 127.0.0.1:PORT --out FILE      (started by `run`)
    upgrade.py subreaper -- COMMAND...                          (keeps a daemon in our tree)

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
Loopback only: client sockets bind source addresses rotating over 127.2.0.0/16.
"""

import argparse
import array
import ctypes
import errno
import os
import re
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time

CONNECT_LIMIT_S = 180  # opening all N connections
CHECK_LIMIT_S = 10  # one echo check of all N connections
RELOAD_LIMIT_S = 30  # signal to "upgraded" / new worker
STOP_LIMIT_S = 10  # hard stop of the old processes
PING_SIZE = 64


def die(msg):
    sys.stderr.write(f"upgrade.py: {msg}\n")
    sys.exit(1)


def now_ns():
    return time.monotonic_ns()


_next_source = (os.getpid() * 7919) & 0xFFFF


def client_socket():
    """A non-blocking socket bound to the next source address in 127.2.0.0/16."""
    global _next_source
    n = _next_source
    _next_source = (_next_source + 1) & 0xFFFF
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((f"127.2.{n >> 8}.{n & 0xFF}", 0))
    s.setblocking(False)
    return s


def parse_addr(text):
    host, port = text.rsplit(":", 1)
    if not host.startswith("127."):
        die(f"{text}: loopback addresses only")
    return host, int(port)


# ---------------------------------------------------------------------------------------------
# Connections.


def open_conns(addr, n):
    """N connected non-blocking sockets, at most 256 connects in flight, within the limit."""
    sel = selectors.DefaultSelector()
    done, inflight, failed = [], 0, []
    started = 0
    until = time.monotonic() + CONNECT_LIMIT_S
    while len(done) < n and time.monotonic() < until:
        while started < n and inflight < 256:
            s = client_socket()
            rc = s.connect_ex(addr)
            if rc not in (0, errno.EINPROGRESS):
                s.close()
                failed.append(os.strerror(rc))
                if len(failed) > 10:
                    die(f"connects fail: {failed[-1]} ({len(done)} of {n} open)")
                continue
            sel.register(s, selectors.EVENT_WRITE)
            started += 1
            inflight += 1
        for key, _ in sel.select(timeout=1.0):
            s = key.fileobj
            sel.unregister(s)
            inflight -= 1
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                s.close()
                started -= 1  # retried
                failed.append(os.strerror(err))
                if len(failed) > 10:
                    die(f"connects fail: {failed[-1]} ({len(done)} of {n} open)")
            else:
                done.append(s)
    sel.close()
    if len(done) < n:
        die(f"only {len(done)} of {n} connections opened within {CONNECT_LIMIT_S}s")
    return done


def check(conns, alive):
    """One-byte echo on every socket still alive; returns the outcomes, one per socket:
    ok, eof, reset, timeout, or dead (already found broken). A broken socket is marked in alive."""
    out = ["dead"] * len(conns)
    sel = selectors.DefaultSelector()
    pending = 0
    for i, s in enumerate(conns):
        if not alive[i]:
            continue
        try:
            s.send(b"\x02")
        except (ConnectionResetError, BrokenPipeError):
            out[i] = "reset"
            alive[i] = False
            continue
        except OSError:
            out[i] = "reset"
            alive[i] = False
            continue
        sel.register(s, selectors.EVENT_READ, i)
        pending += 1
    until = time.monotonic() + CHECK_LIMIT_S
    while pending and time.monotonic() < until:
        for key, _ in sel.select(timeout=0.5):
            i = key.data
            try:
                b = key.fileobj.recv(64)
            except BlockingIOError:
                continue
            except OSError:
                b = None
            if b:
                out[i] = "ok"
            else:
                out[i] = "eof" if b == b"" else "reset"
                alive[i] = False
            sel.unregister(key.fileobj)
            pending -= 1
    for key in list(sel.get_map().values()):
        out[key.data] = "timeout"
    sel.close()
    return out


def one_new_conn(addr):
    """1 if a new connection relays a byte within 5 s."""
    try:
        s = socket.create_connection(addr, timeout=5)
        s.sendall(b"\x03")
        ok = s.recv(1) == b"\x03"
        s.close()
        return 1 if ok else 0
    except OSError:
        return 0


# ---------------------------------------------------------------------------------------------
# Who holds the connections: /proc/net/tcp gives each relay-side socket's inode (local port =
# the relay's, remote = one of our clients); /proc/PID/fd gives which process holds it.


def relay_side_inodes(port, clients):
    inodes = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            lip, lport = local.split(":")
            if int(lport, 16) != port or state not in ("01", "08"):  # ESTABLISHED, CLOSE_WAIT
                continue
            rip, rport = remote.split(":")
            ip = socket.inet_ntoa(struct.pack("<I", int(rip, 16)))
            if (ip, int(rport, 16)) in clients:
                inodes.add(int(inode))
    return inodes


def exe_inode(pid):
    try:
        return os.stat(f"/proc/{pid}/exe").st_ino
    except OSError:
        return None


def procs_running(inodes):
    """pid -> exe inode for every process whose executable is one of `inodes`."""
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            ino = exe_inode(name)
            if ino in inodes:
                out[int(name)] = ino
    return out


def socket_inodes(pid):
    out = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                out.add(int(link[8:-1]))
    except OSError:
        pass
    return out


def ownership(port, clients, old_ino, new_ino):
    """(held by old-binary processes, held by new-binary processes, held by no relay process)."""
    ours = relay_side_inodes(port, clients)
    old, new = set(), set()
    for pid, ino in procs_running({old_ino, new_ino}).items():
        held = socket_inodes(pid) & ours
        (old if ino == old_ino else new).update(held)
    return len(old), len(new), len(clients) - len(old | new)


def children(pid):
    """The children of PID: /proc/PID/task/*/children, cheap enough to poll while the
    ping-pong runs; a scan of every process where the kernel lacks it."""
    try:
        out = []
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
        return out
    except FileNotFoundError:
        if not os.path.exists(f"/proc/{pid}"):
            return []
    except OSError:
        return []
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                out.append(int(name))
    return out


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def wait_for(pred, limit_s, step=0.01):
    until = time.monotonic() + limit_s
    while time.monotonic() < until:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


# ---------------------------------------------------------------------------------------------
# The ping-pong process.


def pingpong_main(args):
    addr = parse_addr(args.connect)
    s = client_socket()
    s.setblocking(True)
    s.settimeout(5)
    s.connect(addr)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(0.5)
    out = b"\x5a" * PING_SIZE
    buf = bytearray(PING_SIZE)
    stop = [False]
    parent = os.getppid()

    def on_term(*_):
        stop[0] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    times = array.array("q")
    rtts = array.array("q")
    broken = None
    trips = 0
    until = time.monotonic() + args.max_secs
    while not stop[0] and time.monotonic() < until:
        t0 = now_ns()
        try:
            s.sendall(out)
            got = 0
            while got < PING_SIZE:
                try:
                    k = s.recv_into(memoryview(buf)[got:])
                except socket.timeout:
                    if stop[0] or time.monotonic() > until:
                        break
                    continue
                if k == 0:
                    raise ConnectionError("EOF")
                got += k
            if got < PING_SIZE:  # stopped while a round trip was under way
                broken = (t0, now_ns(), "unfinished")
                break
        except OSError as e:
            broken = (t0, now_ns(), type(e).__name__)
            break
        t1 = now_ns()
        trips += 1
        if trips == 1000:
            print("ready", flush=True)
        if trips > 1000:
            times.append(t0)
            rtts.append(t1 - t0)
        if trips % 4096 == 0 and os.getppid() != parent:
            break
    if trips < 1000:
        print("ready", flush=True)  # broken early: let `run` go on and see it
    with open(args.out, "w") as f:
        for t, r in zip(times, rtts):
            f.write(f"{t} {r}\n")
        if broken:
            f.write(f"broken {broken[0]} {broken[1]} {broken[2]}\n")


def read_pingpong(path):
    trips, broken = [], None
    with open(path) as f:
        for line in f:
            p = line.split()
            if p[0] == "broken":
                broken = (int(p[1]), int(p[2]), p[3])
            else:
                trips.append((int(p[0]), int(p[1])))
    return trips, broken


# ---------------------------------------------------------------------------------------------
# The scenario.


def replace_exe(path):
    """A fresh copy of PATH renamed over it: a new inode at the same path."""
    tmp = f"{path}.new.{os.getpid()}"
    shutil.copy2(path, tmp)
    os.rename(tmp, path)
    return os.stat(path).st_ino


def run_main(args):
    addr = parse_addr(args.connect)
    port = addr[1]
    fields = {"scenario": "upgrade", "kind": args.kind, "conns": args.conns, "wait_s": args.wait}

    def target_pid():
        return read_pid(args.pidfile) if args.pidfile else args.pid

    pid0 = wait_for(target_pid, 10, 0.05)
    if not pid0 or not alive(pid0):
        die(f"no relay process to signal (pidfile {args.pidfile}, pid {args.pid})")
    old_ino = os.stat(args.exe).st_ino
    if exe_inode(pid0) != old_ino:
        die(f"process {pid0} does not run {args.exe}")

    conns = open_conns(addr, args.conns)
    clients = {s.getsockname() for s in conns}
    live = [True] * len(conns)
    first = check(conns, live)
    if first.count("ok") != len(conns):
        die(f"only {first.count('ok')} of {len(conns)} connections relay a byte before the upgrade")

    samples_tmp = f"{args.samples or '/tmp/upgrade-pingpong'}.raw.{os.getpid()}"
    pp = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "pingpong", "--connect", args.connect, "--out", samples_tmp,
         "--max-secs", str(args.wait + RELOAD_LIMIT_S + 30)],
        stdout=subprocess.PIPE,
    )

    def stop_pingpong():
        if pp.poll() is None:
            pp.send_signal(signal.SIGTERM)
        try:
            pp.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pp.kill()
            pp.wait()

    try:
        ready = pp.stdout.readline()  # after 1,000 warm-up round trips
        if ready.strip() != b"ready":
            die("the ping-pong did not start")
        time.sleep(1.0)  # the baseline

        new_ino = replace_exe(args.exe)
        log_offset = os.path.getsize(args.log) if args.log and os.path.exists(args.log) else 0
        children0 = set(children(pid0))
        sig_name = "USR2"
        t_sig = now_ns()
        os.kill(pid0, signal.SIGUSR2)

        # Until the relay says it is done (bounded).
        result = {}
        if args.kind == "idlereaper":
            pat_ok = re.compile(
                r"upgraded from=(\S+) to=(\S+) connections=(\d+) listeners=(\d+) pause_ms=([0-9.]+)"
            )
            pat_no = re.compile(r"upgrade refused: (.*)")

            def logged():
                if not alive(pid0):
                    return "died"
                try:
                    with open(args.log, errors="replace") as f:
                        f.seek(log_offset)
                        text = f.read()
                except OSError:
                    return None
                m = pat_ok.search(text)
                if m:
                    result.update(
                        pause_ms=m.group(5), log_connections=m.group(3), log_listeners=m.group(4),
                        log_from=m.group(1), log_to=m.group(2),
                    )
                    return "upgraded"
                m = pat_no.search(text)
                if m:
                    result["refused"] = '"' + m.group(1).strip().replace('"', "'").replace(" ", "_") + '"'
                    return "refused"
                return None

            outcome = wait_for(logged, RELOAD_LIMIT_S) or "silent"
        elif args.kind == "haproxy":

            def new_worker():
                for c in children(pid0):
                    if c not in children0 and exe_inode(c) == new_ino:
                        return c
                return None if alive(pid0) else "died"

            w = wait_for(new_worker, RELOAD_LIMIT_S)
            outcome = "died" if w == "died" else ("reloaded" if w else "silent")
        else:  # nginx

            def new_master():
                if not alive(pid0):
                    return "died"
                m = read_pid(args.pidfile)
                if m and m != pid0 and os.path.exists(args.pidfile + ".oldbin") and exe_inode(m) == new_ino:
                    if len(children(m)) >= args.workers:
                        return m
                return None

            m = wait_for(new_master, RELOAD_LIMIT_S)
            outcome = "died" if m == "died" else ("reloaded" if m else "silent")
            if m and m != "died":
                os.kill(pid0, signal.SIGWINCH)  # the old workers stop accepting
                sig_name = "USR2+WINCH"
        t_done = now_ns()
        fields["signal"] = sig_name
        fields["outcome"] = outcome
        fields["reload_ms"] = f"{(t_done - t_sig) / 1e6:.1f}"

        # The observation window.
        t_end = t_sig + int(args.wait * 1e9)
        while now_ns() < t_end:
            time.sleep(min(0.2, max(0.0, (t_end - now_ns()) / 1e9)))
        # The ping-pong stops first: the scans below would slow its last round trips.
        stop_pingpong()
        old_n, new_n, gone_n = ownership(port, clients, old_ino, new_ino)
        pid1 = target_pid()
        fields["pid_before"] = pid0
        fields["pid_after"] = pid1 if pid1 else "-"
        fields["same_pid"] = 1 if pid1 == pid0 and alive(pid0) else 0
        fields["exe_new"] = 1 if pid1 and exe_inode(pid1) == new_ino else 0
    finally:
        stop_pingpong()

    # The ping-pong: the longest round trip under way from the signal to 1 s after the relay
    # said it was done (to the end of the window if it never did), and over the whole window.
    if os.path.exists(samples_tmp):
        trips, broken = read_pingpong(samples_tmp)
    else:
        trips, broken = [], (t_sig, now_ns(), "no-samples")
    t_win = min(t_end, t_done + 1_000_000_000) if outcome in ("upgraded", "reloaded") else t_end

    def longest(until):
        during = [(r, t) for t, r in trips if t + r >= t_sig and t <= until]
        stall, at = max(during) if during else (0, t_sig)
        if broken:
            # Unfinished: the wait so far. Broken: the stream never came back, so the stall
            # lasts at least from its last round trip to the end of the window.
            last = max((t + r for t, r in trips), default=t_sig)
            if last <= until:
                lasted = (broken[1] if broken[2] == "unfinished" else max(until, broken[1])) - last
                if lasted > stall:
                    stall, at = lasted, last
        return stall, at, len(during)

    stall, stall_at, n_during = longest(t_win)
    stall_wait, stall_wait_at, _ = longest(t_end)
    base = [r for t, r in trips if t_sig - 1_000_000_000 <= t and t + r < t_sig]
    fields["stall_ms"] = f"{stall / 1e6:.2f}"
    fields["stall_at_ms"] = f"{(stall_at - t_sig) / 1e6:.1f}"
    fields["stall_window_ms"] = f"{(t_win - t_sig) / 1e6:.0f}"
    fields["stall_wait_ms"] = f"{stall_wait / 1e6:.2f}"
    fields["stall_wait_at_ms"] = f"{(stall_wait_at - t_sig) / 1e6:.1f}"
    fields["pp_base_p50_us"] = f"{statistics.median(base) / 1e3:.1f}" if base else "-"
    fields["pp_base_max_ms"] = f"{max(base) / 1e6:.2f}" if base else "-"
    fields["pp_trips"] = n_during
    # "unfinished": a round trip still under way when the ping-pong was told to stop (its wait
    # counts as a stall above); anything else is an error on the connection.
    fields["pp_broken"] = 1 if broken and broken[2] != "unfinished" else 0
    if args.samples:
        with open(args.samples, "w") as f:
            f.write(f"# upgrade ping-pong round trips: t_ms from the signal, rtt_ms ({args.kind})\n")
            k = 0
            for t, r in trips:
                if t_sig - 1_000_000_000 <= t <= t_end:
                    k += 1
                    if r >= 1_000_000 or k % 10 == 0:
                        f.write(f"{(t - t_sig) / 1e6:.3f} {r / 1e6:.4f}\n")
            if broken:
                f.write(f"# broken at {(broken[1] - t_sig) / 1e6:.1f} ms: {broken[2]}\n")
    try:
        os.remove(samples_tmp)
    except OSError:
        pass

    fields.update(result)
    fields["old_conns"] = old_n
    fields["new_conns"] = new_n
    fields["gone_conns"] = gone_n
    after = check(conns, live)
    fields["working_after"] = after.count("ok")
    fields["lost"] = len(conns) - after.count("ok")

    # The peers: stop the old processes the hard way and count the connections it cuts.
    if args.kind in ("haproxy", "nginx"):
        olds = [p for p, ino in procs_running({old_ino}).items()]
        if args.kind == "haproxy":
            victims = [p for p in olds if p != pid0]  # the master re-executed itself
        else:
            victims = [pid0] if alive(pid0) else olds
        for p in victims:
            try:
                os.kill(p, signal.SIGTERM)
            except ProcessLookupError:
                pass
        wait_for(lambda: not any(alive(p) for p in olds), STOP_LIMIT_S, 0.05)
        time.sleep(0.2)  # let the kernel deliver the closes
        stopped = check(conns, live)
        fields["stop_signal"] = "TERM"
        fields["stop_old_left"] = sum(1 for p in olds if alive(p))
        fields["stop_eof"] = stopped.count("eof")
        fields["stop_reset"] = stopped.count("reset")
        fields["stop_timeout"] = stopped.count("timeout")
        fields["stop_cut"] = fields["working_after"] - stopped.count("ok")
        fields["working_after_stop"] = stopped.count("ok")
    fields["new_conn_ok"] = one_new_conn(addr)
    for s in conns:
        s.close()
    print(" ".join(f"{k}={v}" for k, v in fields.items()), flush=True)


# ---------------------------------------------------------------------------------------------


def subreaper_main(args):
    """Runs COMMAND as a child subreaper: a daemon that forks away (nginx with `daemon on`, as
    its binary upgrade needs) stays our descendant, so the benchmark's load monitor counts it as
    ours. Exits when no descendant is left; SIGTERM is passed on to the direct children."""
    PR_SET_CHILD_SUBREAPER = 36
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        die("prctl(PR_SET_CHILD_SUBREAPER) failed")

    def on_term(*_):
        for c in children(os.getpid()):
            try:
                os.kill(c, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    first = subprocess.Popen(args.command)
    rc = first.wait()
    if rc != 0:
        sys.exit(rc)
    while True:
        try:
            os.wait()
        except ChildProcessError:
            break


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--kind", choices=["idlereaper", "haproxy", "nginx"], required=True)
    r.add_argument("--connect", required=True)
    r.add_argument("--conns", type=int, required=True)
    r.add_argument("--exe", required=True, help="the relay's binary, replaced by a fresh copy before the signal")
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
    s = sub.add_parser("subreaper")
    s.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    if args.cmd == "run":
        if not args.pid and not args.pidfile:
            die("--pid or --pidfile is required")
        if args.kind == "idlereaper" and not args.log:
            die("--log is required for idlereaper")
        run_main(args)
    elif args.cmd == "pingpong":
        pingpong_main(args)
    else:
        if args.command and args.command[0] == "--":
            args.command = args.command[1:]
        if not args.command:
            die("subreaper: no command")
        subreaper_main(args)


if __name__ == "__main__":
    main()
