# shellcheck shell=bash
# Log rotation: the packaged /etc/logrotate.d/idlereaper on a daemon (started
# by hand, as root: it drops to _idlereaper) that logs to a file in the
# packaged log directory. logrotate -f renames the file, creates a new one and
# sends SIGUSR1 (postrotate); the daemon reopens, writes to the new file (the
# statistics line USR1 logs, then a connection's close line), and the rotated
# file no longer grows. Twice, so that the first generation gets compressed
# too. Sourced by .ci/deb-test.sh.

ROTATED_LOG=/var/log/idlereaper/idlereaper.log

# rotate N: logrotate -f with the packaged file, then waits for the daemon to
# log its statistics line in the new file; the Nth rotation.
rotate() {
    timeout 60 logrotate -f -s "$work/logrotate.state" /etc/logrotate.d/idlereaper >"$work/logrotate-$1.log" 2>&1 \
        || { note "logrotate (rotation $1) failed:"; show "$work/logrotate-$1.log" logrotate; return 1; }
    wait_until 100 grep -q ' stats connections=' "$ROTATED_LOG" 2>/dev/null && return 0
    note "rotation $1: no statistics line in the new $ROTATED_LOG (the daemon did not reopen)"
    return 1
}
# closes_in FILE: the number of close lines in FILE.
closes_in() { grep -c ' conn closed ' "$1" 2>/dev/null || true; }
# closed_in FILE: FILE has a close line.
closed_in() { [ "$(closes_in "$1")" -ge 1 ]; }

logrotate_reopens() {
    local conf=$work/logrotate.toml rpid before after
    if ! command -v logrotate >/dev/null; then
        apt_install logrotate "$work/apt-logrotate.log" || return 1
    fi
    rm -f "$ROTATED_LOG" "$ROTATED_LOG".*
    config_logging_to "$ROTATED_LOG" "$conf"
    start_by_hand "$conf" "$work/logrotate-start.log" || return 1
    rpid=$started_pid
    relay "$RELAY_PORT" >/dev/null || { stop_pid "$rpid"; return 1; }
    wait_until 50 closed_in "$ROTATED_LOG"
    local ok=1
    rotate 1 || ok=0
    if [ "$ok" = 1 ]; then
        before=$(stat -c %s "$ROTATED_LOG.1")
        relay "$RELAY_PORT" >/dev/null || ok=0
        wait_until 50 closed_in "$ROTATED_LOG"
        after=$(stat -c %s "$ROTATED_LOG.1")
        note "rotated file $ROTATED_LOG.1: $before bytes, then $after after a connection; new file: $(closes_in "$ROTATED_LOG") close line(s), owned by $(stat -c %U:%G "$ROTATED_LOG")"
        closed_in "$ROTATED_LOG" && [ "$before" = "$after" ] || ok=0
        [ "$(stat -c %U:%G "$ROTATED_LOG")" = "$USER_NAME:$USER_NAME" ] || ok=0
    fi
    if [ "$ok" = 1 ]; then
        rotate 2 || ok=0
        note "after a second rotation: $(cd /var/log/idlereaper && ls | tr '\n' ' ')"
        [ -f "$ROTATED_LOG.2.gz" ] && [ -f "$ROTATED_LOG.1" ] || ok=0
    fi
    stop_pid "$rpid"
    rm -f "$ROTATED_LOG" "$ROTATED_LOG".*
    [ "$ok" = 1 ]
}
step "logrotate -f with the packaged file: the daemon reopens its log, writes to the new file, the rotated one stops growing" logrotate_reopens
