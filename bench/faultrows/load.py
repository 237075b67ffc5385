"""The mixed load the process-level rows run under (upgrades, failed images, SIGKILL, the soak):
idle connections held, checked streams, connection churn and idle connections reaped, each on a
listener of its own in front of an echo upstream. `check` says what survived.

    held     N idle connections, each proven to relay a byte first; at the end, a one-byte echo
             on each: lost = those that no longer relay
    streams  M checked streams (rig/streams.py) at a fixed rate, until stopped
    churn    `loadgen churn`: connect, 64-byte echo, close, at a fixed rate; failed = errors
    reap     `loadgen reap` rounds, one after another: K connections send a byte and are left
             idle until the relay's idle timeout closes them; early = closed before it
"""

import threading
import time

from rig import wire
from rig.streams import Streams

from .common import fmt_bytes

LONG_IDLE_S = 3600.0  # longer than any row: the held connections and streams are never idle-reaped


def listeners(ctx, kind, reap_idle_s, extra=()):
    """held, streams, churn, reap (+ `extra`: (name, idle) pairs), each with its echo upstream."""
    specs = [("held", LONG_IDLE_S), ("streams", LONG_IDLE_S), ("churn", 10.0), ("reap", reap_idle_s), *extra]
    out = {}
    for i, (name, idle) in enumerate(specs):
        lst = ctx.listener(kind, i, name, idle)
        ctx.echo(lst)
        out[name] = lst
    return out


class Load:
    def __init__(self, ctx, kind, lsts, held=0, streams=0, rate=0, churn_rate=0, reap_conns=0):
        self.ctx, self.kind, self.lsts = ctx, kind, lsts
        self.n_held, self.n_streams, self.rate = held, streams, rate
        self.churn_rate, self.reap_conns = churn_rate, reap_conns
        self.held, self.streams, self.churn = [], None, None
        self.rounds = []  # (start, end, fields) of each reap round
        self.stopping = threading.Event()
        self.reaper = None

    def start(self, duration_s):
        """Held and streams open now; churn for `duration_s`; reap rounds until `check`."""
        ctx = self.ctx
        if self.n_held:
            self.held = ctx.open_held(self.lsts["held"], self.n_held)
        if self.n_streams:
            with ctx.hosts.client.inside():
                self.streams = Streams(
                    self.lsts["streams"].listen, self.n_streams, rate=self.rate, limit_s=duration_s + 600
                ).open()
            self.streams.go()
        if self.churn_rate:
            self.churn = ctx.loadgen.start(
                f"{self.kind}-churn-{ctx.row_no}",
                [
                    "churn",
                    "--connect",
                    self.lsts["churn"].listen,
                    "--threads",
                    "2",
                    "--rate",
                    str(self.churn_rate),
                    "--duration",
                    f"{duration_s:.1f}s",
                ],
                netns=ctx.hosts.client.name,
            )
            ctx.scope.callback(ctx.procs.stop, self.churn, 1.0)
        if self.reap_conns:
            self.reaper = threading.Thread(target=self._reap_rounds, args=(duration_s + 600,), daemon=True)
            self.reaper.start()
        return self

    def _reap_rounds(self, limit_s):
        lst = self.lsts["reap"]
        until = time.monotonic() + limit_s
        for _ in range(100_000):
            if self.stopping.is_set() or time.monotonic() > until:
                break
            t0 = time.monotonic()
            try:
                got = self.ctx.loadgen.run(
                    f"{self.kind}-reap-{self.ctx.row_no}",
                    [
                        "reap",
                        "--connect",
                        lst.listen,
                        "--conns",
                        str(self.reap_conns),
                        "--timeout",
                        f"{round(lst.idle_s * 1000)}ms",
                        "--echo",
                    ],
                    lst.idle_s * 3 + 30,
                    netns=self.ctx.hosts.client.name,
                )
            except RuntimeError as e:
                got = {"error": str(e).splitlines()[0]}
            self.rounds.append((t0, time.monotonic(), got))

    def check(self, churn_limit_s=60.0):
        """Stops the streams and the reap rounds, waits for the churn, and checks everything."""
        out = {}
        self.stopping.set()
        if self.streams:
            self.streams.stop()
            out["streams"] = self.streams.wait(120)
        if self.held:
            ends = wire.echo_check(self.held)
            out["held"] = len(self.held)
            out["held_lost"] = len(self.held) - ends.count("ok")
            out["held_ends"] = {e: ends.count(e) for e in set(ends)}
        if self.churn:
            try:
                got = self.ctx.loadgen.finish(self.churn, churn_limit_s)
                out["churn"] = {"conns": int(got.get("conns", 0)), "failed": int(got.get("failed", 0))}
            except RuntimeError as e:
                out["churn"] = {"conns": 0, "failed": -1, "error": str(e)}
        if self.reaper:
            self.reaper.join(timeout=self.lsts["reap"].idle_s * 3 + 40)
            rounds = [r for r in self.rounds if "error" not in r[2]]
            out["reap"] = {
                "rounds": len(self.rounds),
                "failed_rounds": len(self.rounds) - len(rounds),
                "conns": sum(int(r[2].get("conns", 0)) for r in rounds),
                "closed": sum(int(r[2].get("closed", 0)) for r in rounds),
                "early": sum(int(r[2].get("early", 0)) for r in rounds),
                "max_ms": max((float(r[2].get("max_ms", 0)) for r in rounds), default=0.0),
                "min_ms": min((float(r[2].get("min_ms", 0)) for r in rounds), default=0.0),
            }
        return out

    def round_windows(self):
        """(start, end, max lateness ms, early) of each completed reap round."""
        return [
            (a, b, float(f.get("max_ms", 0)), int(f.get("early", 0)))
            for a, b, f in self.rounds
            if "error" not in f
        ]


def reaped_all(got):
    """Every reap round ran and every idle connection in it was closed (true without rounds)."""
    r = got.get("reap")
    return r is None or (r["failed_rounds"] == 0 and r["closed"] == r["conns"])


def lost_summary(got):
    """Lost and early from `Load.check`: (connections lost, bytes lost, closed early, words)."""
    conns = got.get("held_lost", 0)
    st = got.get("streams")
    bytes_lost = st["lost_bytes"] if st else 0
    early = st["early"] if st else 0
    words = []
    if "held" in got:
        words.append(f"{got['held_lost']}/{got['held']} held lost")
    if st:
        word = f"{st['intact']}/{st['streams']} streams intact"
        if st["intact"] < st["streams"]:
            ends = {"eof": "a FIN", "reset": "a reset", "timeout": "nothing"}
            word += " (ended by " + ", ".join(
                f"{ends.get(k, k)}: {v}" for k, v in st["ends"].items() if k != "done"
            )
            word += f"; {fmt_bytes(st['lost_bytes'])} sent and not echoed)"
        words.append(word)
        conns += st["streams"] - st["intact"]
    if "churn" in got:
        c = got["churn"]
        words.append(f"churn {c['failed']} failed of {c['conns'] + max(c['failed'], 0):,}")
        conns += max(c["failed"], 0)
    if "reap" in got:
        r = got["reap"]
        early += r["early"]
        words.append(
            f"reaps {r['early']} early of {r['closed']:,}"
            + (f" (by up to {-r['min_ms']:.1f} ms)" if r["early"] else "")
        )
        if r["conns"] > r["closed"]:
            words.append(f"{r['conns'] - r['closed']} idle connections never reaped")
        if r["failed_rounds"]:
            words.append(f"{r['failed_rounds']} reap rounds failed")
    return conns, bytes_lost, early, words
