# shellcheck shell=bash
# A refused upgrade changes nothing: the daemon keeps running its code with
# every connection, postinst says why and how to retry, and dpkg-reconfigure
# retries once the cause is gone. The cause here: the daemon's configuration
# file no longer passes the new binary's --check, which the daemon runs
# before it freezes anything. The package installed over it is the first one
# again (a downgrade): the only other version at hand. Runs after the upgrade
# in place (upgrade.sh), on the daemon and client of held-connections.sh.
# Sourced by .ci/deb-test.sh.

[ "$upgrade_ran" = 1 ] || return 0

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

refused() {
    local s exe
    timeout 300 dpkg -i "$deb" </dev/null >"$work/dpkg-refused.log" 2>&1
    s=$?
    show "$work/dpkg-refused.log" dpkg
    [ "$s" -eq 0 ] || { note "exit status $s"; return 1; }
    exe=$(readlink "/proc/$upid/exe")
    note "pidfile: $(daemon_pid); /proc/$upid/exe -> $exe"
    note "log: $(grep 'upgrade refused: ' "$upgrade_log" | tail -n 1)"
    [ "$(daemon_pid)" = "$upid" ] && [ "$exe" = "$BIN (deleted)" ] \
        && grep -q "^idlereaper: pid $upid did not upgrade in place" "$work/dpkg-refused.log" \
        && grep -q "dpkg-reconfigure idlereaper" "$work/dpkg-refused.log" \
        && grep -q "upgrade refused: .*rejects the configuration" "$upgrade_log"
}

retried() {
    local s line
    cp "$work/upgrade.toml.good" "$work/upgrade.toml" || return 1
    timeout 120 dpkg-reconfigure "$PKG" </dev/null >"$work/reconfigure.log" 2>&1
    s=$?
    show "$work/reconfigure.log" dpkg-reconfigure
    [ "$s" -eq 0 ] || { note "exit status $s"; return 1; }
    line=$(upgraded_line "$next_version to=$cur_version ")
    [ -n "$line" ] || line="no \"upgraded from=$next_version to=$cur_version\" line"
    note "log: $line"
    [ "$(daemon_pid)" = "$upid" ] && [ "$(readlink "/proc/$upid/exe")" = "$BIN" ] \
        && grep -q "^idlereaper: pid $upid now runs $cur_version" "$work/reconfigure.log" \
        && grep -qE "connections=$((REFUSAL_CONNS + 1)) " <<<"$line"
}

if step "refused upgrade: $next_version-1 started by hand, $REFUSAL_CONNS connections and a stream, then its config file broken" refusal_setup; then
    step "refused upgrade: dpkg -i of $cur_version-1 succeeds; pid $upid runs on with $next_version; postinst says why and how to retry" refused
    step "refused upgrade: pid $upid still holds the very same $((2 * (REFUSAL_CONNS + 1))) relay sockets" same_sockets
    step "refused upgrade: config file fixed, dpkg-reconfigure $PKG upgrades pid $upid in place" retried
    step "refused upgrade: pid $upid still holds the very same relay sockets" same_sockets
    step "refused upgrade: all $REFUSAL_CONNS connections echo afterwards, the stream's bytes and checksum match" client_done
    step "refused upgrade: kill -TERM \$(cat $PIDFILE) stops it, pidfile removed" term_stops "$upid"
else
    end_child "$client_pid"
    client_pid=
    stop_pid "$upid"
fi
