#!/usr/bin/env bash
# bench/profile.sh: where each relay's CPU goes on a request/response load (perf), and the TCP
# segments each relay's traffic takes; bench/profile.py says how it measures them.
#
#     bash bench/profile.sh          # as root, ~1 minute; needs perf (linux-perf), redis,
#                                    # haproxy, nginx with the stream module (compare.sh installs
#                                    # all but perf), and a release build (cargo build --release)
set -euo pipefail
exec python3 "$(dirname "$0")/profile.py" "$@"
