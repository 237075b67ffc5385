"""One run of bench/compare.py: its directory, its clock and messages, its result lines and
errors, and the clients it runs to completion within a bound.

The directory (bench/results/<timestamp>/, or OUT):
    results.txt   one line per measurement: `relay=… rep=… scenario=… key=value…`
    errors.txt    one line per scenario that failed (the run then exits 1)
    logs/         every program's output: TAG.out (standard output), TAG.log (standard error)
    configs/      what each relay and server was started with
    samples/ iperf/ charts/   a scenario's raw figures, and the report's charts
    run/ bin/     the relays' run directories and the binaries measured (not published)
"""

import os
import subprocess
import time

from rig import loadgen
from rig.procs import Procs

SUBDIRS = ("logs", "configs", "samples", "iperf", "charts", "run", "bin")
TIMED_OUT = 124  # the exit status `timeout` gives a command it stopped


class Run:
    def __init__(self, settings, root, out):
        self.settings = settings
        self.root = root  # the repository
        self.bench = os.path.join(root, "bench")
        for d in SUBDIRS:
            os.makedirs(os.path.join(out, d), exist_ok=True)
        self.out = os.path.realpath(out)
        self.results = self.path("results.txt")
        self.errors = self.path("errors.txt")
        for f in (self.results, self.errors):
            open(f, "w").close()
        self.t0 = time.monotonic()
        self.procs = Procs(self.path("logs"))
        self.idlereaper = self.path("bin", "idlereaper")
        self.loadgen_exe = self.path("bin", "loadgen")
        self.python = "python3"  # the one that imports matplotlib: set by prepare
        self.pg_bin = None  # PostgreSQL's programs: set by prepare when a scenario needs them
        self.servers = None  # the run's PostgreSQL and redis-server (comparison/servers.py)
        self.relays = None  # the relays under benchmark (comparison/relays.py)

    def path(self, *parts):
        return os.path.join(self.out, *parts)

    def log(self, tag, ext):
        return self.path("logs", f"{tag}.{ext}")

    @property
    def loadgen(self):
        return loadgen.Loadgen(self.loadgen_exe, self.procs)

    # ----- messages and results ---------------------------------------------------------------

    def say(self, msg):
        print(f"[{int(time.monotonic() - self.t0):4d}s] {msg}", flush=True)

    def fail(self, msg):
        """A scenario that failed: recorded, reported in the summary, and the exit status is 1."""
        with open(self.errors, "a") as f:
            f.write(msg + "\n")
        self.say(f"ERROR: {msg}")

    def failures(self):
        with open(self.errors) as f:
            return [line.rstrip("\n") for line in f if line.strip()]

    def record(self, relay, rep, line):
        with open(self.results, "a") as f:
            f.write(f"relay={relay} rep={rep} {line}\n")

    # ----- clients ----------------------------------------------------------------------------

    def tool(self, tag, argv, limit_s, cwd=None, out_path=None):
        """Runs `argv` to completion, its output in logs/TAG.out (or `out_path`) and logs/TAG.log;
        stopped after `limit_s` seconds (status 124, as `timeout` gives). Returns (status,
        standard output)."""
        out_path = out_path or self.log(tag, "out")
        with open(out_path, "wb") as out, open(self.log(tag, "log"), "wb") as err:
            try:
                done = subprocess.run(
                    argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=limit_s, cwd=cwd
                )
                status = done.returncode
            except subprocess.TimeoutExpired:
                status = TIMED_OUT
            except OSError as e:
                err.write(f"{argv[0]}: {e}\n".encode())
                status = 127
        return status, read(out_path)

    def start_tool(self, tag, argv):
        """`argv` in the background, standard output in logs/TAG.out; `finish_tool` collects it."""
        with open(self.log(tag, "out"), "wb") as out:
            return self.procs.start(tag, argv, stdout=out)

    def finish_tool(self, tag, p, limit_s):
        """Waits for a `start_tool` process up to `limit_s` (then stops it: status 124)."""
        try:
            status = p.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            self.procs.stop(p, 2.0)
            status = TIMED_OUT
        return status, read(self.log(tag, "out"))

    def err_tail(self, tag, n=300, also_out=False):
        """The end of a client's error output (and standard output), on one line."""
        text = (read(self.log(tag, "out")) if also_out else "") + read(self.log(tag, "log"))
        return text[-n:].replace("\n", " ")

    def client_result(self, tag, status, out, what):
        """The `scenario=…` line a load-tool client printed; if it failed or printed none,
        reports "WHAT failed" with the end of its error output, and returns None."""
        line = result_line(out)
        if status != 0 or not line:
            self.fail(f"{what} failed (exit {status}): {self.err_tail(tag)}")
            return None
        return line


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def result_line(text):
    """The first `scenario=…` line of a client's output, as printed ("" if none)."""
    for line in text.splitlines():
        if line.startswith("scenario="):
            return line.strip()
    return ""


def field(line, key):
    """One `key=value` of a result line ("" if absent)."""
    return loadgen.fields(line).get(key, "")
