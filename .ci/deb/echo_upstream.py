#!/usr/bin/env python3
"""The upstream of the packaged relay listener: echoes what it receives.

    echo_upstream.py PORT

Listens on 127.0.0.1:PORT and writes every byte of every connection back on
it, one thread per connection. Exits by itself after 10 minutes in case
nothing stops it.
"""
import signal
import socket
import sys
import threading

from loopback import HOST


def echo(c):
    with c:
        while True:
            d = c.recv(65536)
            if not d:
                return
            c.sendall(d)


signal.alarm(600)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((HOST, int(sys.argv[1])))
s.listen(64)
while True:
    c, _ = s.accept()
    threading.Thread(target=echo, args=(c,), daemon=True).start()
