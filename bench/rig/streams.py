"""Checked streams through a relay to an echo upstream: every byte each way accounted for.

Each stream sends a seeded pseudo-random byte stream (a fixed size, or until told to stop) and
reads the echo. Both directions carry every byte: what the client sent crossed the relay to the
upstream, what came back crossed it again. At the end, the SHA-256 of what came back is compared
with the SHA-256 of the same length of what was sent (regenerated from the seed), so a stream is
`intact` when every byte sent came back and matches; a stream whose echo ends early but matches
so far lost the bytes after it; one that does not match is `corrupt`, and all its bytes count
as lost. How each stream ended: done (all back, then closed by the client), eof or reset (the
relay or the upstream ended it early), timeout (nothing more within the limit).

Open the streams inside the client's namespace (`open`, or `start` = `open` then `go`); the
loop runs in a thread of its own.
"""

import hashlib
import random
import selectors
import threading
import time

from .wire import echo_check, open_many

BLOCK = 65536


def _blocks(seed):
    rng = random.Random(seed)
    while True:
        yield rng.randbytes(BLOCK)


def expected_digest(seed, length):
    h = hashlib.sha256()
    left = length
    for block in _blocks(seed):
        if left <= 0:
            break
        h.update(block[:left])
        left -= len(block)
    return h.digest()


class _Stream:
    def __init__(self, sock, seed, size):
        self.sock = sock
        self.seed = seed
        self.size = size  # None: until stopped
        self.gen = _blocks(seed)
        self.block = b""
        self.off = 0
        self.sent = 0
        self.received = 0
        self.sha_in = hashlib.sha256()
        self.end = None  # done, eof, reset, timeout
        self.ended_at = None
        self.moved_at = time.monotonic()  # the last byte sent or received
        self.interest = 0

    def to_send(self, stopped):
        return self.end is None and not stopped and (self.size is None or self.sent < self.size)

    def send(self):
        if self.off >= len(self.block):
            self.block = next(self.gen)
            self.off = 0
            if self.size is not None:
                self.block = self.block[: self.size - self.sent]
        n = self.sock.send(memoryview(self.block)[self.off :])
        self.off += n
        self.sent += n
        self.moved_at = time.monotonic()

    def recv(self):
        b = self.sock.recv(262144)
        if not b:
            return False
        self.sha_in.update(b)
        self.received += len(b)
        self.moved_at = time.monotonic()
        return True


class Streams:
    """N streams to the echo service at `where`; `size` bytes each way per stream (None: until
    `stop`), paced to `rate` bytes/s per stream (None: as fast as they go)."""

    def __init__(self, where, n, size=None, rate=None, seed=1000, limit_s=600.0):
        self.where, self.n, self.size, self.rate, self.seed = where, n, size, rate, seed
        self.limit_s = limit_s
        self.streams = []
        self.stopped = threading.Event()
        self.thread = None
        self.t0 = None

    def open(self):
        """Connects every stream and proves each relays a byte (so the relay's upstream
        connection exists too), before any byte of the stream is sent."""
        socks = open_many(self.where, self.n)
        first = echo_check(socks)
        if first.count("ok") != len(socks):
            for s in socks:
                s.close()
            raise RuntimeError(f"only {first.count('ok')} of {len(socks)} streams relay a byte at the start")
        self.streams = [_Stream(s, self.seed + i, self.size) for i, s in enumerate(socks)]
        return self

    def go(self):
        self.t0 = time.monotonic()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def start(self):
        return self.open().go()

    def stop(self):
        """No more sending; the loop ends once the echo of everything sent is back."""
        self.stopped.set()

    def wait(self, limit_s):
        self.thread.join(timeout=limit_s)
        if self.thread.is_alive():
            self.stop()
            self.thread.join(timeout=30)
        return self.summary()

    def _allowed(self, st, now):
        return self.rate is None or st.sent < self.rate * (now - self.t0) + BLOCK

    def _loop(self):
        sel = selectors.DefaultSelector()
        for st in self.streams:
            st.interest = selectors.EVENT_READ
            sel.register(st.sock, st.interest, st)
        until = self.t0 + self.limit_s
        try:
            while time.monotonic() < until:
                now = time.monotonic()
                live = [st for st in self.streams if st.end is None]
                if not live:
                    break
                for st in live:
                    want = selectors.EVENT_READ
                    if st.to_send(self.stopped.is_set()) and self._allowed(st, now):
                        want |= selectors.EVENT_WRITE
                    elif not st.to_send(self.stopped.is_set()) and st.received >= st.sent:
                        self._finish(st, sel, "done")
                        continue
                    if want != st.interest:
                        sel.modify(st.sock, want, st)
                        st.interest = want
                for key, ev in sel.select(timeout=0.01 if self.rate else 0.2):
                    st = key.data
                    if st.end is not None:
                        continue
                    try:
                        if ev & selectors.EVENT_READ and not st.recv():
                            self._finish(st, sel, "eof")
                            continue
                        if ev & selectors.EVENT_WRITE:
                            st.send()
                    except BlockingIOError:
                        pass
                    except OSError:
                        self._finish(st, sel, "reset")
            for st in self.streams:
                if st.end is None:
                    self._finish(st, sel, "timeout")
        finally:
            sel.close()

    def _finish(self, st, sel, end):
        st.end = end
        st.ended_at = time.monotonic()
        try:
            sel.unregister(st.sock)
        except (KeyError, ValueError):
            pass
        st.sock.close()

    def summary(self):
        """streams, intact, corrupt, early (ended by eof or reset before done), timeouts (with
        `unfinished`: what each had sent and got back, and how long nothing had moved on it),
        lost_bytes, bytes_each_way (sent by the client), seconds."""
        out = {
            "streams": len(self.streams),
            "intact": 0,
            "corrupt": 0,
            "early": 0,
            "timeouts": 0,
            "lost_bytes": 0,
            "bytes_each_way": 0,
            "ends": {},
        }
        last = self.t0 or time.monotonic()
        for st in self.streams:
            out["bytes_each_way"] += st.sent
            out["ends"][st.end] = out["ends"].get(st.end, 0) + 1
            last = max(last, st.ended_at or last)
            good_prefix = st.sha_in.digest() == expected_digest(st.seed, st.received)
            if not good_prefix:
                out["corrupt"] += 1
                out["lost_bytes"] += st.sent
                continue
            out["lost_bytes"] += st.sent - st.received
            if st.end == "done":
                out["intact"] += 1
            elif st.end == "timeout":
                out["timeouts"] += 1
                out.setdefault("unfinished", []).append(
                    {"sent": st.sent, "received": st.received, "still_s": round(st.ended_at - st.moved_at, 1)}
                )
            else:
                out["early"] += 1
        out["seconds"] = round(last - (self.t0 or last), 2)
        return out

    def received(self):
        return sum(st.received for st in self.streams)
