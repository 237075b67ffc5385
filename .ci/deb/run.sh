# shellcheck shell=bash
# Run: the echo upstream the packaged relay listener points to, then the
# daemon started as the package's start hint says (idlereaper, no
# arguments): it relays, runs as its user, owns its run directory, refuses a
# second instance, and stops on kill -TERM. Sourced by .ci/deb-test.sh.

"$PY" "$DEB_DIR/echo_upstream.py" "$UPSTREAM_PORT" </dev/null >"$work/upstream.log" 2>&1 &
upstream_pid=$!
wait_until 50 port_taken "$UPSTREAM_PORT" || abort "test upstream on 127.0.0.1:$UPSTREAM_PORT did not come up"

# The daemonized instance runs on the packaged config. Without a syslog socket (a
# container) it refuses to daemonize with log = "syslog" (a daemon must not write to the
# terminal); check that, then run it on a copy that logs to a file.
start_args=()
if [ ! -S /dev/log ]; then
    no_syslog_refused() {
        local s
        timeout 30 "$BIN" </dev/null >"$work/nosyslog.log" 2>&1
        s=$?
        show "$work/nosyslog.log"
        note "exit status $s"
        [ "$s" -eq 2 ] && grep -q 'daemon.log' "$work/nosyslog.log" && ! daemon_pid >/dev/null
    }
    step "no /dev/log: daemonizing with log = \"syslog\" is refused (exit 2, names daemon.log)" no_syslog_refused
    config_logging_to "$work/daemon.log" "$work/idlereaper.toml"
    start_args=(-c "$work/idlereaper.toml")
    note "the daemon below runs on $CONF with log = \"$work/daemon.log\""
fi

start_ok() {
    timeout 30 "$BIN" "${start_args[@]}" </dev/null >"$work/start.log" 2>&1
    local s=$?
    show "$work/start.log"
    [ "$s" -eq 0 ] || { note "exit status $s"; return 1; }
    daemon_pid >/dev/null || { note "no live idlereaper pid in $PIDFILE"; return 1; }
    note "pid $(daemon_pid)"
}
if ! step "idlereaper with no arguments starts (exit 0, pidfile with a live pid)" start_ok; then
    abort "daemon did not start from the packaged config"
fi
pid=$(daemon_pid)

step "relay: bytes through 127.0.0.1:$RELAY_PORT come back from the upstream" relay "$RELAY_PORT"

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
    show "$work/second.log"
    note "exit status $s"
    [ "$s" -ne 0 ] && [ "$s" -ne 124 ] && grep -q "pid $pid" "$work/second.log" \
        && [ "$(daemon_pid)" = "$pid" ]
}
step "a second idlereaper is refused, naming pid $pid; the first keeps running" second_refused

step "kill -TERM \$(cat $PIDFILE): process gone, pidfile removed" term_stops "$pid"
