"""idlereaper, HAProxy and nginx, started the same way with the same listeners, and driven the
way each one documents: `relay(kind, ...)` gives an `Idlereaper` (rig/idlereaper.py), a `Haproxy`
or an `Nginx` (rig/peers.py), each a `Relay` (rig/relay.py, with `Listener`).

Each runs from its own copy of its binary (bin/ in its directory), so that replacing the file
for an upgrade touches no other run. Operations: `reload` (idlereaper and nginx: HUP; HAProxy:
USR2 to its master), `upgrade` (the binary replaced by a fresh copy, a new inode as a package
upgrade makes, then idlereaper: USR2, the same process re-executes it; HAProxy: USR2, the master
re-executes itself and forks a new worker; nginx: USR2, a new master from the new binary, then
WINCH and QUIT to the old one), `kill9` (SIGKILL to every process of the relay) and `stop`.
"""

from .idlereaper import Idlereaper
from .peers import Haproxy, Nginx
from .relay import Listener, Relay, listening_ports

__all__ = ["KINDS", "Listener", "Relay", "listening_ports", "relay"]

KINDS = ("idlereaper", "haproxy", "nginx")


def relay(kind, procs, home, netns=None, binary=None):
    cls = {"idlereaper": Idlereaper, "haproxy": Haproxy, "nginx": Nginx}[kind]
    return cls(procs, home, netns, binary)
