"""comparison: what bench/compare.py needs around its scenarios (bench/scenarios/).

    settings  the knobs (environment variables, SCALE's sizes), checked
    prepare   what must be there before a run: packages, a release build, descriptors; and
              machine.txt, what the machine and the programs measured are
    run       one run's directory (results.txt, errors.txt, logs/ …), its clock and its
              messages, and the clients run to completion within a bound
    relays    the relays under benchmark (idlereaper, HAProxy, nginx from bench/*.in), the
              ports of each, their upstreams; started, stopped, restarted when one died
    servers   the run's own PostgreSQL and redis-server, shared by every relay
    clients   what pgbench and redis-benchmark print, read into result fields

Processes, measures and the load tool come from bench/rig/.
"""
