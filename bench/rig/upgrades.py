"""A live upgrade of each relay, the way each one documents it, and what came of it; and a
reload (the configuration read again), waited for the same way.

Each function replaces the relay's binary with a fresh copy first (unless the caller already put
a file of its own there), signals, and waits (bounded) until the relay says it is done:
    idlereaper  USR2 to the pid in its pidfile: the daemon re-executes the binary in the same
                process and hands it every connection; done at its `upgraded …` log line (or
                `upgrade refused: …`; or `upgrade failed: …` when the new image failed after the
                exec and the guardian carries on as the daemon, with its own pid)
    HAProxy     master-worker mode: USR2 to the master, which re-executes itself and forks a new
                worker; the old worker keeps its connections. Done when the new worker runs.
    nginx       USR2 to the master starts a new master from the new binary (the old one's pid
                file becomes nginx.pid.oldbin); then WINCH and QUIT to the old master: its
                workers stop accepting and finish the connections they hold. nginx ignores a
                USR2 while an earlier upgrade's old master still runs (its log says so).
"""

import os
import re
import signal
import time
from dataclasses import dataclass, field

from . import procs as P

RELOADED = re.compile(r" INFO reloaded | ERROR reload failed")
UPGRADED = re.compile(r"upgraded from=\S+ to=\S+ connections=(\d+) listeners=(\d+) pause_ms=([0-9.]+)")
REFUSED = re.compile(r"upgrade refused: (.*)")
FAILED = re.compile(r"upgrade failed: (.*); the old code carries on as pid=(\d+) .*pause_ms=([0-9.]+)")
IDLEREAPER_ENDS = {"upgraded": UPGRADED, "refused": REFUSED, "failed": FAILED}


@dataclass
class Outcome:
    """done: upgraded (idlereaper), reloaded (HAProxy, nginx), refused, ignored, failed (the new
    image failed after the exec, and the relay carries on: idlereaper's guardian, nginx's old
    master), died, silent."""

    done: str
    seconds: float = 0.0
    pause_ms: float = 0.0
    detail: str = ""
    pids: list = field(default_factory=list)

    @property
    def ok(self):
        return self.done in ("upgraded", "reloaded")


def upgrade_idlereaper(relay, limit_s, replace=True):
    """USR2 to the pid in the pidfile. Done at `upgraded …` (the new code runs), `upgrade
    refused: …` (checked before the exec: nothing changed), `upgrade failed: …` (the new image
    failed after the exec and the guardian carries on as the daemon: a new pid), or when no
    process of the relay is left."""
    pid = relay.main_pid()
    if pid is None:
        return Outcome("died", detail=f"no live pid in {relay.pidfile}")
    before = relay.log_text()
    seen = {k: len(rx.findall(before)) for k, rx in IDLEREAPER_ENDS.items()}
    if replace:
        relay.replace_exe()
    t0 = time.monotonic()
    P.signal_pids([pid], signal.SIGUSR2)

    def said():
        text = relay.log_text()
        for k, rx in IDLEREAPER_ENDS.items():
            if len(rx.findall(text)) > seen[k]:
                return k
        return None if relay.pids() else "died"

    done = P.wait_until(said, limit_s, 0.01) or "silent"
    out = Outcome(done, time.monotonic() - t0, pids=[pid])
    if done in IDLEREAPER_ENDS:
        found = IDLEREAPER_ENDS[done].findall(relay.log_text())[seen[done]]
    if done == "upgraded":
        out.pause_ms = float(found[2])
    elif done == "refused":
        out.detail = found.strip()
    elif done == "failed":
        out.detail, new_pid, out.pause_ms = found[0], int(found[1]), float(found[2])
        # The guardian wrote its pid into the pidfile before it said so.
        out.pids = [new_pid]
        if relay.main_pid() != new_pid:
            out.detail += f"; but the pidfile says {relay.main_pid()}, not {new_pid}"
    elif done == "died":
        out.detail = f"no process left ({relay.proc.poll() if relay.proc else None})"
    return out


def upgrade_haproxy(relay, limit_s, replace=True):
    master = relay.proc.pid
    old_children = set(P.children(master))
    new_ino = relay.replace_exe() if replace else os.stat(relay.exe).st_ino
    t0 = time.monotonic()
    P.signal_pids([master], signal.SIGUSR2)

    def new_worker():
        if not P.alive(master):
            return "died"
        for c in P.children(master):
            if c not in old_children and P.exe_inode(c) == new_ino:
                return c
        return None

    w = P.wait_until(new_worker, limit_s, 0.01)
    done = "died" if w == "died" else ("reloaded" if w else "silent")
    return Outcome(
        done,
        time.monotonic() - t0,
        pids=relay.pids(),
        detail="" if w else f"old workers {sorted(old_children)}, now {P.children(master)}",
    )


def upgrade_nginx(relay, limit_s, replace=True):
    old = relay.master()
    if old is None:
        return Outcome("died", detail="no nginx master")
    log_before = len(relay.log_text())
    new_ino = relay.replace_exe() if replace else os.stat(relay.exe).st_ino
    t0 = time.monotonic()
    P.signal_pids([old], signal.SIGUSR2)

    def new_master():
        if not P.alive(old):
            return "died"
        if "ignoring" in relay.log_text()[log_before:]:
            return "ignored"
        m = relay.master()
        if m and m != old and P.exe_inode(m) == new_ino and P.children(m):
            return m
        if m == old and re.search(r"exited (with code|on signal)", relay.log_text()[log_before:]):
            return "failed"  # the new binary did not come up; the old master carries on
        return None

    m = P.wait_until(new_master, limit_s, 0.01)
    out = Outcome("silent", time.monotonic() - t0)
    if m in ("died", "ignored", "failed"):
        out.done = m
        out.detail = relay.log_text()[log_before:].strip().splitlines()[-1:] or ""
        return out
    if m:
        # The old master's workers stop accepting, then it leaves once they have finished.
        P.signal_pids([old], signal.SIGWINCH)
        P.signal_pids([old], signal.SIGQUIT)
        out.done = "reloaded"
    out.pids = relay.pids()
    return out


def reload_idlereaper(relay, limit_s):
    """HUP to the pid in the pidfile; done at its `reloaded` (or `reload failed`) log line."""
    pid = relay.main_pid()
    if pid is None:
        return Outcome("died", detail=f"no live pid in {relay.pidfile}")
    n = len(RELOADED.findall(relay.log_text()))
    t0 = time.monotonic()
    P.signal_pids([pid], signal.SIGHUP)

    def said():
        found = RELOADED.findall(relay.log_text())
        if len(found) > n:
            return "reloaded" if "INFO" in found[n] else "refused"
        return None if P.alive(pid) else "died"

    return Outcome(P.wait_until(said, limit_s, 0.01) or "silent", time.monotonic() - t0, pids=[pid])


def reload_nginx(relay, limit_s):
    """HUP to the master; done when a worker it did not have before runs."""
    master = relay.master()
    if master is None:
        return Outcome("died", detail="no nginx master")
    before = set(P.children(master))
    t0 = time.monotonic()
    P.signal_pids([master], signal.SIGHUP)
    new = P.wait_until(lambda: set(P.children(master)) - before or not P.alive(master), limit_s, 0.01)
    done = "died" if not P.alive(master) else ("reloaded" if new else "silent")
    return Outcome(done, time.monotonic() - t0, pids=relay.pids())
