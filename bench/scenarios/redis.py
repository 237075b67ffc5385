"""redis: `redis-benchmark -t get -c 50 --csv` through the relay (or direct) to the run's
redis-server, pipelined (-P 16, REDIS_N_P16 requests) and not (-P 1, REDIS_N_P1): requests/s,
latency (ms: avg, min, p50, p95, p99, max), and the relay's CPU per 100,000 requests."""

import re

from comparison import clients
from comparison.relays import REDIS_PORT, port
from comparison.run import read

ERROR = re.compile(r"error|could not connect", re.IGNORECASE)


def measure(run, r, rep):
    s = run.settings
    for pipeline, n in ((16, s.redis_n_p16), (1, s.redis_n_p1)):
        run.say(f"redis-benchmark GET -P {pipeline} ({n} requests): {r}, rep {rep}")
        one(run, r, rep, pipeline, n)


def one(run, r, rep, pipeline, n):
    tag = f"redis-P{pipeline}-{r}-{rep}"
    target = REDIS_PORT if r == "direct" else port(r, "p_redis")
    got, done = clients.redis_benchmark(run, tag, target, run.relays.measured(r), pipeline, n)
    if got is None or ERROR.search(done.out + read(run.log(tag, "log"))):
        run.fail(
            f"{r}: redis-benchmark -P {pipeline} rep {rep} failed (exit {done.status}): {run.err_tail(tag, also_out=True)}"
        )
        return
    rps, avg, low, p50, p95, p99, high = (got + ["", "", "", "", "", "", ""])[:7]
    cpu = clients.cpu_fields(done.cpu_s, n) if r != "direct" else ""
    run.record(
        r,
        rep,
        f"scenario=redis pipeline={pipeline} clients=50 requests={n} rps={rps} avg_ms={avg} min_ms={low} "
        f"p50_ms={p50} p95_ms={p95} p99_ms={p99} max_ms={high}{cpu}",
    )
