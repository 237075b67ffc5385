#!/usr/bin/env python3
"""Holds one connection open through 127.0.0.1:PORT for SECONDS.

    hold_connection.py PORT SECONDS

Sends a line and reads its echo first, so that the connection is established
end to end through the relay, then sleeps with it open: a daemon asked to
stop waits for it, up to its shutdown_timeout.
"""
import sys
import time

from loopback import connect

c = connect(int(sys.argv[1]), timeout=5)
c.sendall(b"held\n")
c.recv(16)
time.sleep(float(sys.argv[2]))
