"""An upgrade to a new binary that fails after it has taken over: it exits, it crashes
(SIGSEGV), or it cannot open its log file. The binary passes every check made before the
exec (the stand-in runs the real binary for them), so the failure comes when it is too late to
refuse. Whatever the new image does, the relay must keep every connection and every byte.
"""

import os
import re
import time

from .common import Cell, Row
from .load import Load, listeners, lost_summary

# A stand-in for the new binary: the real one answers idlereaper's pre-flight questions
# (--check, --handover-versions, --handover-check); run any other way, it fails.
STAND_IN = """#!/bin/sh
# A new binary that fails once it runs as the relay (written by bench/faultrows/badimage.py).
case "$1" in
--check|--handover-versions|--handover-check) exec {real} "$@";;
esac
{fail}
"""
FAILS = {
    "exit": "echo 'stand-in: exiting at start' >&2\nexit 1",
    "segv": "ulimit -c 0\nkill -SEGV $$",
}
NOBODY = ("nobody", "nogroup")
# What the new code says when it cannot open the log file again (src/logging.rs).
LOG_KEPT = "logging on to the file the previous image had open"


def run(ctx, kind, how):
    s = ctx.size
    lsts = listeners(ctx, kind, s["reap_idle_s"])
    options = {"user": NOBODY} if how == "log" else {}
    relay = ctx.relay(kind, list(lsts.values()), f"bad-{how}", **options)
    ctx.scope.callback(relay.restore_exe)
    pid0 = relay.main_pid() if kind == "idlereaper" else None
    load = Load(ctx, kind, lsts, held=s["bad_held"], streams=s["bad_streams"], rate=s["stream_rate"])
    load.start(duration_s=30)
    time.sleep(1.0)
    if how == "log":
        # The daemon runs as nobody; its log is in a directory only root may write to. Rotated
        # away (as logrotate does before it signals), the log cannot be created again by it.
        os.rename(relay.log_file, relay.log_file + ".1")
        relay.replace_exe()
    else:
        relay.replace_exe(STAND_IN.format(real=relay.binary, fail=FAILS[how]))
    out = relay.upgrade(20.0, replace=False)
    time.sleep(s["bad_settle_s"])  # whatever comes after a failure (another image taking over) has time
    alive = relay.running()
    got = load.check()
    again = ctx.relays_again(lsts["held"], s["bad_again_s"])
    conns, bytes_lost, early, words = lost_summary(got)
    words.append("still relaying" if again is not None else "NOT relaying")
    data = {"upgrade": out.done, "detail": out.detail, "load": got, "alive": alive}
    if kind != "idlereaper":
        words.append(f"the upgrade: {out.done}{', no process left' if not alive else ''}")
        return Cell("; ".join(words), None, "", data)
    head, as_promised = _idlereaper_upgrade(relay, how, out, pid0)
    data.update(pid_before=pid0, pid_after=relay.main_pid(), pause_ms=out.pause_ms)
    ok = as_promised and conns == 0 and bytes_lost == 0 and early == 0 and again is not None
    why = "" if ok else f"upgrade {out.done}: {out.detail}; pids {pid0} -> {relay.main_pid()}; load: {got}"
    return Cell(f"{head}; " + "; ".join(words), ok, why, data)


def _idlereaper_upgrade(relay, how, out, pid0):
    """What idlereaper promises of the upgrade itself, as words and a verdict. A new image that
    exits or crashes: the upgrade fails and the guardian carries on as the daemon, its pid in
    the pidfile. A log it cannot create again is no failure: the new code logs on to the file
    the old code had open (the rotated one), and says so."""
    if how == "log":
        kept = LOG_KEPT in relay.log_text()
        if out.done == "upgraded":
            head = f"upgraded, pause {out.pause_ms:.1f} ms"
        else:
            head = f"the upgrade: {out.done} ({out.detail})"
        head += "; logs on to the rotated file" if kept else "; NOT logging on to the rotated file"
        return head, out.done == "upgraded" and kept and relay.main_pid() == pid0
    pid = relay.main_pid()
    if out.done != "failed":
        return f"the upgrade: {out.done} ({out.detail})", False
    # The pids change from run to run: the table says what happened, the data keeps the pids.
    detail = re.sub(r" \(pid \d+\)", "", out.detail)
    head = f"the old code carried on as a new pid (the pidfile's), pause {out.pause_ms:.0f} ms: {detail}"
    return head, pid is not None and pid != pid0 and out.pids == [pid]


METHOD = (
    "Under load ({held} held idle connections, {streams} checked streams at 128 KiB/s; {short}), "
    "the binary on disk is replaced and the relay upgraded by its own mechanism. {what} Then: held "
    "connections that still echo a byte, streams intact (SHA-256), and whether a new connection "
    "is relayed. {expect}"
)
GUARDIAN = (
    "idlereaper is judged on what it promises: the upgrade fails (`upgrade failed: …`) and the "
    "guardian the old image started just before the exec carries on as the daemon with the old "
    "code and every connection: a new pid, which the pidfile names; the pause is its own figure, "
    "from the freeze before the exec to the old code's loops running again. HAProxy: the master "
    "re-executes the new binary itself (USR2). nginx: the old master starts the new binary as a "
    "child and goes on when it fails."
)


def rows():
    m = dict(held=200, streams=10, short="50 and 4 in the short run")
    return [
        Row(
            "image-exits",
            "new image exits right after the upgrade's exec",
            lambda ctx, kind: run(ctx, kind, "exit"),
            METHOD.format(
                what="The new binary is a stand-in that runs the real one for idlereaper's "
                "pre-flight checks and otherwise exits 1.",
                expect=GUARDIAN,
                **m,
            ),
        ),
        Row(
            "image-segfaults",
            "new image crashes (SIGSEGV) right after the exec",
            lambda ctx, kind: run(ctx, kind, "segv"),
            METHOD.format(
                what="The stand-in kills itself with SIGSEGV instead of exiting.", expect=GUARDIAN, **m
            ),
        ),
        Row(
            "image-no-log",
            "new image cannot open its log file",
            lambda ctx, kind: run(ctx, kind, "log"),
            METHOD.format(
                what="idlereaper runs as `nobody` (`daemon.user`), its log file in a "
                "directory only root may write to; the log is renamed away (as "
                "logrotate does) and the binary replaced by a good one: the new image, "
                "as nobody, cannot create the log again.",
                expect="idlereaper promises that this is no failure: the new code warns and logs "
                "on to the file the old code had open (the rotated one), as SIGUSR1 does when it "
                "cannot reopen the log; the upgrade succeeds (`upgraded`, same pid).",
                **m,
            ),
            kinds=("idlereaper",),
            peer_notes={
                k: "does not apply: its master stays root and reopens its logs as root"
                for k in ("haproxy", "nginx")
            },
        ),
    ]
