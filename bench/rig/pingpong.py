"""A 64-byte ping-pong on one connection that records every round trip with its start time, run
in a process of its own while something happens to the relay (`serve`, started by
bench/upgrade.py's `pingpong` command); and what the record says: the longest stall in a window,
the round trips before it.

The record: one `t0_ns rtt_ns` line per round trip after 1,000 warm-up ones (monotonic clock),
and `broken t0_ns t_ns why` if the connection failed (`why`: the exception's name; "unfinished":
a round trip was still under way when the process was told to stop, TERM or INT).
"""

import array
import os
import signal
import socket
import statistics
import time

from .held import client_socket

PING_SIZE = 64
WARMUP = 1000
MS = 1_000_000  # ns


def serve(addr, out_path, max_secs):
    """The ping-pong until TERM or INT or `max_secs`; prints "ready" after the warm-up (or once
    broken early), writes the record at the end. Stops early if its parent goes."""
    s = client_socket()
    s.setblocking(True)
    s.settimeout(5)
    s.connect(addr)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(0.5)
    out, buf = b"\x5a" * PING_SIZE, bytearray(PING_SIZE)
    stop = [False]
    parent = os.getppid()

    def on_term(*_):
        stop[0] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    times, rtts = array.array("q"), array.array("q")
    broken, trips = None, 0
    until = time.monotonic() + max_secs
    while not stop[0] and time.monotonic() < until:
        t0 = time.monotonic_ns()
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
                broken = (t0, time.monotonic_ns(), "unfinished")
                break
        except OSError as e:
            broken = (t0, time.monotonic_ns(), type(e).__name__)
            break
        t1 = time.monotonic_ns()
        trips += 1
        if trips == WARMUP:
            print("ready", flush=True)
        if trips > WARMUP:
            times.append(t0)
            rtts.append(t1 - t0)
        if trips % 4096 == 0 and os.getppid() != parent:
            break
    if trips < WARMUP:
        print("ready", flush=True)  # broken early: let the caller go on and see it
    with open(out_path, "w") as f:
        for t, r in zip(times, rtts):
            f.write(f"{t} {r}\n")
        if broken:
            f.write(f"broken {broken[0]} {broken[1]} {broken[2]}\n")


def read(path):
    """The record: ([(t0_ns, rtt_ns)…], (t0_ns, t_ns, why) or None)."""
    trips, broken = [], None
    with open(path) as f:
        for line in f:
            p = line.split()
            if p[0] == "broken":
                broken = (int(p[1]), int(p[2]), p[3])
            else:
                trips.append((int(p[0]), int(p[1])))
    return trips, broken


def longest(trips, broken, since, until):
    """The longest round trip under way at any time from `since` to `until` (ns): (its length,
    its start, the number of round trips in the window). If the stream broke, the stall lasts at
    least from its last round trip to the end of the window ("unfinished": to when it stopped)."""
    during = [(r, t) for t, r in trips if t + r >= since and t <= until]
    stall, at = max(during) if during else (0, since)
    if broken:
        last = max((t + r for t, r in trips), default=since)
        if last <= until:
            lasted = (broken[1] if broken[2] == "unfinished" else max(until, broken[1])) - last
            if lasted > stall:
                stall, at = lasted, last
    return stall, at, len(during)


def baseline(trips, before):
    """The round trips in the second before `before` (ended before it): (p50 µs, max ms), as
    text ("-" when there were none)."""
    base = [r for t, r in trips if before - 1000 * MS <= t and t + r < before]
    if not base:
        return "-", "-"
    return f"{statistics.median(base) / 1e3:.1f}", f"{max(base) / 1e6:.2f}"


def write_samples(path, trips, broken, t_sig, t_end, what):
    """The round trips from 1 s before `t_sig` to `t_end`: `t_ms rtt_ms`, t from `t_sig`; every
    trip of 1 ms or more, one in ten of the others."""
    with open(path, "w") as f:
        f.write(f"# upgrade ping-pong round trips: t_ms from the signal, rtt_ms ({what})\n")
        k = 0
        for t, r in trips:
            if t_sig - 1000 * MS <= t <= t_end:
                k += 1
                if r >= MS or k % 10 == 0:
                    f.write(f"{(t - t_sig) / 1e6:.3f} {r / 1e6:.4f}\n")
        if broken:
            f.write(f"# broken at {(broken[1] - t_sig) / 1e6:.1f} ms: {broken[2]}\n")
