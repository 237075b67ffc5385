"""The scenarios of bench/compare.py, one a file; each measures one thing through every relay
(and "direct", the client talking to the upstream with no relay, where that means something)
and writes one `relay=… rep=… scenario=… key=value…` line per measurement into results.txt:

    hold       memory per idle connection and idle CPU (a fresh relay per measurement)
    reap       how late after its idle timeout each idle connection is closed
    bulk       throughput of iperf3 streams
    pingpong   round trips of 64 bytes (also with everything on one CPU)
    churn      short connections per second
    pgbench    pgbench -S against the run's PostgreSQL (persistent, and -C)
    redis      redis-benchmark GETs against the run's redis-server (-P 16, -P 1)
    protocols  idlereaper's postgres and redis listeners against its tcp ones
    upgrade    a live upgrade under load (bench/upgrade.py measures it)

The quick ones (reap … redis) have `measure(run, relay, rep)`, run with the relays started once;
hold, protocols and upgrade start their own and have `run_all(run)`.
"""
