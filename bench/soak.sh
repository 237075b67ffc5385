#!/usr/bin/env bash
# bench/soak.sh: a soak test for idlereaper (to run by hand, not in CI): mixed load for DURATION
# seconds, descriptors and memory compared between two resting points; bench/soak.py says how.
#
# Usage: bench/soak.sh                 (10 minutes)
#        DURATION=60 bench/soak.sh     (a quick proof that it works)
set -euo pipefail
exec python3 "$(dirname "$0")/soak.py" "$@"
