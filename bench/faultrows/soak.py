"""A soak: churn, reloads, upgrades and connection kills (through the relay's own command; the
relay's process is never killed) mixed for ten minutes, while idle connections are held and
checked streams run; nothing may be lost, and the relay's memory and descriptors must come back
flat. The three relays soak at the same time (each with its own load), so that the row takes ten
minutes rather than thirty; a soak looks for growth and loss, not speed."""

import socket
import time

from rig import measure, wire
from rig import procs as P

from .common import Cell, Row, close_reasons, crashes, fmt_s
from .load import LONG_IDLE_S, Load, listeners, lost_summary, reaped_all

FD_TOLERANCE = 4
# idlereaper keeps the empty splice pipes of its worker for reuse, at most 64 of them (MAX_PIPES
# in src/worker/mod.rs), two descriptors each: how many are open at a resting point depends on
# how many transfers ran at once since the last upgrade (a new image starts with none). A cache
# bounded by design is no leak, so pipes are judged against that bound, the rest against
# FD_TOLERANCE.
PIPE_CACHE_FDS = 2 * 64
RSS_TOLERANCE_KIB = 2048
VICTIMS = 10
DRAIN_LIMIT_S = 30


def _kill_victims(ctx, kind, relay, lst):
    """VICTIMS connections opened, then killed through the relay's own command; how many ended
    within 2 s (None: the relay has no such command)."""
    if kind == "nginx":
        return None
    conns = ctx.open_held(lst, VICTIMS)
    if kind == "idlereaper":
        ctx.procs.run(
            f"{kind}-ctl-kill",
            [ctx.bins["idlereaperctl"], "-s", relay.control_socket, "kill", "--listener", lst.name],
            10,
            check=False,
        )
    else:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            try:
                s.connect(relay.stats_socket)
                s.sendall(f"shutdown sessions server {lst.name}/up\n".encode())
                s.recv(4096)
            except OSError:
                pass
    ends = wire.endings(conns, 2.0)
    return VICTIMS - ends.count("open")


def _drain(pids_fn, limit_s):
    """Waits until the relay's descriptor count stops moving (two equal samples 0.5 s apart)."""
    last = [None]

    def still():
        n = measure.fds(pids_fn())[0]
        same, last[0] = n == last[0], n
        return same

    P.wait_until(still, limit_s, 0.5)


def _phase(ctx, kind, relay, lsts, secs, streams, ops):
    """`secs` of load with the operations on their schedule; returns the load's check."""
    s = ctx.size
    load = Load(
        ctx,
        kind,
        lsts,
        streams=streams,
        rate=s["stream_rate"],
        churn_rate=s["soak_churn_rate"],
        reap_conns=s["reap_conns"],
    )
    load.start(duration_s=secs)
    t0 = time.monotonic()
    due = {"reload": s["soak_reload_s"], "upgrade": s["soak_upgrade_s"], "kill": s["soak_kill_s"]}
    # Staggered, so that no two operations are asked for at once.
    next_at = {"reload": due["reload"], "upgrade": due["upgrade"] + 1.0, "kill": due["kill"] + 0.5}
    for _ in range(100_000):
        now = time.monotonic() - t0
        if now >= secs:
            break
        op = min(next_at, key=next_at.get)
        if next_at[op] > now:
            time.sleep(min(next_at[op] - now, secs - now))
            continue
        next_at[op] += due[op]
        if op == "reload":
            ops["reloads"] += 1
            ops["reloads_ok"] += relay.reload(30.0).ok
        elif op == "upgrade":
            out = relay.upgrade(30.0)
            ops["upgrades"] += 1
            ops["upgrades_ok"] += out.ok
        else:
            ended = _kill_victims(ctx, kind, relay, lsts["victims"])
            if ended is not None:
                ops["kills"] += 1
                ops["killed"] += VICTIMS
                ops["killed_ended"] += ended
    return load.check()


def run(ctx, kind):
    s = ctx.size
    # The held connections sit idle from before the warm-up to the check after the soak: their
    # listener's idle timeout must outlast all of it, or the relay reaps them as it should, and
    # the row would count as lost what an idle timeout closed on time.
    if LONG_IDLE_S < s["soak_warmup_s"] + s["soak_s"] + 2 * DRAIN_LIMIT_S + 300:
        raise RuntimeError(f"the held connections' idle timeout ({LONG_IDLE_S} s) does not outlast the soak")
    lsts = listeners(ctx, kind, s["reap_idle_s"], extra=[("victims", LONG_IDLE_S)])
    relay = ctx.relay(kind, list(lsts.values()), "soak", control=True)
    held = ctx.open_held(lsts["held"], s["soak_held"])
    ops = {
        "reloads": 0,
        "reloads_ok": 0,
        "upgrades": 0,
        "upgrades_ok": 0,
        "kills": 0,
        "killed": 0,
        "killed_ended": 0,
    }
    _phase(ctx, kind, relay, lsts, s["soak_warmup_s"], s["soak_streams"], ops)
    _drain(relay.pids, DRAIN_LIMIT_S)
    start = measure.sample(relay.pids())
    ops = {k: 0 for k in ops}
    got = _phase(ctx, kind, relay, lsts, s["soak_s"], s["soak_streams"], ops)
    _drain(relay.pids, DRAIN_LIMIT_S)
    end = measure.sample(relay.pids())
    ends = wire.echo_check(held)
    got["held"], got["held_lost"] = len(held), len(held) - ends.count("ok")
    conns, bytes_lost, early, words = lost_summary(got)
    if kind == "idlereaper" and got["held_lost"]:
        words[0] += f" ({close_reasons(relay, 'held') or 'its log names none'})"
    grew_pipes = end["pipes"] - start["pipes"]
    grew_fds = end["fds"] - start["fds"] - grew_pipes
    grew_rss = end["rss_kib"] - start["rss_kib"]
    text = (
        f"descriptors {start['fds']} → {end['fds']} (pipes {start['pipes']} → {end['pipes']}), RSS {start['rss_kib'] / 1024:.1f} → "
        f"{end['rss_kib'] / 1024:.1f} MiB, processes {start['processes']} → {end['processes']} "
        f"over {fmt_s(s['soak_s'])}; " + "; ".join(words)
    )
    text += f"; {ops['reloads_ok']}/{ops['reloads']} reloads, {ops['upgrades_ok']}/{ops['upgrades']} upgrades"
    if kind != "nginx":
        text += f", {ops['killed_ended']}/{ops['killed']} killed connections closed"
    if crashes(relay):
        text += f"; {crashes(relay)}"
    data = {"start": start, "end": end, "ops": ops, "load": got}
    if kind != "idlereaper":
        return Cell(text, None, "", data)
    ok = (
        conns == 0
        and bytes_lost == 0
        and early == 0
        and grew_fds <= FD_TOLERANCE
        and grew_pipes <= PIPE_CACHE_FDS
        and grew_rss <= RSS_TOLERANCE_KIB
        and ops["upgrades_ok"] == ops["upgrades"]
        and ops["reloads_ok"] == ops["reloads"]
        and reaped_all(got)
        and ops["killed_ended"] == ops["killed"]
        and relay.running()
    )
    why = "" if ok else f"descriptors +{grew_fds} besides pipes, pipes +{grew_pipes}, RSS +{grew_rss} KiB; ops {ops}; load {got}"
    return Cell(text, ok, why, data)


def rows():
    return [
        Row(
            "soak",
            "10-minute soak: churn, reloads, upgrades, connection kills",
            run,
            "The three relays at the same time, each under its own load for 10 minutes (20 s in the short "
            "run): 300 idle connections held throughout (50), 10 checked streams at 128 KiB/s (3), churn "
            "of 100 connections a second (50), rounds of 100 connections reaped at a 1 s idle timeout "
            "(50); a reload every 20 s (5 s), an upgrade every 60 s (10 s; each by its own mechanism, as "
            "in the upgrades row), and every 30 s (7 s) 10 connections opened and killed by the relay's "
            "own command (idlereaper: `idlereaperctl kill --listener`; HAProxy: `shutdown sessions "
            "server` on its stats socket; nginx has none). The relay's process is never killed here "
            "(SIGKILL has its own row), and the held connections' listener has a 1-hour idle timeout: "
            "each of them must still relay a byte after the soak. Descriptors and resident memory of all the "
            "relay's processes are taken at two resting points with only the held connections open: "
            "after a warm-up of the same load (20 s; 3 s) and after the soak, once the descriptors stop "
            "moving. idlereaper's must not grow by more than 4 descriptors besides pipes, nor by more "
            "than 2 MiB; its pipes are the empty splice pipes it keeps for reuse (at most 64 a worker, "
            "two descriptors each, none after an upgrade), so their count follows how many transfers "
            "ran at once since the last upgrade, and may not grow by more than that cache holds.",
            together=True,
        )
    ]
