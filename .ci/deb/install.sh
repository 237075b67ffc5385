# shellcheck shell=bash
# Install: dpkg -i, then what the package put in place (conffiles, files, the
# system user), a reinstallation over itself, what postinst made and said,
# and the packaged config. Sourced by .ci/deb-test.sh.

installed_by_us=1
if timeout 300 dpkg -i "$deb" </dev/null >"$work/dpkg-i.log" 2>&1; then
    pass "dpkg -i"
else
    show "$work/dpkg-i.log"
    abort "dpkg -i"
fi

conffiles=$(dpkg-query -W -f='${Conffiles}' "$PKG")
step "conffile $CONF registered" grep -q "^ $CONF [0-9a-f]\{32\}\$" <<<"$conffiles"
step "conffile /etc/logrotate.d/idlereaper registered" grep -q "^ /etc/logrotate.d/idlereaper [0-9a-f]\{32\}\$" <<<"$conffiles"

files_in_place() {
    local f ok=0
    for f in "$BIN" "$CONF" "$UNIT" "$CTL" /usr/share/man/man8/idlereaperctl.8.gz \
        /usr/share/man/man8/idlereaper.8.gz /usr/share/man/man5/idlereaper.toml.5.gz \
        /usr/share/doc/idlereaper/copyright /usr/share/doc/idlereaper/changelog.Debian.gz; do
        [ -f "$f" ] || { note "missing: $f"; ok=1; }
    done
    if [ ! -x "$BIN" ] || [ ! -x "$CTL" ]; then note "not executable: $BIN or idlereaperctl"; ok=1; fi
    return $ok
}
step "binaries (idlereaper, idlereaperctl), config, unit, man pages, copyright, changelog in place" files_in_place

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

reinstall() {
    timeout 300 dpkg -i "$deb" </dev/null >"$work/dpkg-i2.log" 2>&1 || { show "$work/dpkg-i2.log"; return 1; }
}
step "reinstall over itself (postinst is idempotent)" reinstall

# What postinst made and said: the log directory for a log file, owned by the
# daemon's user (logrotate rotates it as that user). On a first installation
# where systemd does not run, postinst says the daemon was not started and
# how to start and stop it; a reinstallation says nothing of the kind.
log_directory_made() {
    local d=/var/log/idlereaper
    [ -d "$d" ] || { note "no $d"; return 1; }
    note "$d: $(stat -c '%U:%G mode %a' "$d")"
    [ "$(stat -c '%U:%G %a' "$d")" = "$USER_NAME:$USER_NAME 750" ]
}
step "postinst: /var/log/idlereaper made, owned by $USER_NAME, mode 750" log_directory_made

start_hint_said() {
    local log=$work/dpkg-i.log
    grep '^idlereaper:' "$log" | sed 's/^/      dpkg -i: /'
    if grep -q 'daemon was not started' "$work/dpkg-i2.log"; then
        note "the reinstallation said it too"
        return 1
    fi
    if [ -d /run/systemd/system ]; then
        ! grep -q 'daemon was not started' "$log"
        return
    fi
    grep -qxF "idlereaper: systemd is not running, so the daemon was not started." "$log" \
        && grep -qxF "idlereaper: Start it as root with: idlereaper" "$log" \
        && grep -qxF "idlereaper: Stop it with: kill -TERM \$(cat $PIDFILE)" "$log" \
        && { [ -S /dev/log ] || grep -q '^idlereaper: There is no syslog socket (/dev/log)' "$log"; }
}
step "postinst: without a running systemd, the first dpkg -i says the daemon was not started, and how to start and stop it" start_hint_said

config_ok() {
    grep -q "^user = \"$USER_NAME\"" "$CONF" && grep -q "^group = \"$USER_NAME\"" "$CONF" \
        && timeout 10 "$BIN" --check </dev/null >"$work/check.log" 2>&1
    local s=$?
    show "$work/check.log"
    return $s
}
step "packaged config sets user/group $USER_NAME and passes idlereaper --check" config_ok
