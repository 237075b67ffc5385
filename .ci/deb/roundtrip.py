#!/usr/bin/env python3
"""Sends one line through 127.0.0.1:PORT and expects the same bytes back.

    roundtrip.py PORT

Prints what it sent and what came back; exits 0 when they are equal. Behind
the relay listens the echo upstream (echo_upstream.py), so equal bytes mean
the relay carried them both ways.
"""
import sys

from loopback import connect, roundtrip

msg = b"hello through idlereaper\n"
c = connect(int(sys.argv[1]), timeout=5)
got = roundtrip(c, msg)
c.close()
print("      sent %r, got back %r" % (msg, got))
sys.exit(0 if got == msg else 1)
