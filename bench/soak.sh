#!/usr/bin/env bash
# Soak test for idlereaper (a script to run by hand, not in CI).
#
# Runs a release idlereaper with three relay listeners and puts mixed load on all of them at once
# for DURATION seconds:
#   churn  short connections (connect, 64-byte request, response, close): `loadgen churn`
#   idle   rounds of HOLD_CONNS connections that relay one byte and then sit idle for HOLD_SECS,
#          longer than the listener's idle timeout, so the daemon reaps them: `loadgen hold`
#   bulk   BULK_STREAMS parallel iperf3 streams in rounds of BULK_ROUND seconds (without iperf3:
#          `loadgen pingpong` with 64 KiB messages)
# Every SAMPLE seconds it records the daemon's descriptors (/proc/<pid>/fd: total and sockets),
# RSS and CPU time.
#
# Growth is judged between two resting points, so that pools filled on first use (relay buffers,
# splice pipes; both bounded) do not count as growth: "start" is measured after a WARMUP-second
# round of the same load has finished and its connections have drained; "end" after the main
# load has finished and drained. The script fails if descriptors grew by more than FD_TOLERANCE
# or RSS by more than RSS_TOLERANCE_KIB between the two, if the daemon died, or if it did not
# stop cleanly on TERM.
#
# Usage: bench/soak.sh                 (10 minutes)
#        DURATION=60 bench/soak.sh     (a quick proof that it works)
# Output: a table of samples on stdout; everything (config, daemon log, load tool output,
# samples.csv) in a temp directory that is printed and kept.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-600}
WARMUP=${WARMUP:-20}
SAMPLE=${SAMPLE:-10}
FD_TOLERANCE=${FD_TOLERANCE:-4}
RSS_TOLERANCE_KIB=${RSS_TOLERANCE_KIB:-2048}
CHURN_THREADS=${CHURN_THREADS:-2}
HOLD_CONNS=${HOLD_CONNS:-1000}
HOLD_SECS=${HOLD_SECS:-8}
HOLD_IDLE_TIMEOUT=${HOLD_IDLE_TIMEOUT:-5s}
BULK_STREAMS=${BULK_STREAMS:-2}
BULK_ROUND=${BULK_ROUND:-15}
BULK_RATE=${BULK_RATE:-2G}          # per iperf3 stream, bits/s (0 = unlimited)
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-60}
SOAK_IP=${SOAK_IP:-127.0.99.1}
BASE_PORT=${BASE_PORT:-19900}

CHURN_PORT=$((BASE_PORT + 1)); HOLD_PORT=$((BASE_PORT + 2)); BULK_PORT=$((BASE_PORT + 3))
ECHO_PORT=$((BASE_PORT + 11)); IPERF_PORT=$((BASE_PORT + 13))

say() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { say "FAIL: $*"; exit 1; }

say "building (release)"
cargo build --release --quiet --bin idlereaper --bin loadgen
BIN=target/release/idlereaper
LOADGEN=target/release/loadgen

WORK=$(mktemp -d /tmp/idlereaper-soak.XXXXXX)
say "work directory: $WORK"

BG_PIDS=()
DAEMON_PID=
cleanup() {
    local p
    for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then kill -KILL "$DAEMON_PID" 2>/dev/null || true; fi
    wait 2>/dev/null || true
}
trap cleanup EXIT

# --- upstreams -----------------------------------------------------------------------------
"$LOADGEN" echo --listen "$SOAK_IP:$ECHO_PORT" >"$WORK/echo.out" 2>&1 &
BG_PIDS+=($!)
if command -v iperf3 >/dev/null; then
    BULK_TOOL=iperf3
    iperf3 -s -B "$SOAK_IP" -p "$IPERF_PORT" >"$WORK/iperf3-server.out" 2>&1 &
    BG_PIDS+=($!)
    BULK_UPSTREAM="$SOAK_IP:$IPERF_PORT"
else
    BULK_TOOL=loadgen
    BULK_UPSTREAM="$SOAK_IP:$ECHO_PORT"
fi

# --- the daemon ------------------------------------------------------------------------------
cat >"$WORK/idlereaper.toml" <<EOF
[daemon]
pidfile = "$WORK/idlereaper.pid"
log = "$WORK/idlereaper.log"
log_level = "warn"   # a close line per connection would be gigabytes at this churn
tick = "1ms"
shutdown_timeout = "5s"

[[listener]]
name = "churn"
listen = "$SOAK_IP:$CHURN_PORT"
upstream = "$SOAK_IP:$ECHO_PORT"
idle_timeout = "10s"

[[listener]]
name = "idle"
listen = "$SOAK_IP:$HOLD_PORT"
upstream = "$SOAK_IP:$ECHO_PORT"
idle_timeout = "$HOLD_IDLE_TIMEOUT"

[[listener]]
name = "bulk"
listen = "$SOAK_IP:$BULK_PORT"
upstream = "$BULK_UPSTREAM"
idle_timeout = "60s"
EOF
"$BIN" -f -c "$WORK/idlereaper.toml" 2>"$WORK/idlereaper.stderr" &
DAEMON_PID=$!
for _ in $(seq 100); do
    [ -s "$WORK/idlereaper.pid" ] && break
    kill -0 "$DAEMON_PID" 2>/dev/null || die "idlereaper exited at start: $(cat "$WORK/idlereaper.stderr")"
    sleep 0.1
done
[ "$(cat "$WORK/idlereaper.pid" 2>/dev/null)" = "$DAEMON_PID" ] || die "idlereaper not ready"
sleep 0.5 # the upstreams' listeners
say "idlereaper pid $DAEMON_PID, bulk via $BULK_TOOL"

# --- measurements ----------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
fds() { find "/proc/$DAEMON_PID/fd" -mindepth 1 2>/dev/null | wc -l; }
sockets() { find "/proc/$DAEMON_PID/fd" -mindepth 1 -lname 'socket:*' 2>/dev/null | wc -l; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$DAEMON_PID/status"; }
cpu_s() { awk -v hz="$CLK_TCK" '{ sub(/.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$DAEMON_PID/stat"; }
alive() { kill -0 "$DAEMON_PID" 2>/dev/null || die "idlereaper (pid $DAEMON_PID) died; stderr: $(tail -5 "$WORK/idlereaper.stderr")"; }

echo "phase,elapsed_s,fds,sockets,rss_kib,cpu_s" >"$WORK/samples.csv"
sample() { # phase elapsed
    alive
    local line
    line="$1,$2,$(fds),$(sockets),$(rss_kib),$(cpu_s)"
    echo "$line" >>"$WORK/samples.csv"
    printf '  %-8s t=%5ss  fds=%-6s sockets=%-6s rss_kib=%-7s cpu_s=%s\n' ${line//,/ }
}

REST_SOCKETS=$(sockets)
# Waits until the daemon holds no connection (only its resting sockets), or fails.
drain() {
    local waited=0
    while [ "$(sockets)" -gt "$REST_SOCKETS" ]; do
        alive
        [ "$waited" -ge $((DRAIN_TIMEOUT * 10)) ] && die "connections did not drain: $(sockets) sockets, $REST_SOCKETS at rest"
        sleep 0.1
        waited=$((waited + 1))
    done
}

# --- load --------------------------------------------------------------------------------------
LOAD_PIDS=()
start_load() { # seconds label
    local secs=$1 label=$2 until=$(($(date +%s) + $1))
    "$LOADGEN" churn --connect "$SOAK_IP:$CHURN_PORT" --threads "$CHURN_THREADS" --duration "${secs}s" \
        >>"$WORK/churn-$label.out" 2>&1 &
    LOAD_PIDS+=($!)
    ( # idle holders, in rounds
        while [ $(($(date +%s) + HOLD_SECS + 2)) -le "$until" ]; do
            "$LOADGEN" hold --connect "$SOAK_IP:$HOLD_PORT" --conns "$HOLD_CONNS" --pid "$DAEMON_PID" \
                --hold "${HOLD_SECS}s" || echo "hold round failed: $?"
        done
    ) >>"$WORK/hold-$label.out" 2>&1 &
    LOAD_PIDS+=($!)
    ( # bulk, in rounds
        while true; do
            left=$((until - $(date +%s)))
            [ "$left" -ge 2 ] || break
            round=$((left < BULK_ROUND ? left : BULK_ROUND))
            if [ "$BULK_TOOL" = iperf3 ]; then
                iperf3 -c "$SOAK_IP" -p "$BULK_PORT" -P "$BULK_STREAMS" -b "$BULK_RATE" -t "$round" \
                    --connect-timeout 5000 | tail -4 || echo "iperf3 round failed: $?"
            else
                for _ in $(seq "$BULK_STREAMS"); do
                    timeout $((round + 10)) "$LOADGEN" pingpong --connect "$SOAK_IP:$BULK_PORT" \
                        --size 65536 --count $((round * 2000)) || true &
                done
                wait
            fi
        done
    ) >>"$WORK/bulk-$label.out" 2>&1 &
    LOAD_PIDS+=($!)
}
wait_load() {
    local p
    for p in "${LOAD_PIDS[@]}"; do wait "$p" || true; done
    LOAD_PIDS=()
}

sample idle 0
IDLE_FDS=$(fds); IDLE_RSS=$(rss_kib)

say "warm-up: ${WARMUP}s of the same load, then drain"
start_load "$WARMUP" warmup
wait_load
drain
sample start 0
START_FDS=$(fds); START_RSS=$(rss_kib); START_CPU=$(cpu_s)

say "soak: ${DURATION}s of churn ($CHURN_THREADS threads), idle holders ($HOLD_CONNS × ${HOLD_SECS}s, reaped at $HOLD_IDLE_TIMEOUT), bulk ($BULK_STREAMS streams)"
T0=$(date +%s)
start_load "$DURATION" soak
MAX_FDS=$START_FDS; MAX_RSS=$START_RSS
while [ $(($(date +%s) - T0)) -lt "$DURATION" ]; do
    sleep "$SAMPLE"
    elapsed=$(($(date +%s) - T0))
    sample load "$elapsed"
    f=$(fds); r=$(rss_kib)
    [ "$f" -gt "$MAX_FDS" ] && MAX_FDS=$f
    [ "$r" -gt "$MAX_RSS" ] && MAX_RSS=$r
done
wait_load
drain
sample end $(($(date +%s) - T0))
END_FDS=$(fds); END_RSS=$(rss_kib); END_CPU=$(cpu_s)

# --- stop --------------------------------------------------------------------------------------
kill -TERM "$DAEMON_PID"
status=0
wait "$DAEMON_PID" || status=$?
DAEMON_PID=

# --- report ------------------------------------------------------------------------------------
churn=$(grep -h 'scenario=churn' "$WORK/churn-soak.out" || true)
holds=$(grep -c 'scenario=hold' "$WORK/hold-soak.out" || true)
bulk_rounds=$(grep -c 'receiver' "$WORK/bulk-soak.out" || true)
warns=$(grep -c ' WARN ' "$WORK/idlereaper.log" || true)
errors=$(grep -c ' ERROR ' "$WORK/idlereaper.log" || true)
echo
echo "== idlereaper soak: ${DURATION}s =="
echo "load:        $churn"
echo "             $holds idle-holder rounds of $HOLD_CONNS connections; $bulk_rounds bulk rounds ($BULK_TOOL)"
echo "log:         $warns warnings, $errors errors (log_level warn)"
echo "descriptors: before warm-up $IDLE_FDS, start $START_FDS, max under load $MAX_FDS, end $END_FDS"
echo "rss (KiB):   before warm-up $IDLE_RSS, start $START_RSS, max under load $MAX_RSS, end $END_RSS"
echo "cpu (s):     start $START_CPU, end $END_CPU"
echo "exit:        $status after TERM"
echo "details:     $WORK"

fail=0
[ "$END_FDS" -le $((START_FDS + FD_TOLERANCE)) ] ||
    { say "FAIL: descriptors grew from $START_FDS to $END_FDS (tolerance $FD_TOLERANCE)"; fail=1; }
[ "$END_RSS" -le $((START_RSS + RSS_TOLERANCE_KIB)) ] ||
    { say "FAIL: RSS grew from $START_RSS KiB to $END_RSS KiB (tolerance $RSS_TOLERANCE_KIB KiB)"; fail=1; }
[ "$status" -eq 0 ] || { say "FAIL: exit status $status after TERM"; fail=1; }
[ "$errors" -eq 0 ] || { say "FAIL: $errors errors in the log"; fail=1; }
[ "$fail" -eq 0 ] && say "PASS"
exit "$fail"
