#!/usr/bin/env python3
"""bench/report.py RESULTS_DIR: summary.md and charts/*.png from a bench/compare.py run.

Reads RESULTS_DIR/results.txt (one `relay=… rep=… scenario=… key=value…` line per measurement),
samples/reap-*.txt (reap lateness, µs, one per line), samples/upgrade-*.txt, machine.txt,
load.txt and errors.txt. Quick scenarios are reported as the median over repetitions; reap's max
is the max over them and its early count the sum. The real clients (pgbench, redis-benchmark) add
their throughput, latency and the relay's CPU seconds per 100,000 transactions or requests. The
live upgrade (bench/upgrade.py) reports its worst run: the ping-pong's longest stall,
idlereaper's own pause, and the connections left on an old process, lost, or cut. The parts are
in bench/reporting/: results (reading, aggregating), table, summary, charts.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from reporting.charts import charts  # noqa: E402
from reporting.results import Results, labels, lines_of, load  # noqa: E402
from reporting.summary import summary  # noqa: E402


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: report.py RESULTS_DIR")
    outdir = sys.argv[1]
    rows, machine = load(outdir)
    res = Results(rows, machine)
    errors = lines_of(os.path.join(outdir, "errors.txt"))
    load_lines = lines_of(os.path.join(outdir, "load.txt"))
    label = labels(machine)
    summary(res, outdir, errors, load_lines, label)
    made = charts(res, outdir, label)
    with open(os.path.join(outdir, "summary.md"), "a") as f:
        if made:
            f.write("\n## Charts\n\n" + "\n".join(f"![{m}](charts/{m})" for m in made) + "\n")
    print("wrote summary.md and", ", ".join(made) or "no charts")


if __name__ == "__main__":
    main()
