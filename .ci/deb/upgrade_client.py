#!/usr/bin/env python3
"""Traffic through the relay across an upgrade in place, and its verdict.

    upgrade_client.py PORT N READY GO

Opens N connections to 127.0.0.1:PORT (the relay, in front of the echo
upstream) with one echo round trip each, and one stream: 4 KiB blocks of
numbered lines every 5 ms, read back by a second thread, both sides hashed.
Then it creates the file READY and keeps the stream moving until the file GO
appears (the test upgrades the daemon in between), lets the stream run on the
new code for a second, makes a second round trip on every connection, ends
the stream and compares what was sent with what came back.

Prints one JSON object: round trips before and after, bytes sent and
received, whether the checksums are equal, the longest pause in the stream
while it ran, and "errors". Exits 0 when there are no errors. Gives up after
5 minutes (SIGALRM) in case nothing tells it to finish.
"""
import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time

from loopback import connect, roundtrip

signal.alarm(300)
port, n, ready, go = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
res = {"errors": []}


def fail(msg):
    res["errors"].append(msg)


def done():
    print(json.dumps(res, sort_keys=True), flush=True)
    sys.exit(1 if res["errors"] else 0)


def echoes(c, msg):
    return roundtrip(c, msg) == msg


conns = []
try:
    for i in range(n):
        conns.append(connect(port, timeout=10))
    res["before"] = sum(echoes(c, b"before %d\n" % i) for i, c in enumerate(conns))
    s = connect(port, timeout=10)
except OSError as e:
    fail("before the upgrade: %r" % e)
    done()
if res["before"] != n:
    fail("before the upgrade: %d of %d round trips" % (res["before"], n))

stop = threading.Event()
sent_h, recv_h = hashlib.sha256(), hashlib.sha256()
st = {"sent": 0, "received": 0, "max_gap_ms": 0.0}


def writer():
    i = 0
    try:
        while not stop.is_set():
            block = b"".join(b"%015d\n" % (i * 256 + k) for k in range(256))
            s.sendall(block)
            sent_h.update(block)
            st["sent"] += len(block)
            i += 1
            time.sleep(0.005)
        s.shutdown(socket.SHUT_WR)
    except OSError as e:
        fail("stream writer: %r" % e)


def reader():
    last = time.monotonic()
    try:
        while True:
            d = s.recv(65536)
            now = time.monotonic()
            if not d:
                return
            if not stop.is_set():
                st["max_gap_ms"] = max(st["max_gap_ms"], round((now - last) * 1000, 1))
            last = now
            recv_h.update(d)
            st["received"] += len(d)
    except OSError as e:
        fail("stream reader: %r" % e)


w = threading.Thread(target=writer)
r = threading.Thread(target=reader)
w.start()
r.start()
time.sleep(0.5)
open(ready, "w").close()
t0 = time.monotonic()
while not os.path.exists(go) and time.monotonic() - t0 < 240:
    time.sleep(0.05)
if not os.path.exists(go):
    fail("never told to finish")
time.sleep(1)  # the stream runs on the new code for a moment
after = 0
for i, c in enumerate(conns):
    try:
        after += echoes(c, b"after %d\n" % i)
    except OSError as e:
        fail("connection %d after the upgrade: %r" % (i, e))
res["after"] = after
if after != n:
    fail("after the upgrade: %d of %d round trips" % (after, n))
stop.set()
w.join(30)
r.join(30)
if r.is_alive():
    fail("stream: no end of file within 30 s of the writer's shutdown")
res.update(st)
res["stream_sha256_equal"] = sent_h.digest() == recv_h.digest()
if st["sent"] != st["received"] or not res["stream_sha256_equal"]:
    fail("stream: sent %d bytes, received %d, checksums %s" % (
        st["sent"], st["received"], "equal" if res["stream_sha256_equal"] else "differ"))
for c in conns + [s]:
    c.close()
done()
