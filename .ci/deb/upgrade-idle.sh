# shellcheck shell=bash
# An upgrade with no daemon running starts nothing and says nothing. Runs
# after upgrade.sh and upgrade-refused.sh, which stopped their daemons.
# Sourced by .ci/deb-test.sh.

[ "$upgrade_ran" = 1 ] || return 0

idle_upgrade() {
    local log=$work/dpkg-idle.log
    timeout 300 dpkg -i "$deb_next" </dev/null >"$log" 2>&1 || { show "$log"; return 1; }
    grep '^idlereaper:' "$log" | sed 's/^/      /'
    ! grep -q '^idlereaper:' "$log" && ! daemon_pid >/dev/null
}
step "dpkg -i $next_version-1 with no daemon running: nothing started, nothing said" idle_upgrade
