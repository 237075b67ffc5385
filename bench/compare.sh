#!/usr/bin/env bash
# bench/compare.sh: idlereaper side by side with HAProxy and nginx (stream), on loopback.
#
# One command from a fresh clone (as root, on Debian 12):
#     bash bench/compare.sh                  # full run, ~23 minutes
#     SCALE=smoke bash bench/compare.sh      # every scenario at a tiny size, < 2 minutes
#
# It installs what is missing (haproxy, nginx, libnginx-mod-stream, iperf3, matplotlib; for the
# real-client scenarios postgresql and redis-server, redis-tools), builds the release binaries,
# starts each relay in front of upstreams served by `loadgen` and in front of the run's own
# PostgreSQL and redis-server, runs the scenarios (hold, reap, bulk, ping-pong, churn; pgbench
# and redis-benchmark; live upgrade) and writes bench/results/<timestamp>/:
#     results.txt   one line per measurement: relay=… rep=… scenario=… key=value…
#     summary.md    the table (medians over REPS), ratios and targets, anomalies
#     charts/*.png  memory per connection vs N, reap lateness, throughput, churn, ping-pong,
#                   real clients
#     machine.txt   machine, versions, commit, load during the run; logs/ and configs/ too
# A full run of all relays and scenarios, without errors and on a quiet machine, also replaces
# bench/results/latest/ (latest-workersN/ with WORKERS=N), which BENCHMARKS.md embeds
# (PUBLISH=0 to keep it; PUBLISH=1 to publish whatever the run).
#
# Knobs (environment):
#     SCALE=full|smoke      sizes (below); smoke also sets REPS=1
#     ONLY="idlereaper"     relays to run, space or comma separated, out of
#                           idlereaper haproxy nginx haproxy-auto (default: all; haproxy-auto is
#                           HAProxy with its own default thread count, full runs only)
#     WORKERS=N             idlereaper `daemon.workers = N`, HAProxy `nbthread N`, nginx
#                           `worker_processes N` (+ reuseport); unset: 1 thread each, no
#                           `workers` key in idlereaper's config
#     SCENARIOS="hold reap bulk pingpong churn pgbench redis upgrade protocols"
#     REPS=3                repetitions of the quick scenarios (all but hold)
#     HOLD_N=9000 HOLD_SECS=30 HOLD_CURVE="1000 3000" HOLD_CURVE_SECS=5
#     REAP_CONNS=2000 REAP_TIMEOUT=2s BULK_SECS=10 CHURN_SECS=10 CHURN_THREADS=4
#     PING_COUNT=20000 INSTALL=1 BUILD=1 OUT=bench/results/<timestamp>
#     PGBENCH_SECS=10 PGBENCH_SCALE=10 REDIS_N_P16=2000000 REDIS_N_P1=300000
#     UPGRADE_CONNS=9000 UPGRADE_WAIT=10
#     PROTO_HOLD_N=5000 PROTO_HOLD_SECS=5 PROTO_HOLD_REPS=2 BIGVALUE_MB=100 BIGVALUE_ROUNDS=3
#
# The real clients (pgbench, redis-benchmark) talk to servers this script starts and stops: a
# PostgreSQL cluster made by initdb in a temporary directory under /tmp (run as the `postgres`
# user; fsync off: a benchmark, not a database) and a redis-server without persistence, both on
# fixed loopback ports. Every relay points at the same two servers; no system service is used.
#
# Exit status: 0 when every scenario ran and passed its sanity checks (every held connection
# still relays, every reaped connection was closed, no client error); 1 otherwise (the results
# and summary are still written). Everything started here is stopped by a trap on exit; every
# wait is bounded. Only loopback addresses are used.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
BENCH="$ROOT/bench"

SCALE=${SCALE:-full}
case "$SCALE" in
full)
    : "${REPS:=3}" "${HOLD_N:=9000}" "${HOLD_SECS:=30}" "${HOLD_CURVE=1000 3000}" "${HOLD_CURVE_SECS:=5}"
    : "${REAP_CONNS:=2000}" "${BULK_SECS:=10}" "${CHURN_SECS:=10}" "${PING_COUNT:=20000}"
    : "${PGBENCH_SECS:=10}" "${REDIS_N_P16:=2000000}" "${REDIS_N_P1:=300000}"
    : "${UPGRADE_CONNS:=9000}" "${UPGRADE_WAIT:=10}"
    : "${PROTO_HOLD_N:=5000}" "${PROTO_HOLD_SECS:=5}" "${PROTO_HOLD_REPS:=2}" "${BIGVALUE_MB:=100}"
    ;;
smoke)
    : "${REPS:=1}" "${HOLD_N:=50}" "${HOLD_SECS:=2}" "${HOLD_CURVE=20}" "${HOLD_CURVE_SECS:=1}"
    : "${REAP_CONNS:=50}" "${BULK_SECS:=2}" "${CHURN_SECS:=2}" "${PING_COUNT:=1000}"
    : "${PGBENCH_SECS:=2}" "${REDIS_N_P16:=20000}" "${REDIS_N_P1:=5000}"
    : "${UPGRADE_CONNS:=500}" "${UPGRADE_WAIT:=2}"
    : "${PROTO_HOLD_N:=50}" "${PROTO_HOLD_SECS:=1}" "${PROTO_HOLD_REPS:=1}" "${BIGVALUE_MB:=10}"
    ;;
*)
    echo "compare.sh: SCALE must be full or smoke, not '$SCALE'" >&2
    exit 2
    ;;
esac
: "${REAP_TIMEOUT:=2s}" "${CHURN_THREADS:=4}" "${INSTALL:=1}" "${BUILD:=1}" "${PUBLISH:=auto}"
# pgbench -i -s 10 takes about a second here; smoke runs use the same scale.
: "${PGBENCH_SCALE:=10}"
: "${BIGVALUE_ROUNDS:=3}"
ALL_SCENARIOS="hold reap bulk pingpong churn pgbench redis upgrade protocols"
: "${SCENARIOS:=$ALL_SCENARIOS}"
LONG_TIMEOUT=10m # idle timeout of the non-reap listeners: longer than any scenario
WORKERS=${WORKERS:-}
THREADS=${WORKERS:-1}
if [ -n "$WORKERS" ] && ! [[ "$WORKERS" =~ ^[1-9][0-9]*$ ]]; then
    echo "compare.sh: WORKERS must be a positive integer (got '$WORKERS')" >&2
    exit 2
fi

ALL_RELAYS="idlereaper haproxy nginx"
if [ "$SCALE" = full ] && [ -z "$WORKERS" ]; then
    ALL_RELAYS="$ALL_RELAYS haproxy-auto"
fi
RELAYS=$(echo "${ONLY:-$ALL_RELAYS}" | tr ',' ' ')
for r in $RELAYS; do
    case "$r" in
    idlereaper | haproxy | nginx | haproxy-auto) ;;
    *)
        echo "compare.sh: unknown relay '$r' in ONLY (idlereaper haproxy nginx haproxy-auto)" >&2
        exit 2
        ;;
    esac
done
for s in $SCENARIOS; do
    case "$s" in
    hold | reap | bulk | pingpong | churn | pgbench | redis | upgrade | protocols) ;;
    *)
        echo "compare.sh: unknown scenario '$s' ($ALL_SCENARIOS)" >&2
        exit 2
        ;;
    esac
done

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-$BENCH/results/$STAMP}
mkdir -p "$OUT"/{logs,configs,samples,iperf,charts,run,bin}
OUT=$(cd "$OUT" && pwd)
RESULTS="$OUT/results.txt"
ERRORS="$OUT/errors.txt"
: >"$RESULTS"
: >"$ERRORS"
T0=$(date +%s)

say() { printf '[%4ds] %s\n' "$(($(date +%s) - T0))" "$*"; }
# A scenario that failed: recorded, reported in the summary, and the exit status is 1.
fail() {
    printf '%s\n' "$*" >>"$ERRORS"
    say "ERROR: $*"
}
has_scenario() { [[ " $SCENARIOS " == *" $1 "* ]]; }

# ---------------------------------------------------------------------------------------------
# Processes: every pid started here is recorded; the trap stops them all, TERM then KILL.
PIDS=()
track() { PIDS+=("$@"); }
untrack() {
    local keep=() p q gone
    for p in "${PIDS[@]}"; do
        gone=0
        for q in "$@"; do [ "$p" = "$q" ] && gone=1; done
        [ $gone = 1 ] || keep+=("$p")
    done
    PIDS=("${keep[@]}")
}
alive() { kill -0 "$1" 2>/dev/null; }
# stop_pids PID...: TERM, up to 5 s for them to exit, then KILL.
stop_pids() {
    local p deadline
    for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
    deadline=$((SECONDS + 5))
    for p in "$@"; do
        while alive "$p" && [ $SECONDS -lt $deadline ]; do sleep 0.05; done
        if alive "$p"; then kill -KILL "$p" 2>/dev/null || true; fi
    done
    for p in "$@"; do wait "$p" 2>/dev/null || true; done
    untrack "$@"
}
# The real clients' servers (pgbench, redis scenarios) and their temporary directory.
PG_PID="" REDIS_PID="" SERVERS_TMP=""
# stop_servers: PostgreSQL gets a fast shutdown (INT ends its sessions; TERM would wait for
# them) for up to 20 s, then what stop_pids does; then redis-server; the directory goes too.
stop_servers() {
    local deadline
    if [ -n "$PG_PID" ]; then
        kill -INT "$PG_PID" 2>/dev/null || true
        deadline=$((SECONDS + 20))
        while alive "$PG_PID" && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
        stop_pids "$PG_PID"
        PG_PID=""
    fi
    if [ -n "$REDIS_PID" ]; then
        stop_pids "$REDIS_PID"
        REDIS_PID=""
    fi
    if [ -n "$SERVERS_TMP" ]; then
        rm -rf "$SERVERS_TMP"
        SERVERS_TMP=""
    fi
}
# The upgrade scenario's relays run from their own copies of their binaries (UPGRADE_EXES),
# and nginx's new master is not a process this script started: they are found by executable.
# exe_pids PATH...: the processes whose /proc/PID/exe is PATH (or PATH, replaced since).
UPGRADE_EXES=()
exe_pids() {
    local d link x
    for d in /proc/[0-9]*; do
        link=$(readlink "$d/exe" 2>/dev/null) || continue
        for x in "$@"; do
            if [ "$link" = "$x" ] || [ "$link" = "$x (deleted)" ]; then
                echo "${d#/proc/}"
                break
            fi
        done
    done
}
stop_upgrade_relays() {
    local pids
    [ ${#UPGRADE_EXES[@]} -gt 0 ] || return 0
    pids=$(exe_pids "${UPGRADE_EXES[@]}")
    # shellcheck disable=SC2086
    [ -z "$pids" ] || stop_pids $pids
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_servers
    stop_upgrade_relays
    if [ ${#PIDS[@]} -gt 0 ]; then stop_pids "${PIDS[@]}"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

# wait_until SECONDS COMMAND...: polls COMMAND every 50 ms; false once SECONDS have passed.
wait_until() {
    local limit=$1
    shift
    local deadline=$((SECONDS + limit))
    until "$@"; do
        [ $SECONDS -lt "$deadline" ] || return 1
        sleep 0.05
    done
}
listening() { [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }
all_listening() {
    local p
    for p in "$@"; do listening "$p" || return 1; done
}
established() { ss -Htn state established "( sport = :$1 )" 2>/dev/null | wc -l; }

# ---------------------------------------------------------------------------------------------
# Install and build.
need_pkgs=()
command -v haproxy >/dev/null || need_pkgs+=(haproxy)
command -v nginx >/dev/null || need_pkgs+=(nginx)
[ -f /usr/lib/nginx/modules/ngx_stream_module.so ] || need_pkgs+=(libnginx-mod-stream)
command -v iperf3 >/dev/null || need_pkgs+=(iperf3)
# The real clients and their servers. Debian 12: `postgresql` brings postgresql-15 (initdb,
# postgres) and postgresql-client-15 (pgbench, pg_isready) and creates the `postgres` user.
# pg_bin: the newest /usr/lib/postgresql/*/bin that has all four programs used here.
pg_bin() {
    local b
    for b in $(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -rV); do
        if [ -x "$b/initdb" ] && [ -x "$b/postgres" ] && [ -x "$b/pgbench" ] && [ -x "$b/pg_isready" ]; then
            echo "$b"
            return 0
        fi
    done
}
pg_complete() { [ -n "$(pg_bin)" ]; }
if has_scenario pgbench || has_scenario protocols; then
    pg_complete || need_pkgs+=(postgresql)
fi
if has_scenario redis || has_scenario protocols; then
    command -v redis-server >/dev/null || need_pkgs+=(redis-server)
    { command -v redis-benchmark >/dev/null && command -v redis-cli >/dev/null; } || need_pkgs+=(redis-tools)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
    [ "$INSTALL" = 1 ] || {
        echo "compare.sh: missing ${need_pkgs[*]} and INSTALL=0" >&2
        exit 1
    }
    say "installing ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Bounded: another apt-get holding the dpkg lock is waited for up to 2 minutes.
    timeout 600 apt-get -o DPkg::Lock::Timeout=120 update -qq </dev/null >"$OUT/logs/apt.log" 2>&1 || true
    timeout 900 apt-get -o DPkg::Lock::Timeout=120 install -y -qq --no-install-recommends "${need_pkgs[@]}" \
        </dev/null >>"$OUT/logs/apt.log" 2>&1 || {
        cat "$OUT/logs/apt.log" >&2
        exit 1
    }
fi
# The packages may start their services (ports 80/8404, PostgreSQL's 5432, redis's 6379):
# harmless, and not ours to stop; this script starts its own servers on its own ports.
if has_scenario pgbench || has_scenario protocols; then
    pg_complete || {
        echo "compare.sh: PostgreSQL's initdb, postgres, pgbench or pg_isready is missing under /usr/lib/postgresql/*/bin" >&2
        exit 1
    }
    PGBIN=$(pg_bin)
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        echo "compare.sh: no 'postgres' user to run PostgreSQL as (it refuses to run as root)" >&2
        exit 1
    fi
fi
if has_scenario redis || has_scenario protocols; then
    for b in redis-server redis-benchmark redis-cli; do
        command -v "$b" >/dev/null || {
            echo "compare.sh: $b is missing (packages redis-server, redis-tools)" >&2
            exit 1
        }
    done
fi

PY=python3
if ! "$PY" -c 'import matplotlib' 2>/dev/null; then
    if [ "$INSTALL" = 1 ]; then
        say "installing matplotlib"
        "$PY" -m pip install --quiet --disable-pip-version-check matplotlib >"$OUT/logs/pip.log" 2>&1 || true
        if ! "$PY" -c 'import matplotlib' 2>/dev/null; then
            apt-get install -y -qq python3-matplotlib >>"$OUT/logs/apt.log" 2>&1 || true
            PY=/usr/bin/python3
        fi
    fi
    "$PY" -c 'import matplotlib' 2>/dev/null || {
        echo "compare.sh: matplotlib is not importable by $PY (see $OUT/logs/pip.log)" >&2
        exit 1
    }
fi

if [ "$BUILD" = 1 ]; then
    say "cargo build --release"
    cargo build --release --bins >"$OUT/logs/build.log" 2>&1 || {
        tail -30 "$OUT/logs/build.log" >&2
        echo "compare.sh: build failed" >&2
        exit 1
    }
fi
# Copies, so that a rebuild during the run cannot change what is measured.
cp "$ROOT/target/release/idlereaper" "$ROOT/target/release/loadgen" "$OUT/bin/"
IDLEREAPER="$OUT/bin/idlereaper"
LOADGEN="$OUT/bin/loadgen"

# Each relayed connection is two descriptors in the relay; the hard limit here is 20,000.
ulimit -n "$(ulimit -Hn)"
FDS=$(ulimit -n)
if [ $((HOLD_N * 2 + 200)) -gt "$FDS" ]; then
    echo "compare.sh: HOLD_N=$HOLD_N needs $((HOLD_N * 2 + 200)) descriptors, the limit is $FDS" >&2
    exit 2
fi
if has_scenario upgrade && [ $((UPGRADE_CONNS * 2 + 200)) -gt "$FDS" ]; then
    echo "compare.sh: UPGRADE_CONNS=$UPGRADE_CONNS needs $((UPGRADE_CONNS * 2 + 200)) descriptors, the limit is $FDS" >&2
    exit 2
fi

# ---------------------------------------------------------------------------------------------
# Machine and versions.
{
    echo "date_utc=$STAMP"
    echo "scale=$SCALE reps=$REPS workers=${WORKERS:-unset} relays=\"$RELAYS\" scenarios=\"$SCENARIOS\""
    echo "hold_n=$HOLD_N hold_secs=$HOLD_SECS hold_curve=\"$HOLD_CURVE\" hold_curve_secs=$HOLD_CURVE_SECS"
    echo "reap_conns=$REAP_CONNS reap_timeout=$REAP_TIMEOUT bulk_secs=$BULK_SECS churn_secs=$CHURN_SECS churn_threads=$CHURN_THREADS ping_count=$PING_COUNT"
    echo "upgrade_conns=$UPGRADE_CONNS upgrade_wait=$UPGRADE_WAIT"
    echo "nproc=$(nproc)"
    echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "cpu_mhz=$(grep -m1 'cpu MHz' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "cpu_cache=$(grep -m1 'cache size' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "virtual_machine=$(grep -qw hypervisor /proc/cpuinfo && echo yes || echo no)"
    echo "kernel=$(uname -r)"
    echo "mem_total=$(grep MemTotal /proc/meminfo | awk '{printf "%.1f GiB", $2/1048576}')"
    echo "debian=$(cat /etc/debian_version 2>/dev/null || echo '?')"
    echo "fd_limit=$FDS"
    echo "haproxy=$(haproxy -v 2>&1 | head -1)"
    echo "nginx=$(nginx -v 2>&1 | head -1)"
    echo "iperf3=$(iperf3 -v 2>&1 | head -1)"
    if has_scenario pgbench || has_scenario protocols; then
        echo "postgres=$("$PGBIN/postgres" -V 2>&1 | head -1)"
        echo "pgbench_secs=$PGBENCH_SECS pgbench_scale=$PGBENCH_SCALE"
    fi
    if has_scenario redis || has_scenario protocols; then
        echo "redis=$(redis-server -v 2>&1 | sed -n 's/.* v=\([^ ]*\).*/\1/p')"
        echo "redis_n_p16=$REDIS_N_P16 redis_n_p1=$REDIS_N_P1"
    fi
    echo "rustc=$(rustc -V 2>/dev/null || echo '?')"
    echo "python=$("$PY" --version 2>&1) matplotlib=$("$PY" -c 'import matplotlib; print(matplotlib.__version__)')"
    echo "commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "src_dirty_files=$(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | wc -l)"
    echo "sysctl_tcp_tw_reuse=$(sysctl -n net.ipv4.tcp_tw_reuse 2>/dev/null || echo '?')"
    echo "sysctl_somaxconn=$(sysctl -n net.core.somaxconn 2>/dev/null || echo '?')"
} >"$OUT/machine.txt"

# Load on the machine during the run: others may be building and testing on the same 2 cores.
# Every 5 s, the CPU used by this run's processes and by everything else (bench/loadmon.py).
"$PY" "$BENCH/loadmon.py" $$ 5 >"$OUT/load.txt" 2>"$OUT/logs/loadmon.log" &
track $!

# ---------------------------------------------------------------------------------------------
# Ports: relay i listens on BASE+1 (echo), +2 (reap), +3 (bulk), in front of its own upstreams
# on BASE+51 (echo), +52 (echo, for reap), +53 (iperf3 server, one per test). "direct" is the client
# talking to an upstream with no relay: the ceiling. Every relay also listens on BASE+4 (pgbench)
# and BASE+5 (redis-benchmark), in front of the one PostgreSQL and the one redis-server of the
# run, on direct's BASE+54 and +55.
relay_base() {
    case "$1" in
    idlereaper) echo 22100 ;;
    haproxy) echo 22200 ;;
    nginx) echo 22300 ;;
    haproxy-auto) echo 22400 ;;
    direct) echo 22900 ;;
    esac
}
p_echo() { echo $(($(relay_base "$1") + 1)); }
p_reap() { echo $(($(relay_base "$1") + 2)); }
p_bulk() { echo $(($(relay_base "$1") + 3)); }
u_echo() { echo $(($(relay_base "$1") + 51)); }
u_reap() { echo $(($(relay_base "$1") + 52)); }
u_bulk() { echo $(($(relay_base "$1") + 53)); }
p_pg() { echo $(($(relay_base "$1") + 4)); }
p_redis() { echo $(($(relay_base "$1") + 5)); }
PG_PORT=$(($(relay_base direct) + 54))
REDIS_PORT=$(($(relay_base direct) + 55))

for p in $PG_PORT $REDIS_PORT $(for r in $RELAYS direct; do echo "$(p_echo "$r") $(p_reap "$r") $(p_bulk "$r") $(p_pg "$r") $(p_redis "$r") $(u_echo "$r") $(u_reap "$r") $(u_bulk "$r")"; done); do
    if listening "$p"; then
        echo "compare.sh: port $p is already in use; is another benchmark running?" >&2
        exit 1
    fi
done

# start_upstreams RELAY: the two echo servers behind RELAY (one for reap) (run for the whole run).
declare -A ECHO_PID=()
start_upstreams() {
    local r=$1
    "$LOADGEN" echo --listen "127.0.0.1:$(u_echo "$r")" >"$OUT/logs/upstream-$r-echo.log" 2>&1 &
    track $!
    ECHO_PID[$r]=$!
    # The reap upstream echoes: `loadgen reap --echo` dates each connection's last activity from
    # the kernel's receive time of the echo, the relay's own last write.
    "$LOADGEN" echo --listen "127.0.0.1:$(u_reap "$r")" >"$OUT/logs/upstream-$r-reap-echo.log" 2>&1 &
    track $!
    wait_until 10 all_listening "$(u_echo "$r")" "$(u_reap "$r")" || {
        echo "compare.sh: upstreams for $r did not start" >&2
        exit 1
    }
}

# render TEMPLATE OUTPUT RELAY: fills in the @NAME@ placeholders.
render() {
    local tpl=$1 out=$2 r=$3
    local run=$OUT/run/$r
    local workers_line="" nbthread_line="    nbthread $THREADS" reuseport=""
    [ -n "$WORKERS" ] && workers_line="workers = $WORKERS"
    [ "$r" = haproxy-auto ] && nbthread_line="    # nbthread: HAProxy's default (one thread per available CPU)"
    [ "$THREADS" -gt 1 ] && reuseport=" reuseport"
    sed -e "s|@RUN@|$run|g" -e "s|@WORKERS_LINE@|$workers_line|" -e "s|@NBTHREAD_LINE@|$nbthread_line|" \
        -e "s|@WORKERS@|$THREADS|g" -e "s|@REUSEPORT@|$reuseport|g" \
        -e "s|@LONG_TIMEOUT@|$LONG_TIMEOUT|g" -e "s|@REAP_TIMEOUT@|$REAP_TIMEOUT|g" \
        -e "s|@P_ECHO@|$(p_echo "$r")|g" -e "s|@P_REAP@|$(p_reap "$r")|g" -e "s|@P_BULK@|$(p_bulk "$r")|g" \
        -e "s|@U_ECHO@|$(u_echo "$r")|g" -e "s|@U_REAP@|$(u_reap "$r")|g" -e "s|@U_BULK@|$(u_bulk "$r")|g" \
        -e "s|@P_PG@|$(p_pg "$r")|g" -e "s|@P_REDIS@|$(p_redis "$r")|g" \
        -e "s|@U_PG@|$PG_PORT|g" -e "s|@U_REDIS@|$REDIS_PORT|g" \
        "$tpl" >"$out"
    if grep -q '@[A-Z_]*@' "$out"; then
        echo "compare.sh: unfilled placeholder in $out" >&2
        exit 1
    fi
}

# start_relay RELAY: starts it fresh, waits until it listens, and sets RELAY_PID[RELAY] (the
# process started) and RELAY_MEASURE[RELAY] (the processes that hold the connections: the same
# one, or nginx's workers).
declare -A RELAY_PID=() RELAY_MEASURE=()
start_relay() {
    local r=$1 run=$OUT/run/$1 log=$OUT/logs/relay-$1.log pid
    mkdir -p "$run"
    rm -f "$run"/*.pid
    case "$r" in
    idlereaper)
        render "$BENCH/idlereaper.toml.in" "$OUT/configs/idlereaper.toml" "$r"
        "$IDLEREAPER" -f -c "$OUT/configs/idlereaper.toml" >>"$log" 2>&1 &
        ;;
    haproxy | haproxy-auto)
        render "$BENCH/haproxy.cfg.in" "$OUT/configs/$r.cfg" "$r"
        haproxy -db -f "$OUT/configs/$r.cfg" >>"$log" 2>&1 &
        ;;
    nginx)
        render "$BENCH/nginx.conf.in" "$OUT/configs/nginx.conf" "$r"
        nginx -p "$run/" -e "$run/error.log" -c "$OUT/configs/nginx.conf" >>"$log" 2>&1 &
        ;;
    esac
    pid=$!
    track "$pid"
    RELAY_PID[$r]=$pid
    if ! wait_until 15 all_listening "$(p_echo "$r")" "$(p_reap "$r")" "$(p_bulk "$r")" "$(p_pg "$r")" "$(p_redis "$r")" ||
        ! alive "$pid"; then
        tail -20 "$log" >&2
        echo "compare.sh: $r did not start (log: $log)" >&2
        exit 1
    fi
    RELAY_MEASURE[$r]=$pid
    if [ "$r" = nginx ]; then
        # shellcheck disable=SC2317
        workers_up() { [ "$(pgrep -P "$pid" | wc -l)" -ge "$THREADS" ]; }
        wait_until 10 workers_up || {
            echo "compare.sh: nginx workers did not start" >&2
            exit 1
        }
        RELAY_MEASURE[$r]=$(pgrep -P "$pid" | tr '\n' ' ')
        # shellcheck disable=SC2086
        track ${RELAY_MEASURE[$r]}
    fi
}
stop_relay() {
    local r=$1 pid=${RELAY_PID[$1]:-}
    [ -n "$pid" ] || return 0
    if ! alive "$pid"; then
        fail "$r: the relay process $pid died during the run (log: logs/relay-$r.log)"
    fi
    stop_pids "$pid"
    # nginx's workers exit with their master; make sure of it.
    # shellcheck disable=SC2086
    [ "${RELAY_MEASURE[$r]}" = "$pid" ] || stop_pids ${RELAY_MEASURE[$r]}
    unset "RELAY_PID[$r]" "RELAY_MEASURE[$r]"
}
# check_relay RELAY SCENARIO: restarts a relay that died, so the next scenario still runs.
check_relay() {
    local r=$1 pid=${RELAY_PID[$1]:-}
    if [ -n "$pid" ] && ! alive "$pid"; then
        fail "$r: relay died during $2 (log: logs/relay-$r.log); restarting it"
        # shellcheck disable=SC2086
        stop_pids ${RELAY_MEASURE[$r]}
        unset "RELAY_PID[$r]" "RELAY_MEASURE[$r]"
        start_relay "$r"
    fi
}

# Sum of resident memory (KiB) and of CPU seconds over a list of pids.
rss_sum() {
    local p s=0 v
    for p in "$@"; do
        v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
        s=$((s + ${v:-0}))
    done
    echo "$s"
}
cpu_sum() {
    local p hz
    hz=$(getconf CLK_TCK)
    for p in "$@"; do
        sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}'
    done | awk -v hz="$hz" '{s += $1} END {printf "%.3f", s / hz}'
}

# record RELAY REP LINE: one result line.
record() { echo "relay=$1 rep=$2 $3" >>"$RESULTS"; }
field() { sed -n "s/.*[[:space:]]$2=\([^[:space:]]*\).*/\1/p" <<<" $1"; }

# client_result TAG RC WHAT: the result line of a load-tool client that exited with status RC,
# its output in logs/TAG.out and .err, into RESULT_LINE; if it failed or printed no result,
# reports "WHAT failed" with the end of its error output, and returns 1.
client_result() {
    local tag=$1 rc=$2 what=$3
    RESULT_LINE=$(grep -m1 '^scenario=' "$OUT/logs/$tag.out" || true)
    if [ "$rc" -ne 0 ] || [ -z "$RESULT_LINE" ]; then
        fail "$what failed (exit $rc): $(tail -c 300 "$OUT/logs/$tag.err" | tr '\n' ' ')"
        return 1
    fi
}

# ---------------------------------------------------------------------------------------------
# Scenarios. Each takes RELAY and REP, runs the client with a bounded time, records one line.

# hold RELAY N SECS
scenario_hold() {
    local r=$1 n=$2 secs=$3 tag="hold-$1-$2" pids line rss0 rss1 cpu0 cpu1 lg rc=0
    start_relay "$r"
    pids=${RELAY_MEASURE[$r]}
    # shellcheck disable=SC2086
    rss0=$(rss_sum $pids)
    # loadgen measures the one pid it is given; the sums over all the relay's processes are
    # taken here too (nginx with several workers).
    # shellcheck disable=SC2086
    timeout $((secs + 180)) "$LOADGEN" hold --connect "127.0.0.1:$(p_echo "$r")" --conns "$n" \
        --pid ${pids%% *} --hold "${secs}s" >"$OUT/logs/$tag.out" 2>"$OUT/logs/$tag.err" &
    lg=$!
    track "$lg"
    # shellcheck disable=SC2317
    all_held() { [ "$(established "$(p_echo "$r")")" -ge "$n" ] || ! alive "$lg"; }
    wait_until 120 all_held || true
    sleep 1
    # shellcheck disable=SC2086
    rss1=$(rss_sum $pids)
    # shellcheck disable=SC2086
    cpu0=$(cpu_sum $pids)
    # The idle CPU is read before the hold ends: after it, loadgen checks every connection and
    # closes them all, which is not idle work. (So it covers the hold less half a second.)
    sleep "$(awk -v s="$secs" 'BEGIN {print (s > 1 ? s - 0.5 : s / 2)}')"
    # shellcheck disable=SC2086
    cpu1=$(cpu_sum $pids)
    wait "$lg" || rc=$?
    untrack "$lg"
    if client_result "$tag" "$rc" "$r: hold $n"; then
        line=$RESULT_LINE
        record "$r" 1 "$line tree_rss_before_kib=$rss0 tree_rss_after_kib=$rss1 tree_bytes_per_conn=$(((rss1 - rss0) * 1024 / n)) tree_idle_cpu_s=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN {printf "%.3f", b - a}') processes=$(wc -w <<<"$pids")"
        [ "$(field "$line" alive_after)" = "$n" ] ||
            fail "$r: hold $n: only $(field "$line" alive_after) of $n connections still relayed after ${secs}s"
    fi
    stop_relay "$r"
    # Let the upstream see the closes before the next relay's hold.
    # shellcheck disable=SC2317
    upstream_drained() { [ "$(established "$(u_echo "$r")")" -lt 10 ]; }
    wait_until 20 upstream_drained || true
}

scenario_reap() {
    local r=$1 rep=$2 tag="reap-$1-$2" line rc=0
    timeout 120 "$LOADGEN" reap --connect "127.0.0.1:$(p_reap "$r")" --conns "$REAP_CONNS" \
        --timeout "$REAP_TIMEOUT" --echo --samples "$OUT/samples/$tag.txt" >"$OUT/logs/$tag.out" 2>"$OUT/logs/$tag.err" || rc=$?
    client_result "$tag" "$rc" "$r: reap rep $rep" || return 0
    line=$RESULT_LINE
    record "$r" "$rep" "$line"
    [ "$(field "$line" closed)" = "$REAP_CONNS" ] ||
        fail "$r: reap rep $rep: only $(field "$line" closed) of $REAP_CONNS idle connections were closed"
}

# bulk RELAY REP STREAMS: a one-shot iperf3 server behind the relay (or direct).
scenario_bulk() {
    local r=$1 rep=$2 streams=$3 tag="bulk-$1-$2-P$3" srv port rc=0 gbps
    "$(command -v iperf3)" -s -1 -p "$(u_bulk "$r")" >"$OUT/logs/$tag-server.log" 2>&1 &
    srv=$!
    track "$srv"
    if ! wait_until 10 listening "$(u_bulk "$r")"; then
        fail "$r: iperf3 server did not start"
        stop_pids "$srv"
        return
    fi
    port=$(p_bulk "$r")
    [ "$r" = direct ] && port=$(u_bulk "$r")
    timeout $((BULK_SECS + 40)) iperf3 -c 127.0.0.1 -p "$port" -t "$BULK_SECS" -P "$streams" -J \
        --connect-timeout 5000 >"$OUT/iperf/$tag.json" 2>"$OUT/logs/$tag.err" || rc=$?
    gbps=$("$PY" - "$OUT/iperf/$tag.json" <<'EOF' 2>>"$OUT/logs/$tag.err" || true
import json, sys
d = json.load(open(sys.argv[1]))
if "error" in d:
    sys.exit("iperf3: " + d["error"])
print("%.3f" % (d["end"]["sum_received"]["bits_per_second"] / 8e9))
EOF
    )
    if [ "$rc" -ne 0 ] || [ -z "$gbps" ]; then
        fail "$r: bulk -P $streams rep $rep failed (exit $rc): $(tail -c 300 "$OUT/logs/$tag.err" | tr '\n' ' ')"
    else
        record "$r" "$rep" "scenario=bulk streams=$streams secs=$BULK_SECS gbytes_per_s=$gbps"
    fi
    # -1: the server exits after one test; bounded all the same.
    local deadline=$((SECONDS + 10))
    while alive "$srv" && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    stop_pids "$srv"
}

scenario_pingpong() {
    local r=$1 rep=$2 tag="pingpong-$1-$2" line rc=0 port
    port=$(p_echo "$r")
    [ "$r" = direct ] && port=$(u_echo "$r")
    timeout 300 "$LOADGEN" pingpong --connect "127.0.0.1:$port" --count "$PING_COUNT" --size 64 \
        >"$OUT/logs/$tag.out" 2>"$OUT/logs/$tag.err" || rc=$?
    client_result "$tag" "$rc" "$r: pingpong rep $rep" || return 0
    line=$RESULT_LINE
    record "$r" "$rep" "$line"
}

# pingpong_pinned RELAY REP: the same round trips with the client, the relay and the echo
# upstream all on CPU 0. On this 2-vCPU virtual machine a wake-up that crosses CPUs costs ~20 µs,
# so unpinned round trips mostly measure where the scheduler put the three processes; on one
# core they measure the relay's own path. The relay's and upstream's affinity is restored after.
scenario_pingpong_pinned() {
    local r=$1 rep=$2 tag="pingpong1cpu-$1-$2" line rc=0 port pids p all
    all="0-$(($(nproc) - 1))"
    port=$(p_echo "$r")
    pids="${ECHO_PID[$r]}"
    if [ "$r" = direct ]; then
        port=$(u_echo "$r")
    else
        pids="$pids ${RELAY_PID[$r]} ${RELAY_MEASURE[$r]}"
    fi
    for p in $pids; do taskset -a -p -c 0 "$p" >/dev/null 2>&1 || true; done
    timeout 300 taskset -c 0 "$LOADGEN" pingpong --connect "127.0.0.1:$port" --count "$PING_COUNT" --size 64 \
        >"$OUT/logs/$tag.out" 2>"$OUT/logs/$tag.err" || rc=$?
    for p in $pids; do taskset -a -p -c "$all" "$p" >/dev/null 2>&1 || true; done
    client_result "$tag" "$rc" "$r: pingpong on one CPU rep $rep" || return 0
    line=$RESULT_LINE
    record "$r" "$rep" "${line/scenario=pingpong/scenario=pingpong_1cpu}"
}

scenario_churn() {
    local r=$1 rep=$2 tag="churn-$1-$2" line rc=0 port
    port=$(p_echo "$r")
    [ "$r" = direct ] && port=$(u_echo "$r")
    timeout $((CHURN_SECS + 60)) "$LOADGEN" churn --connect "127.0.0.1:$port" --threads "$CHURN_THREADS" \
        --duration "${CHURN_SECS}s" >"$OUT/logs/$tag.out" 2>"$OUT/logs/$tag.err" || rc=$?
    client_result "$tag" "$rc" "$r: churn rep $rep" || return 0
    line=$RESULT_LINE
    record "$r" "$rep" "$line"
    [ "$(field "$line" conns)" -gt 0 ] || fail "$r: churn rep $rep: no connection completed"
}

# upgrade RELAY REP: a live upgrade under load (issue 13). A fresh relay, run from its own copy
# of its binary (run/upgrade-RELAY/bin/), holds UPGRADE_CONNS idle connections through its echo
# listener and a 64-byte ping-pong on one more. bench/upgrade.py replaces the binary with a
# fresh copy (a new inode, as a package upgrade does), upgrades the relay the way each one
# documents (idlereaper: USR2; HAProxy in master-worker mode: USR2 to the master; nginx: USR2,
# then WINCH, to the master, "Upgrading Executable on the Fly"), and measures the ping-pong's
# longest stall, which processes (old binary or new) hold the connections UPGRADE_WAIT seconds
# later, whether each still relays, and for HAProxy and nginx how many a hard stop of the old
# processes cuts. nginx runs with `daemon on` here: it refuses a binary upgrade while the
# process that started it lives (`daemon off` under a shell or systemd); upgrade.py's
# subreaper keeps it a descendant of this script, which the load monitor counts as ours.
scenario_upgrade() {
    local r=$1 rep=$2 tag="upgrade-$1-$2" run=$OUT/run/upgrade-$1 log=$OUT/logs/relay-upgrade-$1-$2.log
    local exe conf root line rc=0 target=() pids f
    rm -rf "$run"
    mkdir -p "$run/bin"
    case "$r" in
    idlereaper)
        exe=$run/bin/idlereaper
        cp "$IDLEREAPER" "$exe"
        conf=$OUT/configs/idlereaper-upgrade.toml
        render "$BENCH/idlereaper.toml.in" "$conf" "$r"
        # Its own run directory; log_level info for the `upgraded …` line.
        sed -i -e "s|$OUT/run/$r/|$run/|g" -e 's|^log_level = .*|log_level = "info"|' "$conf"
        "$exe" -f -c "$conf" >>"$log" 2>&1 &
        target=(--pidfile "$run/idlereaper.pid" --log "$run/idlereaper.log")
        ;;
    haproxy)
        exe=$run/bin/haproxy
        cp "$(command -v haproxy)" "$exe"
        conf=$OUT/configs/haproxy-upgrade.cfg
        render "$BENCH/haproxy.cfg.in" "$conf" "$r"
        # -W: master-worker mode, the one HAProxy reloads in (USR2 to the master).
        "$exe" -W -db -f "$conf" >>"$log" 2>&1 &
        ;;
    nginx)
        exe=$run/bin/nginx
        cp "$(command -v nginx)" "$exe"
        conf=$OUT/configs/nginx-upgrade.conf
        render "$BENCH/nginx.conf.in" "$conf" "$r"
        sed -i -e "s|$OUT/run/$r/|$run/|g" -e 's|^daemon off;|daemon on;|' "$conf"
        "$PY" "$BENCH/upgrade.py" subreaper -- "$exe" -p "$run/" -e "$run/error.log" -c "$conf" >>"$log" 2>&1 &
        target=(--pidfile "$run/nginx.pid" --workers "$THREADS")
        ;;
    esac
    root=$!
    track "$root"
    UPGRADE_EXES+=("$exe")
    [ "$r" = haproxy ] && target=(--pid "$root")
    if ! wait_until 15 all_listening "$(p_echo "$r")" "$(p_reap "$r")" "$(p_bulk "$r")" "$(p_pg "$r")" "$(p_redis "$r")"; then
        fail "$r: upgrade rep $rep: the relay did not start (log: logs/${log##*/})"
    else
        timeout $((UPGRADE_WAIT + 400)) "$PY" "$BENCH/upgrade.py" run --kind "$r" \
            --connect "127.0.0.1:$(p_echo "$r")" --conns "$UPGRADE_CONNS" --wait "$UPGRADE_WAIT" \
            --exe "$exe" "${target[@]}" --samples "$OUT/samples/$tag.txt" \
            >"$OUT/logs/$tag.out" 2>"$OUT/logs/$tag.err" || rc=$?
        if client_result "$tag" "$rc" "$r: upgrade rep $rep"; then
            line=$RESULT_LINE
            record "$r" "$rep" "$line"
            upgrade_checks "$r" "$rep" "$line"
        fi
    fi
    # Everything that runs either binary (nginx's new master is not ours), and the starter.
    pids=$(exe_pids "$exe")
    # shellcheck disable=SC2086
    stop_pids $pids "$root"
    # The relay's own log, less its per-connection lines (idlereaper's close lines, nginx's
    # "open socket … left in connection" at the hard stop), which are counted instead.
    for f in "$run"/*.log; do
        [ -s "$f" ] || continue
        awk '/ conn closed |open socket #[0-9]+ left in connection/ {n++; next} {print}
            END {if (n) print "(compare.sh: " n " per-connection lines left out)"}' "$f" \
            >"$OUT/logs/$r-upgrade-$rep-$(basename "$f")"
    done
    # Let the upstream see the closes before the next relay.
    # shellcheck disable=SC2317
    upstream_drained() { [ "$(established "$(u_echo "$r")")" -lt 10 ]; }
    wait_until 20 upstream_drained || true
}

# upgrade_checks RELAY REP LINE: what must hold whatever the timings. idlereaper: it upgraded
# (no refusal), in the same process, which now runs the new binary, and every connection still
# relays. The peers: the reload
# happened and every connection still relays UPGRADE_WAIT s later (on the old processes). For
# all: a new connection relays, and the ping-pong did not break.
upgrade_checks() {
    local r=$1 rep=$2 line=$3 want=reloaded
    [ "$r" = idlereaper ] && want=upgraded
    if [ "$(field "$line" outcome)" != "$want" ]; then
        fail "$r: upgrade rep $rep: no upgrade (outcome=$(field "$line" outcome)$([ -n "$(field "$line" refused)" ] && echo " refused=$(field "$line" refused)"))"
        return 0
    fi
    if [ "$r" = idlereaper ]; then
        [ "$(field "$line" same_pid)" = 1 ] ||
            fail "$r: upgrade rep $rep: the pid changed ($(field "$line" pid_before) -> $(field "$line" pid_after))"
        [ "$(field "$line" exe_new)" = 1 ] ||
            fail "$r: upgrade rep $rep: the process does not run the binary now on disk (/proc/PID/exe)"
    fi
    [ "$(field "$line" lost)" = 0 ] ||
        fail "$r: upgrade rep $rep: $(field "$line" lost) of $UPGRADE_CONNS connections no longer relay after the upgrade"
    [ "$(field "$line" pp_broken)" = 0 ] || fail "$r: upgrade rep $rep: the ping-pong connection broke"
    [ "$(field "$line" new_conn_ok)" = 1 ] || fail "$r: upgrade rep $rep: a new connection does not relay afterwards"
}

# ---------------------------------------------------------------------------------------------
# Real clients: pgbench against the run's own PostgreSQL, redis-benchmark against its own
# redis-server; one of each for the whole run, shared by every relay (and by "direct").

# start_postgres: a fresh cluster in SERVERS_TMP (initdb as the `postgres` user, which it and
# postgres require when this runs as root), on 127.0.0.1:PG_PORT, filled by pgbench -i. The
# postmaster itself is PG_PID (setpriv execs it). Returns 1, after reporting why, on failure.
start_postgres() {
    local data=$SERVERS_TMP/pg log=$OUT/logs/postgres.log as_pg=()
    if [ "$(id -u)" = 0 ]; then as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups --); fi
    mkdir -p "$data"
    chmod 700 "$data"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$data"; fi
    if ! (cd "$SERVERS_TMP" && timeout 120 "${as_pg[@]}" "$PGBIN/initdb" -D "$data" -U postgres \
        --auth=trust --no-sync --no-locale -E UTF8) >"$OUT/logs/initdb.log" 2>&1; then
        fail "PostgreSQL: initdb failed: $(tail -c 300 "$OUT/logs/initdb.log" | tr '\n' ' ')"
        return 1
    fi
    cat >"$OUT/configs/postgresql.conf" <<EOF
# bench/compare.sh: appended to the postgresql.conf that initdb wrote (the rest: defaults).
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = ''    # TCP on loopback only
max_connections = 200           # 8 clients; with -C, ended backends may linger a moment
# A benchmark, not a database: nothing is flushed to disk (pgbench -S only reads anyway).
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    cat "$OUT/configs/postgresql.conf" >>"$data/postgresql.conf"
    (cd "$SERVERS_TMP" && exec "${as_pg[@]}" "$PGBIN/postgres" -D "$data") >"$log" 2>&1 &
    PG_PID=$!
    track "$PG_PID"
    # shellcheck disable=SC2317
    pg_ready() { ! alive "$PG_PID" || "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2; }
    if ! wait_until 30 pg_ready || ! alive "$PG_PID"; then
        fail "PostgreSQL did not start on 127.0.0.1:$PG_PORT: $(tail -c 300 "$log" | tr '\n' ' ')"
        return 1
    fi
    if ! timeout 300 "$PGBIN/pgbench" -i -s "$PGBENCH_SCALE" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres postgres \
        >"$OUT/logs/pgbench-init.log" 2>&1; then
        fail "PostgreSQL: pgbench -i -s $PGBENCH_SCALE failed: $(tail -c 300 "$OUT/logs/pgbench-init.log" | tr '\n' ' ')"
        return 1
    fi
}

# start_redis: redis-server without persistence on 127.0.0.1:REDIS_PORT, and the one key that
# redis-benchmark's GETs read (without -r every GET asks for the same key, this one).
start_redis() {
    local args=(--bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no --daemonize no
        --dir "$SERVERS_TMP" --logfile '')
    echo "redis-server ${args[*]}" >"$OUT/configs/redis-server.txt"
    redis-server "${args[@]}" >"$OUT/logs/redis-server.log" 2>&1 &
    REDIS_PID=$!
    track "$REDIS_PID"
    # shellcheck disable=SC2317
    redis_ready() {
        ! alive "$REDIS_PID" || [ "$(timeout 5 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]
    }
    if ! wait_until 15 redis_ready || ! alive "$REDIS_PID"; then
        fail "redis-server did not start on 127.0.0.1:$REDIS_PORT: $(tail -c 300 "$OUT/logs/redis-server.log" | tr '\n' ' ')"
        return 1
    fi
    if [ "$(timeout 5 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" set 'key:__rand_int__' xxx 2>&1)" != OK ]; then
        fail "redis-server: SET of the benchmark's key failed"
        return 1
    fi
}

# cpu_fields RELAY CPU0 CPU1 COUNT: the relay's CPU over a client's run, and per 100,000
# transactions or requests; nothing for "direct".
cpu_fields() {
    [ "$1" = direct ] && return 0
    awk -v a="$2" -v b="$3" -v n="$4" \
        'BEGIN {printf " relay_cpu_s=%.3f cpu_s_per_100k=%.4f", b - a, (n > 0 ? (b - a) * 100000 / n : 0)}'
}

# pgbench RELAY REP MODE: `pgbench -S -c 8 -j 2 -T PGBENCH_SECS` (select only); MODE persistent
# (each client keeps one connection) or connect (-C: a new connection per transaction).
scenario_pgbench() {
    local r=$1 rep=$2 mode=$3 tag="pgbench-$3-$1-$2" port=$PG_PORT pids="" rc=0 cpu0 cpu1 tps xacts failed
    local scn=pgbench flags=(-S -c 8 -j 2 -T "$PGBENCH_SECS")
    if [ "$mode" = connect ]; then
        scn=pgbench_connect
        flags+=(-C)
    fi
    if [ "$r" != direct ]; then
        port=$(p_pg "$r")
        pids=${RELAY_MEASURE[$r]}
    fi
    # shellcheck disable=SC2086
    cpu0=$(cpu_sum $pids)
    timeout $((PGBENCH_SECS + 60)) "$PGBIN/pgbench" "${flags[@]}" -h 127.0.0.1 -p "$port" -U postgres postgres \
        >"$OUT/logs/$tag.out" 2>"$OUT/logs/$tag.err" || rc=$?
    # shellcheck disable=SC2086
    cpu1=$(cpu_sum $pids)
    tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$OUT/logs/$tag.out")
    xacts=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$OUT/logs/$tag.out")
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$OUT/logs/$tag.out")
    if [ "$rc" -ne 0 ] || [ -z "$tps" ] || [ "${xacts:-0}" -eq 0 ] || [ "${failed:-0}" -ne 0 ]; then
        fail "$r: pgbench $mode rep $rep failed (exit $rc, ${failed:-?} failed transactions): $(tail -c 300 "$OUT/logs/$tag.err" | tr '\n' ' ')"
        return 0
    fi
    record "$r" "$rep" "scenario=$scn clients=8 threads=2 secs=$PGBENCH_SECS tps=$tps transactions=$xacts failed=${failed:-0}$(cpu_fields "$r" "$cpu0" "$cpu1" "$xacts")"
}

# redis RELAY REP PIPELINE N: `redis-benchmark -t get -c 50 -P PIPELINE -n N --csv`; its CSV
# line gives requests/s and latency (ms: avg, min, p50, p95, p99, max). It spins forever when
# it cannot connect, hence the timeout.
scenario_redis() {
    local r=$1 rep=$2 pipe=$3 n=$4 tag="redis-P$3-$1-$2" port=$REDIS_PORT pids="" rc=0 cpu0 cpu1
    local line test rps avg min p50 p95 p99 max
    if [ "$r" != direct ]; then
        port=$(p_redis "$r")
        pids=${RELAY_MEASURE[$r]}
    fi
    # shellcheck disable=SC2086
    cpu0=$(cpu_sum $pids)
    timeout $((60 + n / 10000)) redis-benchmark -h 127.0.0.1 -p "$port" -t get -c 50 -P "$pipe" -n "$n" --csv \
        >"$OUT/logs/$tag.out" 2>"$OUT/logs/$tag.err" || rc=$?
    # shellcheck disable=SC2086
    cpu1=$(cpu_sum $pids)
    line=$(grep -m1 '^"GET"' "$OUT/logs/$tag.out" | tr -d '"' || true)
    IFS=, read -r test rps avg min p50 p95 p99 max <<<"$line"
    if [ "$rc" -ne 0 ] || [ "$test" != GET ] || ! awk -v v="$rps" 'BEGIN {exit !(v > 0)}' ||
        grep -qiE 'error|could not connect' "$OUT/logs/$tag.out" "$OUT/logs/$tag.err"; then
        fail "$r: redis-benchmark -P $pipe rep $rep failed (exit $rc): $(cat "$OUT/logs/$tag.out" "$OUT/logs/$tag.err" | tail -c 300 | tr '\n' ' ')"
        return 0
    fi
    record "$r" "$rep" "scenario=redis pipeline=$pipe clients=50 requests=$n rps=$rps avg_ms=$avg min_ms=$min p50_ms=$p50 p95_ms=$p95 p99_ms=$p99 max_ms=$max$(cpu_fields "$r" "$cpu0" "$cpu1" "$n")"
}

# ---------------------------------------------------------------------------------------------
# Protocols (SCENARIOS=protocols): the same idlereaper listener with `protocol = "tcp"` and with
# "postgres" / "redis" (bench/idlereaper-protocols.toml.in, a process of its own on ports
# 22501..22507, an echo upstream of its own on 22551), with HAProxy and nginx beside them on
# their real-client listeners and "direct" as the ceiling, in front of the run's one PostgreSQL
# and one redis-server: pgbench -S -c 8 -j 2, redis-benchmark -t get -c 50 -P 16 and -P 1, a
# large value SET and GET back (loadgen bigvalue), each round over every target in a rotated
# order; then memory per idle connection held through each of the three listeners, a fresh
# process for each measurement. Results: scenario=proto_* lines in results.txt, the table in
# protocols.md (bench/protocols_report.py).
proto_port() { echo $((22500 + $1)); }
PROTO_PID="" PROTO_ECHO_PID=""

# start_proto_relay: renders the template and starts the process, fresh; sets PROTO_PID.
start_proto_relay() {
    local run=$OUT/run/protocols log=$OUT/logs/relay-idlereaper-protocols.log workers_line=""
    mkdir -p "$run"
    rm -f "$run"/*.pid
    [ -n "$WORKERS" ] && workers_line="workers = $WORKERS"
    sed -e "s|@RUN@|$run|g" -e "s|@WORKERS_LINE@|$workers_line|" -e "s|@LONG_TIMEOUT@|$LONG_TIMEOUT|g" \
        -e "s|@PG_TCP@|$(proto_port 1)|g" -e "s|@PG_POSTGRES@|$(proto_port 2)|g" \
        -e "s|@REDIS_TCP@|$(proto_port 3)|g" -e "s|@REDIS_REDIS@|$(proto_port 4)|g" \
        -e "s|@HOLD_TCP@|$(proto_port 5)|g" -e "s|@HOLD_POSTGRES@|$(proto_port 6)|g" \
        -e "s|@HOLD_REDIS@|$(proto_port 7)|g" -e "s|@U_PG@|$PG_PORT|g" -e "s|@U_REDIS@|$REDIS_PORT|g" \
        -e "s|@U_ECHO@|$(proto_port 51)|g" "$BENCH/idlereaper-protocols.toml.in" >"$OUT/configs/idlereaper-protocols.toml"
    if grep -q '@[A-Z_]*@' "$OUT/configs/idlereaper-protocols.toml"; then
        echo "compare.sh: unfilled placeholder in configs/idlereaper-protocols.toml" >&2
        exit 1
    fi
    "$IDLEREAPER" -f -c "$OUT/configs/idlereaper-protocols.toml" >>"$log" 2>&1 &
    PROTO_PID=$!
    track "$PROTO_PID"
    # shellcheck disable=SC2046
    if ! wait_until 15 all_listening $(for i in 1 2 3 4 5 6 7; do proto_port "$i"; done) || ! alive "$PROTO_PID"; then
        tail -20 "$log" >&2
        echo "compare.sh: the protocol listeners' idlereaper did not start (log: $log)" >&2
        exit 1
    fi
}
stop_proto_relay() {
    [ -n "$PROTO_PID" ] || return 0
    alive "$PROTO_PID" || fail "protocols: the relay process $PROTO_PID died during the run"
    stop_pids "$PROTO_PID"
    PROTO_PID=""
}

# proto_targets KIND: "label port pids" lines for pg or redis: idlereaper's two listeners, the
# peers that run, direct.
proto_targets() {
    local kind=$1 r
    if [ "$kind" = pg ]; then
        echo "idlereaper-tcp $(proto_port 1) $PROTO_PID"
        echo "idlereaper-postgres $(proto_port 2) $PROTO_PID"
    else
        echo "idlereaper-tcp $(proto_port 3) $PROTO_PID"
        echo "idlereaper-redis $(proto_port 4) $PROTO_PID"
    fi
    for r in haproxy nginx; do
        [[ " $RELAYS " == *" $r "* ]] || continue
        if [ "$kind" = pg ]; then echo "$r $(p_pg "$r") ${RELAY_MEASURE[$r]// /,}"; else echo "$r $(p_redis "$r") ${RELAY_MEASURE[$r]// /,}"; fi
    done
    if [ "$kind" = pg ]; then echo "direct $PG_PORT -"; else echo "direct $REDIS_PORT -"; fi
}

# proto_pgbench LABEL PORT PIDS REP
proto_pgbench() {
    local label=$1 port=$2 pids=${3//,/ } rep=$4 tag="proto-pgbench-$1-$4" rc=0 cpu0 cpu1 tps xacts failed
    [ "$pids" = - ] && pids=""
    # shellcheck disable=SC2086
    cpu0=$(cpu_sum $pids)
    timeout $((PGBENCH_SECS + 60)) "$PGBIN/pgbench" -S -c 8 -j 2 -T "$PGBENCH_SECS" -h 127.0.0.1 -p "$port" \
        -U postgres postgres >"$OUT/logs/$tag.out" 2>"$OUT/logs/$tag.err" || rc=$?
    # shellcheck disable=SC2086
    cpu1=$(cpu_sum $pids)
    tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$OUT/logs/$tag.out")
    xacts=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$OUT/logs/$tag.out")
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$OUT/logs/$tag.out")
    if [ "$rc" -ne 0 ] || [ -z "$tps" ] || [ "${xacts:-0}" -eq 0 ] || [ "${failed:-0}" -ne 0 ]; then
        fail "$label: protocols pgbench rep $rep failed (exit $rc): $(tail -c 300 "$OUT/logs/$tag.err" | tr '\n' ' ')"
        return 0
    fi
    record "$label" "$rep" "scenario=proto_pgbench tps=$tps transactions=$xacts$([ -n "$pids" ] && awk -v a="$cpu0" -v b="$cpu1" -v n="$xacts" 'BEGIN {printf " relay_cpu_s=%.3f cpu_s_per_100k=%.4f", b - a, (b - a) * 100000 / n}')"
}

# proto_redis LABEL PORT PIDS REP PIPELINE N
proto_redis() {
    local label=$1 port=$2 pids=${3//,/ } rep=$4 pipe=$5 n=$6 tag="proto-redis-P$5-$1-$4" rc=0 cpu0 cpu1 line test rps rest
    [ "$pids" = - ] && pids=""
    # shellcheck disable=SC2086
    cpu0=$(cpu_sum $pids)
    timeout $((60 + n / 10000)) redis-benchmark -h 127.0.0.1 -p "$port" -t get -c 50 -P "$pipe" -n "$n" --csv \
        >"$OUT/logs/$tag.out" 2>"$OUT/logs/$tag.err" || rc=$?
    # shellcheck disable=SC2086
    cpu1=$(cpu_sum $pids)
    line=$(grep -m1 '^"GET"' "$OUT/logs/$tag.out" | tr -d '"' || true)
    IFS=, read -r test rps rest <<<"$line"
    if [ "$rc" -ne 0 ] || [ "$test" != GET ] || ! awk -v v="$rps" 'BEGIN {exit !(v > 0)}'; then
        fail "$label: protocols redis-benchmark -P $pipe rep $rep failed (exit $rc): $(tail -c 300 "$OUT/logs/$tag.err" | tr '\n' ' ')"
        return 0
    fi
    record "$label" "$rep" "scenario=proto_redis pipeline=$pipe requests=$n rps=$rps$([ -n "$pids" ] && awk -v a="$cpu0" -v b="$cpu1" -v n="$n" 'BEGIN {printf " relay_cpu_s=%.3f cpu_s_per_100k=%.4f", b - a, (b - a) * 100000 / n}')"
}

# proto_bigvalue LABEL PORT PIDS REP
proto_bigvalue() {
    local label=$1 port=$2 rep=$4 tag="proto-bigvalue-$1-$4" rc=0
    timeout 300 "$LOADGEN" bigvalue --connect "127.0.0.1:$port" --size "$((BIGVALUE_MB * 1000000))" \
        --rounds "$BIGVALUE_ROUNDS" >"$OUT/logs/$tag.out" 2>"$OUT/logs/$tag.err" || rc=$?
    client_result "$tag" "$rc" "$label: protocols bigvalue rep $rep" || return 0
    record "$label" "$rep" "${RESULT_LINE/scenario=bigvalue/scenario=proto_bigvalue}"
}

# proto_hold KIND REP: memory per idle connection through the hold-KIND listener, a fresh process.
proto_hold() {
    local kind=$1 rep=$2 port tag="proto-hold-$1-$2" rc=0
    case "$kind" in tcp) port=$(proto_port 5) ;; postgres) port=$(proto_port 6) ;; redis) port=$(proto_port 7) ;; esac
    start_proto_relay
    timeout $((PROTO_HOLD_SECS + 180)) "$LOADGEN" hold --connect "127.0.0.1:$port" --conns "$PROTO_HOLD_N" \
        --pid "$PROTO_PID" --hold "${PROTO_HOLD_SECS}s" >"$OUT/logs/$tag.out" 2>"$OUT/logs/$tag.err" || rc=$?
    if client_result "$tag" "$rc" "protocols hold $kind rep $rep"; then
        record "idlereaper-$kind" "$rep" "${RESULT_LINE/scenario=hold/scenario=proto_hold}"
        [ "$(field "$RESULT_LINE" alive_after)" = "$PROTO_HOLD_N" ] ||
            fail "protocols hold $kind: only $(field "$RESULT_LINE" alive_after) of $PROTO_HOLD_N still relayed"
    fi
    stop_proto_relay
    # shellcheck disable=SC2317
    proto_echo_drained() { [ "$(established "$(proto_port 51)")" -lt 10 ]; }
    wait_until 20 proto_echo_drained || true
}

# proto_each KIND REP FUNCTION ARGS...: FUNCTION LABEL PORT PIDS REP ARGS... for every target,
# starting one further along the list each round.
proto_each() {
    local kind=$1 rep=$2 fn=$3 targets n i
    shift 3
    mapfile -t targets < <(proto_targets "$kind")
    n=${#targets[@]}
    for i in $(seq 0 $((n - 1))); do
        # shellcheck disable=SC2086
        set -- ${targets[$(((i + rep) % n))]} "$rep" "$@"
        say "protocols: $fn $1, rep $rep"
        "$fn" "$@"
        shift 4
    done
}

scenario_protocols() {
    local rep kind
    "$LOADGEN" echo --listen "127.0.0.1:$(proto_port 51)" >"$OUT/logs/upstream-protocols-echo.log" 2>&1 &
    PROTO_ECHO_PID=$!
    track "$PROTO_ECHO_PID"
    wait_until 10 listening "$(proto_port 51)" || {
        fail "protocols: the echo upstream did not start"
        return 0
    }
    start_proto_relay
    for rep in $(seq 1 "$REPS"); do
        proto_each pg "$rep" proto_pgbench
        proto_each redis "$rep" proto_redis 16 "$REDIS_N_P16"
        proto_each redis "$rep" proto_redis 1 "$REDIS_N_P1"
        proto_each redis "$rep" proto_bigvalue
        for r in $RELAYS; do check_relay "$r" protocols; done
    done
    stop_proto_relay
    for rep in $(seq 1 "$PROTO_HOLD_REPS"); do
        for kind in tcp postgres redis; do
            say "protocols: hold $PROTO_HOLD_N idle connections through protocol $kind, rep $rep"
            proto_hold "$kind" "$rep"
        done
    done
    stop_pids "$PROTO_ECHO_PID"
    "$PY" "$BENCH/protocols_report.py" "$OUT" >"$OUT/logs/protocols-report.log" 2>&1 ||
        fail "protocols_report.py failed: $(tail -c 300 "$OUT/logs/protocols-report.log" | tr '\n' ' ')"
}

# ---------------------------------------------------------------------------------------------
say "results in $OUT"
say "relays: $RELAYS; scenarios: $SCENARIOS; scale $SCALE; workers ${WORKERS:-unset}"
for r in $RELAYS; do start_upstreams "$r"; done
start_upstreams direct

# Hold: one fresh relay per measurement, so that its memory starts from the same state. The
# curve points (HOLD_CURVE) are for the memory chart; HOLD_N gives the table and the idle CPU.
if has_scenario hold; then
    for n in $HOLD_CURVE $HOLD_N; do
        secs=$HOLD_CURVE_SECS
        [ "$n" = "$HOLD_N" ] && secs=$HOLD_SECS
        for r in $RELAYS; do
            # HAProxy with its default thread count is only measured at HOLD_N.
            [ "$r" = haproxy-auto ] && [ "$n" != "$HOLD_N" ] && continue
            say "hold: $r, $n connections, ${secs}s"
            scenario_hold "$r" "$n" "$secs"
        done
    done
fi

# The real clients' servers: started once, after the holds (which they would not disturb, but
# there is no need), stopped after the last scenario or by the trap.
PG_READY=0 REDIS_READY=0
if has_scenario pgbench || has_scenario redis || has_scenario protocols; then
    SERVERS_TMP=$(mktemp -d /tmp/idlereaper-bench.XXXXXX)
    chmod 755 "$SERVERS_TMP"
fi
if has_scenario pgbench || has_scenario protocols; then
    say "PostgreSQL: initdb, start on 127.0.0.1:$PG_PORT, pgbench -i -s $PGBENCH_SCALE"
    start_postgres && PG_READY=1
fi
if has_scenario redis || has_scenario protocols; then
    say "redis-server: start on 127.0.0.1:$REDIS_PORT"
    start_redis && REDIS_READY=1
fi

# The quick scenarios: relays started once, fresh; repetitions interleave the relays so that
# a change in the machine's load during the run spreads over all of them.
for r in $RELAYS; do start_relay "$r"; done
for s in reap bulk pingpong churn pgbench redis; do
    has_scenario "$s" || continue
    # A server that did not start has been reported already.
    if { [ "$s" = pgbench ] && [ "$PG_READY" != 1 ]; } || { [ "$s" = redis ] && [ "$REDIS_READY" != 1 ]; }; then
        continue
    fi
    for rep in $(seq 1 "$REPS"); do
        for r in $RELAYS direct; do
            case "$s" in
            reap)
                [ "$r" = direct ] && continue
                say "reap: $r, rep $rep"
                scenario_reap "$r" "$rep"
                ;;
            bulk)
                for streams in 1 4; do
                    say "bulk: $r, $streams stream(s), rep $rep"
                    scenario_bulk "$r" "$rep" "$streams"
                done
                ;;
            pingpong)
                say "pingpong: $r, rep $rep"
                scenario_pingpong "$r" "$rep"
                # With several workers, one CPU for everything means nothing.
                if [ -z "$WORKERS" ] && [ "$(nproc)" -gt 1 ]; then
                    say "pingpong on one CPU: $r, rep $rep"
                    scenario_pingpong_pinned "$r" "$rep"
                fi
                ;;
            churn)
                say "churn: $r, rep $rep"
                scenario_churn "$r" "$rep"
                ;;
            pgbench)
                for mode in persistent connect; do
                    say "pgbench -S$([ "$mode" = connect ] && echo ' -C'): $r, rep $rep"
                    scenario_pgbench "$r" "$rep" "$mode"
                done
                ;;
            redis)
                say "redis-benchmark GET -P 16 ($REDIS_N_P16 requests): $r, rep $rep"
                scenario_redis "$r" "$rep" 16 "$REDIS_N_P16"
                say "redis-benchmark GET -P 1 ($REDIS_N_P1 requests): $r, rep $rep"
                scenario_redis "$r" "$rep" 1 "$REDIS_N_P1"
                ;;
            esac
            [ "$r" = direct ] || check_relay "$r" "$s"
        done
    done
done
if has_scenario protocols && [ "$PG_READY" = 1 ] && [ "$REDIS_READY" = 1 ]; then
    scenario_protocols
fi
for r in $RELAYS; do stop_relay "$r"; done
stop_servers

# Live upgrade: last, with a fresh relay each time (it leaves old processes and a burst of
# closed connections behind); HAProxy with its default thread count is not upgraded.
if has_scenario upgrade; then
    for rep in $(seq 1 "$REPS"); do
        for r in $RELAYS; do
            [ "$r" = haproxy-auto ] && continue
            say "upgrade: $r, $UPGRADE_CONNS connections + ping-pong, rep $rep"
            scenario_upgrade "$r" "$rep"
        done
    done
fi

# Relays' own complaints (idlereaper logs at warn; nginx's error log) are kept with the results.
for r in $RELAYS; do
    for f in "$OUT/run/$r"/*.log; do
        [ -s "$f" ] && cp "$f" "$OUT/logs/$r-$(basename "$f")"
    done
done

say "writing summary and charts"
if ! "$PY" "$BENCH/report.py" "$OUT" >"$OUT/logs/report.log" 2>&1; then
    cat "$OUT/logs/report.log" >&2
    fail "report.py failed"
fi

if [ "$PUBLISH" = 1 ] || { [ "$PUBLISH" = auto ] && [ "$SCALE" = full ] && [ -z "${ONLY:-}" ] &&
    [ "$SCENARIOS" = "$ALL_SCENARIOS" ] && [ ! -s "$ERRORS" ] && [ ! -e "$OUT/contended" ]; }; then
    dest="$BENCH/results/latest"
    [ -n "$WORKERS" ] && dest="$BENCH/results/latest-workers$WORKERS"
    rm -rf "$dest"
    mkdir -p "$dest"
    # The published copy: everything but the copied binaries and run directories.
    (cd "$OUT" && tar --exclude=./bin --exclude=./run -cf - .) | (cd "$dest" && tar -xf -)
    say "published to ${dest#"$ROOT"/}"
elif [ "$PUBLISH" = auto ] && [ -e "$OUT/contended" ]; then
    say "not published: other processes shared the cores during the run (PUBLISH=1 to publish anyway)"
fi

echo
cat "$OUT/summary.md" 2>/dev/null || true
echo
say "done in $(($(date +%s) - T0)) s; results in ${OUT#"$ROOT"/}"
if [ -s "$ERRORS" ]; then
    say "FAILED: $(wc -l <"$ERRORS") error(s):"
    sed 's/^/  /' "$ERRORS"
    exit 1
fi
