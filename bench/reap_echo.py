#!/usr/bin/env python3
"""bench/reap_echo.py --connect 127.0.0.1:PORT [--conns 2000] [--timeout 2]: idle-close lateness
measured from the relay's own last activity.

A diagnostic beside `loadgen reap`, which counts lateness from the moment the client *sent* its
byte: under a burst of connections, a relay reads that byte only after it has accepted the
burst, so the count includes how long the relay took to absorb the burst. Here the relay sits
in front of an *echo* upstream; the client sends one byte per connection and times everything
from the kernel's receive timestamp of the echo (SO_TIMESTAMPNS), which arrives just after the
relay's last write on that connection, i.e. its last activity. Lateness = close seen − echo
received − timeout. A perfect timer gives a few microseconds below zero (the delivery of the
echo); closes are seen by this Python loop, so lateness is if anything overstated.

Prints one line: scenario=reap_echo conns=N closed=N early=N min_ms p50_ms p99_ms max_ms and
echo_lag_p50_ms/echo_lag_max_ms (echo received − byte sent: the burst-absorption part that
`loadgen reap` counts as lateness). Loopback only; bounded in time.
"""

import argparse
import selectors
import socket
import struct
import sys
import time

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


def percentile(sorted_vals, p):
    if not sorted_vals:
        return 0.0
    rank = max(1, min(len(sorted_vals), int(-(-p / 100.0 * len(sorted_vals) // 1))))
    return sorted_vals[rank - 1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connect", required=True)
    ap.add_argument("--conns", type=int, default=2000)
    ap.add_argument("--timeout", type=float, default=2.0, help="the relay's idle timeout, seconds")
    args = ap.parse_args()
    host, port = args.connect.rsplit(":", 1)
    if not host.startswith("127."):
        sys.exit("reap_echo.py: loopback addresses only")
    sel = selectors.DefaultSelector()
    sent, echoed, closed = {}, {}, {}
    socks = []
    for i in range(args.conns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Rotate source addresses like loadgen does, so that TIME_WAIT never collides.
        n = i + 7919 * (time.time_ns() // 1000 % 65536)
        s.bind((f"127.2.{(n >> 8) & 255}.{n & 255}", 0))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        s.settimeout(5)
        s.connect((host, int(port)))
        sent[i] = time.time_ns()
        s.sendall(b"x")
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
        socks.append(s)
    deadline = time.monotonic() + args.timeout * 2 + 10
    while len(closed) < args.conns and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.1):
            s, i = key.fileobj, key.data
            now = time.time_ns()
            while True:
                try:
                    data, anc, _, _ = s.recvmsg(64, socket.CMSG_SPACE(16))
                except BlockingIOError:
                    break
                except OSError:
                    data = b""
                if not data:
                    closed[i] = now
                    sel.unregister(s)
                    s.close()
                    break
                for level, typ, payload in anc:
                    if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS and i not in echoed:
                        sec, nsec = struct.unpack("qq", payload[:16])
                        echoed[i] = sec * 1_000_000_000 + nsec
    for s in socks:
        if s.fileno() >= 0:
            s.close()
    timeout_ns = int(args.timeout * 1e9)
    late = sorted((closed[i] - echoed[i] - timeout_ns) / 1e6 for i in closed if i in echoed)
    lag = sorted((echoed[i] - sent[i]) / 1e6 for i in echoed)
    print(
        f"scenario=reap_echo conns={args.conns} closed={len(closed)} echoed={len(echoed)} "
        f"early={sum(1 for v in late if v < 0)} min_ms={late[0] if late else 0:.3f} "
        f"p50_ms={percentile(late, 50):.3f} p99_ms={percentile(late, 99):.3f} max_ms={late[-1] if late else 0:.3f} "
        f"echo_lag_p50_ms={percentile(lag, 50):.3f} echo_lag_max_ms={lag[-1] if lag else 0:.3f}"
    )
    return 0 if len(closed) == args.conns else 1


if __name__ == "__main__":
    sys.exit(main())
