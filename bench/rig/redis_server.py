"""A throwaway redis-server: no persistence, in a temporary directory, on one loopback address,
ready when it answers PING; stopped (and its directory removed) with `close`."""

import shutil
import subprocess
import tempfile

from . import procs as P


class RedisServer:
    def __init__(self, procs, host, port):
        self.procs = procs
        self.host, self.port = host, port
        self.dir = tempfile.mkdtemp(prefix="rig-redis.")
        self.proc = None

    def argv(self):
        return [
            "redis-server",
            "--bind",
            self.host,
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            self.dir,
            "--logfile",
            "",
        ]

    def cli(self, *args, limit_s=5):
        """redis-cli against the server: its answer, stripped ("" when it failed)."""
        try:
            done = subprocess.run(
                ["redis-cli", "-h", self.host, "-p", str(self.port), *args],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=limit_s,
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.decode(errors="replace").strip()

    def start(self, name="redis-server", limit_s=15):
        self.proc = self.procs.start(name, self.argv())
        if not P.wait_until(
            lambda: self.proc.poll() is not None or self.cli("ping") == "PONG", limit_s, 0.1
        ) or (self.proc.poll() is not None):
            raise RuntimeError(
                f"redis-server did not start on {self.host}:{self.port}: {self.procs.tail(name, 5)}"
            )
        return self

    def close(self):
        if self.proc is not None:
            self.procs.stop(self.proc)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
