#!/usr/bin/env python3
"""The relay's established TCP sockets, and which of them a process holds.

    relay_sockets.py RELAY_PORT UPSTREAM_PORT PID

A relay socket is one accepted on RELAY_PORT or connected to UPSTREAM_PORT, in
state ESTABLISHED (from /proc/net/tcp and tcp6), named by its inode. Prints on
a first line the inodes PID holds (its /proc/PID/fd links), sorted and
separated by spaces, and on a second line how many relay sockets PID does not
hold. Comparing the first line before and after an upgrade in place shows
that the process kept the very same sockets.
"""
import os
import sys

ESTABLISHED = "01"


def relay_inodes(relay, upstream):
    inodes = set()
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(f) as table:
                lines = table.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            p = line.split()
            lport = int(p[1].rsplit(":", 1)[1], 16)
            rport = int(p[2].rsplit(":", 1)[1], 16)
            if p[3] == ESTABLISHED and (lport == relay or rport == upstream):
                inodes.add(p[9])
    return inodes


def held_inodes(pid):
    held = set()
    for fd in os.listdir("/proc/%s/fd" % pid):
        try:
            link = os.readlink("/proc/%s/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            held.add(link[8:-1])
    return held


relay, upstream, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
inodes = relay_inodes(relay, upstream)
held = held_inodes(pid)
print(" ".join(sorted(inodes & held)))
print(len(inodes - held))
