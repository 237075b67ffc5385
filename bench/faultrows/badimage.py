"""An upgrade to a new binary that fails after it has taken over: it exits, it crashes
(SIGSEGV), or it cannot open its log file. The binary passes every check made before the
exec (the stand-in runs the real binary for them), so the failure comes when it is too late to
refuse. Whatever the new image does, the relay must keep every connection and every byte.
"""

import os
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


def run(ctx, kind, how):
    s = ctx.size
    lsts = listeners(ctx, kind, s["reap_idle_s"])
    options = {"user": NOBODY} if how == "log" else {}
    relay = ctx.relay(kind, list(lsts.values()), f"bad-{how}", **options)
    ctx.scope.callback(relay.restore_exe)
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
    after = "still relaying" if again is not None else "NOT relaying"
    text = f"{'; '.join(words)}; {after} (the upgrade: {out.done}{', no process left' if not alive else ''})"
    data = {"upgrade": out.done, "detail": out.detail, "load": got, "alive": alive}
    if kind != "idlereaper":
        return Cell(text, None, "", data)
    ok = conns == 0 and bytes_lost == 0 and early == 0 and again is not None
    return Cell(text, ok, "" if ok else f"upgrade {out.done}: {out.detail}; load: {got}", data)


KNOWN = (
    "On this build the process that executes a failing new image goes with it: every connection "
    "is lost (streams with bytes in the relay end with a clean EOF), and the listeners are gone. "
    "Keeping them needs a process that outlives the failed image: a guardian that holds every "
    "connection until the new image reports in, and carries on as the daemon when it does not. "
    "This build has none."
)

METHOD = (
    "Under load ({held} held idle connections, {streams} checked streams at 128 KiB/s; {short}), "
    "the binary on disk is replaced and the relay upgraded by its own mechanism. {what} Then: held "
    "connections that still echo a byte, streams intact (SHA-256), and whether a new connection "
    "is relayed. HAProxy: the master re-executes the new binary itself (USR2). nginx: the old "
    "master starts the new binary as a child and goes on when it fails."
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
                **m,
            ),
            known_loss=KNOWN,
        ),
        Row(
            "image-segfaults",
            "new image crashes (SIGSEGV) right after the exec",
            lambda ctx, kind: run(ctx, kind, "segv"),
            METHOD.format(what="The stand-in kills itself with SIGSEGV instead of exiting.", **m),
            known_loss=KNOWN,
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
                **m,
            ),
            kinds=("idlereaper",),
            known_loss=KNOWN,
            peer_notes={
                k: "does not apply: its master stays root and reopens its logs as root"
                for k in ("haproxy", "nginx")
            },
        ),
    ]
