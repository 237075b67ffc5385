"""pingpong: PING_COUNT round trips of 64 bytes on one connection through the relay (or
direct), `loadgen pingpong`; then the same with the client, the relay and the echo upstream all
on CPU 0 (scenario=pingpong_1cpu). On a 2-vCPU virtual machine a wake-up that crosses CPUs
costs ~20 µs, so unpinned round trips mostly measure where the scheduler put the three
processes; on one core they measure the relay's own path. With several workers, one CPU for
everything means nothing: the pinned run is left out."""

import os

from comparison.relays import port


def measure(run, r, rep):
    run.say(f"pingpong: {r}, rep {rep}")
    line = once(run, r, rep, f"pingpong-{r}-{rep}", [], "pingpong")
    if line:
        run.record(r, rep, line)
    if not run.settings.workers and len(os.sched_getaffinity(0)) > 1:
        run.say(f"pingpong on one CPU: {r}, rep {rep}")
        pinned(run, r, rep)


def once(run, r, rep, tag, prefix, what):
    target = port(r, "u_echo") if r == "direct" else port(r, "p_echo")
    argv = [
        *prefix,
        run.loadgen_exe,
        "pingpong",
        "--connect",
        f"127.0.0.1:{target}",
        "--count",
        str(run.settings.ping_count),
        "--size",
        "64",
    ]
    status, out = run.tool(tag, argv, 300)
    return run.client_result(tag, status, out, f"{r}: {what} rep {rep}")


def set_cpus(pids, cpus):
    """Every thread of each process (taskset -a) onto `cpus`; a process gone is skipped."""
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                os.sched_setaffinity(int(tid), cpus)
            except OSError:
                pass


def pinned(run, r, rep):
    pids = [run.relays.echo[r].pid]
    if r != "direct":
        pids += run.relays.all_pids(r)
    set_cpus(pids, {0})
    try:
        line = once(run, r, rep, f"pingpong1cpu-{r}-{rep}", ["taskset", "-c", "0"], "pingpong on one CPU")
    finally:
        set_cpus(pids, set(range(len(os.sched_getaffinity(0)))))
    if line:
        run.record(r, rep, line.replace("scenario=pingpong", "scenario=pingpong_1cpu", 1))
