"""SIGKILL of every process of the relay under load, then a restart: how the clients learn that
their connections are gone, and how soon the relay relays again."""

import time

from rig import wire

from .common import Cell, Row, fmt_bytes, fmt_s
from .load import Load, listeners

RESTART_LIMIT_S = 20.0


def run(ctx, kind):
    s = ctx.size
    lsts = listeners(ctx, kind, s["reap_idle_s"])
    relay = ctx.relay(kind, list(lsts.values()), "kill")
    load = Load(ctx, kind, lsts, held=s["kill_held"], streams=s["kill_streams"], rate=s["stream_rate"])
    load.start(duration_s=30)
    time.sleep(1.0)
    relay.kill9()
    held_ends = wire.endings(load.held, 3.0)
    load.held = []
    got = load.check()
    st = got["streams"]
    t0 = time.monotonic()
    relay.start(relay.listeners)
    again = ctx.relays_again(lsts["held"], RESTART_LIMIT_S)
    back_s = time.monotonic() - t0 if again is not None else None
    told = {e: held_ends.count(e) for e in ("eof", "reset", "open")}
    stream_ends = {k: v for k, v in st["ends"].items() if k != "done"}
    text = (
        f"all lost with the process: {len(held_ends)} held told by FIN {told['eof']}, reset {told['reset']}, "
        f"nothing {told['open']}; {st['streams']} streams ended by FIN {stream_ends.get('eof', 0)}, "
        f"reset {stream_ends.get('reset', 0)} ({fmt_bytes(st['lost_bytes'])} sent and not echoed); "
    )
    text += (
        f"relays again {fmt_s(back_s)} after the restart" if back_s is not None else "does not relay again"
    )
    data = {"held_ends": told, "streams": st, "back_s": back_s}
    if kind != "idlereaper":
        return Cell(text, None, "", data)
    # What is left to judge when every connection dies with the process (the row's exception):
    # every client is told, held or streaming, and the restarted daemon relays within 5 s.
    untold = told["open"] + stream_ends.get("timeout", 0)
    ok = back_s is not None and back_s < 5 and untold == 0
    return Cell(text, ok, "" if ok else f"{untold} clients never told, or not relaying again within 5 s", data)


def rows():
    return [
        Row(
            "sigkill",
            "SIGKILL of the relay, then a restart",
            run,
            "Under load (200 idle connections held, 10 checked streams at 128 KiB/s; 50 and 4 in the "
            "short run), every process of the relay gets SIGKILL at once (as the OOM killer or `systemctl "
            "kill -s KILL` does), then the relay is started again with the same configuration (its "
            "stale pidfile still there). Every connection dies with the process (no relay can keep them); "
            "what differs is how each client learns it: the kernel closes a dead process's sockets with a "
            "FIN, or a reset where unread bytes were waiting, so a stream that ends with a FIN looks "
            "complete to a client that does not count its bytes. The figure is the time from the restart "
            "command to the first byte relayed by the new process.",
            exception=(
                "every connection dies with the process: the kernel closes a killed process's "
                "sockets, and no relay process can keep them (the upgrade's guardian covers a new "
                "image that fails, not a SIGKILL of the daemon). A stream whose bytes were still in "
                "the relay's memory then ends with a FIN after missing bytes, the one case where "
                "*every byte, or an abort* cannot hold. idlereaper is judged on what is left to it: "
                "every client learns that its connection ended, and the daemon, started again over "
                "its stale pidfile, relays within 5 s."
            ),
        )
    ]
