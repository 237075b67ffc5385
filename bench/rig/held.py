"""Many idle connections held open through a relay on loopback, checked by a one-byte echo, and
which process holds the relay's side of each (from /proc), to tell an old binary from a new one
across a live upgrade.

Client sockets bind source addresses rotating over 127.2.0.0/16, so that thousands of them, run
after run, never run short of source ports. Their peers are found in /proc/net/tcp: each
relay-side socket's inode (local port = the relay's, remote = one of ours); /proc/PID/fd says
which process holds it.
"""

import errno
import os
import selectors
import socket
import struct
import time

from . import procs as P

CONNECT_LIMIT_S = 180  # opening all N connections
CHECK_LIMIT_S = 10  # one echo check of all N connections

_next_source = (os.getpid() * 7919) & 0xFFFF


def loopback(text):
    """ "127.x.y.z:PORT" as an address; anything but loopback is refused."""
    host, port = text.rsplit(":", 1)
    if not host.startswith("127."):
        raise ValueError(f"{text}: loopback addresses only")
    return host, int(port)


def client_socket():
    """A non-blocking socket bound to the next source address in 127.2.0.0/16."""
    global _next_source
    n = _next_source
    _next_source = (_next_source + 1) & 0xFFFF
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((f"127.2.{n >> 8}.{n & 0xFF}", 0))
    s.setblocking(False)
    return s


def open_conns(addr, n, limit_s=CONNECT_LIMIT_S):
    """N connected non-blocking sockets, at most 256 connects in flight; raises RuntimeError
    when more than 10 fail or fewer than N open within `limit_s`."""
    sel = selectors.DefaultSelector()
    done, inflight, failed, started = [], 0, [], 0
    until = time.monotonic() + limit_s

    def failure(err):
        failed.append(os.strerror(err))
        if len(failed) > 10:
            raise RuntimeError(f"connects fail: {failed[-1]} ({len(done)} of {n} open)")

    while len(done) < n and time.monotonic() < until:
        while started < n and inflight < 256:
            s = client_socket()
            rc = s.connect_ex(addr)
            if rc not in (0, errno.EINPROGRESS):
                s.close()
                failure(rc)
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
                started -= 1  # tried again
                failure(err)
            else:
                done.append(s)
    sel.close()
    if len(done) < n:
        raise RuntimeError(f"only {len(done)} of {n} connections opened within {limit_s}s")
    return done


def check(conns, alive):
    """A one-byte echo on every socket still alive; one outcome per socket: ok, eof, reset,
    timeout, or dead (already found broken). A socket found broken is marked in `alive`."""
    out = ["dead"] * len(conns)
    sel = selectors.DefaultSelector()
    pending = 0
    for i, s in enumerate(conns):
        if not alive[i]:
            continue
        try:
            s.send(b"\x02")
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
    """1 if a new connection relays a byte within 5 s, else 0."""
    try:
        s = socket.create_connection(addr, timeout=5)
        s.sendall(b"\x03")
        ok = s.recv(1) == b"\x03"
        s.close()
        return 1 if ok else 0
    except OSError:
        return 0


def relay_side_inodes(port, clients):
    """Socket inodes of the relay's side of our connections (ESTABLISHED or CLOSE_WAIT)."""
    inodes = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if int(local.split(":")[1], 16) != port or state not in ("01", "08"):
                continue
            rip, rport = remote.split(":")
            ip = socket.inet_ntoa(struct.pack("<I", int(rip, 16)))
            if (ip, int(rport, 16)) in clients:
                inodes.add(int(inode))
    return inodes


def procs_running(inodes):
    """pid -> executable inode, for every process whose executable is one of `inodes`."""
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            ino = P.exe_inode(name)
            if ino in inodes:
                out[int(name)] = ino
    return out


def socket_inodes(pid):
    out = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(int(link[8:-1]))
    return out


def ownership(port, clients, old_ino, new_ino):
    """How many of our connections are held by old-binary processes, by new-binary ones, and by
    no relay process."""
    ours = relay_side_inodes(port, clients)
    old, new = set(), set()
    for pid, ino in procs_running({old_ino, new_ino}).items():
        held = socket_inodes(pid) & ours
        (old if ino == old_ino else new).update(held)
    return len(old), len(new), len(clients) - len(old | new)
