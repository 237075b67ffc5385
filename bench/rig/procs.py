"""Processes a script starts: each one tracked and stopped on the way out, and bounded waits.

`Procs` starts programs (inside a network namespace if asked), writes their output to a log
file, and stops every one still running when the script ends, however it ends: `interruptible`
turns TERM, HUP and INT into an exception, so that `with` blocks and `finally` clauses run.
Stopping is TERM, a bounded wait, then KILL. A daemon that forks away (nginx with `daemon on`)
is started under rig/subreaper.py, so that it stays a descendant and is stopped with the rest.
"""

import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SUBREAPER = os.path.join(HERE, "subreaper.py")


class Interrupted(Exception):
    """A signal asked the script to stop."""


def interruptible():
    """From now on TERM, HUP and INT raise `Interrupted` in the main thread."""

    def raise_it(signum, _frame):
        raise Interrupted(signal.Signals(signum).name)

    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(s, raise_it)


def uninterruptible():
    """From now on TERM, HUP and INT are ignored: the cleanup they asked for runs to its end."""
    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(s, signal.SIG_IGN)


def wait_until(pred, limit_s, step=0.05):
    """Polls `pred` every `step` seconds until it returns something true (returned) or `limit_s`
    seconds have passed (then its last value)."""
    until = time.monotonic() + limit_s
    while True:
        v = pred()
        if v or time.monotonic() >= until:
            return v
        time.sleep(step)


def alive(pid):
    """PID runs and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def children(pid):
    """The direct children of PID (every thread's)."""
    out = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def descendants(pid):
    """Every process under PID, children first; bounded by the number of processes."""
    seen, todo = [], children(pid)
    for _ in range(100_000):
        if not todo:
            break
        p = todo.pop(0)
        if p not in seen:
            seen.append(p)
            todo += children(p)
    return seen


def exe_inode(pid):
    try:
        return os.stat(f"/proc/{pid}/exe").st_ino
    except OSError:
        return None


def signal_pids(pids, sig):
    for p in pids:
        try:
            os.kill(p, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop_pids(pids, grace_s=5.0):
    """TERM, up to `grace_s` for them to go, then KILL; returns those that needed KILL."""
    pids = [p for p in pids if alive(p)]
    signal_pids(pids, signal.SIGTERM)
    wait_until(lambda: not any(alive(p) for p in pids), grace_s)
    stubborn = [p for p in pids if alive(p)]
    signal_pids(stubborn, signal.SIGKILL)
    wait_until(lambda: not any(alive(p) for p in stubborn), 5.0)
    return stubborn


def in_netns(netns, argv):
    """`argv` run inside the named network namespace (`ip netns exec` execs it: same pid)."""
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


class Procs:
    """The processes of one run. `start` tracks; `stop` stops one (with its descendants);
    `stop_all` (also called by `close`) stops every one still running, newest first."""

    def __init__(self, logdir):
        self.logdir = logdir
        self.started = []  # (name, Popen)
        os.makedirs(logdir, exist_ok=True)

    def log_path(self, name):
        return os.path.join(self.logdir, f"{name}.log")

    def start(self, name, argv, netns=None, stdin=subprocess.DEVNULL, stdout=None, reaper=False, cwd=None):
        """Starts `argv` with its output appended to logs/NAME.log (or to `stdout` if given).
        `reaper`: under rig/subreaper.py, for a daemon that forks away."""
        if reaper:
            argv = [sys.executable, SUBREAPER, "--", *argv]
        argv = in_netns(netns, argv)
        log = open(self.log_path(name), "ab")
        try:
            p = subprocess.Popen(
                argv,
                stdin=stdin,
                stdout=stdout or log,
                stderr=log,
                cwd=cwd,
                start_new_session=True,
            )
        finally:
            log.close()
        self.started.append((name, p))
        return p

    def run(self, name, argv, limit_s, netns=None, check=True):
        """Runs `argv` to completion within `limit_s` seconds; returns (status, stdout text).
        With `check`, a failure raises with the end of its output."""
        argv = in_netns(netns, argv)
        with open(self.log_path(name), "ab") as log:
            try:
                done = subprocess.run(
                    argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, timeout=limit_s
                )
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"{name}: no result within {limit_s}s: {' '.join(argv)}") from None
        out = done.stdout.decode(errors="replace")
        if check and done.returncode != 0:
            raise RuntimeError(f"{name}: exit status {done.returncode}: {' '.join(argv)}\n{self.tail(name)}")
        return done.returncode, out

    def tail(self, name, n=15):
        try:
            with open(self.log_path(name), errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def stop(self, p, grace_s=5.0):
        """Stops a process started here and whatever it left running under it."""
        pids = [p.pid] + descendants(p.pid)
        stop_pids(pids, grace_s)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def stop_all(self):
        for _name, p in reversed(self.started):
            if p.poll() is None or descendants(p.pid):
                self.stop(p, grace_s=3.0)
        self.started = []

    def close(self):
        self.stop_all()
