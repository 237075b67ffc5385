#!/usr/bin/env bash
# bench/compare.sh: idlereaper side by side with HAProxy and nginx (stream), on loopback.
#
#     bash bench/compare.sh                  # full run, ~23 minutes
#     SCALE=smoke bash bench/compare.sh      # every scenario at a tiny size, < 2 minutes
#
# The driver is bench/compare.py: its opening comment lists the knobs, all read from the
# environment (SCALE, ONLY, WORKERS, SCENARIOS, REPS, PUBLISH, OUT, the sizes…), and what a run
# writes under bench/results/; the scenarios are bench/scenarios/, one a file.
set -euo pipefail
exec python3 "$(dirname "$0")/compare.py" "$@"
