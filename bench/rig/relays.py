"""idlereaper, HAProxy and nginx, started the same way with the same listeners, and driven the
way each one documents.

`relay(kind, ...)` gives an `Idlereaper`, `Haproxy` or `Nginx`. Each runs from its own copy of
its binary (bin/ in its directory), so that replacing the file for an upgrade touches no other
run; its config is rendered from bench/rig/templates/<kind>.*.in. A `Listener` says what a
listener is in relay-neutral terms (address, upstream, idle timeout, connect timeout, TCP user
timeout); each kind writes it in its own words:

    idle timeout       idle_timeout            timeout client + server   proxy_timeout
    connect timeout    connect_timeout         timeout connect           proxy_connect_timeout
    TCP user timeout   tcp_user_timeout        tcp-ut (bind and server)  (none: not written)

Operations: `reload` (idlereaper and nginx: HUP; HAProxy: USR2 to its master), `upgrade` (the
binary replaced by a fresh copy, a new inode as a package upgrade makes, then idlereaper: USR2,
the same process re-executes it; HAProxy: USR2, the master re-executes itself and forks a new
worker; nginx: USR2, a new master from the new binary, then WINCH and QUIT to the old one),
`kill9` (SIGKILL to every process of the relay) and `stop`.
"""

import os
import shutil
import signal
import string
import subprocess
from dataclasses import dataclass

from . import procs as P
from .upgrades import (
    reload_idlereaper,
    reload_nginx,
    upgrade_haproxy,
    upgrade_idlereaper,
    upgrade_nginx,
)

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
KINDS = ("idlereaper", "haproxy", "nginx")
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


class Idlereaper(Relay):
    kind = "idlereaper"

    @property
    def log_file(self):
        return os.path.join(self.home, "logs", "idlereaper.log")

    def config_text(self):
        os.makedirs(os.path.dirname(self.log_file), exist_ok=True)
        os.chmod(os.path.dirname(self.log_file), 0o755)
        blocks = []
        for lst in self.listeners:
            extra = f'tcp_user_timeout = "{ms(lst.user_timeout_s)}"' if lst.user_timeout_s else ""
            blocks.append(
                render(
                    "idlereaper.listener.in",
                    name=lst.name,
                    listen=lst.listen,
                    upstream=lst.upstream,
                    idle=ms(lst.idle_s),
                    connect=ms(lst.connect_s),
                    extra=extra,
                )
            )
        user = self.options.get("user")
        daemon_extra = f'user = "{user[0]}"\ngroup = "{user[1]}"' if user else ""
        control = f'[control]\nsocket = "{self.control_socket}"\n' if self.options.get("control") else ""
        return render(
            "idlereaper.toml.in",
            run=self.run_dir,
            log=self.log_file,
            daemon_extra=daemon_extra,
            control=control,
            listeners="\n".join(blocks),
        )

    @property
    def control_socket(self):
        return os.path.join(self.run_dir, "control.sock")

    def argv(self, config_path):
        return [self.exe, "--foreground", "--config", config_path]

    def pids(self):
        return [self.proc.pid] if self.proc is not None and P.alive(self.proc.pid) else []

    def reload(self, limit_s=30.0):
        return reload_idlereaper(self, limit_s)

    def upgrade(self, limit_s=30.0, replace=True):
        return upgrade_idlereaper(self, limit_s, replace)


class Haproxy(Relay):
    kind = "haproxy"

    def config_text(self):
        blocks = []
        for lst in self.listeners:
            ut = f" tcp-ut {ms(lst.user_timeout_s)}" if lst.user_timeout_s else ""
            blocks.append(
                render(
                    "haproxy.listener.in",
                    name=lst.name,
                    listen=lst.listen,
                    upstream=lst.upstream,
                    idle=ms(lst.idle_s),
                    connect=ms(lst.connect_s),
                    bind_extra=ut,
                    server_extra=ut,
                )
            )
        stats = (
            f"    stats socket {self.stats_socket} mode 600 level admin"
            if self.options.get("control")
            else ""
        )
        return render("haproxy.cfg.in", global_extra=stats, listeners="".join(blocks))

    @property
    def stats_socket(self):
        return os.path.join(self.run_dir, "haproxy.sock")

    def argv(self, config_path):
        # -W: master-worker, the mode HAProxy reloads in; -db: the master stays in the foreground.
        return [self.exe, "-W", "-db", "-f", config_path]

    def pids(self):
        if self.proc is None or not P.alive(self.proc.pid):
            return []
        return [self.proc.pid] + P.descendants(self.proc.pid)

    def reload(self, limit_s=30.0):
        # USR2 to the master: it re-executes itself, reads the file and starts a new worker.
        return upgrade_haproxy(self, limit_s, replace=False)

    def upgrade(self, limit_s=30.0, replace=True):
        return upgrade_haproxy(self, limit_s, replace)


class Nginx(Relay):
    kind = "nginx"

    def config_text(self):
        blocks = [
            render(
                "nginx.listener.in",
                listen=lst.listen,
                upstream=lst.upstream,
                idle=ms(lst.idle_s),
                connect=ms(lst.connect_s),
            )
            for lst in self.listeners
        ]
        return render("nginx.conf.in", run=self.run_dir, listeners="".join(blocks))

    @property
    def pidfile(self):
        return os.path.join(self.run_dir, "nginx.pid")

    def argv(self, config_path):
        return [self.exe, "-p", f"{self.run_dir}/", "-e", f"{self.run_dir}/error.log", "-c", config_path]

    def start(self, listeners, **options):
        for stale in (self.pidfile, self.pidfile + ".oldbin"):
            if os.path.exists(stale):
                os.remove(stale)
        super().start(listeners, reaper=True, **options)
        if not P.wait_until(lambda: self.master() and P.children(self.master()), 10):
            raise RuntimeError(f"{self.name}: no master with a worker within 10s:\n{self.log_tail()}")
        return self

    def master(self):
        try:
            with open(self.pidfile) as f:
                pid = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if P.alive(pid) else None

    def pids(self):
        # Under the subreaper: every master (old and new) and every worker.
        if self.proc is None:
            return []
        return [p for p in P.descendants(self.proc.pid) if P.alive(p)]

    def reload(self, limit_s=30.0):
        return reload_nginx(self, limit_s)

    def upgrade(self, limit_s=30.0, replace=True):
        return upgrade_nginx(self, limit_s, replace)

    @property
    def log_file(self):
        return os.path.join(self.run_dir, "error.log")


def relay(kind, procs, home, netns=None, binary=None):
    cls = {"idlereaper": Idlereaper, "haproxy": Haproxy, "nginx": Nginx}[kind]
    return cls(procs, home, netns, binary)
