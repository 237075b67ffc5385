"""The charts of a run, into charts/: memory per connection by number held, reap lateness (CDF
and histogram), bulk throughput, churn, ping-pong, the ping-pong around a live upgrade, and the
real clients; each drawn only when the run measured it. matplotlib, without a display (Agg)."""

import math
import os

from .results import COLORS, REAL_CLIENTS, fmt, num


class Charts:
    def __init__(self, res, outdir, label):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker

        self.plt, self.ticker = plt, matplotlib.ticker
        self.res, self.label = res, label
        self.cdir = os.path.join(outdir, "charts")
        self.sdir = os.path.join(outdir, "samples")
        os.makedirs(self.cdir, exist_ok=True)
        self.made = []
        self.relays = [r for r in res.relays if r != "direct"]
        self.series_all = list(res.relays)

    def save(self, fig, name, rect=None):
        fig.tight_layout(rect=rect)
        fig.savefig(os.path.join(self.cdir, name), dpi=110)
        self.plt.close(fig)
        self.made.append(name)

    def bars(self, ax, groups, series, values, errs, unit_fmt, legend=True):
        n = len(series)
        width = 0.8 / max(n, 1)
        for i, s in enumerate(series):
            xs = [g + (i - (n - 1) / 2) * width for g in range(len(groups))]
            ys = [values[s][g] if values[s][g] is not None else 0 for g in range(len(groups))]
            lo = [max(0, ys[g] - errs[s][g][0]) if errs[s][g] else 0 for g in range(len(groups))]
            hi = [max(0, errs[s][g][1] - ys[g]) if errs[s][g] else 0 for g in range(len(groups))]
            ax.bar(xs, ys, width, color=COLORS[s], label=self.label[s], yerr=[lo, hi], capsize=3)
            for x, y, v in zip(xs, ys, [values[s][g] for g in range(len(groups))]):
                if v is not None:
                    ax.annotate(
                        unit_fmt(v),
                        (x, y),
                        textcoords="offset points",
                        xytext=(0, 3),
                        ha="center",
                        fontsize=7,
                    )
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(groups)
        ax.grid(axis="y", alpha=0.3)
        if legend:
            ax.legend(fontsize=8)

    def spread(self, relay, scenario, key, **match):
        vs = [num(r.get(key)) for r in self.res.select(relay, scenario, **match)]
        vs = [v for v in vs if v is not None]
        return (min(vs), max(vs)) if vs else None

    def hold_memory(self):
        res, ns = self.res, self.res.hold_ns()
        if not ns:
            return
        fig, ax = self.plt.subplots(figsize=(7, 4.2))
        for r in self.relays:
            pts = [(n, res.hold(r, n)[0]) for n in ns]
            pts = [(n, v / 1024) for n, v in pts if v is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=COLORS[r], label=self.label[r])
                n, v = pts[-1]
                ax.annotate(f"{v:.2f}", (n, v), textcoords="offset points", xytext=(6, 0), fontsize=8)
        ax.set_xlabel("idle relayed connections held (N)")
        ax.set_ylabel("relay RSS growth / N (KiB per connection)")
        ax.set_title("Memory per idle relayed connection (lower is better)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
        self.save(fig, "hold_memory.png")

    def reap_samples(self):
        """Each relay's reap lateness samples (ms), sorted, over every repetition."""
        samples = {}
        for r in self.relays:
            vals, prefix = [], f"reap-{r}-"
            for name in sorted(os.listdir(self.sdir)) if os.path.isdir(self.sdir) else []:
                if name.startswith(prefix) and name.endswith(".txt") and name[len(prefix) : -4].isdigit():
                    with open(os.path.join(self.sdir, name)) as f:
                        vals += [float(x) / 1000.0 for x in f if x.strip()]
            if vals:
                samples[r] = sorted(vals)
        return samples

    def reap_lateness(self):
        samples = self.reap_samples()
        if not samples:
            return
        m = self.res.machine
        fig, (ax, ax2) = self.plt.subplots(1, 2, figsize=(11, 4.2))
        allv = [v for vs in samples.values() for v in vs]
        lo = min(min(allv), 0.0)
        hi_q = max(vs[min(len(vs) - 1, int(math.ceil(0.995 * len(vs))) - 1)] for vs in samples.values())
        hi = max(hi_q * 1.15, 2.5)
        for r, vs in samples.items():
            ys = [(i + 1) / len(vs) for i in range(len(vs))]
            ax.step(vs, ys, where="post", color=COLORS[r], label=f"{self.label[r]} (max {vs[-1]:.2f} ms)")
        ax.axvline(0, color="black", lw=0.8)
        ax.axvline(2.0, color="red", lw=0.8, ls="--", label="target p99: tick + 1 ms")
        ax.set_xlim(lo - 0.1, hi)
        ax.set_xlabel("lateness: close − relay's last write − idle timeout (ms)")
        ax.set_ylabel("fraction of connections closed")
        ax.set_title(
            f"Idle-close lateness CDF ({m.get('reap_conns', '?')} conns, {m.get('reap_timeout', '?')})"
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        bins = 60
        width = (hi - lo) / bins
        edges = [lo + i * width for i in range(bins + 1)]
        for r, vs in samples.items():
            ax2.hist(
                [min(v, hi) for v in vs],
                bins=edges,
                histtype="step",
                color=COLORS[r],
                label=self.label[r],
                lw=1.4,
            )
        ax2.axvline(0, color="black", lw=0.8)
        ax2.set_xlabel("lateness (ms; the last bin holds everything later)")
        ax2.set_ylabel("connections")
        ax2.set_title("Idle-close lateness histogram (left of 0 = closed early)")
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=8)
        self.save(fig, "reap_lateness.png")

    def bulk(self):
        res = self.res
        series = [s for s in self.series_all if res.select(s, "bulk")]
        if not series:
            return
        vals = {s: [res.med(s, "bulk", "gbytes_per_s", streams=k) for k in ("1", "4")] for s in series}
        errs = {s: [self.spread(s, "bulk", "gbytes_per_s", streams=k) for k in ("1", "4")] for s in series}
        fig, ax = self.plt.subplots(figsize=(8, 4.2))
        self.bars(ax, ["1 stream", "4 streams"], series, vals, errs, lambda v: f"{v:.2f}")
        ax.set_ylabel("GB/s (median; whiskers min–max)")
        ax.set_title("Bulk throughput through the relay, iperf3 (higher is better)")
        self.save(fig, "bulk.png")

    def churn(self):
        res = self.res
        series = [s for s in self.series_all if res.select(s, "churn")]
        if not series:
            return
        vals = {s: [res.med(s, "churn", "conns_per_s")] for s in series}
        errs = {s: [self.spread(s, "churn", "conns_per_s")] for s in series}
        fig, ax = self.plt.subplots(figsize=(7, 4.2))
        groups = [f"{res.machine.get('churn_threads', '?')} client threads"]
        self.bars(ax, groups, series, vals, errs, lambda v: f"{v:,.0f}")
        ax.set_ylabel("connections per second (median; whiskers min–max)")
        ax.set_title("Churn: connect, 64 B request, response, close (higher is better)")
        self.save(fig, "churn.png")

    def pingpong(self):
        res = self.res
        series = [s for s in self.series_all if res.select(s, "pingpong")]
        if not series:
            return
        kinds = [("pingpong", "p50_us", "p50"), ("pingpong", "p99_us", "p99")]
        if any(res.select(s, "pingpong_1cpu") for s in series):
            kinds += [
                ("pingpong_1cpu", "p50_us", "p50, all on CPU 0"),
                ("pingpong_1cpu", "p99_us", "p99, all on CPU 0"),
            ]
        vals = {s: [res.med(s, sc, k) for sc, k, _ in kinds] for s in series}
        errs = {s: [self.spread(s, sc, k) for sc, k, _ in kinds] for s in series}
        fig, ax = self.plt.subplots(figsize=(10 if len(kinds) > 2 else 8, 4.2))
        self.bars(ax, [g for _, _, g in kinds], series, vals, errs, lambda v: f"{v:.0f}")
        ax.set_ylabel("round trip, µs (median; whiskers min–max)")
        ax.set_title("64-byte ping-pong latency (lower is better)")
        self.save(fig, "pingpong.png")

    def upgrade_trips(self, relay, rep):
        """The recorded round trips of one upgrade run: (t ms, rtt ms) lists."""
        xs, ys = [], []
        path = os.path.join(self.sdir, f"upgrade-{relay}-{rep}.txt")
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    if line.startswith("#") or not line.strip():
                        continue
                    t, v = line.split()
                    xs.append(float(t))
                    ys.append(float(v))
        return xs, ys

    def upgrade_pingpong(self):
        """The ping-pong's round trips around the upgrade signal, each relay's worst run."""
        ups = {r: u for r, u in ((r, self.res.upgrade(r)) for r in self.relays) if u}
        if not ups:
            return
        fig, ax = self.plt.subplots(figsize=(9, 4.2))
        plotted = False
        for r, u in ups.items():
            xs, ys = self.upgrade_trips(r, u["stall_rep"])
            if xs:
                ax.scatter(
                    xs, ys, s=4, color=COLORS[r], label=f"{self.label[r]} (longest {u['stall']:.1f} ms)"
                )
                plotted = True
        if not plotted:
            self.plt.close(fig)
            return
        ax.axvline(0, color="black", lw=0.8, label="signal")
        ax.axhline(50, color="red", lw=0.8, ls="--", label="target: stall ≤ 50 ms")
        ax.set_yscale("log")
        ax.set_xlabel("time from the upgrade signal (ms)")
        ax.set_ylabel("ping-pong round trip (ms, log)")
        ax.set_title(
            f"64-byte ping-pong during a live upgrade with {fmt(num(self.res.machine.get('upgrade_conns')))} idle connections\n"
            "(every round trip ≥ 1 ms, one in ten of the rest; worst run per relay)",
            fontsize=10,
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        self.save(fig, "upgrade_pingpong.png")

    def real_clients(self):
        """Throughput above, the relay's CPU per 100k transactions below; a column per test."""
        res, series_all = self.res, self.series_all
        tests = [t for t in REAL_CLIENTS if any(res.select(s, t[0], **t[1]) for s in series_all)]
        if not tests:
            return
        fig, axes = self.plt.subplots(2, len(tests), figsize=(3.4 * len(tests) + 0.6, 7.2), squeeze=False)
        for i, (scenario, match, _, unit, key, title) in enumerate(tests):
            series = [s for s in series_all if res.select(s, scenario, **match)]
            panels = [
                (
                    key,
                    unit,
                    series,
                    lambda v: f"{v / 1000:.1f}k" if v >= 1000 else f"{v:.0f}",
                    "higher is better",
                ),
                (
                    "cpu_s_per_100k",
                    "relay CPU s per 100k",
                    [s for s in series if s != "direct"],
                    lambda v: f"{v:.3f}",
                    "lower is better",
                ),
            ]
            for j, (k, ylabel, sers, vfmt, better) in enumerate(panels):
                ax = axes[j][i]
                vals = {s: [res.med(s, scenario, k, **match)] for s in sers}
                errs = {s: [self.spread(s, scenario, k, **match)] for s in sers}
                self.bars(ax, [""], sers, vals, errs, vfmt, legend=False)
                ax.set_xticks([])
                if k != "cpu_s_per_100k":
                    ax.yaxis.set_major_formatter(self.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
                ax.set_ylabel(ylabel, fontsize=9)
                ax.set_title(f"{title}\n{ylabel} ({better})", fontsize=9)
        handles = [self.plt.Rectangle((0, 0), 1, 1, color=COLORS[s]) for s in series_all]
        fig.legend(
            handles, [self.label[s] for s in series_all], loc="lower center", ncol=len(series_all), fontsize=9
        )
        fig.suptitle("Real clients through each relay (median; whiskers min–max)")
        self.save(fig, "real_clients.png", rect=(0, 0.05, 1, 1))


def charts(res, outdir, label):
    """Every chart the run has figures for; returns their file names."""
    c = Charts(res, outdir, label)
    for draw in (
        c.hold_memory,
        c.reap_lateness,
        c.bulk,
        c.churn,
        c.pingpong,
        c.upgrade_pingpong,
        c.real_clients,
    ):
        draw()
    return c.made
