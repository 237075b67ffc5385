"""hold: N idle connections held through a fresh relay for SECS seconds (`loadgen hold`):
the relay's resident memory before and after (so memory per connection), its CPU while the
connections idle, and that every one still relays at the end. The curve points (HOLD_CURVE)
are for the memory chart; HOLD_N gives the table and the idle CPU."""

import time

from comparison.relays import port
from comparison.run import field
from rig import measure
from rig import procs as P
from rig.relay import established


def run_all(run):
    s = run.settings
    for n in [*s.hold_curve, s.hold_n]:
        secs = s.hold_secs if n == s.hold_n else s.hold_curve_secs
        for r in s.relays:
            # HAProxy with its default thread count is only measured at HOLD_N.
            if r == "haproxy-auto" and n != s.hold_n:
                continue
            run.say(f"hold: {r}, {n} connections, {secs}s")
            hold(run, r, n, secs)


def hold(run, r, n, secs):
    tag = f"hold-{r}-{n}"
    relay = run.relays.start(r)
    pids = relay.measured()
    rss0 = measure.rss_kib(pids)
    # loadgen measures the one pid it is given; the sums over all the relay's processes are
    # taken here too (nginx with several workers).
    argv = [
        run.loadgen_exe,
        "hold",
        "--connect",
        f"127.0.0.1:{port(r, 'p_echo')}",
        "--conns",
        str(n),
        "--pid",
        str(pids[0]),
        "--hold",
        f"{secs}s",
    ]
    lg = run.start_tool(tag, argv)
    P.wait_until(lambda: established(port(r, "p_echo")) >= n or lg.poll() is not None, 120)
    time.sleep(1)
    rss1 = measure.rss_kib(pids)
    cpu0 = measure.cpu_s(pids)
    # The idle CPU is read before the hold ends: after it, loadgen checks every connection and
    # closes them all, which is not idle work. (So it covers the hold less half a second.)
    time.sleep(secs - 0.5 if secs > 1 else secs / 2)
    cpu1 = measure.cpu_s(pids)
    status, out = run.finish_tool(tag, lg, secs + 180)
    line = run.client_result(tag, status, out, f"{r}: hold {n}")
    if line:
        run.record(
            r,
            1,
            f"{line} tree_rss_before_kib={rss0} tree_rss_after_kib={rss1} "
            f"tree_bytes_per_conn={int((rss1 - rss0) * 1024 / n)} tree_idle_cpu_s={cpu1 - cpu0:.3f} "
            f"processes={len(pids)}",
        )
        if field(line, "alive_after") != str(n):
            run.fail(
                f"{r}: hold {n}: only {field(line, 'alive_after')} of {n} connections still relayed after {secs}s"
            )
    run.relays.stop(r)
    # Let the upstream see the closes before the next relay's hold.
    P.wait_until(lambda: established(port(r, "u_echo")) < 10, 20)
