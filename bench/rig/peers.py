"""HAProxy and nginx as relays of the fault table and the benchmarks, each driven the way it
documents: HAProxy in master-worker mode (USR2 to the master re-executes it and forks a new
worker, for a reload as for an upgrade); nginx with `daemon on` under rig/subreaper.py (HUP
reloads; USR2 starts a new master from the new binary, then WINCH and QUIT retire the old one).
"""

import os

from . import procs as P
from .relay import Relay, ms, render
from .upgrades import reload_nginx, upgrade_haproxy, upgrade_nginx


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
