"""Sockets on either side of a relay: opening many connections at once, how a connection ended
(FIN, reset, or not at all) and when, and small servers that misbehave on purpose.

A socket belongs to the network namespace its creator's thread was in: open client sockets
inside `Namespace.inside()` (or in a thread that entered one) and use them anywhere after.
"""

import errno
import os
import selectors
import socket
import struct
import threading
import time

CONNECT_LIMIT_S = 60


def addr(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def connect(where, timeout=5.0):
    """A blocking connected socket to "IP:port", TCP_NODELAY, with `timeout` on every call."""
    s = socket.create_connection(addr(where), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def open_many(where, n, limit_s=CONNECT_LIMIT_S, new_socket=None, nodelay=True):
    """N connected non-blocking sockets, at most 256 connects in flight; raises if fewer than N
    connect within `limit_s` or more than 10 connects fail. `new_socket` makes each one
    (non-blocking; bound to a source address of the caller's choice if it likes); `nodelay` sets
    TCP_NODELAY on each once connected."""
    target = addr(where)
    sel = selectors.DefaultSelector()
    done, failed, inflight, started = [], [], 0, 0
    until = time.monotonic() + limit_s
    try:
        while len(done) < n and time.monotonic() < until:
            while started < n and inflight < 256:
                if new_socket:
                    s = new_socket()
                else:
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    s.setblocking(False)
                rc = s.connect_ex(target)
                if rc not in (0, errno.EINPROGRESS):
                    s.close()
                    failed.append(os.strerror(rc))
                else:
                    sel.register(s, selectors.EVENT_WRITE)
                    started += 1
                    inflight += 1
                if len(failed) > 10:
                    raise RuntimeError(f"connects to {where} fail: {failed[-1]} ({len(done)} of {n} open)")
            for key, _ in sel.select(timeout=0.5):
                s = key.fileobj
                sel.unregister(s)
                inflight -= 1
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    s.close()
                    started -= 1  # tried again
                    failed.append(os.strerror(err))
                else:
                    if nodelay:
                        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    done.append(s)
    finally:
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        sel.close()
    if len(done) < n:
        for s in done:
            s.close()
        raise RuntimeError(f"only {len(done)} of {n} connections to {where} opened within {limit_s}s")
    return done


def echo_check(conns, limit_s=10.0):
    """A one-byte echo on every socket (None: skipped); one outcome each: ok, eof, reset,
    timeout, or None."""
    out = [None] * len(conns)
    sel = selectors.DefaultSelector()
    for i, s in enumerate(conns):
        if s is None:
            continue
        try:
            s.send(b"\x01")
        except BlockingIOError:
            out[i] = "timeout"
            continue
        except OSError:
            out[i] = "reset"
            continue
        sel.register(s, selectors.EVENT_READ, i)
    until = time.monotonic() + limit_s
    while sel.get_map() and time.monotonic() < until:
        for key, _ in sel.select(timeout=0.2):
            try:
                b = key.fileobj.recv(64)
            except BlockingIOError:
                continue
            except OSError:
                b = None
            out[key.data] = "ok" if b else ("eof" if b == b"" else "reset")
            sel.unregister(key.fileobj)
    for key in list(sel.get_map().values()):
        out[key.data] = "timeout"
    sel.close()
    return out


def ending(s, limit_s):
    """Reads (and drops) whatever arrives on `s` until it ends or `limit_s` passes:
    ("eof" | "reset" | "open", monotonic time seen, bytes read)."""
    s.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ)
    got = 0
    until = time.monotonic() + limit_s
    try:
        while time.monotonic() < until:
            if not sel.select(timeout=min(0.2, max(0.0, until - time.monotonic()))):
                continue
            for _ in range(1000):
                try:
                    b = s.recv(65536)
                except BlockingIOError:
                    break
                except (ConnectionResetError, BrokenPipeError):
                    return "reset", time.monotonic(), got
                except OSError as e:
                    return (
                        (
                            "reset"
                            if e.errno in (errno.ECONNRESET, errno.ETIMEDOUT, errno.EPIPE)
                            else f"error:{errno.errorcode.get(e.errno, e.errno)}"
                        ),
                        time.monotonic(),
                        got,
                    )
                if not b:
                    return "eof", time.monotonic(), got
                got += len(b)
        return "open", time.monotonic(), got
    finally:
        sel.close()


def endings(conns, limit_s):
    """How each of `conns` ended within `limit_s` (data arriving is read and dropped): one of
    eof, reset, open each; the sockets are closed."""
    out = ["open"] * len(conns)
    sel = selectors.DefaultSelector()
    for i, s in enumerate(conns):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
    until = time.monotonic() + limit_s
    try:
        while sel.get_map() and time.monotonic() < until:
            for key, _ in sel.select(timeout=0.2):
                try:
                    b = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    b = None
                if b:
                    continue
                out[key.data] = "eof" if b == b"" else "reset"
                sel.unregister(key.fileobj)
    finally:
        sel.close()
        for s in conns:
            s.close()
    return out


def reset_close(s):
    """Closes `s` with a reset (SO_LINGER 0)."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


class Server:
    """A listener that treats each connection one way, in threads of its own:
        silent   accept, then never read nor write
        discard  read and drop everything
        push     write without end (and read what comes)
    `ended` records, per connection, how it ended for the server and when (see `ending`).
    Open it inside the namespace it should live in."""

    def __init__(self, where, mode, limit_s=120.0):
        self.mode = mode
        self.limit_s = limit_s
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(addr(where))
        self.sock.listen(128)
        self.conns = []
        self.ended = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self):
        self.sock.settimeout(0.2)
        while not self.stopping.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:  # the accept timeout included
                continue
            self.conns.append(c)
            if self.mode != "silent":
                t = threading.Thread(target=self._serve, args=(c,), daemon=True)
                self.threads.append(t)
                t.start()

    def _serve(self, c):
        if self.mode == "discard":
            self.ended.append(ending(c, self.limit_s))
            return
        c.setblocking(False)
        chunk = os.urandom(65536)
        sel = selectors.DefaultSelector()
        sel.register(c, selectors.EVENT_READ | selectors.EVENT_WRITE)
        until = time.monotonic() + self.limit_s
        try:
            while not self.stopping.is_set() and time.monotonic() < until:
                for _key, ev in sel.select(timeout=0.2):
                    try:
                        if ev & selectors.EVENT_WRITE:
                            c.send(chunk)
                        if ev & selectors.EVENT_READ and c.recv(65536) == b"":
                            self.ended.append(("eof", time.monotonic(), 0))
                            return
                    except BlockingIOError:
                        pass
                    except OSError:
                        self.ended.append(("reset", time.monotonic(), 0))
                        return
            self.ended.append(("open", time.monotonic(), 0))
        finally:
            sel.close()

    def close(self):
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=2)
        for c in self.conns:
            c.close()
        self.sock.close()
