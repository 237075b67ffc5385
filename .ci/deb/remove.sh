# shellcheck shell=bash
# Removal with a daemon running: prerm stops a daemon started by hand, and
# says so first: which pid, and how long its open connections get
# (daemon.shutdown_timeout of the file it runs with: here 3s, with a
# connection held open, so that the stop takes that long). Then that it
# stopped. Sourced by .ci/deb-test.sh.

prerm_says() {
    local conf=$work/prerm.toml rpid holder s log=$work/dpkg-remove.log
    log_dir "$work/prerm-log" || return 1
    config_logging_to "$work/prerm-log/idlereaper.log" "$conf" || return 1
    sed -i 's|^shutdown_timeout = .*|shutdown_timeout = "3s"|' "$conf"
    grep -q '^shutdown_timeout = "3s"$' "$conf" || { note "no shutdown_timeout line in $CONF"; return 1; }
    start_by_hand "$conf" "$work/prerm-start.log" || return 1
    rpid=$started_pid
    "$PY" "$DEB_DIR/hold_connection.py" "$RELAY_PORT" 60 </dev/null >/dev/null 2>&1 &
    holder=$!
    sleep 0.5
    timeout 120 dpkg --remove "$PKG" </dev/null >"$log" 2>&1
    s=$?
    end_child "$holder"
    show "$log" dpkg
    [ "$s" -eq 0 ] || { note "exit status $s"; stop_pid "$rpid"; return 1; }
    if alive "$rpid"; then
        note "pid $rpid still runs"
        stop_pid "$rpid"
        return 1
    fi
    grep -qxF "idlereaper: stopping pid $rpid (SIGTERM); waiting up to 3s (daemon.shutdown_timeout in $conf) for its open connections to finish" "$log" \
        && grep -qxF "idlereaper: pid $rpid stopped" "$log"
}
step "dpkg --remove with a daemon running: prerm says it stops pid N and waits up to its shutdown_timeout (3s), then that it stopped" prerm_says
