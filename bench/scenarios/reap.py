"""reap: REAP_CONNS connections through the relay's reap listener (idle timeout REAP_TIMEOUT)
go idle; `loadgen reap` records how late after the timeout each one is closed (samples/)."""

from comparison.relays import port
from comparison.run import field


def measure(run, r, rep):
    if r == "direct":
        return
    s = run.settings
    tag = f"reap-{r}-{rep}"
    run.say(f"reap: {r}, rep {rep}")
    argv = [
        run.loadgen_exe,
        "reap",
        "--connect",
        f"127.0.0.1:{port(r, 'p_reap')}",
        "--conns",
        str(s.reap_conns),
        "--timeout",
        s.reap_timeout,
        "--echo",
        "--samples",
        run.path("samples", f"{tag}.txt"),
    ]
    status, out = run.tool(tag, argv, 120)
    line = run.client_result(tag, status, out, f"{r}: reap rep {rep}")
    if not line:
        return
    run.record(r, rep, line)
    if field(line, "closed") != str(s.reap_conns):
        run.fail(
            f"{r}: reap rep {rep}: only {field(line, 'closed')} of {s.reap_conns} idle connections were closed"
        )
