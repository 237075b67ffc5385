"""Random packet loss on both links of the path while checked streams cross the relay."""

from rig.streams import Streams

from .common import Cell, Row, fmt_bytes, fmt_s, haproxy_endings


def run(ctx, kind, fraction):
    s = ctx.size
    lst = ctx.listener(kind, 0, "loss", s["loss_idle_s"])
    ctx.echo(lst)
    relay = ctx.relay(kind, [lst], f"loss{round(fraction * 100)}")
    with ctx.hosts.client.inside():
        streams = Streams(
            lst.listen, s["loss_streams"], size=s["loss_bytes"], limit_s=s["loss_limit_s"]
        ).open()
    # Loss from the first byte of the streams on: connects (SYNs retried after 1, 2, 4… s) are
    # another fault, an unreachable upstream's row.
    ctx.hosts.loss(fraction)
    streams.go()
    got = streams.wait(s["loss_limit_s"] + 30)
    n = got["streams"]
    text = (
        f"{got['intact']}/{n} intact, {fmt_bytes(got['lost_bytes'])} lost, {got['early']} closed early"
        f" ({fmt_s(got['seconds'])})"
    )
    if got["corrupt"]:
        text += f"; {got['corrupt']} corrupt"
    if got["timeouts"]:
        still = max(u["still_s"] for u in got["unfinished"])
        limit = fmt_s(s["loss_limit_s"])
        text += f"; {got['timeouts']} unfinished at the {limit} limit (still for up to {fmt_s(still)})"
    if kind == "haproxy" and haproxy_endings(relay):
        text += f" ({haproxy_endings(relay)})"
    ok = got["intact"] == n and got["lost_bytes"] == 0 and got["early"] == 0
    return Cell(text, ok, "" if ok else f"streams: {got}", got)


METHOD = (
    "Each packet crossing either link (client to relay, relay to upstream), either way, is dropped "
    "with the row's probability (iptables `-m statistic --mode random` at the receiving host's "
    "INPUT), from the moment every stream is connected and has relayed one byte. 16 streams at once "
    "(4 in the short run) each send 8 MiB (1 MiB) of seeded pseudo-random data through the relay to "
    "an echo upstream and read them back, so that every byte crosses the relay both ways; the "
    "SHA-256 of what came back is compared with that of what was sent. Lost: bytes sent that did "
    "not come back intact; closed early: streams ended before their last byte. The idle timeout "
    "(30 s) is far above any stall the loss causes, so any close is early. The namespaces keep "
    "TCP's retransmission timer between 10 ms and 1 s (rig/netns.py): with the kernel's 200 ms and "
    "120 s, one full run saw a relay socket's timer reach 50 s (smoothed RTT 3.5 s), and nginx's "
    "idle timeout (30 s between two reads or writes) closed that connection with its last 1.1 MiB "
    "still queued in the kernel. Within the bounds, HAProxy still ends a stream now and then (1 run "
    "in 5 while this table was made) by its client timeout (its log says `cD`: 30 s without "
    "progress toward the client) with bytes undelivered; that client, which had read all that "
    "reached it, is told nothing (the cell says how long it stood still before the limit, 300 s)."
)


def rows():
    return [
        Row(
            f"loss-{pct}",
            f"{pct} % random loss on the path",
            lambda ctx, kind, f=pct / 100: run(ctx, kind, f),
            METHOD,
        )
        for pct in (1, 5, 20)
    ]
