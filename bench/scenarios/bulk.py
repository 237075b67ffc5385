"""bulk: iperf3 through the relay (or direct), 1 stream and 4, BULK_SECS each, to a one-shot
iperf3 server behind it; the receiver's throughput (iperf/ keeps iperf3's JSON)."""

import json
import shutil

from comparison.relays import port
from rig import procs as P
from rig.relay import listening_ports


def measure(run, r, rep):
    for streams in (1, 4):
        run.say(f"bulk: {r}, {streams} stream(s), rep {rep}")
        one(run, r, rep, streams)


def gbytes_per_s(path):
    with open(path) as f:
        d = json.load(f)
    if "error" in d:
        raise ValueError("iperf3: " + d["error"])
    return "%.3f" % (d["end"]["sum_received"]["bits_per_second"] / 8e9)


def one(run, r, rep, streams):
    secs = run.settings.bulk_secs
    tag = f"bulk-{r}-{rep}-P{streams}"
    upstream = port(r, "u_bulk")
    srv = run.procs.start(
        f"{tag}-server", [shutil.which("iperf3") or "iperf3", "-s", "-1", "-p", str(upstream)]
    )
    try:
        if not P.wait_until(lambda: upstream in listening_ports("self"), 10):
            run.fail(f"{r}: iperf3 server did not start")
            return
        target = upstream if r == "direct" else port(r, "p_bulk")
        argv = [
            "iperf3",
            "-c",
            "127.0.0.1",
            "-p",
            str(target),
            "-t",
            str(secs),
            "-P",
            str(streams),
            "-J",
            "--connect-timeout",
            "5000",
        ]
        json_path = run.path("iperf", f"{tag}.json")
        status, _ = run.tool(tag, argv, secs + 40, out_path=json_path)
        try:
            gbps = gbytes_per_s(json_path)
        except (OSError, ValueError, KeyError, TypeError) as e:
            with open(run.log(tag, "log"), "a") as f:
                f.write(f"{e}\n")
            gbps = ""
        if status != 0 or not gbps:
            run.fail(f"{r}: bulk -P {streams} rep {rep} failed (exit {status}): {run.err_tail(tag)}")
        else:
            run.record(r, rep, f"scenario=bulk streams={streams} secs={secs} gbytes_per_s={gbps}")
        # -1: the server exits after one test; bounded all the same.
        P.wait_until(lambda: srv.poll() is not None, 10, 0.1)
    finally:
        run.procs.stop(srv)
