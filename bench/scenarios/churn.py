"""churn: short connections (connect, a 64-byte request and its answer, close) through the
relay (or direct) from CHURN_THREADS threads for CHURN_SECS seconds, `loadgen churn`."""

from comparison.relays import port
from comparison.run import field


def measure(run, r, rep):
    s = run.settings
    run.say(f"churn: {r}, rep {rep}")
    tag = f"churn-{r}-{rep}"
    target = port(r, "u_echo") if r == "direct" else port(r, "p_echo")
    argv = [
        run.loadgen_exe,
        "churn",
        "--connect",
        f"127.0.0.1:{target}",
        "--threads",
        str(s.churn_threads),
        "--duration",
        f"{s.churn_secs}s",
    ]
    status, out = run.tool(tag, argv, s.churn_secs + 60)
    line = run.client_result(tag, status, out, f"{r}: churn rep {rep}")
    if not line:
        return
    run.record(r, rep, line)
    if int(field(line, "conns") or 0) <= 0:
        run.fail(f"{r}: churn rep {rep}: no connection completed")
