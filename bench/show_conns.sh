#!/usr/bin/env bash
# bench/show_conns.sh: what `idlereaperctl show conns` costs the relay with 9,000 idle
# connections open. A 64-byte ping-pong (loadgen, 60,000 round trips) runs through the same
# worker while the control socket is asked the same question 10 times, 0.2 s apart; for each
# question: nothing (the baseline), every row (`show conns --json`), and what `top` asks
# (`show conns --json --limit 24`). Prints the answer's size, each answer's end-to-end time
# (socat's start included) and the ping-pong's p50/p99/max round trip.
#
#     cargo build --release && bash bench/show_conns.sh      # as root (20,000 descriptors), ~2 min
#
# Loopback only (127.0.0.1:16101-16102) and a control socket in a temporary directory;
# everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${B:-$(pwd)/target/release}
CONNS=${CONNS:-9000}
for tool in socat python3; do
    command -v "$tool" >/dev/null || { echo "show_conns.sh: $tool is missing" >&2; exit 1; }
done
for bin in idlereaper idlereaperctl loadgen; do
    [ -x "$B/$bin" ] || { echo "show_conns.sh: $B/$bin is missing (cargo build --release)" >&2; exit 1; }
done
D=$(mktemp -d /tmp/idlereaper-show-conns.XXXXXX)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$D"' EXIT
cat >"$D/idlereaper.toml" <<T
[daemon]
pidfile = "$D/idlereaper.pid"
log = "$D/idlereaper.log"
log_level = "warn"
tick = "1ms"
[control]
socket = "$D/control.sock"
[[listener]]
name = "echo"
listen = "127.0.0.1:16102"
upstream = "127.0.0.1:16101"
idle_timeout = "10m"
max_connections = 20000
T
ulimit -n 20000
"$B/loadgen" echo --listen 127.0.0.1:16101 >"$D/echo.out" 2>&1 &
pids+=($!)
"$B/idlereaper" --foreground --config "$D/idlereaper.toml" >"$D/idlereaper.out" 2>&1 &
pids+=($!)
relay=$!
sleep 1
"$B/loadgen" hold --connect 127.0.0.1:16102 --conns "$CONNS" --pid "$relay" --hold 600s >"$D/hold.out" 2>&1 &
pids+=($!)
open=0
for _ in $(seq 120); do
    open=$("$B/idlereaperctl" -s "$D/control.sock" show listeners --json |
        python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["open"])')
    [ "$open" -ge "$CONNS" ] && break
    sleep 1
done
[ "$open" -ge "$CONNS" ] || { echo "show_conns.sh: only $open of $CONNS connections open" >&2; exit 1; }
echo "# bench/show_conns.sh at $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u +%FT%TZ): $open connections open"
for question in "" "show conns --json" "show conns --json --limit 24"; do
    "$B/loadgen" pingpong --connect 127.0.0.1:16102 --count 60000 >"$D/pingpong.out" 2>&1 &
    pingpong=$!
    sleep 0.5
    times=() bytes=0
    for _ in $(seq 10); do
        [ -n "$question" ] || { sleep 0.2; continue; }
        t0=$(date +%s%N)
        echo "$question" | timeout 10 socat - "UNIX-CONNECT:$D/control.sock" >"$D/answer"
        t1=$(date +%s%N)
        times+=("$(((t1 - t0) / 1000000))ms") bytes=$(wc -c <"$D/answer")
        sleep 0.2
    done
    wait "$pingpong"
    echo "== ${question:-nothing asked}"
    [ -z "$question" ] || echo "  answer: $bytes bytes; end to end: ${times[*]}"
    echo "  ping-pong: $(tail -1 "$D/pingpong.out" | grep -o 'p50_us=.*')"
done
