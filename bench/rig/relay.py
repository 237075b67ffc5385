"""One relay, whichever its kind: a `Listener` in relay-neutral terms, the relay's own copy of its
binary, its config rendered from bench/rig/templates/<kind>.*.in, and what every kind shares
(start, stop, SIGKILL, the binary replaced, its log). The kinds are in rig/idlereaper.py and
rig/peers.py; rig/relays.py picks one.

A `Listener` says what a listener is (address, upstream, idle timeout, connect timeout, TCP user
timeout); each kind writes it in its own words:

    idle timeout       idle_timeout            timeout client + server   proxy_timeout
    connect timeout    connect_timeout         timeout connect           proxy_connect_timeout
    TCP user timeout   tcp_user_timeout        tcp-ut (bind and server)  (none: not written)
"""

import os
import shutil
import signal
import string
import subprocess
from dataclasses import dataclass

from . import procs as P

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
SYSTEM_BINARIES = {"haproxy": "/usr/sbin/haproxy", "nginx": "/usr/sbin/nginx"}
START_LIMIT_S = 15


@dataclass
class Listener:
    name: str
    listen: str  # "IP:port"
    upstream: str  # "IP:port"
    idle_s: float
    connect_s: float = 5.0
    user_timeout_s: float = 0.0  # 0: the kernel's default

    @property
    def port(self):
        return int(self.listen.rsplit(":", 1)[1])


def ms(seconds):
    return f"{round(seconds * 1000)}ms"


def render(template, **values):
    with open(os.path.join(TEMPLATES, template)) as f:
        return string.Template(f.read()).substitute(values)


def listening_ports(pid):
    """Ports in LISTEN state in the network namespace of process PID."""
    ports = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A":
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except (OSError, StopIteration):
            pass
    return ports


def established(port, pid="self"):
    """Connections ESTABLISHED on local port PORT in the network namespace of process PID."""
    n = 0
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        n += 1
        except (OSError, StopIteration):
            pass
    return n


class Relay:
    """One relay of one kind; `start` may be called again after `stop` or `kill9`."""

    kind = ""

    def __init__(self, procs, home, netns=None, binary=None):
        self.procs = procs
        self.home = home  # its own directory
        self.netns = netns
        self.run_dir = os.path.join(home, "run")
        self.exe = os.path.join(home, "bin", self.kind)
        self.binary = binary or SYSTEM_BINARIES[self.kind]
        self.proc = None
        self.listeners = []
        self.starts = 0
        for d in (home, self.run_dir, os.path.dirname(self.exe)):
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o755)
        shutil.copy2(self.binary, self.exe)

    # ----- what each kind fills in ------------------------------------------------------------

    def config_text(self):
        raise NotImplementedError

    def argv(self, config_path):
        raise NotImplementedError

    def pids(self):
        """Every process of the relay now."""
        raise NotImplementedError

    def reload(self, limit_s=30.0):
        """The configuration read again; waits (bounded) until the relay says it is done."""
        raise NotImplementedError

    def upgrade(self, limit_s=30.0, replace=True):
        """`replace`: a fresh copy of the binary first (else the file there now is the new one)."""
        raise NotImplementedError

    # ----- common -------------------------------------------------------------------------------

    @property
    def name(self):
        return f"{self.kind}-{os.path.basename(self.home)}"

    @property
    def config_path(self):
        return os.path.join(self.home, f"{self.kind}.conf")

    def start(self, listeners, reaper=False, **options):
        """Renders the config, starts the relay, and waits (bounded) until every listener listens."""
        self.listeners = list(listeners)
        self.options = options
        with open(self.config_path, "w") as f:
            f.write(self.config_text())
        os.chmod(self.config_path, 0o644)
        self.starts += 1
        self.proc = self.procs.start(
            f"{self.name}-{self.starts}", self.argv(self.config_path), netns=self.netns, reaper=reaper
        )
        want = {lst.port for lst in self.listeners}
        ok = P.wait_until(
            lambda: (
                self.proc.poll() is None
                and want <= listening_ports(self.proc.pid)
                or self.proc.poll() not in (None, 0)
            ),
            START_LIMIT_S,
        )
        if not ok or not want <= listening_ports(self.proc.pid):
            raise RuntimeError(
                f"{self.name} did not start listening on {sorted(want)} within "
                f"{START_LIMIT_S}s:\n{self.procs.tail(f'{self.name}-{self.starts}')}{self.log_tail()}"
            )
        return self

    def running(self):
        return bool(self.pids())

    def stop(self):
        if self.proc is None:
            return
        P.stop_pids(self.pids(), 5.0)
        self.procs.stop(self.proc, 3.0)
        self.proc = None

    def kill9(self):
        """SIGKILL to every process of the relay at once; returns when they are gone (bounded)."""
        pids = self.pids()
        P.signal_pids(pids, signal.SIGKILL)
        P.wait_until(lambda: not any(P.alive(p) for p in pids), 10.0)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # a starter that outlives its daemon is stopped
                self.procs.stop(self.proc, 1.0)
        self.proc = None
        return pids

    def replace_exe(self, contents=None):
        """The binary replaced by a fresh copy (or by `contents`, an executable script): a new
        inode at the same path. Returns the new inode."""
        tmp = f"{self.exe}.new"
        if contents is None:
            shutil.copy2(self.binary, tmp)
        else:
            with open(tmp, "w") as f:
                f.write(contents)
        os.chmod(tmp, 0o755)
        os.rename(tmp, self.exe)
        return os.stat(self.exe).st_ino

    def restore_exe(self):
        return self.replace_exe()

    @property
    def log_file(self):
        """The relay's own log (for HAProxy, which logs nothing here, its standard error)."""
        return self.procs.log_path(f"{self.name}-{self.starts}")

    def log_text(self):
        try:
            with open(self.log_file, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_tail(self, n=10):
        return "\n".join(self.log_text().splitlines()[-n:])
