# shellcheck shell=bash
# Connections held across an upgrade in place: the daemon started by hand for
# it ($upid), the client that keeps connections and a stream open through it
# (upgrade_client.py, $client_pid), and the checks that the daemon holds the
# very same relay sockets afterwards and that every byte made it. Sourced by
# upgrade.sh; used by it and upgrade-refused.sh.

upgrade_log=$work/upgrade-log/idlereaper.log
upid=

# start_upgrade_daemon: the daemon, started by hand on $work/upgrade.toml; its
# pid in $upid.
start_upgrade_daemon() {
    upid=
    start_by_hand "$work/upgrade.toml" "$work/upgrade-start.log" || return 1
    upid=$started_pid
    note "pid $upid runs $("$BIN" -V), logs to $upgrade_log"
}

# relay_sockets PID: the relay sockets PID holds, by inode, on one line, and
# how many it does not hold on a second (relay_sockets.py).
relay_sockets() { "$PY" "$DEB_DIR/relay_sockets.py" "$RELAY_PORT" "$UPSTREAM_PORT" "$1"; }

client_ready() { [ -e "$work/client.ready" ] || gone "$client_pid"; }

# start_client N: the client with N connections and the stream, in the
# background ($client_pid); returns once they are open, and the relay sockets
# pid $upid holds are in $work/sockets.before.
start_client() {
    rm -f "$work/client.ready" "$work/client.go"
    "$PY" "$DEB_DIR/upgrade_client.py" "$RELAY_PORT" "$1" "$work/client.ready" "$work/client.go" \
        </dev/null >"$work/client.out" 2>&1 &
    client_pid=$!
    wait_until 600 client_ready
    [ -e "$work/client.ready" ] || { note "client not ready:"; show "$work/client.out"; return 1; }
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
    local s
    touch "$work/client.go"
    wait_until 900 gone "$client_pid"
    if alive "$client_pid"; then
        note "client still running after 90 s"
        kill "$client_pid"
    fi
    wait "$client_pid"
    s=$?
    client_pid=
    show "$work/client.out" client
    [ "$s" -eq 0 ]
}

# upgraded_line PATTERN: waits up to 10 s for the daemon's log line
# "upgraded from=PATTERN" (an extended regular expression) and prints the last
# one, or nothing.
upgraded_line() {
    local line
    for _ in $(seq 1 100); do
        line=$(grep -E "upgraded from=$1" "$upgrade_log" 2>/dev/null | tail -n 1)
        [ -n "$line" ] && break
        sleep 0.1
    done
    echo "$line"
}
