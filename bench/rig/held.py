"""Many idle connections held open through a relay on loopback, checked by a one-byte echo, and
which process holds the relay's side of each (from /proc), to tell an old binary from a new one
across a live upgrade.

Client sockets bind source addresses rotating over 127.2.0.0/16, so that thousands of them, run
after run, never run short of source ports. Their peers are found in /proc/net/tcp: each
relay-side socket's inode (local port = the relay's, remote = one of ours); /proc/PID/fd says
which process holds it.
"""

import os
import socket
import struct

from . import procs as P
from . import wire

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
    """N connected non-blocking sockets from rotating source addresses (`client_socket`), at
    most 256 connects in flight; raises RuntimeError when more than 10 fail or fewer than N
    open within `limit_s`."""
    return wire.open_many(f"{addr[0]}:{addr[1]}", n, limit_s, new_socket=client_socket, nodelay=False)


def check(conns, alive):
    """A one-byte echo on every socket still alive; one outcome per socket: ok, eof, reset,
    timeout, or dead (already found broken). A socket found broken is marked in `alive`."""
    out = wire.echo_check([s if ok else None for s, ok in zip(conns, alive)], CHECK_LIMIT_S)
    for i, outcome in enumerate(out):
        if outcome is None:
            out[i] = "dead"
        elif outcome in ("eof", "reset"):
            alive[i] = False
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
