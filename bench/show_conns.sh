#!/usr/bin/env bash
# bench/show_conns.sh: what `idlereaperctl show conns` costs the relay with 9,000 idle
# connections open; bench/show_conns.py says how it measures it.
#
#     cargo build --release && bash bench/show_conns.sh      # as root (20,000 descriptors), ~2 min
set -euo pipefail
exec python3 "$(dirname "$0")/show_conns.py" "$@"
