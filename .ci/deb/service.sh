# shellcheck shell=bash
# Service: the daemon as its systemd unit runs it. systemd is not PID 1 here,
# so the unit is imitated with setpriv: its User=, Group=,
# CapabilityBoundingSet=, AmbientCapabilities= and NoNewPrivileges=, a fresh
# /run/idlereaper owned by User= (RuntimeDirectory=), and its ExecStart=
# command in the foreground. HUP is what ExecReload= sends. The exit status
# after an admin's kill -TERM is what systemd would see. Sourced by
# .ci/deb-test.sh.

# unit_value KEY: the last KEY= value in the packaged unit.
unit_value() { sed -n "s/^$1=//p" "$UNIT" | tail -n 1; }
# capset "CAP_A CAP_B": the same set in setpriv's words, "-all,+a,+b".
capset() {
    local c set=-all
    for c in $1; do
        c=${c#CAP_}
        set="$set,+${c,,}"
    done
    echo "$set"
}
# fg_ready: the foreground daemon wrote its pidfile and listens.
fg_ready() { [ "$(cat "$PIDFILE" 2>/dev/null)" = "$fg_pid" ] && port_taken "$RELAY_PORT"; }
fg_ready_or_dead() { fg_ready || gone "$fg_pid"; }

# fg_logged LOG: LOG has the lines of a relayed connection's close, of the
# reload on SIGHUP and of the statistics on SIGUSR1.
fg_logged() {
    local logged=0
    grep -q 'conn closed id=[0-9]* listener=[^ ]* client=127\.0\.0\.1:[0-9]* reason=client_closed lifetime_ms=[0-9]* bytes_from_client=25 bytes_from_upstream=25' "$1" \
        || { note "no 'conn closed ... reason=client_closed ... bytes_from_client=25 bytes_from_upstream=25' line"; logged=1; }
    grep -q 'INFO reloaded ' "$1" || { note "no 'reloaded' line for SIGHUP"; logged=1; }
    grep -q 'stats .*connections=' "$1" || { note "no stats line for SIGUSR1"; logged=1; }
    return $logged
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
    wait_until 100 fg_ready_or_dead && fg_ready && ready=1
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
    show "$work/fg.log" log
    note "exit status $s"
    local logged=1
    fg_logged "$work/fg.log" || logged=0
    [ -e "$PIDFILE" ] && note "$PIDFILE still there"
    [ "$ready" = 1 ] && [ "$s" -eq 0 ] && [ ! -e "$PIDFILE" ] && [ "$logged" = 1 ]
}
step "as the unit runs it: relays as $USER_NAME, logs, survives HUP/USR1, exits 0 on TERM" systemd_like
