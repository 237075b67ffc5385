# shellcheck shell=bash
# Upgrade in place: installing a newer package over a running daemon does not
# restart it. postinst asks the daemon (idlereaperctl upgrade) to re-execute
# the new /usr/sbin/idlereaper in the same process, keeping its listeners and
# every connection. The daemon is started by hand as in run.sh (no systemd
# here), on a copy of the packaged config that logs to a file the test reads
# (also where /dev/log exists), in a directory _idlereaper may write to: the
# re-executed daemon has already dropped privileges. Through it run
# $UPGRADE_CONNS connections, each with an echo round trip before and after
# the upgrade, and one stream that keeps moving bytes throughout and compares
# checksums at the end (held-connections.sh). Sets $upgrade_ran when the setup
# passed, for upgrade-refused.sh and upgrade-idle.sh. Sourced by
# .ci/deb-test.sh.

. .ci/deb/held-connections.sh

UPGRADE_CONNS=200
upgrade_ran=0

upgrade_setup() {
    chmod 0711 "$work" || return 1
    log_dir "$work/upgrade-log" || return 1
    config_logging_to "$upgrade_log" "$work/upgrade.toml" || return 1
    grep -q "^log = \"$upgrade_log\"" "$work/upgrade.toml" || { note "no log = line in $CONF"; return 1; }
    [ "$(dpkg-query -W -f='${Version}' "$PKG")" = "$cur_version-1" ] || { note "installed: $(dpkg-query -W -f='${Version}' "$PKG")"; return 1; }
    start_upgrade_daemon && start_client "$UPGRADE_CONNS"
}

dpkg_upgrade() {
    local s
    timeout 300 dpkg -i "$deb_next" </dev/null >"$work/dpkg-upgrade.log" 2>&1
    s=$?
    show "$work/dpkg-upgrade.log" dpkg
    [ "$s" -eq 0 ] || { note "exit status $s"; return 1; }
    [ "$(dpkg-query -W -f='${Version} ${db:Status-Abbrev}' "$PKG")" = "$next_version-1 ii " ]
}

same_process() {
    local exe now
    now=$(daemon_pid)
    exe=$(readlink "/proc/$upid/exe")
    note "pidfile: ${now:-none}; /proc/$upid/exe -> $exe"
    [ "$now" = "$upid" ] && [ "$exe" = "$BIN" ] \
        && grep -q "^idlereaper: pid $upid now runs $next_version" "$work/dpkg-upgrade.log"
}

through_control() {
    grep -q "upgrading pid $upid in place (idlereaperctl upgrade)" "$work/dpkg-upgrade.log" \
        && ! grep -q "trying SIGUSR2" "$work/dpkg-upgrade.log" \
        && "$CTL" show conns | grep -c " relaying " >"$work/ctl-conns" \
        && note "idlereaperctl show conns: $(cat "$work/ctl-conns") relaying" \
        && [ "$(cat "$work/ctl-conns")" -ge "$UPGRADE_CONNS" ]
}

UPGRADED_FIELDS="connections=[0-9]+ listeners=[0-9]+ pause_ms=[0-9.]+"
version_shown() {
    local v line n
    v=$("$BIN" -V)
    note "$BIN -V: $v"
    line=$(upgraded_line "[^ ]+ to=[^ ]+ $UPGRADED_FIELDS")
    note "log: ${line:-no 'upgraded from=... to=...' line}"
    [ "$v" = "idlereaper $next_version" ] || return 1
    grep -qE "upgraded from=$cur_version to=$next_version $UPGRADED_FIELDS" <<<"$line" || return 1
    n=$(sed -n 's/.* connections=\([0-9]*\) .*/\1/p' <<<"$line")
    [ "${n:-0}" -ge $((UPGRADE_CONNS + 1)) ] || { note "connections=$n, expected at least $((UPGRADE_CONNS + 1))"; return 1; }
}

if [ -z "$deb_next" ]; then
    fail "upgrade in place: no second package to upgrade to"
elif step "upgrade: $cur_version-1 installed, daemon started by hand, $UPGRADE_CONNS connections and a stream open through it" upgrade_setup; then
    upgrade_ran=1
    step "upgrade: dpkg -i of $next_version-1 over the running daemon" dpkg_upgrade
    step "upgrade: the same pid $upid runs the new $BIN (not \"(deleted)\"), postinst says so" same_process
    step "upgrade: postinst asked through the control socket (idlereaperctl upgrade), which shows every connection after" through_control
    step "upgrade: idlereaper -V and the log line 'upgraded from=$cur_version to=$next_version connections=N ...' show the new version" version_shown
    step "upgrade: pid $upid still holds the very same $((2 * (UPGRADE_CONNS + 1))) relay sockets" same_sockets
    step "upgrade: all $UPGRADE_CONNS connections echo after it, the stream's bytes and checksum match" client_done
    step "upgrade: kill -TERM \$(cat $PIDFILE) stops the upgraded daemon, pidfile removed" term_stops "$upid"
    grep -E 'ERROR|WARN' "$upgrade_log" | sed 's/^/      log: /'
fi
