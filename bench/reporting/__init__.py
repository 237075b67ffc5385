"""reporting: summary.md and charts/*.png from a bench/compare.py run (bench/report.py).

results  results.txt and machine.txt read, aggregated per relay (medians over repetitions),
         and the few formatting rules every part shares
table    the summary's table: one row per metric, idlereaper against the better peer
summary  summary.md: the table, what the scenarios did, the memory curve, anomalies, load
charts   the charts, one function each
"""
