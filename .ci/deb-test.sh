#!/usr/bin/env bash
# Install test of the Debian package: build it, lint it, install it,
# check what postinst made and said, run the daemon from the packaged
# /etc/idlereaper.toml, stop it, rotate its log with the packaged logrotate
# file, upgrade it in place under a running daemon to a second package one
# version up, remove it with a daemon running (what prerm says),
# purge it.
#
#   bash .ci/deb-test.sh        (as root, from the repository root)
#
# It changes the machine (installs the package, creates the _idlereaper user)
# and puts everything back on exit, also when a step fails or it is
# interrupted: the EXIT trap stops what it started, purges the package and
# removes the user if it did not exist before. Every wait is bounded; nothing
# reads standard input. The last line is "deb-test: N passed, M failed".
set -u
export DEBIAN_FRONTEND=noninteractive
export LC_ALL=C

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

PKG=idlereaper
BIN=/usr/sbin/idlereaper
CONF=/etc/idlereaper.toml
UNIT=/usr/lib/systemd/system/idlereaper.service
RUNDIR=/run/idlereaper
PIDFILE=$RUNDIR/idlereaper.pid
USER_NAME=_idlereaper
UPSTREAM_PORT=16379   # the packaged relay listener points here
RELAY_PORT=16380      # the packaged relay listener
SINK_PORT=16390       # the packaged sink listener

PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

passed=0
failed=0
installed_by_us=0
user_existed=1
upstream_pid=
fg_pid=
work=$(mktemp -d /tmp/deb-test.XXXXXX)
next_src=$PWD/target/deb-test-next   # the tree of the second package (upgrade test)
client_pid=

pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
note() { echo "      $*"; }
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

# wait_gone PID: up to 12 s for PID to exit.
wait_gone() {
    local i
    for i in $(seq 1 120); do
        alive "$1" || return 0
        sleep 0.1
    done
    return 1
}

# Stops an idlereaper process we started: TERM, then KILL after a bounded wait.
stop_pid() {
    [ -n "$1" ] || return 0
    alive "$1" || return 0
    kill -TERM "$1" 2>/dev/null
    wait_gone "$1" || kill -KILL "$1" 2>/dev/null
}

cleanup() {
    local status=$?
    set +e
    trap - EXIT INT TERM
    # The upgrade test's client first: its open connections would make the
    # daemon's graceful stop wait.
    if [ -n "$client_pid" ]; then
        kill "$client_pid" 2>/dev/null
        wait "$client_pid" 2>/dev/null
    fi
    # Daemons we started: the packaged one (by its pidfile), the foreground one,
    # and any process still running the binary this test installed.
    stop_pid "$(daemon_pid)"
    stop_pid "$fg_pid"
    if [ "$installed_by_us" = 1 ]; then
        for exe in /proc/[0-9]*/exe; do
            if [ "$(readlink "$exe" 2>/dev/null)" = "$BIN" ]; then
                pid=${exe#/proc/}
                stop_pid "${pid%/exe}"
            fi
        done
    fi
    if [ -n "$upstream_pid" ]; then
        kill "$upstream_pid" 2>/dev/null
        wait "$upstream_pid" 2>/dev/null
    fi
    if [ "$installed_by_us" = 1 ] && dpkg-query -W -f='${db:Status-Status}' "$PKG" 2>/dev/null | grep -qv '^not-installed$'; then
        echo "cleanup: purging $PKG"
        timeout 120 dpkg --purge "$PKG" </dev/null >/dev/null 2>&1 || echo "cleanup: dpkg --purge $PKG failed"
    fi
    # The package keeps its system user on purge (Debian practice); the test
    # removes it when it created it, to leave the machine as it found it.
    if [ "$user_existed" = 0 ] && getent passwd "$USER_NAME" >/dev/null; then
        deluser --system --quiet "$USER_NAME" >/dev/null 2>&1 || echo "cleanup: could not remove user $USER_NAME"
    fi
    if [ "$user_existed" = 0 ] && getent group "$USER_NAME" >/dev/null; then
        delgroup --system --quiet "$USER_NAME" >/dev/null 2>&1 || echo "cleanup: could not remove group $USER_NAME"
    fi
    rm -rf "$work" "$next_src"
    [ "$status" -eq 0 ] && [ "$failed" -gt 0 ] && status=1
    echo "deb-test: $passed passed, $failed failed"
    exit "$status"
}
trap cleanup EXIT
trap 'echo "deb-test: interrupted"; exit 130' INT TERM

# --- preconditions ----------------------------------------------------------
[ "$(id -u)" -eq 0 ] || abort "must run as root"
if dpkg-query -W -f='${db:Status-Status}' "$PKG" 2>/dev/null | grep -qv '^not-installed$'; then
    abort "$PKG is already installed here; this test would remove it (purge it first)"
fi
getent passwd "$USER_NAME" >/dev/null || user_existed=0

port_free() {
    "$PY" -c 'import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try: s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError: sys.exit(1)' "$1"
}
for port in $UPSTREAM_PORT $RELAY_PORT $SINK_PORT; do
    port_free "$port" || abort "port 127.0.0.1:$port is in use; the test needs it"
done

# --- build ------------------------------------------------------------------
echo "deb-test: building the package (bash packaging/build-deb.sh)"
if ! bash packaging/build-deb.sh </dev/null >"$work/build.log" 2>&1; then
    tail -n 40 "$work/build.log"
    abort "build: packaging/build-deb.sh"
fi
deb=$(tail -n 1 "$work/build.log")
[ -f "$deb" ] || abort "build: no package file (last line of the build: '$deb')"
pass "build: $deb"
# A copy the test uses: the second build below (cargo deb) deletes other
# versions of the package from the target directory's debian/.
cp "$deb" "$work/" || abort "build: cannot copy $deb to $work"
deb=$work/${deb##*/}

# A second package, one patch version up, for the upgrade in place: built the
# same way from a copy of the source tree (under target/, removed on exit) whose
# Cargo.toml, Cargo.lock and packaging/changelog say $next_version, so that the
# binary's own version differs too. It shares the target directory, so only
# the idlereaper crate is compiled again; target/release/idlereaper is then
# the $next_version build (any cargo build in the tree rebuilds it).
cur_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
next_version=${cur_version%.*}.$((${cur_version##*.} + 1))
build_next() {
    local target_dir=${CARGO_TARGET_DIR:-target}
    case "$target_dir" in /*) ;; *) target_dir=$PWD/$target_dir ;; esac
    rm -rf "$next_src"
    mkdir -p "$next_src" || return 1
    tar -C . --exclude=./target --exclude=./.git --exclude=./fuzz/target -cf - . | tar -C "$next_src" -xf - || return 1
    (
        set -e
        cd "$next_src"
        sed -i "0,/^version = \"$cur_version\"\$/s//version = \"$next_version\"/" Cargo.toml
        sed -i "/^name = \"idlereaper\"\$/{n;s/^version = \"$cur_version\"\$/version = \"$next_version\"/}" Cargo.lock
        grep -q "^version = \"$next_version\"\$" Cargo.toml
        grep -A1 '^name = "idlereaper"$' Cargo.lock | grep -q "^version = \"$next_version\"\$"
        {
            printf 'idlereaper (%s-1) unstable; urgency=medium\n\n' "$next_version"
            printf '  * Test build for the upgrade in place (.ci/deb-test.sh).\n\n'
            printf ' -- %s  %s\n\n' "$(dpkg-parsechangelog -l packaging/changelog -SMaintainer)" "$(date -R)"
            cat packaging/changelog
        } >packaging/changelog.new
        mv packaging/changelog.new packaging/changelog
        CARGO_TARGET_DIR=$target_dir bash packaging/build-deb.sh </dev/null
    ) >"$work/build-next.log" 2>&1 || { tail -n 40 "$work/build-next.log"; return 1; }
    deb_next=$next_src/$(tail -n 1 "$work/build-next.log")
    [ -f "$deb_next" ] || { note "no package file (last line of the build: '$(tail -n 1 "$work/build-next.log")')"; return 1; }
    note "$deb_next"
    cp "$deb_next" "$work/" || return 1
    deb_next=$work/${deb_next##*/}
    [ "$(dpkg-deb -f "$deb_next" Version)" = "$next_version-1" ] || { note "its version is $(dpkg-deb -f "$deb_next" Version)"; return 1; }
}
deb_next=
step "build: a second package at $next_version-1 from a copy of the tree" build_next || deb_next=

# --- lintian ----------------------------------------------------------------
if ! command -v lintian >/dev/null; then
    echo "deb-test: installing lintian"
    { timeout 600 apt-get update -q && timeout 600 apt-get install -y -q --no-install-recommends lintian; } </dev/null >"$work/apt.log" 2>&1 \
        || { tail -n 20 "$work/apt.log"; }
fi
if command -v lintian >/dev/null; then
    timeout 600 lintian --display-info "$deb" >"$work/lintian.log" 2>&1
    lintian_status=$?
    sed 's/^/      lintian: /' "$work/lintian.log"
    if [ "$lintian_status" -le 2 ] && ! grep -q '^[EW]: ' "$work/lintian.log"; then
        pass "lintian: no errors, no warnings"
    else
        fail "lintian: errors or warnings (status $lintian_status)"
    fi
else
    fail "lintian: not installed and could not be installed"
fi

# --- install ----------------------------------------------------------------
installed_by_us=1
if timeout 300 dpkg -i "$deb" </dev/null >"$work/dpkg-i.log" 2>&1; then
    pass "dpkg -i"
else
    sed 's/^/      /' "$work/dpkg-i.log"
    abort "dpkg -i"
fi

conffiles=$(dpkg-query -W -f='${Conffiles}' "$PKG")
step "conffile $CONF registered" grep -q "^ $CONF [0-9a-f]\{32\}\$" <<<"$conffiles"
step "conffile /etc/logrotate.d/idlereaper registered" grep -q "^ /etc/logrotate.d/idlereaper [0-9a-f]\{32\}\$" <<<"$conffiles"

files_ok=1
for f in "$BIN" "$CONF" "$UNIT" /usr/sbin/idlereaperctl /usr/share/man/man8/idlereaperctl.8.gz \
    /usr/share/man/man8/idlereaper.8.gz /usr/share/man/man5/idlereaper.toml.5.gz \
    /usr/share/doc/idlereaper/copyright /usr/share/doc/idlereaper/changelog.Debian.gz; do
    [ -f "$f" ] || { note "missing: $f"; files_ok=0; }
done
[ -x "$BIN" ] && [ -x /usr/sbin/idlereaperctl ] || { note "not executable: $BIN or idlereaperctl"; files_ok=0; }
step "binaries (idlereaper, idlereaperctl), config, unit, man pages, copyright, changelog in place" [ "$files_ok" = 1 ]

user_ok() {
    local entry
    entry=$(getent passwd "$USER_NAME") || return 1
    note "$entry"
    getent group "$USER_NAME" >/dev/null || return 1
    [ "$(id -gn "$USER_NAME")" = "$USER_NAME" ] || return 1
    [ "$(cut -d: -f6 <<<"$entry")" = /nonexistent ] || return 1
    [ "$(cut -d: -f3 <<<"$entry")" -lt 1000 ] || return 1
}
step "system user and group $USER_NAME exist (home /nonexistent)" user_ok

step "reinstall over itself (postinst is idempotent)" \
    timeout 300 dpkg -i "$deb" </dev/null >"$work/dpkg-i2.log" 2>&1

# --- what postinst made and said --------------------------------------------
# The log directory for a log file, owned by the daemon's user (logrotate
# rotates it as that user). On a first installation where systemd does not
# run, postinst says the daemon was not started and how to start and stop it;
# a reinstallation says nothing of the kind.
log_directory_made() {
    local d=/var/log/idlereaper
    [ -d "$d" ] || { note "no $d"; return 1; }
    note "$d: $(stat -c '%U:%G mode %a' "$d")"
    [ "$(stat -c '%U:%G %a' "$d")" = "$USER_NAME:$USER_NAME 750" ]
}
step "postinst: /var/log/idlereaper made, owned by $USER_NAME, mode 750" log_directory_made

start_hint_said() {
    grep '^idlereaper:' "$work/dpkg-i.log" | sed 's/^/      dpkg -i: /'
    if grep -q 'daemon was not started' "$work/dpkg-i2.log"; then
        note "the reinstallation said it too"
        return 1
    fi
    if [ -d /run/systemd/system ]; then
        ! grep -q 'daemon was not started' "$work/dpkg-i.log"
        return
    fi
    grep -qxF "idlereaper: systemd is not running, so the daemon was not started." "$work/dpkg-i.log" \
        && grep -qxF "idlereaper: Start it as root with: idlereaper" "$work/dpkg-i.log" \
        && grep -qxF "idlereaper: Stop it with: kill -TERM \$(cat $PIDFILE)" "$work/dpkg-i.log" \
        && { [ -S /dev/log ] || grep -q '^idlereaper: There is no syslog socket (/dev/log)' "$work/dpkg-i.log"; }
}
step "postinst: without a running systemd, the first dpkg -i says the daemon was not started, and how to start and stop it" start_hint_said

config_ok() {
    grep -q "^user = \"$USER_NAME\"" "$CONF" && grep -q "^group = \"$USER_NAME\"" "$CONF" \
        && timeout 10 "$BIN" --check </dev/null >"$work/check.log" 2>&1
    local s=$?
    sed 's/^/      /' "$work/check.log"
    return $s
}
step "packaged config sets user/group $USER_NAME and passes idlereaper --check" config_ok

# --- run from the packaged config -------------------------------------------
# A test upstream on 127.0.0.1:16379: echoes what it receives. It exits by
# itself after 10 minutes in case nothing stops it.
"$PY" -c '
import signal, socket, threading
signal.alarm(600)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", '"$UPSTREAM_PORT"'))
s.listen(64)
def echo(c):
    with c:
        while True:
            d = c.recv(65536)
            if not d:
                return
            c.sendall(d)
while True:
    c, _ = s.accept()
    threading.Thread(target=echo, args=(c,), daemon=True).start()
' </dev/null >"$work/upstream.log" 2>&1 &
upstream_pid=$!
upstream_up=0
for _ in $(seq 1 50); do
    if ! port_free "$UPSTREAM_PORT"; then upstream_up=1; break; fi
    sleep 0.1
done
[ "$upstream_up" = 1 ] || abort "test upstream on 127.0.0.1:$UPSTREAM_PORT did not come up"

# relay PORT: sends a line through 127.0.0.1:PORT and expects it back.
relay() {
    timeout 20 "$PY" -c '
import socket, sys
msg = b"hello through idlereaper\n"
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
c.sendall(msg)
got = b""
while len(got) < len(msg):
    d = c.recv(65536)
    if not d:
        break
    got += d
c.close()
print("      sent %r, got back %r" % (msg, got))
sys.exit(0 if got == msg else 1)
' "$1"
}

# The daemonized instance runs on the packaged config. Without a syslog socket (a
# container) it refuses to daemonize with log = "syslog" (a daemon must not write to the
# terminal); check that, then run it on a copy that logs to a file.
start_args=()
if [ ! -S /dev/log ]; then
    no_syslog_refused() {
        local s
        timeout 30 "$BIN" </dev/null >"$work/nosyslog.log" 2>&1
        s=$?
        sed 's/^/      /' "$work/nosyslog.log"
        note "exit status $s"
        [ "$s" -eq 2 ] && grep -q 'daemon.log' "$work/nosyslog.log" && ! daemon_pid >/dev/null
    }
    step "no /dev/log: daemonizing with log = \"syslog\" is refused (exit 2, names daemon.log)" no_syslog_refused
    sed "s|^log = \"syslog\"|log = \"$work/daemon.log\"|" "$CONF" >"$work/idlereaper.toml"
    start_args=(-c "$work/idlereaper.toml")
    note "the daemon below runs on $CONF with log = \"$work/daemon.log\""
fi

start_ok() {
    timeout 30 "$BIN" "${start_args[@]}" </dev/null >"$work/start.log" 2>&1
    local s=$?
    sed 's/^/      /' "$work/start.log"
    [ "$s" -eq 0 ] || { note "exit status $s"; return 1; }
    daemon_pid >/dev/null || { note "no live idlereaper pid in $PIDFILE"; return 1; }
    note "pid $(daemon_pid)"
}
if ! step "idlereaper with no arguments starts (exit 0, pidfile with a live pid)" start_ok; then
    abort "daemon did not start from the packaged config"
fi
pid=$(daemon_pid)

step "relay: bytes through 127.0.0.1:$RELAY_PORT come back from the upstream" relay "$RELAY_PORT"

runs_as() {
    local u
    u=$(ps -o user= -p "$1" | tr -d ' ')
    note "pid $1 runs as '$u'"
    [ "$u" = "$USER_NAME" ]
}
step "ps: the daemon runs as $USER_NAME" runs_as "$(cat "$PIDFILE")"

rundir_owned() {
    local o
    o=$(stat -c %U:%G "$RUNDIR")
    note "$RUNDIR owned by $o"
    [ "$o" = "$USER_NAME:$USER_NAME" ]
}
step "$RUNDIR belongs to $USER_NAME" rundir_owned

second_refused() {
    local s
    timeout 30 "$BIN" "${start_args[@]}" </dev/null >"$work/second.log" 2>&1
    s=$?
    sed 's/^/      /' "$work/second.log"
    note "exit status $s"
    [ "$s" -ne 0 ] && [ "$s" -ne 124 ] && grep -q "pid $pid" "$work/second.log" \
        && [ "$(daemon_pid)" = "$pid" ]
}
step "a second idlereaper is refused, naming pid $pid; the first keeps running" second_refused

term_stops() {
    kill -TERM "$(cat "$PIDFILE")" || return 1
    local i
    for i in $(seq 1 100); do
        if ! alive "$pid" && [ ! -e "$PIDFILE" ]; then
            note "gone after ~$((i / 10)).$((i % 10))s"
            return 0
        fi
        sleep 0.1
    done
    alive "$pid" && note "pid $pid still running"
    [ -e "$PIDFILE" ] && note "$PIDFILE still there"
    return 1
}
step "kill -TERM \$(cat $PIDFILE): process gone, pidfile removed" term_stops

# --- as systemd runs it -----------------------------------------------------
# systemd is not PID 1 here, so the unit is imitated with setpriv: its User=,
# Group=, CapabilityBoundingSet=, AmbientCapabilities= and NoNewPrivileges=, a
# fresh /run/idlereaper owned by User= (RuntimeDirectory=), and its ExecStart=
# command in the foreground. HUP is what ExecReload= sends. The exit status
# after an admin's kill -TERM is what systemd would see.
unit_value() { sed -n "s/^$1=//p" "$UNIT" | tail -n 1; }
capset() {
    local c set=-all
    for c in $1; do
        c=${c#CAP_}
        set="$set,+${c,,}"
    done
    echo "$set"
}
systemd_like() {
    local exec_start user group bset ambient s
    exec_start=$(unit_value ExecStart)
    user=$(unit_value User)
    group=$(unit_value Group)
    bset=$(capset "$(unit_value CapabilityBoundingSet)")
    ambient=$(capset "$(unit_value AmbientCapabilities)")
    [ -n "$exec_start" ] || { note "unit has no ExecStart="; return 1; }
    local args=(--bounding-set "$bset" --inh-caps "$ambient" --ambient-caps "$ambient")
    [ "$(unit_value NoNewPrivileges)" = yes ] && args+=(--no-new-privs)
    [ -n "$user" ] && args+=(--reuid "$user" --regid "${group:-$user}" --init-groups)
    note "ExecStart=$exec_start as ${user:-root}:${group:-${user:-root}}, setpriv ${args[*]}"
    rm -rf "$RUNDIR"
    install -d -o "${user:-root}" -g "${group:-${user:-root}}" -m 0755 "$RUNDIR"
    # shellcheck disable=SC2086  # ExecStart= is split into words, as systemd does
    setpriv "${args[@]}" -- $exec_start </dev/null >"$work/fg.log" 2>&1 &
    fg_pid=$!
    local ready=0
    for _ in $(seq 1 100); do
        if [ "$(cat "$PIDFILE" 2>/dev/null)" = "$fg_pid" ] && ! port_free "$RELAY_PORT"; then
            ready=1
            break
        fi
        alive "$fg_pid" || break
        sleep 0.1
    done
    if [ "$ready" = 1 ]; then
        relay "$RELAY_PORT" || { note "relay failed"; ready=0; }
        runs_as "$fg_pid" || ready=0
        kill -HUP "$fg_pid"
        kill -USR1 "$fg_pid"
        sleep 0.5
        alive "$fg_pid" || { note "died on HUP/USR1"; ready=0; }
        kill -TERM "$fg_pid"
    else
        note "not ready within 10s"
        kill -TERM "$fg_pid" 2>/dev/null
    fi
    wait_gone "$fg_pid" || { note "still running 12s after TERM"; kill -KILL "$fg_pid"; }
    wait "$fg_pid"
    s=$?
    fg_pid=
    sed 's/^/      log: /' "$work/fg.log"
    note "exit status $s"
    local logged=1
    grep -q 'conn closed id=[0-9]* listener=[^ ]* client=127\.0\.0\.1:[0-9]* reason=client_closed lifetime_ms=[0-9]* bytes_from_client=25 bytes_from_upstream=25' "$work/fg.log" \
        || { note "no 'conn closed ... reason=client_closed ... bytes_from_client=25 bytes_from_upstream=25' line"; logged=0; }
    grep -q 'INFO reloaded ' "$work/fg.log" || { note "no 'reloaded' line for SIGHUP"; logged=0; }
    grep -q 'stats .*connections=' "$work/fg.log" || { note "no stats line for SIGUSR1"; logged=0; }
    [ -e "$PIDFILE" ] && note "$PIDFILE still there"
    [ "$ready" = 1 ] && [ "$s" -eq 0 ] && [ ! -e "$PIDFILE" ] && [ "$logged" = 1 ]
}
step "as the unit runs it: relays as $USER_NAME, logs, survives HUP/USR1, exits 0 on TERM" systemd_like

# --- log rotation -----------------------------------------------------------
# The packaged /etc/logrotate.d/idlereaper on a daemon (started by hand, as
# root: it drops to _idlereaper) that logs to a file in the packaged log
# directory. logrotate -f renames the file, creates a new one and sends SIGUSR1
# (postrotate); the daemon reopens, writes to the new file (the statistics
# line USR1 logs, then a connection's close line), and the rotated file no
# longer grows. Twice, so that the first generation gets compressed too.
ROTATED_LOG=/var/log/idlereaper/idlereaper.log
# rotate N: logrotate -f with the packaged file, then waits for the daemon
# ($rpid) to log its statistics line in the new file; the Nth rotation.
rotate() {
    local i
    timeout 60 logrotate -f -s "$work/logrotate.state" /etc/logrotate.d/idlereaper >"$work/logrotate-$1.log" 2>&1 \
        || { note "logrotate (rotation $1) failed:"; sed 's/^/      logrotate: /' "$work/logrotate-$1.log"; return 1; }
    for i in $(seq 1 100); do
        grep -q ' stats connections=' "$ROTATED_LOG" 2>/dev/null && return 0
        sleep 0.1
    done
    note "rotation $1: no statistics line in the new $ROTATED_LOG (the daemon did not reopen)"
    return 1
}
# closes_in FILE: the number of close lines in FILE.
closes_in() { grep -c ' conn closed ' "$1" 2>/dev/null || true; }
logrotate_reopens() {
    local conf=$work/logrotate.toml rpid before after i
    if ! command -v logrotate >/dev/null; then
        { timeout 600 apt-get update -q && timeout 600 apt-get install -y -q --no-install-recommends logrotate; } \
            </dev/null >"$work/apt-logrotate.log" 2>&1 || { tail -n 20 "$work/apt-logrotate.log"; return 1; }
    fi
    rm -f "$ROTATED_LOG" "$ROTATED_LOG".*
    sed "s|^log = \"syslog\"|log = \"$ROTATED_LOG\"|" "$CONF" >"$conf"
    timeout 30 "$BIN" -c "$conf" </dev/null >"$work/logrotate-start.log" 2>&1 \
        || { sed 's/^/      /' "$work/logrotate-start.log"; return 1; }
    rpid=$(daemon_pid) || { note "no daemon"; return 1; }
    relay "$RELAY_PORT" >/dev/null || { stop_pid "$rpid"; return 1; }
    for i in $(seq 1 50); do [ "$(closes_in "$ROTATED_LOG")" -ge 1 ] && break; sleep 0.1; done
    local ok=1
    rotate 1 || ok=0
    if [ "$ok" = 1 ]; then
        before=$(stat -c %s "$ROTATED_LOG.1")
        relay "$RELAY_PORT" >/dev/null || ok=0
        for i in $(seq 1 50); do [ "$(closes_in "$ROTATED_LOG")" -ge 1 ] && break; sleep 0.1; done
        after=$(stat -c %s "$ROTATED_LOG.1")
        note "rotated file $ROTATED_LOG.1: $before bytes, then $after after a connection; new file: $(closes_in "$ROTATED_LOG") close line(s), owned by $(stat -c %U:%G "$ROTATED_LOG")"
        [ "$(closes_in "$ROTATED_LOG")" -ge 1 ] && [ "$before" = "$after" ] || ok=0
        [ "$(stat -c %U:%G "$ROTATED_LOG")" = "$USER_NAME:$USER_NAME" ] || ok=0
    fi
    if [ "$ok" = 1 ]; then
        rotate 2 || ok=0
        note "after a second rotation: $(cd /var/log/idlereaper && ls | tr '\n' ' ')"
        [ -f "$ROTATED_LOG.2.gz" ] && [ -f "$ROTATED_LOG.1" ] || ok=0
    fi
    stop_pid "$rpid"
    rm -f "$ROTATED_LOG" "$ROTATED_LOG".*
    [ "$ok" = 1 ]
}
step "logrotate -f with the packaged file: the daemon reopens its log, writes to the new file, the rotated one stops growing" logrotate_reopens

# --- upgrade in place -------------------------------------------------------
# Installing a newer package over a running daemon does not restart it (issue
# 13): postinst sends SIGUSR2 to the pid in the pidfile, and the daemon
# re-executes the new /usr/sbin/idlereaper in the same process, keeping its
# listeners and every connection. The daemon is started by hand as above (no
# systemd here), on a copy of the packaged config that logs to a file the test
# reads (also where /dev/log exists), in a directory _idlereaper may write to:
# the re-executed daemon has already dropped privileges. Through it run
# $UPGRADE_CONNS connections, each with an echo round trip before and after
# the upgrade, and one stream that keeps moving bytes throughout and compares
# checksums at the end.
UPGRADE_CONNS=200

cat >"$work/upgrade_client.py" <<'EOF'
import hashlib, json, os, signal, socket, sys, threading, time

signal.alarm(300)
port, n, ready, go = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
res = {"errors": []}


def fail(msg):
    res["errors"].append(msg)


def done():
    print(json.dumps(res, sort_keys=True), flush=True)
    sys.exit(1 if res["errors"] else 0)


def roundtrip(c, msg):
    c.sendall(msg)
    got = b""
    while len(got) < len(msg):
        d = c.recv(65536)
        if not d:
            break
        got += d
    return got == msg


conns = []
try:
    for i in range(n):
        conns.append(socket.create_connection(("127.0.0.1", port), timeout=10))
    res["before"] = sum(roundtrip(c, b"before %d\n" % i) for i, c in enumerate(conns))
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
except OSError as e:
    fail("before the upgrade: %r" % e)
    done()
if res["before"] != n:
    fail("before the upgrade: %d of %d round trips" % (res["before"], n))

# The stream: 4 KiB blocks of numbered lines every 5 ms, read back by a
# second thread; both sides hashed.
stop = threading.Event()
sent_h, recv_h = hashlib.sha256(), hashlib.sha256()
st = {"sent": 0, "received": 0, "max_gap_ms": 0.0}


def writer():
    i = 0
    try:
        while not stop.is_set():
            block = b"".join(b"%015d\n" % (i * 256 + k) for k in range(256))
            s.sendall(block)
            sent_h.update(block)
            st["sent"] += len(block)
            i += 1
            time.sleep(0.005)
        s.shutdown(socket.SHUT_WR)
    except OSError as e:
        fail("stream writer: %r" % e)


def reader():
    last = time.monotonic()
    try:
        while True:
            d = s.recv(65536)
            now = time.monotonic()
            if not d:
                return
            if not stop.is_set():
                st["max_gap_ms"] = max(st["max_gap_ms"], round((now - last) * 1000, 1))
            last = now
            recv_h.update(d)
            st["received"] += len(d)
    except OSError as e:
        fail("stream reader: %r" % e)


w = threading.Thread(target=writer)
r = threading.Thread(target=reader)
w.start()
r.start()
time.sleep(0.5)
open(ready, "w").close()
t0 = time.monotonic()
while not os.path.exists(go) and time.monotonic() - t0 < 240:
    time.sleep(0.05)
if not os.path.exists(go):
    fail("never told to finish")
time.sleep(1)  # the stream runs on the new code for a moment
after = 0
for i, c in enumerate(conns):
    try:
        after += roundtrip(c, b"after %d\n" % i)
    except OSError as e:
        fail("connection %d after the upgrade: %r" % (i, e))
res["after"] = after
if after != n:
    fail("after the upgrade: %d of %d round trips" % (after, n))
stop.set()
w.join(30)
r.join(30)
if r.is_alive():
    fail("stream: no end of file within 30 s of the writer's shutdown")
res.update(st)
res["stream_sha256_equal"] = sent_h.digest() == recv_h.digest()
if st["sent"] != st["received"] or not res["stream_sha256_equal"]:
    fail("stream: sent %d bytes, received %d, checksums %s" % (
        st["sent"], st["received"], "equal" if res["stream_sha256_equal"] else "differ"))
for c in conns + [s]:
    c.close()
done()
EOF

# relay_sockets PID: the relay's TCP sockets (accepted on $RELAY_PORT, or
# connected to $UPSTREAM_PORT), established, by inode. Prints the inodes PID
# holds, sorted, on one line, and on a second line how many it does not hold.
relay_sockets() {
    "$PY" -c '
import os, sys
relay, upstream, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
inodes = set()
for f in ("/proc/net/tcp", "/proc/net/tcp6"):
    try:
        lines = open(f).read().splitlines()[1:]
    except OSError:
        continue
    for line in lines:
        p = line.split()
        lport, rport = int(p[1].rsplit(":", 1)[1], 16), int(p[2].rsplit(":", 1)[1], 16)
        if p[3] == "01" and (lport == relay or rport == upstream):
            inodes.add(p[9])
held = set()
for fd in os.listdir("/proc/%s/fd" % pid):
    try:
        link = os.readlink("/proc/%s/fd/%s" % (pid, fd))
    except OSError:
        continue
    if link.startswith("socket:["):
        held.add(link[8:-1])
print(" ".join(sorted(inodes & held)))
print(len(inodes - held))
' "$RELAY_PORT" "$UPSTREAM_PORT" "$1"
}

upgrade_log=$work/upgrade-log/idlereaper.log
# start_upgrade_daemon: the daemon, started by hand on $work/upgrade.toml; its
# pid in $upid.
start_upgrade_daemon() {
    timeout 30 "$BIN" -c "$work/upgrade.toml" </dev/null >"$work/upgrade-start.log" 2>&1 || { sed 's/^/      /' "$work/upgrade-start.log"; return 1; }
    upid=$(daemon_pid) || { note "no live idlereaper pid in $PIDFILE"; return 1; }
    note "pid $upid runs $("$BIN" -V), logs to $upgrade_log"
}
# start_client N: the client with N connections and the stream, in the
# background ($client_pid); returns once they are open, and the relay sockets
# pid $upid holds are in $work/sockets.before.
start_client() {
    rm -f "$work/client.ready" "$work/client.go"
    "$PY" "$work/upgrade_client.py" "$RELAY_PORT" "$1" "$work/client.ready" "$work/client.go" \
        </dev/null >"$work/client.out" 2>&1 &
    client_pid=$!
    local i
    for i in $(seq 1 600); do
        [ -e "$work/client.ready" ] && break
        alive "$client_pid" || break
        sleep 0.1
    done
    [ -e "$work/client.ready" ] || { note "client not ready:"; sed 's/^/      /' "$work/client.out"; return 1; }
    relay_sockets "$upid" >"$work/sockets.before" || return 1
    local held missing
    held=$(head -n 1 "$work/sockets.before" | wc -w)
    missing=$(tail -n 1 "$work/sockets.before")
    note "pid $upid holds $held relay sockets ($missing elsewhere)"
    [ "$held" -eq $((2 * ($1 + 1))) ] && [ "$missing" -eq 0 ]
}
# same_sockets: pid $upid holds exactly the relay sockets it held at
# start_client, and no relay socket is held elsewhere.
same_sockets() {
    relay_sockets "$upid" >"$work/sockets.after" || return 1
    note "pid $upid holds $(head -n 1 "$work/sockets.after" | wc -w) relay sockets ($(tail -n 1 "$work/sockets.after") elsewhere)"
    [ "$(head -n 1 "$work/sockets.after")" = "$(head -n 1 "$work/sockets.before")" ] \
        && [ "$(tail -n 1 "$work/sockets.after")" -eq 0 ]
}
# client_done: tells the client to finish (round trips, end of the stream)
# and returns its verdict.
client_done() {
    local i s
    touch "$work/client.go"
    for i in $(seq 1 900); do
        alive "$client_pid" || break
        sleep 0.1
    done
    if alive "$client_pid"; then
        note "client still running after 90 s"
        kill "$client_pid"
    fi
    wait "$client_pid"
    s=$?
    client_pid=
    sed 's/^/      client: /' "$work/client.out"
    [ "$s" -eq 0 ]
}
upgrade_setup() {
    chmod 0711 "$work" || return 1
    install -d -o "$USER_NAME" -g "$USER_NAME" -m 0755 "$work/upgrade-log" || return 1
    sed "s|^log = \"syslog\"|log = \"$upgrade_log\"|" "$CONF" >"$work/upgrade.toml" || return 1
    chmod 0644 "$work/upgrade.toml"
    grep -q "^log = \"$upgrade_log\"" "$work/upgrade.toml" || { note "no log = line in $CONF"; return 1; }
    [ "$(dpkg-query -W -f='${Version}' "$PKG")" = "$cur_version-1" ] || { note "installed: $(dpkg-query -W -f='${Version}' "$PKG")"; return 1; }
    start_upgrade_daemon && start_client "$UPGRADE_CONNS"
}
upid=
if [ -z "$deb_next" ]; then
    fail "upgrade in place: no second package to upgrade to"
elif step "upgrade: $cur_version-1 installed, daemon started by hand, $UPGRADE_CONNS connections and a stream open through it" upgrade_setup; then
    dpkg_upgrade() {
        local s
        timeout 300 dpkg -i "$deb_next" </dev/null >"$work/dpkg-upgrade.log" 2>&1
        s=$?
        sed 's/^/      dpkg: /' "$work/dpkg-upgrade.log"
        [ "$s" -eq 0 ] || { note "exit status $s"; return 1; }
        [ "$(dpkg-query -W -f='${Version} ${db:Status-Abbrev}' "$PKG")" = "$next_version-1 ii " ]
    }
    step "upgrade: dpkg -i of $next_version-1 over the running daemon" dpkg_upgrade

    same_process() {
        local exe now
        now=$(daemon_pid)
        exe=$(readlink "/proc/$upid/exe")
        note "pidfile: ${now:-none}; /proc/$upid/exe -> $exe"
        [ "$now" = "$upid" ] && [ "$exe" = "$BIN" ] \
            && grep -q "^idlereaper: pid $upid now runs $next_version" "$work/dpkg-upgrade.log"
    }
    step "upgrade: the same pid $upid runs the new $BIN (not \"(deleted)\"), postinst says so" same_process
    through_control() {
        grep -q "upgrading pid $upid in place (idlereaperctl upgrade)" "$work/dpkg-upgrade.log" \
            && ! grep -q "trying SIGUSR2" "$work/dpkg-upgrade.log" \
            && /usr/sbin/idlereaperctl show conns | grep -c " relaying " >"$work/ctl-conns" \
            && note "idlereaperctl show conns: $(cat "$work/ctl-conns") relaying" \
            && [ "$(cat "$work/ctl-conns")" -ge "$UPGRADE_CONNS" ]
    }
    step "upgrade: postinst asked through the control socket (idlereaperctl upgrade), which shows every connection after" through_control

    version_shown() {
        local v i line
        v=$("$BIN" -V)
        note "$BIN -V: $v"
        for i in $(seq 1 100); do
            line=$(grep -E "upgraded from=[^ ]+ to=[^ ]+ connections=[0-9]+ listeners=[0-9]+ pause_ms=[0-9.]+" "$upgrade_log" 2>/dev/null | tail -n 1)
            [ -n "$line" ] && break
            sleep 0.1
        done
        note "log: ${line:-no 'upgraded from=... to=...' line}"
        [ "$v" = "idlereaper $next_version" ] || return 1
        grep -qE "upgraded from=$cur_version to=$next_version connections=[0-9]+ listeners=[0-9]+ pause_ms=[0-9.]+" <<<"$line" || return 1
        local n
        n=$(sed -n 's/.* connections=\([0-9]*\) .*/\1/p' <<<"$line")
        [ "${n:-0}" -ge $((UPGRADE_CONNS + 1)) ] || { note "connections=$n, expected at least $((UPGRADE_CONNS + 1))"; return 1; }
    }
    step "upgrade: idlereaper -V and the log line 'upgraded from=$cur_version to=$next_version connections=N ...' show the new version" version_shown

    step "upgrade: pid $upid still holds the very same $((2 * (UPGRADE_CONNS + 1))) relay sockets" same_sockets

    step "upgrade: all $UPGRADE_CONNS connections echo after it, the stream's bytes and checksum match" client_done

    pid=$upid
    step "upgrade: kill -TERM \$(cat $PIDFILE) stops the upgraded daemon, pidfile removed" term_stops
    grep -E 'ERROR|WARN' "$upgrade_log" | sed 's/^/      log: /'

    # A refused upgrade changes nothing: the daemon keeps running its code with
    # every connection, postinst says why and how to retry, and
    # dpkg-reconfigure retries once the cause is gone. The cause here: the
    # daemon's configuration file no longer passes the new binary's --check,
    # which the daemon runs before it freezes anything. The package installed
    # over it is the first one again (a downgrade): the only other version at
    # hand.
    REFUSAL_CONNS=20
    refusal_setup() {
        start_upgrade_daemon && start_client "$REFUSAL_CONNS" || return 1
        cp "$work/upgrade.toml" "$work/upgrade.toml.good" || return 1
        printf '\n[daemon]\n' >>"$work/upgrade.toml" # a second [daemon] table
        if "$BIN" --check -c "$work/upgrade.toml" >"$work/broken-check.log" 2>&1; then
            note "idlereaper --check accepts the broken file"
            return 1
        fi
        note "check: $(tail -n 1 "$work/broken-check.log")"
    }
    if step "refused upgrade: $next_version-1 started by hand, $REFUSAL_CONNS connections and a stream, then its config file broken" refusal_setup; then
        refused() {
            local s exe
            timeout 300 dpkg -i "$deb" </dev/null >"$work/dpkg-refused.log" 2>&1
            s=$?
            sed 's/^/      dpkg: /' "$work/dpkg-refused.log"
            [ "$s" -eq 0 ] || { note "exit status $s"; return 1; }
            exe=$(readlink "/proc/$upid/exe")
            note "pidfile: $(daemon_pid); /proc/$upid/exe -> $exe"
            note "log: $(grep 'upgrade refused: ' "$upgrade_log" | tail -n 1)"
            [ "$(daemon_pid)" = "$upid" ] && [ "$exe" = "$BIN (deleted)" ] \
                && grep -q "^idlereaper: pid $upid did not upgrade in place" "$work/dpkg-refused.log" \
                && grep -q "dpkg-reconfigure idlereaper" "$work/dpkg-refused.log" \
                && grep -q "upgrade refused: .*rejects the configuration" "$upgrade_log"
        }
        step "refused upgrade: dpkg -i of $cur_version-1 succeeds; pid $upid runs on with $next_version; postinst says why and how to retry" refused
        step "refused upgrade: pid $upid still holds the very same $((2 * (REFUSAL_CONNS + 1))) relay sockets" same_sockets

        retried() {
            local s line
            cp "$work/upgrade.toml.good" "$work/upgrade.toml" || return 1
            timeout 120 dpkg-reconfigure "$PKG" </dev/null >"$work/reconfigure.log" 2>&1
            s=$?
            sed 's/^/      dpkg-reconfigure: /' "$work/reconfigure.log"
            [ "$s" -eq 0 ] || { note "exit status $s"; return 1; }
            for _ in $(seq 1 100); do
                line=$(grep -E "upgraded from=$next_version to=$cur_version " "$upgrade_log" | tail -n 1)
                [ -n "$line" ] && break
                sleep 0.1
            done
            [ -n "$line" ] || line="no \"upgraded from=$next_version to=$cur_version\" line"
            note "log: $line"
            [ "$(daemon_pid)" = "$upid" ] && [ "$(readlink "/proc/$upid/exe")" = "$BIN" ] \
                && grep -q "^idlereaper: pid $upid now runs $cur_version" "$work/reconfigure.log" \
                && grep -qE "connections=$((REFUSAL_CONNS + 1)) " <<<"$line"
        }
        step "refused upgrade: config file fixed, dpkg-reconfigure $PKG upgrades pid $upid in place" retried
        step "refused upgrade: pid $upid still holds the very same relay sockets" same_sockets
        step "refused upgrade: all $REFUSAL_CONNS connections echo afterwards, the stream's bytes and checksum match" client_done
        pid=$upid
        step "refused upgrade: kill -TERM \$(cat $PIDFILE) stops it, pidfile removed" term_stops
    else
        if [ -n "$client_pid" ]; then
            kill "$client_pid" 2>/dev/null
            wait "$client_pid" 2>/dev/null
            client_pid=
        fi
        stop_pid "$upid"
    fi

    idle_upgrade() {
        timeout 300 dpkg -i "$deb_next" </dev/null >"$work/dpkg-idle.log" 2>&1 || { sed 's/^/      /' "$work/dpkg-idle.log"; return 1; }
        grep '^idlereaper:' "$work/dpkg-idle.log" | sed 's/^/      /'
        ! grep -q '^idlereaper:' "$work/dpkg-idle.log" && ! daemon_pid >/dev/null
    }
    step "dpkg -i $next_version-1 with no daemon running: nothing started, nothing said" idle_upgrade
fi

# --- removal with a daemon running ---------------------------------------------
# prerm stops a daemon started by hand, and says so first: which pid, and how
# long its open connections get (daemon.shutdown_timeout of the file it runs
# with: here 3s, with a connection held open, so that the stop takes that
# long). Then that it stopped.
prerm_says() {
    local conf=$work/prerm.toml rpid holder s
    install -d -o "$USER_NAME" -g "$USER_NAME" -m 0755 "$work/prerm-log" || return 1
    sed -e "s|^log = \"syslog\"|log = \"$work/prerm-log/idlereaper.log\"|" \
        -e 's|^shutdown_timeout = .*|shutdown_timeout = "3s"|' "$CONF" >"$conf"
    chmod 0644 "$conf"
    grep -q '^shutdown_timeout = "3s"$' "$conf" || { note "no shutdown_timeout line in $CONF"; return 1; }
    timeout 30 "$BIN" -c "$conf" </dev/null >"$work/prerm-start.log" 2>&1 \
        || { sed 's/^/      /' "$work/prerm-start.log"; return 1; }
    rpid=$(daemon_pid) || { note "no daemon"; return 1; }
    "$PY" -c '
import socket, sys, time
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
c.sendall(b"held\n")
c.recv(16)
time.sleep(60)' "$RELAY_PORT" </dev/null >/dev/null 2>&1 &
    holder=$!
    sleep 0.5
    timeout 120 dpkg --remove "$PKG" </dev/null >"$work/dpkg-remove.log" 2>&1
    s=$?
    kill "$holder" 2>/dev/null
    wait "$holder" 2>/dev/null
    sed 's/^/      dpkg: /' "$work/dpkg-remove.log"
    [ "$s" -eq 0 ] || { note "exit status $s"; stop_pid "$rpid"; return 1; }
    if alive "$rpid"; then
        note "pid $rpid still runs"
        stop_pid "$rpid"
        return 1
    fi
    grep -qxF "idlereaper: stopping pid $rpid (SIGTERM); waiting up to 3s (daemon.shutdown_timeout in $conf) for its open connections to finish" "$work/dpkg-remove.log" \
        && grep -qxF "idlereaper: pid $rpid stopped" "$work/dpkg-remove.log"
}
step "dpkg --remove with a daemon running: prerm says it stops pid N and waits up to its shutdown_timeout (3s), then that it stopped" prerm_says

# --- purge ------------------------------------------------------------------
purge_ok() {
    timeout 120 dpkg --purge "$PKG" </dev/null >"$work/purge.log" 2>&1 || { sed 's/^/      /' "$work/purge.log"; return 1; }
    local ok=0 f
    for f in "$BIN" "$CONF" "$UNIT" "$RUNDIR" /var/log/idlereaper /usr/share/doc/idlereaper \
        /etc/systemd/system/multi-user.target.wants/idlereaper.service \
        /var/lib/systemd/deb-systemd-helper-enabled/idlereaper.service.dsh-also \
        /var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/idlereaper.service; do
        if [ -e "$f" ] || [ -L "$f" ]; then note "still there: $f"; ok=1; fi
    done
    if dpkg-query -W -f='${db:Status-Status}' "$PKG" 2>/dev/null | grep -qv '^not-installed$'; then
        note "dpkg still knows $PKG"
        ok=1
    fi
    return $ok
}
step "dpkg --purge: binary, conffile, unit, $RUNDIR and systemd state gone" purge_ok
