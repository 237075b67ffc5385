"""A throwaway PostgreSQL cluster: initdb in a temporary directory, fsync off, listening on one
address (inside a namespace if asked), stopped and started again at will.

PostgreSQL refuses to run as root: as root, initdb and the server run as the `postgres` system
user (setpriv: no wrapper process between the script and the server), in a directory owned by
it. The clients log in as `postgres`, which `initdb --auth=trust -U postgres` lets in.
"""

import os
import shutil
import signal
import tempfile

from . import procs as P
from .machine import pg_bin

DATABASE = "postgres"


class Postgres:
    def __init__(self, procs, host, port, netns=None):
        self.procs = procs
        self.host, self.port, self.netns = host, port, netns
        self.bin = pg_bin()
        if not self.bin:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.dir = tempfile.mkdtemp(prefix="rig-postgres.")
        os.chmod(self.dir, 0o755)
        self.data = os.path.join(self.dir, "data")
        self.as_pg = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self.as_pg = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
        self.proc = None
        self.starts = 0

    def init(self):
        self.procs.run(
            "initdb",
            [
                *self.as_pg,
                f"{self.bin}/initdb",
                "-D",
                self.data,
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "--no-locale",
                "-E",
                "UTF8",
            ],
            120,
        )
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(
                f"\n# bench/rig/postgres.py\nlisten_addresses = '{self.host}'\nport = {self.port}\n"
                f"unix_socket_directories = ''\nmax_connections = 100\nfsync = off\n"
                f"synchronous_commit = off\nfull_page_writes = off\n"
            )
        # Clients on the server's own subnets (the relay's side of a namespace link, or loopback).
        with open(os.path.join(self.data, "pg_hba.conf"), "a") as f:
            f.write("host all all samenet trust\n")
        return self

    def start(self, limit_s=30):
        self.starts += 1
        self.proc = self.procs.start(
            f"postgres-{self.starts}",
            [*self.as_pg, f"{self.bin}/postgres", "-D", self.data],
            netns=self.netns,
            cwd=self.dir,
        )
        if (
            not P.wait_until(lambda: self.ready() or self.proc.poll() is not None, limit_s, 0.1)
            or not self.ready()
        ):
            raise RuntimeError(
                f"PostgreSQL did not start on {self.host}:{self.port}:\n"
                f"{self.procs.tail(f'postgres-{self.starts}')}"
            )
        return self

    def ready(self):
        status, _ = self.procs.run(
            "pg_isready",
            [f"{self.bin}/pg_isready", "-q", "-h", self.host, "-p", str(self.port), "-t", "2"],
            10,
            netns=self.netns,
            check=False,
        )
        return status == 0

    def stop(self, limit_s=20):
        """A fast shutdown (INT): every session is told `terminating connection due to
        administrator command` (57P01) and ended."""
        if self.proc is None:
            return
        P.signal_pids([self.proc.pid], signal.SIGINT)
        if not P.wait_until(lambda: self.proc.poll() is not None, limit_s, 0.05):
            self.procs.stop(self.proc)
        self.proc = None

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def client(self, tool):
        return f"{self.bin}/{tool}"
