"""What every row of the fault table shares: the sizes (full and short), a cell and a row, and
the run's context (namespaces, processes, binaries, ports, the relay and servers of one cell).

Addresses: each relay listens on the relay host's client side (10.77.1.1) and its upstreams
are on the server host (10.77.2.2), inside the run's own namespaces. Ports are fixed and below
32768: a block of 20 per row and relay kind, so that no row inherits another's leftovers.
"""

import contextlib
import os
import re
import threading
import time
from dataclasses import dataclass, field

from rig import netns, procs as P, wire
from rig.relays import Listener, listening_ports, relay

MIB = 1024 * 1024
PORT_BASE = {"idlereaper": 21000, "haproxy": 22000, "nginx": 23000}
UPSTREAM_OFFSET = 5000  # upstream ports: the relay's + 5000 (26000-28999)

FULL = dict(
    loss_streams=16,
    loss_bytes=8 * MIB,
    loss_idle_s=30.0,
    loss_limit_s=300.0,
    vanish_idle_s=10.0,
    user_timeout_s=2.0,
    silent_idle_s=5.0,
    connect_s=3.0,
    pg_sessions=4,
    pgbench_clients=4,
    upgrades=100,
    upgrade_gap_s=1.0,
    upgrade_held=1000,
    upgrade_streams=50,
    stream_rate=128 * 1024,
    churn_rate=200,
    reap_conns=100,
    reap_idle_s=1.0,
    bad_held=200,
    bad_streams=10,
    kill_held=200,
    kill_streams=10,
    soak_s=600.0,
    soak_warmup_s=20.0,
    bad_settle_s=2.0,
    bad_again_s=5.0,
    soak_held=300,
    soak_streams=10,
    soak_reload_s=20.0,
    soak_upgrade_s=60.0,
    soak_kill_s=30.0,
    soak_churn_rate=100,
)
SHORT = dict(
    FULL,
    loss_streams=4,
    loss_bytes=1 * MIB,
    loss_idle_s=30.0,
    loss_limit_s=180.0,
    vanish_idle_s=2.0,
    user_timeout_s=1.0,
    silent_idle_s=2.0,
    connect_s=1.0,
    pg_sessions=2,
    pgbench_clients=2,
    upgrades=5,
    upgrade_gap_s=0.5,
    upgrade_held=100,
    upgrade_streams=5,
    churn_rate=100,
    reap_conns=50,
    bad_held=50,
    bad_streams=4,
    kill_held=50,
    kill_streams=4,
    soak_s=20.0,
    soak_warmup_s=3.0,
    bad_settle_s=1.0,
    bad_again_s=3.0,
    soak_held=50,
    soak_streams=3,
    soak_reload_s=5.0,
    soak_upgrade_s=10.0,
    soak_kill_s=7.0,
    soak_churn_rate=50,
)


@dataclass
class Cell:
    """One relay's result for one row. `ok`: judged (idlereaper), None when only reported."""

    text: str
    ok: object = None
    why: str = ""
    data: dict = field(default_factory=dict)


@dataclass
class Row:
    key: str
    title: str
    run: object  # run(ctx, kind) -> Cell
    method: str
    kinds: tuple = ("idlereaper", "haproxy", "nginx")
    # Why the idlereaper cell is expected to fail today (then it is reported, not judged, and
    # a pass fails the run: the note is out of date).
    known_loss: str = ""
    # What no relay can keep in this row (bytes bound for a host that is gone, connections of a
    # killed process), and what idlereaper is judged on instead; said under the table.
    exception: str = ""
    peer_notes: dict = field(default_factory=dict)  # kind -> what does not apply and why
    together: bool = False  # the relays' cells run at the same time (each in a thread)


def fmt_bytes(n):
    if n == 0:
        return "0 B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / MIB:.1f} MiB"


def crashes(relay):
    """Processes of the relay its own log says died of SIGSEGV (HAProxy: "exited with code 139";
    nginx: "exited on signal 11"), as words for a cell, or None."""
    n = len(re.findall(r"exited (?:with code 139|on signal 11)", relay.log_text()))
    return f"{n} of its processes died of SIGSEGV (its log)" if n else None


def haproxy_endings(relay):
    """HAProxy's own account (its `option tcplog` lines) of the connections it ended abnormally:
    termination state -> count (`cD`: the client-side timeout during data), as words, or None."""
    states = {}
    for line in relay.log_text().splitlines():
        fields = line.split()
        # client [date] frontend backend/server Tw/Tc/Tt bytes state …
        if len(fields) > 7 and fields[1].startswith("[") and fields[6] != "--":
            states[fields[6]] = states.get(fields[6], 0) + 1
    return "HAProxy's log: " + ", ".join(f"{k} {v}" for k, v in sorted(states.items())) if states else None


def close_reasons(relay, listener):
    """idlereaper's account of the connections of `listener` it closed (its `conn closed`
    lines): reason -> count, as words, or None."""
    reasons = {}
    for line in relay.log_text().splitlines():
        if " conn closed " in line and f" listener={listener} " in line:
            r = next((w.split("=", 1)[1] for w in line.split() if w.startswith("reason=")), "?")
            reasons[r] = reasons.get(r, 0) + 1
    return "its log: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) if reasons else None


def fmt_s(seconds):
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"


class Ctx:
    def __init__(self, work, procs, hosts, loadgen, bins, short):
        self.work, self.procs, self.hosts, self.loadgen, self.bins = work, procs, hosts, loadgen, bins
        self.short = short
        self.size = SHORT if short else FULL
        self.scope = None  # one cell's ExitStack
        self.run_scope = contextlib.ExitStack()  # what lives for the whole run (a PostgreSQL)
        self.row_no = 0

    # ----- addresses -------------------------------------------------------------------------

    def port(self, kind, i):
        return PORT_BASE[kind] + 20 * self.row_no + i

    def listener(self, kind, i, name, idle_s, **kw):
        p = self.port(kind, i)
        return Listener(name, f"{netns.RELAY_C}:{p}", f"{netns.SERVER}:{p + UPSTREAM_OFFSET}", idle_s, **kw)

    # ----- one cell: everything started in it is stopped at its end ------------------------

    @contextlib.contextmanager
    def cell(self):
        with contextlib.ExitStack() as stack:
            self.scope = stack
            stack.callback(self.hosts.heal)
            try:
                yield stack
            finally:
                self.scope = None

    def relay(self, kind, listeners, tag, **options):
        r = relay(
            kind,
            self.procs,
            os.path.join(self.work, f"{kind}-{tag}"),
            self.hosts.relay.name,
            self.bins["idlereaper"] if kind == "idlereaper" else None,
        )
        self.scope.callback(r.stop)
        return r.start(listeners, **options)

    def echo(self, listener):
        """loadgen's echo server on the server host, at `listener`'s upstream address."""
        p = self.loadgen.serve(
            f"echo-{listener.upstream.replace(':', '-')}",
            "echo",
            listener.upstream,
            netns=self.hosts.server.name,
        )
        self.scope.callback(self.procs.stop, p)
        port = int(listener.upstream.rsplit(":", 1)[1])
        if not P.wait_until(lambda: port in listening_ports(p.pid), 10):
            raise RuntimeError(f"echo upstream on {listener.upstream} did not start")
        return p

    def server(self, listener, mode):
        """A `wire.Server` on the server host at `listener`'s upstream address."""
        with self.hosts.server.inside():
            s = wire.Server(listener.upstream, mode)
        self.scope.callback(s.close)
        return s

    def open_held(self, listener, n):
        """N idle connections through the relay, each proven to relay a byte."""
        with self.hosts.client.inside():
            conns = wire.open_many(listener.listen, n)
        self.scope.callback(lambda: [c.close() for c in conns])
        first = wire.echo_check(conns)
        if first.count("ok") != n:
            raise RuntimeError(f"only {first.count('ok')} of {n} connections relay a byte before the fault")
        return conns

    def connect(self, listener, timeout=5.0):
        with self.hosts.client.inside():
            s = wire.connect(listener.listen, timeout)
        self.scope.callback(s.close)
        return s

    def relays_again(self, listener, limit_s):
        """Seconds until a new connection relays a byte (tried every 20 ms), or None."""
        t0 = time.monotonic()

        def once():
            try:
                with self.hosts.client.inside():
                    s = wire.connect(listener.listen, 1.0)
                with s:
                    s.sendall(b"?")
                    return s.recv(1) == b"?"
            except OSError:
                return False

        return time.monotonic() - t0 if P.wait_until(once, limit_s, 0.02) else None

    def background(self, fn, *args):
        """`fn(*args)` in a thread; returns a function that joins it (bounded) and gives its
        result or raises its exception."""
        box = {}

        def run():
            try:
                box["value"] = fn(*args)
            except Exception as e:  # noqa: BLE001 -- handed to the caller on join
                box["error"] = e

        t = threading.Thread(target=run, daemon=True)
        t.start()

        def join(limit_s):
            t.join(timeout=limit_s)
            if t.is_alive():
                raise RuntimeError(f"{getattr(fn, '__name__', fn)} did not finish within {limit_s}s")
            if "error" in box:
                raise box["error"]
            return box.get("value")

        return join
