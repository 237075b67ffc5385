"""CPU time, resident memory and descriptors of a set of processes, from /proc; a process that
is gone counts 0."""

import os

HZ = os.sysconf("SC_CLK_TCK")


def rss_kib(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def cpu_s(pids):
    """User + system CPU seconds (all threads)."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / HZ


def fds(pids):
    """(descriptors, of which sockets, of which pipes)."""
    n = sockets = pipes = 0
    for p in pids:
        try:
            names = os.listdir(f"/proc/{p}/fd")
        except OSError:
            continue
        for name in names:
            n += 1
            try:
                target = os.readlink(f"/proc/{p}/fd/{name}")
            except OSError:
                continue
            sockets += target.startswith("socket:")
            pipes += target.startswith("pipe:")
    return n, sockets, pipes


def sample(pids):
    """One line's worth: processes, RSS KiB, descriptors, sockets, pipes, CPU s."""
    n, s, pipes = fds(pids)
    return {
        "processes": len(pids),
        "rss_kib": rss_kib(pids),
        "fds": n,
        "sockets": s,
        "pipes": pipes,
        "cpu_s": round(cpu_s(pids), 2),
    }
