# shellcheck shell=bash
# The vocabulary of the package test: what it tests (names, paths, ports), how
# it counts (pass, fail, step, abort), and the few things every part of it
# does (find the daemon, wait for a process, start the daemon by hand on a
# copy of the packaged config, talk to the relay). Sourced by .ci/deb-test.sh
# before the parts in .ci/deb/; not run on its own.

PKG=idlereaper
BIN=/usr/sbin/idlereaper
CTL=/usr/sbin/idlereaperctl
CONF=/etc/idlereaper.toml
UNIT=/usr/lib/systemd/system/idlereaper.service
RUNDIR=/run/idlereaper
PIDFILE=$RUNDIR/idlereaper.pid
USER_NAME=_idlereaper
UPSTREAM_PORT=16379   # the packaged relay listener points here
RELAY_PORT=16380      # the packaged relay listener
SINK_PORT=16390       # the packaged sink listener

DEB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)  # the parts and the Python programs
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
# The programs import loopback.py beside them; no __pycache__ in the tree.
export PYTHONDONTWRITEBYTECODE=1

passed=0
failed=0

pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
note() { echo "      $*"; }
# show FILE [LABEL]: FILE's lines, indented under the last PASS or FAIL, each
# after "LABEL: " when a label is given.
show() { sed "s|^|      ${2:+$2: }|" "$1"; }
# step DESCRIPTION COMMAND...: run COMMAND, PASS or FAIL on its status,
# and return that status.
step() {
    local what=$1
    shift
    if "$@"; then
        pass "$what"
    else
        fail "$what"
        return 1
    fi
}
# abort: a step whose failure makes the rest meaningless.
abort() {
    fail "$*"
    echo "deb-test: stopping early"
    exit 1
}

# wait_until TENTHS COMMAND...: runs COMMAND every 0.1 s until it succeeds,
# at most TENTHS times; its last status.
wait_until() {
    local tries=$1 i
    shift
    for ((i = 1; i <= tries; i++)); do
        "$@" && return 0
        [ "$i" -lt "$tries" ] && sleep 0.1
    done
    return 1
}

# pkg_present: dpkg knows the package in some state other than not-installed
# (installed, removed with its conffiles, half-installed).
pkg_present() {
    dpkg-query -W -f='${db:Status-Status}' "$PKG" 2>/dev/null | grep -qv '^not-installed$'
}

# apt_install PACKAGE LOG: installs PACKAGE with apt-get, bounded; on failure
# shows the end of LOG.
apt_install() {
    { timeout 600 apt-get update -q && timeout 600 apt-get install -y -q --no-install-recommends "$1"; } \
        </dev/null >"$2" 2>&1 || { tail -n 20 "$2"; return 1; }
}

# end_child PID: ends a background child of this script (SIGTERM) and waits
# for it; nothing when PID is empty.
end_child() {
    [ -n "$1" ] || return 0
    kill "$1" 2>/dev/null
    wait "$1" 2>/dev/null
}

# The pid in the pidfile, if it names a live idlereaper process.
daemon_pid() {
    local pid
    pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
    case "$pid" in '' | *[!0-9]*) return 1 ;; esac
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = idlereaper ] || return 1
    echo "$pid"
}

# alive PID: PID runs and is not a zombie (a daemon's parent is PID 1, which
# may take a moment to reap it).
alive() {
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    case "$state" in Z*) return 1 ;; esac
}
gone() { ! alive "$1"; }

# wait_gone PID: up to 12 s for PID to exit.
wait_gone() { wait_until 120 gone "$1"; }

# Stops an idlereaper process we started: TERM, then KILL after a bounded wait.
stop_pid() {
    [ -n "$1" ] || return 0
    alive "$1" || return 0
    kill -TERM "$1" 2>/dev/null
    wait_gone "$1" || kill -KILL "$1" 2>/dev/null
}

# port_free PORT: 127.0.0.1:PORT can be bound (nothing listens there).
port_free() { "$PY" "$DEB_DIR/port_free.py" "$1"; }
port_taken() { ! port_free "$1"; }

# relay PORT: sends a line through 127.0.0.1:PORT and expects it back.
relay() { timeout 20 "$PY" "$DEB_DIR/roundtrip.py" "$1"; }

# config_logging_to LOG OUT: writes to OUT the packaged config with
# log = "LOG" (the packaged one logs to syslog), readable by the daemon's user.
config_logging_to() {
    sed "s|^log = \"syslog\"|log = \"$1\"|" "$CONF" >"$2" || return 1
    chmod 0644 "$2"
}

# log_dir DIR: DIR made for the log of a daemon that has dropped privileges.
log_dir() { install -d -o "$USER_NAME" -g "$USER_NAME" -m 0755 "$1"; }

# start_by_hand CONF LOG: starts the daemon as an admin would, on CONF, its
# output in LOG; the pid from its pidfile is then in $started_pid.
started_pid=
start_by_hand() {
    started_pid=
    timeout 30 "$BIN" -c "$1" </dev/null >"$2" 2>&1 || { show "$2"; return 1; }
    started_pid=$(daemon_pid) || { note "no live idlereaper pid in $PIDFILE"; return 1; }
}

# runs_as PID: PID runs as the daemon's user.
runs_as() {
    local u
    u=$(ps -o user= -p "$1" | tr -d ' ')
    note "pid $1 runs as '$u'"
    [ "$u" = "$USER_NAME" ]
}

# term_stops PID: kill -TERM $(cat $PIDFILE), as the package's start hint
# says; then up to 10 s for PID to exit and its pidfile to go.
term_stops() {
    kill -TERM "$(cat "$PIDFILE")" || return 1
    local i
    for i in $(seq 1 100); do
        if ! alive "$1" && [ ! -e "$PIDFILE" ]; then
            note "gone after ~$((i / 10)).$((i % 10))s"
            return 0
        fi
        sleep 0.1
    done
    alive "$1" && note "pid $1 still running"
    [ -e "$PIDFILE" ] && note "$PIDFILE still there"
    return 1
}
