#!/usr/bin/env python3
"""Plots of a mapalloc-bench run (and of benches/callgrind.sh).

    python3 benches/plot.py [--results DIR] [--no-matplotlib]

Reads DIR/summary.csv (and DIR/callgrind.csv if present; DIR defaults to
benches/results) and writes, next to them:

    time.svg        each allocator's median time relative to glibc, per workload (log scale)
    rss.svg         peak RSS relative to glibc, per workload (log scale)
    scaling.svg     time at N threads / time at 1 thread, geometric mean over the
                    thread-taking workloads, per allocator (ideal: 1 up to the CPU count)
    callgrind.svg   instructions per 32-byte alloc+free pair (if callgrind.csv)

`cargo bench` runs it after writing the CSV. Uses matplotlib when it can
be imported; otherwise, or with --no-matplotlib, writes the same charts as
plain SVG with no dependency at all.
"""

import argparse
import csv
import math
import os
import sys
from collections import OrderedDict

HERE = os.path.dirname(os.path.abspath(__file__))

ORDER = ["mapalloc", "mapalloc-hardened", "glibc", "jemalloc", "tcmalloc", "mimalloc", "mimalloc-secure"]
COLORS = {
    "mapalloc": "#1f77b4",
    "mapalloc-hardened": "#9ecae1",
    "glibc": "#7f7f7f",
    "jemalloc": "#d62728",
    "tcmalloc": "#ff7f0e",
    "mimalloc": "#2ca02c",
    "mimalloc-secure": "#98df8a",
}


def color(alloc):
    return COLORS.get(alloc, "#9467bd")


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def ordered_allocs(rows):
    seen = OrderedDict()
    for r in rows:
        seen[r["alloc"]] = True
    return sorted(seen, key=lambda a: ORDER.index(a) if a in ORDER else len(ORDER))


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


# ---------------------------------------------------------------------------
# Data preparation (shared by both back ends)
# ---------------------------------------------------------------------------


def ratio_data(rows, column):
    """(cases, {alloc: [value of `column` per case]})."""
    cases = list(OrderedDict((r["case"], True) for r in rows))
    val = {(r["case"], r["alloc"]): num(r[column]) for r in rows}
    series = OrderedDict(
        (a, [val.get((c, a), float("nan")) for c in cases]) for a in ordered_allocs(rows)
    )
    return cases, series


def scaling_data(rows):
    """(threads, {alloc: [geomean over workloads of time(N) / time(1)]})."""
    t = {}
    for r in rows:
        if r["case"] != r["workload"]:
            t[(r["workload"], int(r["threads"]), r["alloc"])] = num(r["median_ns"])
    threads = sorted({k[1] for k in t})
    if len(threads) < 2:
        return [], {}
    workloads = sorted({k[0] for k in t})
    series = OrderedDict()
    for a in ordered_allocs(rows):
        vals = []
        for n in threads:
            logs = []
            for w in workloads:
                one, tn = t.get((w, 1, a)), t.get((w, n, a))
                if one and tn and one == one and tn == tn and one > 0:
                    logs.append(math.log(tn / one))
            vals.append(math.exp(sum(logs) / len(logs)) if logs else float("nan"))
        series[a] = vals
    return threads, series


def callgrind_data(rows):
    measures = [m for m in ["box", "box-lone", "inlined", "switch"] if any(r["measure"] == m for r in rows)]
    allocs = ordered_allocs(rows)
    val = {(r["alloc"], r["measure"]): float(r["ir_per_pair"]) for r in rows}
    series = OrderedDict(
        (a, [val.get((a, m), float("nan")) for m in measures]) for a in allocs
    )
    return measures, series


# ---------------------------------------------------------------------------
# matplotlib back end
# ---------------------------------------------------------------------------


def mpl_bars(plt, path, title, ylabel, groups, series, log=False, ref=None):
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(groups) + 3), 5))
    n = len(series)
    width = 0.8 / max(n, 1)
    for i, (alloc, vals) in enumerate(series.items()):
        xs = [g + (i - (n - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, vals, width, label=alloc, color=color(alloc))
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=30, ha="right")
    if log:
        ax.set_yscale("log")
        vals = [v for vs in series.values() for v in vs if v == v and v > 0]
        if vals:
            ticks = nice_ticks(min(vals) / 1.2, max(vals) * 1.2, True)
            ax.set_yticks(ticks)
            ax.set_yticklabels([fmt_tick(t) for t in ticks])
            ax.minorticks_off()
    if ref is not None:
        ax.axhline(ref, color="black", linewidth=0.8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def mpl_scaling(plt, path, threads, series, cpus):
    fig, ax = plt.subplots(figsize=(9, 5))
    for alloc, vals in series.items():
        ax.plot(threads, vals, marker="o", label=alloc, color=color(alloc))
    ax.set_xscale("log", base=2)
    ax.set_xticks(threads)
    ax.set_xticklabels([str(t) for t in threads])
    if cpus:
        # Shade from halfway (on the log axis) between `cpus` and 2 x `cpus`.
        ax.axvspan(cpus * math.sqrt(2), max(threads) * 1.1, color="grey", alpha=0.12,
                   label=f"oversubscribed (> {cpus} CPUs)")
    ax.set_xlabel("threads (work per thread fixed)")
    ax.set_ylabel("time / time at 1 thread (geometric mean)")
    ax.set_title("thread scaling")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------------------
# Dependency-free SVG back end
# ---------------------------------------------------------------------------


def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Svg:
    def __init__(self, w, h):
        self.w, self.h, self.parts = w, h, []

    def add(self, s):
        self.parts.append(s)

    def text(self, x, y, s, size=12, anchor="start", rotate=None, color="#000"):
        tr = f' transform="rotate({rotate} {x:.1f} {y:.1f})"' if rotate is not None else ""
        self.add(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
                 f'fill="{color}" font-family="sans-serif"{tr}>{esc(s)}</text>')

    def line(self, x1, y1, x2, y2, color="#000", width=1, dash=None):
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.add(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                 f'stroke="{color}" stroke-width="{width}"{d}/>')

    def rect(self, x, y, w, h, color, opacity=1.0):
        self.add(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{max(h, 0):.1f}" '
                 f'fill="{color}" fill-opacity="{opacity}"/>')

    def save(self, path):
        with open(path, "w") as f:
            f.write(f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.w}" height="{self.h}" '
                    f'viewBox="0 0 {self.w} {self.h}">\n<rect width="100%" height="100%" fill="white"/>\n')
            f.write("\n".join(self.parts))
            f.write("\n</svg>\n")


def nice_ticks(lo, hi, log):
    if log:
        a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
        ticks = []
        for e in range(a, b + 1):
            for m in (1, 2, 5):
                v = m * 10 ** e
                if lo <= v <= hi:
                    ticks.append(v)
        return ticks or [lo, hi]
    span = hi - lo
    step = 10 ** math.floor(math.log10(span / 5)) if span > 0 else 1
    for m in (1, 2, 5, 10):
        if span / (step * m) <= 6:
            step *= m
            break
    t, ticks = math.ceil(lo / step) * step, []
    while t <= hi + 1e-9:
        ticks.append(t)
        t += step
    return ticks


def fmt_tick(v):
    if v >= 100 or v == int(v):
        return f"{v:g}"
    return f"{v:.2g}"


def svg_axes(svg, box, lo, hi, log, ylabel, title):
    x0, y0, x1, y1 = box  # plot area: left, top, right, bottom

    def ymap(v):
        if log:
            return y1 - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * (y1 - y0)
        return y1 - (v - lo) / (hi - lo) * (y1 - y0)

    for t in nice_ticks(lo, hi, log):
        y = ymap(t)
        svg.line(x0, y, x1, y, color="#ddd")
        svg.text(x0 - 6, y + 4, fmt_tick(t), size=11, anchor="end")
    svg.line(x0, y0, x0, y1)
    svg.line(x0, y1, x1, y1)
    svg.text((x0 + x1) / 2, 22, title, size=15, anchor="middle")
    svg.text(18, (y0 + y1) / 2, ylabel, size=12, anchor="middle", rotate=-90)
    return ymap


def svg_legend(svg, x, y, names, extra=None):
    for i, a in enumerate(names):
        svg.rect(x, y + i * 18 - 10, 12, 12, color(a))
        svg.text(x + 18, y + i * 18, a, size=12)
    if extra:
        i = len(names)
        svg.rect(x, y + i * 18 - 10, 12, 12, "#888", opacity=0.25)
        svg.text(x + 18, y + i * 18, extra, size=12)


def svg_bars(path, title, ylabel, groups, series, log=False, ref=None):
    vals = [v for vs in series.values() for v in vs if v == v and v > 0]
    if not vals:
        return
    lo, hi = min(vals), max(vals)
    if log:
        lo, hi = lo / 1.5, hi * 1.5
    else:
        lo, hi = 0, hi * 1.1
    w = max(760, 90 * len(groups) + 260)
    h = 440
    svg = Svg(w, h)
    box = (70, 40, w - 190, h - 100)
    ymap = svg_axes(svg, box, lo, hi, log, ylabel, title)
    x0, _, x1, y1 = box
    gw = (x1 - x0) / max(len(groups), 1)
    n = len(series)
    bw = gw * 0.8 / max(n, 1)
    for gi, g in enumerate(groups):
        gx = x0 + gi * gw + gw * 0.1
        for si, (alloc, vs) in enumerate(series.items()):
            v = vs[gi]
            if v == v and v > 0:
                y = ymap(v)
                svg.rect(gx + si * bw, y, bw * 0.95, y1 - y, color(alloc))
        cx = x0 + gi * gw + gw / 2
        svg.text(cx, y1 + 14, g, size=11, anchor="end", rotate=-30)
    if ref is not None and lo <= ref <= hi:
        svg.line(x0, ymap(ref), x1, ymap(ref), color="#000", width=1.2, dash="4 3")
    svg_legend(svg, x1 + 20, 60, list(series))
    svg.save(path)


def svg_scaling(path, threads, series, cpus):
    vals = [v for vs in series.values() for v in vs if v == v]
    if not vals:
        return
    hi = max(vals) * 1.1
    w, h = 760, 460
    svg = Svg(w, h)
    box = (70, 40, w - 230, h - 60)
    ymap = svg_axes(svg, box, 0, hi, False, "time / time at 1 thread", "thread scaling (work per thread fixed)")
    x0, y0, x1, y1 = box
    lt = [math.log2(t) for t in threads]
    span = (max(lt) - min(lt)) or 1

    def xmap(t):
        return x0 + 20 + (math.log2(t) - min(lt)) / span * (x1 - x0 - 40)

    extra = None
    if cpus and max(threads) > cpus:
        xs = xmap(cpus * math.sqrt(2))
        svg.rect(xs, y0, x1 - xs, y1 - y0, "#888", opacity=0.12)
        extra = f"oversubscribed (> {cpus} CPUs)"
    for t in threads:
        svg.text(xmap(t), y1 + 16, str(t), size=11, anchor="middle")
    svg.text((x0 + x1) / 2, y1 + 36, "threads", size=12, anchor="middle")
    for alloc, vs in series.items():
        pts = [(xmap(t), ymap(v)) for t, v in zip(threads, vs) if v == v]
        c = color(alloc)
        svg.add('<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>'.format(
            c, " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)))
        for x, y in pts:
            svg.add(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{c}"/>')
    svg_legend(svg, x1 + 20, 60, list(series), extra)
    svg.save(path)


# ---------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    ap.add_argument("--no-matplotlib", action="store_true",
                    help="write the SVGs by hand even if matplotlib is installed")
    args = ap.parse_args()

    plt = None
    if not args.no_matplotlib:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt  # noqa: F811
        except ImportError:
            print("plot.py: matplotlib not found, writing plain SVG", file=sys.stderr)

    summary = os.path.join(args.results, "summary.csv")
    if not os.path.exists(summary):
        sys.exit(f"plot.py: {summary} not found; run `cargo bench` first")
    rows = read_csv(summary)
    out = []

    for column, name, title, ylabel in [
        ("time_vs_glibc", "time.svg", "time relative to glibc (lower is faster; log scale)", "time / glibc's"),
        ("rss_vs_glibc", "rss.svg", "peak RSS relative to glibc (log scale)", "peak RSS / glibc's"),
    ]:
        cases, series = ratio_data(rows, column)
        p = os.path.join(args.results, name)
        if plt:
            mpl_bars(plt, p, title, ylabel, cases, series, log=True, ref=1.0)
        else:
            svg_bars(p, title, ylabel, cases, series, log=True, ref=1.0)
        out.append(p)

    threads, series = scaling_data(rows)
    if threads:
        p = os.path.join(args.results, "scaling.svg")
        cpus = os.cpu_count()
        if plt:
            mpl_scaling(plt, p, threads, series, cpus)
        else:
            svg_scaling(p, threads, series, cpus)
        out.append(p)

    cg = os.path.join(args.results, "callgrind.csv")
    if os.path.exists(cg):
        measures, series = callgrind_data(read_csv(cg))
        p = os.path.join(args.results, "callgrind.svg")
        title = "instructions per 32-byte alloc+free pair (callgrind)"
        if plt:
            mpl_bars(plt, p, title, "instructions", measures, series)
        else:
            svg_bars(p, title, "instructions", measures, series)
        out.append(p)

    for p in out:
        print(f"wrote {p}")


if __name__ == "__main__":
    main()
