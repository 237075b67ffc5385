#!/usr/bin/env bash
# bench/profile.sh: where each relay's CPU goes on a request/response load, from the kernel's
# own sampling. idlereaper, HAProxy (nbthread 1) and nginx (1 worker) each relay
# `redis-benchmark -t get -c 50 -P 1 -n 300000` to one redis-server, one after the other, with
# `perf record -g` on the relay's process alone; for each it prints the share of the relay's
# samples under each path (a syscall's share includes the loopback TCP work done inside it).
# Then the TCP segments each relay's traffic takes (nstat around 100,000 GETs, direct too):
# the kernel work a relay cannot avoid.
#
#     bash bench/profile.sh          # as root, ~1 minute; needs perf (linux-perf), redis,
#                                    # haproxy, nginx with the stream module (compare.sh installs
#                                    # all but perf), and a release build (cargo build --release)
#
# Loopback only (127.0.0.1:16002-16004 and 16379); everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$(pwd)/target/release/idlereaper}
for tool in perf nstat redis-server redis-benchmark redis-cli haproxy nginx; do
    command -v "$tool" >/dev/null || { echo "profile.sh: $tool is missing" >&2; exit 1; }
done
[ -x "$BIN" ] || { echo "profile.sh: $BIN is missing (cargo build --release)" >&2; exit 1; }
D=$(mktemp -d /tmp/idlereaper-profile.XXXXXX)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$D"' EXIT

cat >"$D/idlereaper.toml" <<T
[daemon]
pidfile = "$D/idlereaper.pid"
log = "$D/idlereaper.log"
log_level = "warn"
tick = "1ms"
[[listener]]
name = "redis"
listen = "127.0.0.1:16002"
upstream = "127.0.0.1:16379"
idle_timeout = "10m"
T
cat >"$D/nginx.conf" <<T
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
daemon off;
pid $D/nginx.pid;
error_log $D/nginx.err warn;
events { worker_connections 9900; }
stream { server { listen 127.0.0.1:16003; proxy_pass 127.0.0.1:16379; proxy_timeout 10m; } }
T
cat >"$D/haproxy.cfg" <<T
global
  nbthread 1
  maxconn 9900
defaults
  mode tcp
  timeout connect 5s
  timeout client 10m
  timeout server 10m
listen redis
  bind 127.0.0.1:16004
  server r1 127.0.0.1:16379
T
redis-server --port 16379 --bind 127.0.0.1 --save '' --appendonly no >"$D/redis.log" 2>&1 &
pids+=($!)
"$BIN" --foreground --config "$D/idlereaper.toml" >"$D/idlereaper.out" 2>&1 &
pids+=($!)
ir=$!
nginx -c "$D/nginx.conf" >"$D/nginx.out" 2>&1 &
pids+=($!)
haproxy -f "$D/haproxy.cfg" -db >"$D/haproxy.out" 2>&1 &
pids+=($!)
ha=$!
for _ in $(seq 50); do
    [ "$(redis-cli -p 16379 ping 2>/dev/null)" = PONG ] && break
    sleep 0.1
done
redis-cli -p 16379 set key:__rand_int__ xxx >/dev/null
sleep 1

echo "# bench/profile.sh at $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u +%FT%TZ), kernel $(uname -r)"
echo "# redis-benchmark -t get -c 50 -P 1 -n 300000 through each relay; perf record -g -p RELAY"
for relay in idlereaper nginx haproxy; do
    case $relay in
    idlereaper) pid=$ir port=16002 ;;
    nginx) pid=$(pgrep -f "nginx: worker" | head -1) port=16003 ;;
    haproxy) pid=$ha port=16004 ;;
    esac
    perf record -q -g -p "$pid" -o "$D/perf.$relay" -- sleep 8 >/dev/null 2>&1 &
    perf_pid=$!
    sleep 0.3
    rps=$(timeout 60 redis-benchmark -p "$port" -t get -c 50 -P 1 -n 300000 --csv 2>/dev/null | tail -1 | cut -d, -f2 | tr -d '"')
    wait "$perf_pid" || true
    echo "== $relay ($rps requests/s); share of the relay's samples (children included)"
    perf report -i "$D/perf.$relay" --children --sort symbol 2>/dev/null | awk '
        /^ +[0-9.]+%/ {
            for (i = 1; i <= NF; i++)
                if ($i ~ /^(entry_SYSCALL_64_after_hwframe|__x64_sys_sendto|do_writev|__x64_sys_recvfrom|__x64_sys_epoll_wait|net_rx_action|sock_def_readable|__schedule)$/)
                    printf "  %-32s %s\n", $i, $1
        }'
    perf report -i "$D/perf.$relay" --no-children --sort dso 2>/dev/null |
        awk '/^ +[0-9.]+%/ { printf "  self in %-30s %s\n", $2, $1 }' | head -4
done

echo "== TCP segments around 100,000 GETs (-c 50 -P 1), all of this machine's (nstat)"
for relay in direct idlereaper nginx haproxy; do
    case $relay in
    direct) port=16379 ;; idlereaper) port=16002 ;; nginx) port=16003 ;; haproxy) port=16004 ;;
    esac
    nstat -n >/dev/null
    timeout 60 redis-benchmark -p "$port" -t get -c 50 -P 1 -n 100000 -q >/dev/null 2>&1
    nstat 2>/dev/null | awk -v r="$relay" '
        $1 == "TcpOutSegs" { out = $2 } $1 == "TcpExtTCPPureAcks" { pure = $2 }
        END { printf "  %-12s TcpOutSegs %s  TcpExtTCPPureAcks %s\n", r, out, pure }'
done
