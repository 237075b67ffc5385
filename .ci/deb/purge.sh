# shellcheck shell=bash
# Purge: dpkg --purge leaves nothing of the package behind: binary, conffile,
# unit, run and log directories, documentation, and the state
# deb-systemd-helper keeps. Sourced by .ci/deb-test.sh.

purge_ok() {
    timeout 120 dpkg --purge "$PKG" </dev/null >"$work/purge.log" 2>&1 || { show "$work/purge.log"; return 1; }
    local ok=0 f
    for f in "$BIN" "$CONF" "$UNIT" "$RUNDIR" /var/log/idlereaper /usr/share/doc/idlereaper \
        /etc/systemd/system/multi-user.target.wants/idlereaper.service \
        /var/lib/systemd/deb-systemd-helper-enabled/idlereaper.service.dsh-also \
        /var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/idlereaper.service; do
        if [ -e "$f" ] || [ -L "$f" ]; then note "still there: $f"; ok=1; fi
    done
    if pkg_present; then
        note "dpkg still knows $PKG"
        ok=1
    fi
    return $ok
}
step "dpkg --purge: binary, conffile, unit, $RUNDIR and systemd state gone" purge_ok
