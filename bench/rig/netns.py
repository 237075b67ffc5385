"""Network namespaces made for one run, the links between them, and iptables rules on them.

`Hosts` is three namespaces joined by veth links (MTU 1500):

    client  10.77.1.2 ─── 10.77.1.1  relay  10.77.2.1 ─── 10.77.2.2  server

Nothing outside them sees their traffic. Their names carry the script's pid (irfault<pid>c,
…r, …s); what a killed run could not remove, the next one does (`Hosts.sweep`).

Faults are iptables rules, each at the receiving host's INPUT (so the sender's stack sees a lost
packet, not a local error): random loss on both links both ways (`-m statistic --mode random`;
`tc netem` is not available on every kernel), a host cut off from the relay (a vanished peer),
SYNs to a port dropped (an unreachable upstream).

The retransmission timer is kept between 10 ms (the routes' `rto_min`) and 1 s (the namespaces'
`net.ipv4.tcp_rto_max_ms`, where the kernel has it: 6.15 and later). With the kernel's 200 ms
and 120 s, on these sub-millisecond links, a timer doubled at every loss of the same segment
(and grown with a smoothed RTT that loss inflates: 3.5 s was seen) stalls a connection for
minutes under 20 % loss; the bounds change how soon TCP retries, not what a relay sees.

A thread enters a namespace with `Namespace.inside` for a while: sockets it opens then live
there, wherever they are used afterwards.
"""

import contextlib
import ctypes
import os
import re
import signal
import subprocess

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)

SUBNET = "10.77"
CLIENT, RELAY_C, RELAY_S, SERVER = f"{SUBNET}.1.2", f"{SUBNET}.1.1", f"{SUBNET}.2.1", f"{SUBNET}.2.2"


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


def _ip(*args, limit_s=20):
    done = subprocess.run(["ip", *args], stdin=subprocess.DEVNULL, capture_output=True, timeout=limit_s)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.decode(errors='replace').strip()}")


class Namespace:
    def __init__(self, name):
        self.name = name

    def run(self, *argv, limit_s=20, check=True):
        """`argv` inside the namespace, to completion; its output."""
        done = subprocess.run(
            ["ip", "netns", "exec", self.name, *argv],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=limit_s,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{self.name}: {' '.join(argv)}: {done.stderr.decode(errors='replace').strip()}"
            )
        return done.stdout.decode(errors="replace")

    def iptables(self, *args):
        self.run("iptables", "-w", "5", *args)

    def sysctl(self, key, value):
        self.run("sysctl", "-q", "-w", f"{key}={value}")

    @contextlib.contextmanager
    def inside(self):
        """The calling thread in this namespace for the `with` block, then back."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(target)
            os.close(own)


class Hosts:
    """client ─ relay ─ server, made by `create` and removed by `remove` (also when half made)."""

    PREFIX = "irfault"  # names: irfault<pid of the script>c, …r, …s

    RTO_MAX_SYSCTL = "/proc/sys/net/ipv4/tcp_rto_max_ms"

    def __init__(self, tag=None, rto_min_ms=10, rto_max_ms=1000):
        tag = tag or f"{self.PREFIX}{os.getpid()}"
        self.client = Namespace(f"{tag}c")
        self.relay = Namespace(f"{tag}r")
        self.server = Namespace(f"{tag}s")
        self.rto_min_ms = rto_min_ms
        self.rto_max_ms = rto_max_ms if os.path.exists(self.RTO_MAX_SYSCTL) else None
        self.made = []

    # Interfaces: the client's "c0" faces the relay's "r0"; the relay's "r1" faces the server's "s0".
    LINKS = (
        ("client", "c0", CLIENT, "relay", "r0", RELAY_C, "1"),
        ("relay", "r1", RELAY_S, "server", "s0", SERVER, "2"),
    )

    @classmethod
    def sweep(cls):
        """Removes what a killed run (one that could not clean up: SIGKILL) left behind: the
        namespaces of a script whose pid is gone, and the processes still inside them."""
        found = subprocess.run(["ip", "netns", "list"], capture_output=True, timeout=20).stdout.decode()
        for line in found.splitlines():
            m = re.fullmatch(rf"{cls.PREFIX}(\d+)[crs]", line.split()[0]) if line.split() else None
            if not m or os.path.exists(f"/proc/{m.group(1)}"):
                continue
            name = m.group(0)
            pids = subprocess.run(
                ["ip", "netns", "pids", name], capture_output=True, timeout=20
            ).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                _ip("netns", "del", name)
            print(
                f"netns: removed {name}, left by a run that was killed ({len(pids)} processes in it)",
                flush=True,
            )

    def create(self):
        self.sweep()
        for ns in (self.client, self.relay, self.server):
            _ip("netns", "add", ns.name)
            self.made.append(ns)
            _ip("-n", ns.name, "link", "set", "lo", "up")
        for a, dev_a, addr_a, b, dev_b, addr_b, net in self.LINKS:
            na, nb = getattr(self, a), getattr(self, b)
            _ip(
                "link",
                "add",
                "name",
                dev_a,
                "netns",
                na.name,
                "type",
                "veth",
                "peer",
                "name",
                dev_b,
                "netns",
                nb.name,
            )
            for ns, dev, addr in ((na, dev_a, addr_a), (nb, dev_b, addr_b)):
                _ip("-n", ns.name, "addr", "add", f"{addr}/24", "dev", dev)
                _ip("-n", ns.name, "link", "set", dev, "up")
                _ip(
                    "-n",
                    ns.name,
                    "route",
                    "replace",
                    f"{SUBNET}.{net}.0/24",
                    "dev",
                    dev,
                    "proto",
                    "kernel",
                    "scope",
                    "link",
                    "src",
                    addr,
                    "rto_min",
                    f"{self.rto_min_ms}ms",
                )
        if self.rto_max_ms:
            for ns in (self.client, self.relay, self.server):
                ns.sysctl("net.ipv4.tcp_rto_max_ms", self.rto_max_ms)
        # Churn leaves the client's side in TIME_WAIT; let new connections reuse those ports.
        self.client.sysctl("net.ipv4.tcp_tw_reuse", 1)
        self.client.sysctl("net.ipv4.ip_local_port_range", "32768 60999")
        return self

    def describe(self):
        """The TCP settings of the namespaces, for a published result."""
        with open("/proc/sys/net/ipv4/tcp_congestion_control") as f:
            cc = f.read().strip()
        rto_max = (
            f"{self.rto_max_ms} ms" if self.rto_max_ms else "120 s (the kernel's: it has no tcp_rto_max_ms)"
        )
        return (
            f"veth, MTU 1500; retransmission timer {self.rto_min_ms} ms to {rto_max}; congestion control {cc}"
        )

    def remove(self):
        """Deleting a namespace deletes its links and rules; the processes in it are the
        caller's to stop first."""
        for ns in reversed(self.made):
            try:
                _ip("netns", "del", ns.name)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                print(f"netns: cannot remove {ns.name}: {e}")
        self.made = []

    # ----- faults ---------------------------------------------------------------------------

    def _rules(self):
        """(namespace, its interface on the relay's path), both ends of both links."""
        return ((self.client, "c0"), (self.relay, "r0"), (self.relay, "r1"), (self.server, "s0"))

    def loss(self, fraction):
        """Each packet crossing either link, either way, is dropped with probability `fraction`."""
        for ns, dev in self._rules():
            ns.iptables(
                "-A",
                "INPUT",
                "-i",
                dev,
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                f"{fraction:.4f}",
                "-j",
                "DROP",
            )

    def cut(self, side):
        """`side` ("client" or "server") vanishes: nothing crosses its link any more, either way."""
        pair = (
            ((self.client, "c0"), (self.relay, "r0"))
            if side == "client"
            else ((self.relay, "r1"), (self.server, "s0"))
        )
        for ns, dev in pair:
            ns.iptables("-A", "INPUT", "-i", dev, "-j", "DROP")

    def drop_syns(self, port):
        """SYNs to the server's `port` are dropped: connects to it never complete."""
        self.server.iptables("-A", "INPUT", "-p", "tcp", "--dport", str(port), "--syn", "-j", "DROP")

    def heal(self):
        """Every rule above removed."""
        for ns in (self.client, self.relay, self.server):
            ns.iptables("-F", "INPUT")
