"""protocols: the same idlereaper listener with `protocol = "tcp"` and with "postgres" / "redis"
(bench/idlereaper-protocols.toml.in, a process of its own on ports 22501..22507, an echo
upstream of its own on 22551), with HAProxy and nginx beside them on their real-client listeners
and "direct" as the ceiling, in front of the run's one PostgreSQL and one redis-server:
pgbench -S -c 8 -j 2, redis-benchmark -t get -c 50 -P 16 and -P 1, a large value SET and GET
back (loadgen bigvalue), each round over every target in a rotated order; then memory per idle
connection held through each of the three listeners, a fresh process for each measurement.
Results: scenario=proto_* lines in results.txt, the table in protocols.md
(bench/protocols_report.py)."""

import os

from comparison import clients
from comparison.relays import PG_PORT, REDIS_PORT, BenchIdlereaper, fill, port
from comparison.run import field
from comparison.settings import LONG_TIMEOUT
from rig import procs as P
from rig.relay import Listener, established, listening_ports

PORTS = {
    "PG_TCP": 1,
    "PG_POSTGRES": 2,
    "REDIS_TCP": 3,
    "REDIS_REDIS": 4,
    "HOLD_TCP": 5,
    "HOLD_POSTGRES": 6,
    "HOLD_REDIS": 7,
}
HOLD_PORTS = {"tcp": "HOLD_TCP", "postgres": "HOLD_POSTGRES", "redis": "HOLD_REDIS"}


def proto_port(i):
    return 22500 + i


class ProtocolRelay(BenchIdlereaper):
    """idlereaper with the seven listeners of bench/idlereaper-protocols.toml.in."""

    def __init__(self, run):
        super().__init__(run, "protocols")

    @property
    def name(self):
        return "relay-idlereaper-protocols"

    @property
    def config_path(self):
        return self.bench_run.path("configs", "idlereaper-protocols.toml")

    def bench_config(self):
        s = self.bench_run.settings
        values = {
            "RUN": self.run_dir,
            "WORKERS_LINE": f"workers = {s.workers}" if s.workers else "",
            "LONG_TIMEOUT": LONG_TIMEOUT,
            "U_PG": PG_PORT,
            "U_REDIS": REDIS_PORT,
            "U_ECHO": proto_port(51),
            **{k: proto_port(i) for k, i in PORTS.items()},
        }
        with open(os.path.join(self.bench_run.bench, "idlereaper-protocols.toml.in")) as f:
            return fill(f.read(), values, self.config_path)

    def front_listeners(self):
        return [Listener(k, f"127.0.0.1:{proto_port(i)}", "-", 0) for k, i in PORTS.items()]


def targets(run, relay, kind):
    """(label, port, pids) for pg or redis: idlereaper's two listeners, the peers that run, direct."""
    ir = relay.measured()
    if kind == "pg":
        out = [("idlereaper-tcp", proto_port(1), ir), ("idlereaper-postgres", proto_port(2), ir)]
    else:
        out = [("idlereaper-tcp", proto_port(3), ir), ("idlereaper-redis", proto_port(4), ir)]
    for r in ("haproxy", "nginx"):
        if r in run.settings.relays:
            out.append((r, port(r, "p_pg" if kind == "pg" else "p_redis"), run.relays.measured(r)))
    out.append(("direct", PG_PORT if kind == "pg" else REDIS_PORT, []))
    return out


def each(run, relay, kind, rep, fn, *args):
    """`fn` for every target, starting one further along the list each round."""
    ts = targets(run, relay, kind)
    for i in range(len(ts)):
        label, target, pids = ts[(i + rep) % len(ts)]
        run.say(f"protocols: {fn.__name__} {label}, rep {rep}")
        fn(run, label, target, pids, rep, *args)


def proto_pgbench(run, label, target, pids, rep):
    tag = f"proto-pgbench-{label}-{rep}"
    got, done, _ = clients.pgbench(run, tag, target, pids)
    if got is None:
        run.fail(f"{label}: protocols pgbench rep {rep} failed (exit {done.status}): {run.err_tail(tag)}")
        return
    tps, xacts, _ = got
    cpu = clients.cpu_fields(done.cpu_s, xacts) if pids else ""
    run.record(label, rep, f"scenario=proto_pgbench tps={tps} transactions={xacts}{cpu}")


def proto_redis(run, label, target, pids, rep, pipeline, n):
    tag = f"proto-redis-P{pipeline}-{label}-{rep}"
    got, done = clients.redis_benchmark(run, tag, target, pids, pipeline, n)
    if got is None:
        run.fail(
            f"{label}: protocols redis-benchmark -P {pipeline} rep {rep} failed (exit {done.status}): {run.err_tail(tag)}"
        )
        return
    cpu = clients.cpu_fields(done.cpu_s, n) if pids else ""
    run.record(label, rep, f"scenario=proto_redis pipeline={pipeline} requests={n} rps={got[0]}{cpu}")


def proto_bigvalue(run, label, target, _pids, rep):
    s = run.settings
    tag = f"proto-bigvalue-{label}-{rep}"
    argv = [
        run.loadgen_exe,
        "bigvalue",
        "--connect",
        f"127.0.0.1:{target}",
        "--size",
        str(s.bigvalue_mb * 1000000),
        "--rounds",
        str(s.bigvalue_rounds),
    ]
    status, out = run.tool(tag, argv, 300)
    line = run.client_result(tag, status, out, f"{label}: protocols bigvalue rep {rep}")
    if line:
        run.record(label, rep, line.replace("scenario=bigvalue", "scenario=proto_bigvalue", 1))


def proto_hold(run, kind, rep):
    """Memory per idle connection through the hold-KIND listener, a fresh process."""
    s = run.settings
    tag = f"proto-hold-{kind}-{rep}"
    relay = ProtocolRelay(run).start_bench()
    argv = [
        run.loadgen_exe,
        "hold",
        "--connect",
        f"127.0.0.1:{proto_port(PORTS[HOLD_PORTS[kind]])}",
        "--conns",
        str(s.proto_hold_n),
        "--pid",
        str(relay.measured()[0]),
        "--hold",
        f"{s.proto_hold_secs}s",
    ]
    status, out = run.tool(tag, argv, s.proto_hold_secs + 180)
    line = run.client_result(tag, status, out, f"protocols hold {kind} rep {rep}")
    if line:
        run.record(f"idlereaper-{kind}", rep, line.replace("scenario=hold", "scenario=proto_hold", 1))
        if field(line, "alive_after") != str(s.proto_hold_n):
            run.fail(
                f"protocols hold {kind}: only {field(line, 'alive_after')} of {s.proto_hold_n} still relayed"
            )
    stop(run, relay)
    P.wait_until(lambda: established(proto_port(51)) < 10, 20)


def stop(run, relay):
    if not relay.alive():
        run.fail(f"protocols: the relay process {relay.root_pid()} died during the run")
    relay.stop()


def run_all(run):
    s = run.settings
    echo = run.loadgen.serve("upstream-protocols-echo", "echo", f"127.0.0.1:{proto_port(51)}")
    if not P.wait_until(lambda: proto_port(51) in listening_ports("self"), 10):
        run.fail("protocols: the echo upstream did not start")
        return
    relay = ProtocolRelay(run).start_bench()
    for rep in range(1, s.reps + 1):
        each(run, relay, "pg", rep, proto_pgbench)
        each(run, relay, "redis", rep, proto_redis, 16, s.redis_n_p16)
        each(run, relay, "redis", rep, proto_redis, 1, s.redis_n_p1)
        each(run, relay, "redis", rep, proto_bigvalue)
        for r in s.relays:
            run.relays.check(r, "protocols")
    stop(run, relay)
    for rep in range(1, s.proto_hold_reps + 1):
        for kind in ("tcp", "postgres", "redis"):
            run.say(f"protocols: hold {s.proto_hold_n} idle connections through protocol {kind}, rep {rep}")
            proto_hold(run, kind, rep)
    run.procs.stop(echo)
    report = [run.python, os.path.join(run.bench, "protocols_report.py"), run.out]
    status, _ = run.tool("protocols-report", report, 120)
    if status != 0:
        run.fail(f"protocols_report.py failed: {run.err_tail('protocols-report', also_out=True)}")
