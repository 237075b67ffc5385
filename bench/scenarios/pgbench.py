"""pgbench: `pgbench -S -c 8 -j 2 -T PGBENCH_SECS` (select only) through the relay (or direct)
to the run's PostgreSQL: each client keeping one connection (scenario=pgbench), and with `-C`, a
new connection per transaction (scenario=pgbench_connect); the relay's CPU per 100,000
transactions beside."""

from comparison import clients
from comparison.relays import PG_PORT, port


def measure(run, r, rep):
    for mode in ("persistent", "connect"):
        run.say(f"pgbench -S{' -C' if mode == 'connect' else ''}: {r}, rep {rep}")
        one(run, r, rep, mode)


def one(run, r, rep, mode):
    secs = run.settings.pgbench_secs
    tag = f"pgbench-{mode}-{r}-{rep}"
    target = PG_PORT if r == "direct" else port(r, "p_pg")
    pids = run.relays.measured(r)
    got, done, failed = clients.pgbench(run, tag, target, pids, connect=mode == "connect")
    if got is None:
        run.fail(
            f"{r}: pgbench {mode} rep {rep} failed (exit {done.status}, {failed or '?'} failed transactions): "
            f"{run.err_tail(tag)}"
        )
        return
    tps, xacts, failed = got
    scenario = "pgbench_connect" if mode == "connect" else "pgbench"
    cpu = clients.cpu_fields(done.cpu_s, xacts) if r != "direct" else ""
    run.record(
        r,
        rep,
        f"scenario={scenario} clients=8 threads=2 secs={secs} tps={tps} transactions={xacts} failed={failed}{cpu}",
    )
