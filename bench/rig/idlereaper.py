"""idlereaper as a relay of the fault table and the benchmarks: one process that re-executes
itself for an upgrade (USR2) and reads its configuration again on HUP.

It runs under rig/subreaper.py: when a new image fails after an upgrade's exec, the guardian the
old image started just before carries on as the daemon, with a new pid (which it writes into the
pidfile). Under the subreaper that process is still the run's own, signalled through the
pidfile, and stopped with the rest.
"""

import os

from . import procs as P
from .relay import Relay, ms, render
from .upgrades import reload_idlereaper, upgrade_idlereaper


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

    @property
    def pidfile(self):
        return os.path.join(self.run_dir, "idlereaper.pid")

    def start(self, listeners, **options):
        super().start(listeners, reaper=True, **options)
        if not P.wait_until(self.main_pid, 10):
            raise RuntimeError(f"{self.name}: no live pid in {self.pidfile} within 10s:\n{self.log_tail()}")
        return self

    def main_pid(self):
        """The daemon's pid, as its pidfile says (it changes when a guardian carries on), or None."""
        try:
            with open(self.pidfile) as f:
                pid = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if pid in self.pids() else None

    def pids(self):
        # Under the subreaper: the daemon, and during an upgrade its guardian.
        if self.proc is None:
            return []
        return [p for p in P.descendants(self.proc.pid) if P.alive(p)]

    def log_text(self):
        """The log, the part rotated away first (`<log>.1`, where a new image that cannot
        create the log again writes on, to the file the old code had open)."""
        out = []
        for path in (self.log_file + ".1", self.log_file):
            try:
                with open(path, errors="replace") as f:
                    out.append(f.read())
            except OSError:
                pass
        return "".join(out)

    def reload(self, limit_s=30.0):
        return reload_idlereaper(self, limit_s)

    def upgrade(self, limit_s=30.0, replace=True):
        return upgrade_idlereaper(self, limit_s, replace)
