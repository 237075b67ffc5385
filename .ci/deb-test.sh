#!/usr/bin/env bash
# Install test of the Debian package: build it, lint it, install it,
# check what postinst made and said, run the daemon from the packaged
# /etc/idlereaper.toml, run it as its systemd unit would, rotate its log with
# the packaged logrotate file, upgrade it in place under a running daemon to
# a second package one version up, remove it with a daemon running (what
# prerm says), purge it.
#
#   bash .ci/deb-test.sh        (as root, from anywhere in the repository)
#
# The checks are in .ci/deb/, one file per subject, run in the order sourced
# at the end of this file; .ci/deb/lib.sh holds what they share, and the
# Python programs beside them talk to the relay. Every check prints one PASS
# or FAIL line, with what it saw indented below.
#
# It changes the machine (installs the package, creates the _idlereaper user)
# and puts everything back on exit, also when a step fails or it is
# interrupted: the EXIT trap stops what it started, purges the package and
# removes the user if it did not exist before. Every wait is bounded; nothing
# reads standard input. The last line is "deb-test: N passed, M failed".
set -u
export DEBIAN_FRONTEND=noninteractive
export LC_ALL=C

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
. .ci/deb/lib.sh

installed_by_us=0
user_existed=1
upstream_pid=
fg_pid=
client_pid=
work=$(mktemp -d /tmp/deb-test.XXXXXX)
next_src=$PWD/target/deb-test-next   # the tree of the second package (upgrade test)

# Puts the machine back: stops what the test started, purges the package,
# removes the user it created; then prints the count.
cleanup() {
    local status=$?
    set +e
    trap - EXIT INT TERM
    # The upgrade test's client first: its open connections would make the
    # daemon's graceful stop wait.
    end_child "$client_pid"
    # Daemons we started: the packaged one (by its pidfile), the foreground one,
    # and any process still running the binary this test installed.
    stop_pid "$(daemon_pid)"
    stop_pid "$fg_pid"
    if [ "$installed_by_us" = 1 ]; then
        for exe in /proc/[0-9]*/exe; do
            if [ "$(readlink "$exe" 2>/dev/null)" = "$BIN" ]; then
                pid=${exe#/proc/}
                stop_pid "${pid%/exe}"
            fi
        done
    fi
    end_child "$upstream_pid"
    if [ "$installed_by_us" = 1 ] && pkg_present; then
        echo "cleanup: purging $PKG"
        timeout 120 dpkg --purge "$PKG" </dev/null >/dev/null 2>&1 || echo "cleanup: dpkg --purge $PKG failed"
    fi
    # The package keeps its system user on purge (Debian practice); the test
    # removes it when it created it, to leave the machine as it found it.
    if [ "$user_existed" = 0 ] && getent passwd "$USER_NAME" >/dev/null; then
        deluser --system --quiet "$USER_NAME" >/dev/null 2>&1 || echo "cleanup: could not remove user $USER_NAME"
    fi
    if [ "$user_existed" = 0 ] && getent group "$USER_NAME" >/dev/null; then
        delgroup --system --quiet "$USER_NAME" >/dev/null 2>&1 || echo "cleanup: could not remove group $USER_NAME"
    fi
    rm -rf "$work" "$next_src"
    [ "$status" -eq 0 ] && [ "$failed" -gt 0 ] && status=1
    echo "deb-test: $passed passed, $failed failed"
    exit "$status"
}
trap cleanup EXIT
trap 'echo "deb-test: interrupted"; exit 130' INT TERM

# Preconditions: root, no idlereaper package here already, the ports free.
[ "$(id -u)" -eq 0 ] || abort "must run as root"
pkg_present && abort "$PKG is already installed here; this test would remove it (purge it first)"
getent passwd "$USER_NAME" >/dev/null || user_existed=0
for port in $UPSTREAM_PORT $RELAY_PORT $SINK_PORT; do
    port_free "$port" || abort "port 127.0.0.1:$port is in use; the test needs it"
done

. .ci/deb/build.sh           # the package, and a second one a version up
. .ci/deb/lintian.sh         # no lintian errors or warnings
. .ci/deb/install.sh         # dpkg -i: files, user, what postinst made and said
. .ci/deb/run.sh             # started by hand: relays, its user, one instance, TERM
. .ci/deb/service.sh         # as the systemd unit runs it, imitated with setpriv
. .ci/deb/logrotate.sh       # the packaged logrotate file on a running daemon
. .ci/deb/upgrade.sh         # dpkg -i of the next version under a busy daemon
. .ci/deb/upgrade-refused.sh # an upgrade the daemon refuses, then retried
. .ci/deb/upgrade-idle.sh    # an upgrade with no daemon running
. .ci/deb/upgrade-signal.sh  # an upgrade by SIGUSR2, without a control socket
. .ci/deb/remove.sh          # dpkg --remove with a daemon running: what prerm says
. .ci/deb/purge.sh           # dpkg --purge leaves nothing behind
