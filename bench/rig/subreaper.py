#!/usr/bin/env python3
"""rig/subreaper.py -- COMMAND...: runs COMMAND as a child subreaper (prctl), so that a daemon
that forks away (nginx with `daemon on`, which its binary upgrade needs) stays a descendant of
the script that started it, and is stopped with it; and so that a process that carries on after
COMMAND itself ended (idlereaper's upgrade guardian, when the new image fails) does too. Reaps
every orphan it inherits; exits when no descendant is left, with COMMAND's status (128 + N when a
signal N ended it). TERM and INT are passed on to every descendant.
"""

import ctypes
import os
import signal
import subprocess
import sys

PR_SET_CHILD_SUBREAPER = 36


def descendants():
    me = os.getpid()
    out, todo = [], [me]
    for _ in range(100_000):
        if not todo:
            break
        pid = todo.pop()
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    for c in f.read().split():
                        out.append(int(c))
                        todo.append(int(c))
        except OSError:
            pass
    return out


def main():
    argv = sys.argv[1:]
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        sys.exit("subreaper.py: no command")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit("subreaper.py: prctl(PR_SET_CHILD_SUBREAPER) failed")

    def pass_on(signum, _frame):
        for pid in descendants():
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, pass_on)
    signal.signal(signal.SIGINT, pass_on)
    first = subprocess.Popen(argv)
    rc = first.wait()
    # Whatever COMMAND's end, its orphans are reaped until none is left: a daemon's process
    # that carries on after the first one ended (idlereaper's upgrade guardian, when a new
    # image fails) is still stopped with the rest. Bounded by the processes there are.
    for _ in range(1_000_000):
        try:
            os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
    sys.exit(rc if rc > 0 else 0 if rc == 0 else 128 - rc)


if __name__ == "__main__":
    main()
