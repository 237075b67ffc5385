#!/usr/bin/env python3
"""bench/loadmon.py ROOT_PID [INTERVAL]: how busy the machine is besides the benchmark.

Every INTERVAL seconds (default 5) prints one line:
    load t=SECONDS loadavg=L busy_cores=B ours_cores=O others_cores=X top_others=comm:cores,...
busy is the whole machine's CPU time over the interval (from /proc/stat), ours the CPU time of
ROOT_PID and its descendants (the script, relays, upstreams, clients), others that of every other
user-space process: other people's builds and tests sharing the same cores. Kernel threads
(softirq, kworkers: mostly the loopback traffic we cause) are left out of both. A process that
lives less than one interval is seen only if it is alive at a sample. Runs until ROOT_PID exits.
"""

import os
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")


def machine_busy():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    return (fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7]) / HZ


def processes():
    """pid -> (ppid, comm, cpu seconds) for every process (threads included in the process)."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        rest = stat[stat.rindex(")") + 2 :].split()
        # rest[0] is state (field 3); ppid is field 4; utime, stime are 14 and 15.
        out[int(name)] = (int(rest[1]), comm, (int(rest[11]) + int(rest[12])) / HZ)
    return out


def descendants(procs, root):
    children = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    seen, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(children.get(pid, []))
    return seen


def main():
    root = int(sys.argv[1])
    interval = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    start = time.monotonic()
    busy0, procs0 = machine_busy(), processes()
    ours_seen = descendants(procs0, root)
    while os.path.exists(f"/proc/{root}"):
        time.sleep(interval)
        busy1, procs1 = machine_busy(), processes()
        elapsed = interval
        ours_now = descendants(procs1, root)
        # Once ours, always ours (nginx workers stay ours after their master is replaced, etc.).
        ours_seen |= ours_now
        ours = others = 0.0
        per_comm = {}
        for pid, (_, comm, cpu) in procs1.items():
            before = procs0.get(pid)
            # A process that started during the interval counts whole.
            delta = cpu - (before[2] if before and before[1] == comm else 0.0)
            if delta <= 0:
                continue
            if pid in ours_seen:
                ours += delta
            elif pid == 2 or procs1[pid][0] == 2:
                continue  # a kernel thread
            else:
                others += delta
                per_comm[comm] = per_comm.get(comm, 0.0) + delta
        busy = busy1 - busy0
        top = sorted(per_comm.items(), key=lambda kv: -kv[1])[:3]
        with open("/proc/loadavg") as f:
            loadavg = f.read().split()[0]
        print(
            f"load t={time.monotonic() - start:.0f} loadavg={loadavg} busy_cores={busy / elapsed:.2f} "
            f"ours_cores={ours / elapsed:.2f} others_cores={others / elapsed:.2f} "
            f"top_others={','.join(f'{c}:{v / elapsed:.2f}' for c, v in top) or '-'}",
            flush=True,
        )
        busy0, procs0 = busy1, procs1


if __name__ == "__main__":
    try:
        main()
    except (KeyboardInterrupt, BrokenPipeError):
        pass
