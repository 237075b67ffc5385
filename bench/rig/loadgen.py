"""The repository's load tool, bench/loadgen: its `key=value` result line, and its clients
started in the background (inside a namespace if asked)."""

import os


def fields(line):
    """`scenario=reap conns=10 …` as a dict of strings."""
    out = {}
    for word in line.split():
        if "=" in word:
            k, v = word.split("=", 1)
            out[k] = v
    return out


def result_line(text):
    """The first `scenario=…` line of a loadgen run's output, as fields (empty if none)."""
    for line in text.splitlines():
        if line.startswith("scenario="):
            return fields(line)
    return {}


class Loadgen:
    """loadgen at `exe`, its runs logged through `procs`."""

    def __init__(self, exe, procs):
        if not os.access(exe, os.X_OK):
            raise RuntimeError(f"{exe} is missing: cargo build --bins")
        self.exe = exe
        self.procs = procs

    def serve(self, name, mode, listen, netns=None):
        """An upstream (`echo` or `discard`) in the background; stopped with the run."""
        return self.procs.start(name, [self.exe, mode, "--listen", listen], netns=netns)

    def run(self, name, args, limit_s, netns=None):
        """A client to completion within `limit_s`; its result line as fields."""
        status, out = self.procs.run(name, [self.exe, *args], limit_s, netns=netns, check=False)
        got = result_line(out)
        if status != 0 or not got:
            raise RuntimeError(f"loadgen {' '.join(args)}: exit {status}\n{self.procs.tail(name)}")
        return got

    def start(self, name, args, netns=None):
        """A client in the background; `finish` collects its result line."""
        out_path = self.procs.log_path(name + ".out")
        out = open(out_path, "wb")
        try:
            p = self.procs.start(name, [self.exe, *args], netns=netns, stdout=out)
        finally:
            out.close()
        p.out_path = out_path
        return p

    def finish(self, p, limit_s):
        try:
            p.wait(timeout=limit_s)
        except Exception:  # noqa: BLE001 -- a client past its bound is stopped and reported
            self.procs.stop(p)
            raise RuntimeError(f"loadgen pid {p.pid} did not finish within {limit_s}s") from None
        with open(p.out_path, errors="replace") as f:
            got = result_line(f.read())
        if p.returncode != 0 or not got:
            raise RuntimeError(f"loadgen pid {p.pid}: exit {p.returncode}, result {got}")
        return got
