#!/usr/bin/env python3
"""Exits 0 when 127.0.0.1:PORT can be bound (nothing listens there), 1 otherwise.

    port_free.py PORT
"""
import sys

from loopback import port_free

sys.exit(0 if port_free(int(sys.argv[1])) else 1)
