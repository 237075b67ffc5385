"""TCP on 127.0.0.1 for the package test: what its programs share.

Imported by the programs beside it (port_free.py, roundtrip.py,
echo_upstream.py, hold_connection.py, upgrade_client.py); not run on its own.
"""
import socket

HOST = "127.0.0.1"


def port_free(port):
    """True when HOST:port can be bound, that is when nothing listens there."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((HOST, port))
    except OSError:
        return False
    finally:
        s.close()
    return True


def connect(port, timeout):
    """A connection to HOST:port, its operations bounded by timeout seconds."""
    return socket.create_connection((HOST, port), timeout=timeout)


def read_back(c, n):
    """Up to n bytes from c: fewer only when the peer closed first."""
    got = b""
    while len(got) < n:
        d = c.recv(65536)
        if not d:
            break
        got += d
    return got


def roundtrip(c, msg):
    """Sends msg on c and reads as many bytes back; the bytes read."""
    c.sendall(msg)
    return read_back(c, len(msg))
