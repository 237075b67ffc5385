"""What the machine is, for a published result: cores, CPU, kernel, memory, the versions of the
programs measured, and the commit."""

import os
import platform
import subprocess


def _first_line(argv):
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (done.stdout or done.stderr).decode(errors="replace").strip()
    return text.splitlines()[0] if text else "?"


def _cpuinfo(key):
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def pg_bin():
    """The newest /usr/lib/postgresql/<version>/bin with a server, or None."""
    root = "/usr/lib/postgresql"
    try:
        versions = sorted((int(v) for v in os.listdir(root) if v.isdigit()), reverse=True)
    except OSError:
        return None
    for v in versions:
        b = f"{root}/{v}/bin"
        if os.access(f"{b}/postgres", os.X_OK):
            return b
    return None


def describe(repo, idlereaper_exe):
    """An ordered list of (what, value)."""
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    try:
        with open("/etc/debian_version") as f:
            debian = f.read().strip()
    except OSError:
        debian = "?"
    pg = pg_bin()
    commit = _first_line(["git", "-C", repo, "rev-parse", "--short", "HEAD"])
    dirty = _first_line(["git", "-C", repo, "status", "--porcelain", "--", "src", "bench/loadgen", "Cargo.toml", "Cargo.lock"])
    return [
        ("cores", str(os.cpu_count())),
        ("cpu", _cpuinfo("model name")),
        ("virtual machine", "yes" if "hypervisor" in _cpuinfo("flags").split() else "no"),
        ("memory", f"{mem_kib / 1048576:.1f} GiB"),
        ("kernel", platform.release()),
        ("Debian", debian),
        (
            "idlereaper",
            f"{_first_line([idlereaper_exe, '--version'])} at commit {commit}"
            + (" (with uncommitted changes to src/)" if dirty not in ("", "?") else ""),
        ),
        ("HAProxy", _first_line(["haproxy", "-v"])),
        ("nginx", _first_line(["nginx", "-v"])),
        ("PostgreSQL", _first_line([f"{pg}/postgres", "-V"]) if pg else "not installed"),
        ("iptables", _first_line(["iptables", "-V"])),
        ("Python", platform.python_version()),
    ]
