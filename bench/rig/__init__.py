"""rig: the shared library of the benchmark and fault scripts under bench/.

What every such script does, written once:
    procs     start a program (optionally inside a network namespace), track it, stop it (TERM,
              then KILL after a bound) on the way out, also on Ctrl-C or TERM; bounded waits
    netns     network namespaces made for one run (a client, a relay and a server host joined
              by veth links), iptables rules on them (random loss, a vanished peer, dropped
              SYNs), and sockets opened inside them; all removed on the way out
    relays    idlereaper, HAProxy and nginx started from the templates in rig/templates/ with
              the same listeners, and driven the way each one documents: reload, live
              upgrade, SIGKILL; the processes that hold their connections (the kinds in
              idlereaper and peers, what they share in relay, upgrades and reloads in upgrades)
    subreaper a child subreaper, so that what a relay forks or leaves behind stays the run's
    wire      client and server sockets: streams checked by SHA-256, idle connections checked
              by an echo, how a connection ended (FIN, reset, or not at all) and when
    held      thousands of idle connections through a relay from rotating loopback sources,
              echo-checked, and which process (old binary or new) holds each one
    pingpong  a 64-byte ping-pong in a process of its own recording every round trip, and the
              longest stall in a window of what it recorded
    measure   CPU, resident memory and descriptors of a set of processes
    postgres  a throwaway PostgreSQL cluster (initdb in a temporary directory, fsync off)
    redis_server  a throwaway redis-server (no persistence)
    loadgen   the repository's load tool (bench/loadgen), run and its result line parsed
    machine   what the machine is (cores, kernel, versions), for a published result

Rules the library keeps, and its users must too: every wait has a deadline and every loop a
count; everything started is stopped and every namespace removed, also on failure; fixed ports
are below 32768 (the ephemeral range starts there); traffic stays on loopback or inside the
run's own namespaces. Python 3.11, standard library only (Debian 12's python3).
"""
