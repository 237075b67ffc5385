"""Upstreams that stall a connection without ending it: one that accepts and never answers, and
one whose SYNs are dropped (the connect never completes)."""

import time

from rig import wire

from .common import Cell, Row, fmt_s

EARLY_SLACK_S = 0.05


def _told(end):
    return {"reset": "reset", "eof": "FIN", "open": "nothing"}.get(end, end)


def silent(ctx, kind):
    s = ctx.size
    idle = s["silent_idle_s"]
    lst = ctx.listener(kind, 0, "silent", idle)
    ctx.server(lst, "silent")
    ctx.relay(kind, [lst], "silent")
    c = ctx.connect(lst)
    c.sendall(b"GET /answer HTTP/1.0\r\n\r\n")
    sent = time.monotonic()
    end, at, got = wire.ending(c, idle + 10)
    after = at - sent
    text = (
        f"client not told within {fmt_s(after)}"
        if end == "open"
        else f"client told by {_told(end)} after {fmt_s(after)}"
    )
    data = {"end": end, "after_s": round(after, 3), "bytes": got}
    if kind != "idlereaper":
        return Cell(text, None, "", data)
    early = after < idle - EARLY_SLACK_S
    ok = end != "open" and not early
    return Cell(text, ok, "" if ok else ("closed early" if early else "never told"), data)


def unreachable(ctx, kind):
    s = ctx.size
    connect = s["connect_s"]
    lst = ctx.listener(kind, 0, "unreachable", 60.0, connect_s=connect)
    ctx.hosts.drop_syns(int(lst.upstream.rsplit(":", 1)[1]))
    relay = ctx.relay(kind, [lst], "unreachable")
    c = ctx.connect(lst)
    c.sendall(b"a request the upstream never gets")
    sent = time.monotonic()
    # HAProxy tries again `retries` (3) times, each with its own connect timeout.
    end, at, _ = wire.ending(c, 4 * connect + 10)
    after = at - sent
    text = (
        f"client not told within {fmt_s(after)}"
        if end == "open"
        else f"client told by {_told(end)} after {fmt_s(after)}"
    )
    data = {"end": end, "after_s": round(after, 3)}
    if kind != "idlereaper":
        return Cell(text, None, "", data)
    closes = [ln for ln in relay.log_text().splitlines() if " conn closed " in ln]
    if closes:
        data["log"] = closes[-1]
        text += " (" + [w for w in closes[-1].split() if w.startswith("reason=")][0].split("=", 1)[1] + ")"
    early = after < connect - EARLY_SLACK_S
    # The client's request was never delivered: a reset, not a FIN that passes for an answer.
    ok = end == "reset" and not early and after < connect + 2
    return Cell(text, ok, "" if ok else f"expected a reset at the connect timeout ({connect} s)", data)


def rows():
    return [
        Row(
            "silent-upstream",
            "upstream accepts and never answers",
            silent,
            "The upstream accepts the connection and then never reads nor writes. The client sends a "
            "request and waits. Nothing moves, so the idle timeout (5 s; 2 s in the short run) ends "
            "the connection: the figure is when, and how the client is told. No byte is lost: the "
            "upstream's kernel acknowledged the request.",
        ),
        Row(
            "unreachable-upstream",
            "upstream unreachable (SYNs dropped)",
            unreachable,
            "Every SYN to the upstream's port is dropped, so the relay's connect never completes. The "
            "client connects to the relay, sends a request and waits; the figure is when and how it "
            "is told. Connect timeout 3 s (1 s in the short run) for every relay: idlereaper "
            "`connect_timeout`, HAProxy `timeout connect` (HAProxy tries again `retries` times, 3 by "
            "default, each with its own timeout), nginx `proxy_connect_timeout`.",
        ),
    ]
