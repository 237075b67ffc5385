# shellcheck shell=bash
# An upgrade in place of a daemon without a control socket: postinst asks by
# SIGUSR2 (idlereaperctl upgrade --pid), the outcome read from /proc, and says
# the same pid runs the new version. The package installed over it is the
# first one again (a downgrade): the only other version at hand. Runs after
# upgrade-idle.sh, on the daemon and client of held-connections.sh.
# Sourced by .ci/deb-test.sh.

[ "$upgrade_ran" = 1 ] || return 0

SIGNAL_CONNS=20

signal_setup() {
    sed -e "s|^log = \"syslog\"|log = \"$upgrade_log\"|" -e '/^\[control\]$/d' \
        -e '\|^socket = "/run/idlereaper/control.sock"$|d' "$CONF" >"$work/upgrade.toml" || return 1
    ! grep -q '^\[control\]' "$work/upgrade.toml" || { note "[control] still in the file"; return 1; }
    start_upgrade_daemon && start_client "$SIGNAL_CONNS"
}

by_signal() {
    local s
    timeout 300 dpkg -i "$deb" </dev/null >"$work/dpkg-signal.log" 2>&1
    s=$?
    show "$work/dpkg-signal.log" dpkg
    [ "$s" -eq 0 ] || { note "exit status $s"; return 1; }
    note "pidfile: $(daemon_pid); /proc/$upid/exe -> $(readlink "/proc/$upid/exe")"
    [ "$(daemon_pid)" = "$upid" ] && [ "$(readlink "/proc/$upid/exe")" = "$BIN" ] \
        && grep -q "trying SIGUSR2 (idlereaperctl upgrade --pid $upid)" "$work/dpkg-signal.log" \
        && grep -q "^idlereaper: pid $upid now runs $cur_version" "$work/dpkg-signal.log"
}

if step "upgrade by signal: $next_version-1 started by hand without a control socket, $SIGNAL_CONNS connections and a stream" signal_setup; then
    step "upgrade by signal: dpkg -i of $cur_version-1; postinst asks by SIGUSR2 and says the same pid $upid runs it" by_signal
    step "upgrade by signal: pid $upid still holds the very same $((2 * (SIGNAL_CONNS + 1))) relay sockets" same_sockets
    step "upgrade by signal: all $SIGNAL_CONNS connections echo afterwards, the stream's bytes and checksum match" client_done
    step "upgrade by signal: kill -TERM \$(cat $PIDFILE) stops it, pidfile removed" term_stops "$upid"
else
    end_child "$client_pid"
    client_pid=
    [ -z "$upid" ] || stop_pid "$upid"
fi
