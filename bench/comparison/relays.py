"""The relays under benchmark: idlereaper, HAProxy and nginx with the listeners of
bench/idlereaper.toml.in, bench/haproxy.cfg.in and bench/nginx.conf.in, each the rig kind
(bench/rig/relays.py) started with the benchmark's own configuration; their ports and upstreams.

Ports: relay i listens on BASE+1 (echo), +2 (reap), +3 (bulk), in front of its own upstreams on
BASE+51 (echo), +52 (echo, for reap), +53 (iperf3 server, one per test). "direct" is the client
talking to an upstream with no relay: the ceiling. Every relay also listens on BASE+4 (pgbench)
and BASE+5 (redis-benchmark), in front of the one PostgreSQL and the one redis-server of the run,
on direct's BASE+54 and +55.

Two ways to run each: for the quick scenarios as each runs in production (idlereaper and HAProxy
in the foreground, nginx `daemon off`; log level warn), and for the live upgrade the way each one
upgrades (`upgrade=True`: idlereaper at log level info for its `upgraded …` line, HAProxy in
master-worker mode, nginx `daemon on`, which its binary upgrade needs), in a run directory and
from a copy of its binary of its own (run/upgrade-RELAY/).
"""

import os
import re

from rig import procs as P
from rig.idlereaper import Idlereaper
from rig.peers import Haproxy, Nginx
from rig.relay import Listener, listening_ports

from .settings import LONG_TIMEOUT

BASES = {"idlereaper": 22100, "haproxy": 22200, "nginx": 22300, "haproxy-auto": 22400, "direct": 22900}
OFFSETS = {
    "p_echo": 1,
    "p_reap": 2,
    "p_bulk": 3,
    "p_pg": 4,
    "p_redis": 5,
    "u_echo": 51,
    "u_reap": 52,
    "u_bulk": 53,
}
PG_PORT = BASES["direct"] + 54
REDIS_PORT = BASES["direct"] + 55
TEMPLATES = {"idlereaper": "idlereaper.toml.in", "haproxy": "haproxy.cfg.in", "nginx": "nginx.conf.in"}
CONFIG_NAMES = {"idlereaper": "idlereaper.toml", "haproxy": "{label}.cfg", "nginx": "nginx.conf"}


def port(relay, which):
    """port("nginx", "p_echo"): a listener of RELAY (p_*) or one of its upstreams (u_*)."""
    return BASES[relay] + OFFSETS[which]


def front_ports(relay):
    return [port(relay, w) for w in ("p_echo", "p_reap", "p_bulk", "p_pg", "p_redis")]


def all_ports(relays):
    return [PG_PORT, REDIS_PORT] + [port(r, w) for r in [*relays, "direct"] for w in OFFSETS]


def kind_of(label):
    return "haproxy" if label.startswith("haproxy") else label


def fill(text, values, where):
    """The @NAME@ placeholders of a template filled in; one left unfilled is an error."""
    for k, v in values.items():
        text = text.replace(f"@{k}@", str(v))
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise RuntimeError(f"unfilled placeholder {left[0]} in {where}")
    return text


class Bench:
    """What the three kinds share under benchmark; mixed into each rig kind below."""

    def setup(self, run, label, upgrade):
        self.bench_run, self.label, self.upgrade_mode = run, label, upgrade
        run_name = f"upgrade-{label}" if upgrade else label
        return run.path("run", run_name)

    @property
    def name(self):
        return f"relay-upgrade-{self.label}" if self.upgrade_mode else f"relay-{self.label}"

    @property
    def config_path(self):
        conf = CONFIG_NAMES[self.kind].format(label=self.label)
        if self.upgrade_mode:
            stem, ext = conf.rsplit(".", 1)
            conf = f"{stem}-upgrade.{ext}"
        return self.bench_run.path("configs", conf)

    def bench_config(self):
        s = self.bench_run.settings
        r = self.label
        values = {
            "RUN": self.run_dir,
            "WORKERS_LINE": f"workers = {s.workers}" if s.workers else "",
            "NBTHREAD_LINE": (
                "    # nbthread: HAProxy's default (one thread per available CPU)"
                if r == "haproxy-auto"
                else f"    nbthread {s.threads}"
            ),
            "WORKERS": s.threads,
            "REUSEPORT": " reuseport" if s.threads > 1 else "",
            "LONG_TIMEOUT": LONG_TIMEOUT,
            "REAP_TIMEOUT": s.reap_timeout,
            "U_PG": PG_PORT,
            "U_REDIS": REDIS_PORT,
            **{w.upper(): port(r, w) for w in OFFSETS},
        }
        with open(os.path.join(self.bench_run.bench, TEMPLATES[self.kind])) as f:
            return fill(f.read(), values, self.config_path)

    def front_listeners(self):
        """The front listeners, for `start` to wait on (the configuration says the rest)."""
        return [Listener(str(p), f"127.0.0.1:{p}", "-", 0) for p in front_ports(self.label)]

    def start_bench(self):
        os.makedirs(self.run_dir, exist_ok=True)
        for f in os.listdir(self.run_dir):
            if f.endswith(".pid"):
                os.remove(os.path.join(self.run_dir, f))
        return self.start(self.front_listeners())

    def root_pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None and bool(self.measured())


class BenchIdlereaper(Bench, Idlereaper):
    def __init__(self, run, label="idlereaper", upgrade=False):
        home = self.setup(run, label, upgrade)
        super().__init__(run.procs, home, binary=run.idlereaper)
        self.run_dir = home

    @property
    def log_file(self):
        return os.path.join(self.run_dir, "idlereaper.log")

    def config_text(self):
        text = self.bench_config()
        if self.upgrade_mode:  # the `upgraded …` line is at info
            text = re.sub(r"(?m)^log_level = .*$", 'log_level = "info"', text)
        return text

    def measured(self):
        pid = self.main_pid()
        return [pid] if pid else []


class BenchHaproxy(Bench, Haproxy):
    def __init__(self, run, label="haproxy", upgrade=False):
        home = self.setup(run, label, upgrade)
        super().__init__(run.procs, home)
        self.run_dir = home

    def config_text(self):
        return self.bench_config()

    def argv(self, config_path):
        # The upgrade: master-worker mode (-W), the one HAProxy reloads in (USR2 to the master).
        return [self.exe, *(["-W"] if self.upgrade_mode else []), "-db", "-f", config_path]

    def measured(self):
        return self.pids()


class BenchNginx(Bench, Nginx):
    def __init__(self, run, label="nginx", upgrade=False):
        home = self.setup(run, label, upgrade)
        super().__init__(run.procs, home)
        self.run_dir = home

    def config_text(self):
        text = self.bench_config()
        if self.upgrade_mode:  # nginx refuses a binary upgrade while its starter lives
            text = re.sub(r"(?m)^daemon off;$", "daemon on;", text)
        return text

    def start(self, listeners, **options):
        super().start(listeners, **options)
        want = self.bench_run.settings.threads
        if not P.wait_until(lambda: len(P.children(self.master() or 0)) >= want, 10):
            raise RuntimeError(f"{self.name}: nginx workers did not start")
        return self

    def measured(self):
        """The workers: they hold the connections."""
        return P.children(self.master() or 0)


CLASSES = {"idlereaper": BenchIdlereaper, "haproxy": BenchHaproxy, "nginx": BenchNginx}


def bench_relay(run, label, upgrade=False):
    return CLASSES[kind_of(label)](run, label, upgrade)


class Relays:
    """The relays of the quick scenarios, started once, and their upstreams (the whole run)."""

    def __init__(self, run):
        self.run = run
        self.running = {}  # label -> relay
        self.echo = {}  # label -> the echo upstream's process

    def start_upstreams(self, label):
        lg = self.run.loadgen
        self.echo[label] = lg.serve(f"upstream-{label}-echo", "echo", f"127.0.0.1:{port(label, 'u_echo')}")
        # The reap upstream echoes: `loadgen reap --echo` dates each connection's last activity
        # from the kernel's receive time of the echo, the relay's own last write.
        lg.serve(f"upstream-{label}-reap-echo", "echo", f"127.0.0.1:{port(label, 'u_reap')}")
        want = {port(label, "u_echo"), port(label, "u_reap")}
        if not P.wait_until(lambda: want <= listening_ports(os.getpid()), 10):
            raise RuntimeError(f"upstreams for {label} did not start")

    def start(self, label):
        relay = bench_relay(self.run, label)
        relay.start_bench()
        self.running[label] = relay
        return relay

    def stop(self, label):
        relay = self.running.pop(label, None)
        if relay is None:
            return
        if not relay.alive():
            self.run.fail(
                f"{label}: the relay process {relay.root_pid()} died during the run (log: logs/{relay.name}-{relay.starts}.log)"
            )
        relay.stop()

    def check(self, label, scenario):
        """Restarts a relay that died, so that the next scenario still runs."""
        relay = self.running.get(label)
        if relay is not None and not relay.alive():
            self.run.fail(
                f"{label}: relay died during {scenario} (log: logs/{relay.name}-{relay.starts}.log); restarting it"
            )
            relay.stop()
            relay.start_bench()

    def measured(self, label):
        """The processes that hold the relay's connections (none for "direct")."""
        relay = self.running.get(label)
        return relay.measured() if relay else []

    def all_pids(self, label):
        relay = self.running.get(label)
        return relay.pids() if relay else []

    def stop_all(self):
        for label in list(self.running):
            self.stop(label)

    def keep_logs(self):
        """Relays' own complaints (idlereaper logs at warn; nginx's error log), with the results."""
        for label in self.run.settings.relays:
            d = self.run.path("run", label)
            for f in sorted(os.listdir(d)) if os.path.isdir(d) else []:
                src = os.path.join(d, f)
                if f.endswith(".log") and os.path.getsize(src) > 0:
                    with open(src, "rb") as a, open(self.run.path("logs", f"{label}-{f}"), "wb") as b:
                        b.write(a.read())
