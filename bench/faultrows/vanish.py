"""A peer that vanishes (every packet to and from its host dropped, as when a machine loses
power or its network): while the connection is idle, and while bytes are in flight toward it;
without and with a TCP user timeout. What matters: whether and when the relay ends the
connection, and how the peer that is still there is told (a reset, a FIN, or nothing)."""

import threading
import time

from rig import procs as P
from rig import wire

from .common import Cell, Row, fmt_s

NOT_TOLD_GRACE_S = 10.0  # how long past the expected deadline the survivor is watched
EARLY_SLACK_S = 0.05  # a close this much before the deadline is early (clock reading slack)


def _deadline(ctx, state, uto):
    """When the relay is expected to end the connection, from the moment of the cut."""
    s = ctx.size
    if uto and state == "flight":
        return s["user_timeout_s"], "user timeout"
    return s["vanish_idle_s"], "idle timeout"


def _told(end):
    return {"reset": "told by reset", "eof": "told by FIN", "open": "not told"}.get(end, f"told by {end}")


def upstream_vanishes(ctx, kind, state, uto):
    s = ctx.size
    lst = ctx.listener(
        kind, 0, "vanish", s["vanish_idle_s"], user_timeout_s=s["user_timeout_s"] if uto else 0.0
    )
    ctx.server(lst, "discard")
    relay = ctx.relay(kind, [lst], f"vanish-up-{state}-{int(uto)}")
    c = ctx.connect(lst)
    if state == "flight":
        # The client streams toward the upstream; the relay forwards as fast as it acknowledges.
        stop = threading.Event()

        def pour():
            chunk = b"\x5a" * 65536
            c.setblocking(False)
            until = time.monotonic() + 60
            while not stop.is_set() and time.monotonic() < until:
                try:
                    c.send(chunk)
                except BlockingIOError:
                    time.sleep(0.002)
                except OSError:
                    return

        t = threading.Thread(target=pour, daemon=True)
        t.start()
        time.sleep(1.0)
        ctx.hosts.cut("server")
        cut = time.monotonic()
        time.sleep(0.3)  # the buffers fill; the client's writes block
        stop.set()
        t.join(timeout=5)
    else:
        c.sendall(b"x")
        last = time.monotonic()  # the connection's last activity (at the earliest)
        time.sleep(0.2)
        ctx.hosts.cut("server")
        cut = time.monotonic()
    expected, by = _deadline(ctx, state, uto)
    if state == "idle":
        expected -= cut - last  # the idle timeout runs from the last byte, not from the cut
    end, at, _ = wire.ending(c, expected + NOT_TOLD_GRACE_S - (time.monotonic() - cut))
    return _cell(kind, relay, end, at - cut, expected, by, "client", uto, state == "flight")


def client_vanishes(ctx, kind, uto):
    s = ctx.size
    lst = ctx.listener(
        kind, 0, "vanish", s["vanish_idle_s"], user_timeout_s=s["user_timeout_s"] if uto else 0.0
    )
    server = ctx.server(lst, "push")
    relay = ctx.relay(kind, [lst], f"vanish-client-{int(uto)}")
    c = ctx.connect(lst)
    wire.ending(c, 1.0)  # reads what the upstream pushes for a second
    ctx.hosts.cut("client")
    cut = time.monotonic()
    expected, by = _deadline(ctx, "flight", uto)
    P.wait_until(lambda: server.ended, expected + NOT_TOLD_GRACE_S, 0.01)
    end, at, _ = server.ended[0] if server.ended else ("open", time.monotonic(), 0)
    return _cell(kind, relay, end, at - cut, expected, by, "upstream", uto, True)


def _cell(kind, relay, end, after, expected, by, survivor, uto, in_flight):
    told = _told(end)
    if end == "open":
        text = f"{survivor} not told within {fmt_s(after)}"
    else:
        text = f"{survivor} {told} after {fmt_s(after)}"
    if uto and kind == "nginx":
        text += " (no user timeout setting)"
    data = {"end": end, "after_s": round(after, 3), "expected_s": expected, "by": by}
    if kind != "idlereaper":
        return Cell(text, None, "", data)
    # Judged: the survivor is told, not before the deadline (the relay's own idle timer; the
    # kernel's user timeout is the kernel's), and within it plus a grace; with bytes in flight,
    # by a reset (an error resets both sides; a close on a timer resets a peer whose bytes are
    # undelivered, and the kernel one whose bytes were never read): never a FIN that passes
    # for an orderly end.
    early = by == "idle timeout" and after < expected - EARLY_SLACK_S
    fin_for_loss = in_flight and end == "eof"
    ok = end != "open" and not early and not fin_for_loss
    why = ""
    if early:
        why = f"closed {expected - after:.3f} s before the {by}"
    elif end == "open":
        why = f"{survivor} never told"
    elif fin_for_loss:
        why = f"{survivor} told by a FIN although bytes in flight were lost"
    reason = [ln for ln in relay.log_text().splitlines() if " conn closed " in ln][-1:]
    if reason:
        data["log"] = reason[0]
        r = [w for w in reason[0].split() if w.startswith("reason=")]
        if r:
            text += f" ({r[0].split('=', 1)[1]})"
    return Cell(text, ok, why, data)


METHOD = (
    "A connection through the relay between the client host and the server host; then every "
    "packet between the relay host and the vanished peer's host is dropped (iptables DROP at "
    "both ends' INPUT), with no FIN nor reset. The figure is the time from the cut until the "
    "peer that is still there sees its connection end, and how: a reset (it knows bytes may be "
    "lost), a FIN, or nothing within the deadline plus 10 s; for idlereaper, the reason its log "
    "gives. Idle timeout 10 s (2 s in the short run); user timeout 2 s (1 s) where set "
    "(idlereaper `tcp_user_timeout`, HAProxy `tcp-ut` on bind and server lines; nginx has no "
    "such setting, so its cell is the same fault without one). A user timeout only counts time "
    "during which sent bytes stay unacknowledged: an idle connection has none. idlereaper's cell is "
    "judged: the peer still there is told, not before the idle timeout (where that is what ends "
    "the connection), and, when bytes were in flight, by a reset."
)

FAULTS = (
    (
        "vanish-idle",
        "upstream vanishes while idle",
        lambda ctx, kind, u: upstream_vanishes(ctx, kind, "idle", u),
    ),
    (
        "vanish-up",
        "upstream vanishes, bytes in flight to it",
        lambda ctx, kind, u: upstream_vanishes(ctx, kind, "flight", u),
    ),
    (
        "vanish-cl",
        "client vanishes, bytes in flight to it",
        lambda ctx, kind, u: client_vanishes(ctx, kind, u),
    ),
)


IN_FLIGHT = (
    "bytes sent toward a host that is gone cannot reach it through any relay, so these cells "
    "give no byte count. What idlereaper promises is that the peer still there learns it by a "
    "reset (it knows bytes may be lost), never by a FIN that passes for an orderly end, and not "
    "before the idle timeout where that is what ends the connection: that is what is judged."
)


def rows():
    out = []
    for key, title, fn in FAULTS:
        for uto in (False, True):
            out.append(
                Row(
                    key + ("-uto" if uto else ""),
                    title + (", with a TCP user timeout" if uto else ""),
                    lambda ctx, kind, f=fn, u=uto: f(ctx, kind, u),
                    METHOD,
                    exception=IN_FLIGHT if key != "vanish-idle" else "",
                )
            )
    return out
