"""Live upgrades under load, one after another, each relay by its own mechanism
(rig/upgrades.py): nothing may be lost, and the idle deadlines of the connections being reaped
meanwhile may be late only by the tick plus the pauses the upgrades made."""

import statistics
import time

from .common import Cell, Row, crashes
from .load import Load, listeners, lost_summary, reaped_all

TICK_MS = 1.0


def run(ctx, kind):
    s = ctx.size
    lsts = listeners(ctx, kind, s["reap_idle_s"])
    relay = ctx.relay(kind, list(lsts.values()), "upgrades")
    pid0 = relay.main_pid() if kind == "idlereaper" else None  # an upgrade keeps the pid
    count, gap = s["upgrades"], s["upgrade_gap_s"]
    load = Load(
        ctx,
        kind,
        lsts,
        held=s["upgrade_held"],
        streams=s["upgrade_streams"],
        rate=s["stream_rate"],
        churn_rate=s["churn_rate"],
        reap_conns=s["reap_conns"],
    )
    load.start(duration_s=count * gap + 4)
    time.sleep(1.5)  # a reap round under way before the first upgrade
    t0 = time.monotonic()
    outcomes = []
    for i in range(count):
        time.sleep(max(0.0, t0 + i * gap - time.monotonic()))
        at = time.monotonic()
        outcomes.append((at, relay.upgrade(30.0)))
    time.sleep(max(0.0, t0 + count * gap + 1.5 - time.monotonic()))
    got = load.check()
    again = ctx.relays_again(lsts["held"], 5)
    conns, bytes_lost, early, words = lost_summary(got)
    done = [o for _, o in outcomes if o.ok]
    by = {}
    for _, o in outcomes:
        by[o.done] = by.get(o.done, 0) + 1
    verb = "upgraded" if kind == "idlereaper" else "reloaded"
    head = f"{len(done)}/{count} {verb}"
    others = [f"{n} {k}" for k, n in by.items() if k not in ("upgraded", "reloaded")]
    if others:
        head += f" ({', '.join(others)})"
    data = {"outcomes": by, "load": got}
    if kind == "idlereaper":
        data["pid_same"] = pid0 is not None and relay.main_pid() == pid0
    if kind == "idlereaper" and done:
        pauses = [o.pause_ms for o in done]
        head += f", pause p50 {statistics.median(pauses):.1f} ms, max {max(pauses):.1f} ms"
        excess = deadline_excess(load, outcomes)
        data["deadline_excess_ms"] = excess
        words.append(f"worst reap {excess:+.1f} ms past tick + pauses")
    elif kind != "idlereaper" and "reap" in got:
        words.append(f"max reap lateness {got['reap']['max_ms']:.1f} ms")
    if kind != "idlereaper":
        words.append(f"{len(relay.pids())} processes after")
    if crashes(relay):
        words.append(crashes(relay))
    text = f"{head}; " + "; ".join(words)
    if again is None:
        text += "; NO new connection relayed after"
    if kind != "idlereaper":
        return Cell(text, None, "", data)
    ok = len(done) == count and conns == 0 and bytes_lost == 0 and early == 0 and again is not None
    ok = ok and data["pid_same"] and reaped_all(got)
    return Cell(text, ok, "" if ok else f"load: {got}; upgrades: {by}", data)


def deadline_excess(load, outcomes):
    """The worst lateness of a reap round beyond one tick plus the pauses of the upgrades
    signalled during it (ms; negative: within the bound)."""
    worst = float("-inf")
    for start, end, max_ms, _early in load.round_windows():
        pauses = sum(o.pause_ms for at, o in outcomes if start <= at <= end and o.ok)
        worst = max(worst, max_ms - TICK_MS - pauses)
    return worst if worst != float("-inf") else 0.0


def rows():
    return [
        Row(
            "upgrades",
            "live upgrades under load",
            run,
            "Under load (1,000 idle connections held, 50 checked streams at 128 KiB/s each, churn of "
            "200 connections a second, and rounds of 100 connections reaped at a 1 s idle timeout; in the "
            "short run 5 upgrades, 100 held, 5 streams, 100/s churn, 50 reaped per round), the relay is "
            "upgraded 100 times, one a second, each by its own mechanism: idlereaper re-executes the new "
            "binary in the same process (USR2); HAProxy's master re-executes the new binary and starts a "
            "new worker, the old worker keeping its connections (USR2, master-worker mode); nginx starts a "
            "new master from the new binary and retires the old one (USR2, then WINCH and QUIT), and "
            "ignores a USR2 while an earlier upgrade's old master still serves connections. Each binary "
            "is a fresh copy (a new inode) before each signal. Then every held connection must still "
            "echo a byte, every stream must come back intact (SHA-256), and a new connection must relay. "
            "For idlereaper, each reap round's latest close is compared with one tick plus the pauses "
            "(from its `upgraded` lines) of the upgrades during that round.",
        )
    ]
