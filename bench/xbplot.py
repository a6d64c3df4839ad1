"""xbplot — the benchmark report's charts, drawn with matplotlib (Debian's
python3-matplotlib), returned as SVG text.

hbars: horizontal grouped bars with whiskers (one group per row, one bar per
series), linear or log axis. lines: x/y series with whiskers, linear or log
axes. The SVG carries no date and fixed element ids, so the same numbers give
the same bytes.
"""

import io

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

matplotlib.rcParams["svg.hashsalt"] = "xbplot"
matplotlib.rcParams["font.size"] = 9

PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac"]


def _svg(fig):
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return buf.getvalue()


def _title(fig, ax, title, note):
    ax.set_title(title, fontsize=11, fontweight="bold", pad=18 if note else 8)
    if note:
        ax.text(0.5, 1.01, note, transform=ax.transAxes, ha="center", va="bottom", fontsize=8, color="#555")


def hbars(title, rows, series, xlabel, log=False, width=900, note=None, value_fmt=None):
    """rows: [(label, [bar or None per series])], bar = (value, lo, hi, text)."""
    value_fmt = value_fmt or (lambda v: "%.3g" % v)
    nser = len(series)
    h = 0.8 / nser
    fig, ax = plt.subplots(figsize=(width / 100, 0.9 + 0.22 * nser * len(rows) + 0.15 * len(rows)))
    labels, labelled = [], set()
    for i, (label, bars) in enumerate(rows):
        labels.append(label)
        for k, b in enumerate(bars):
            if b is None or b[0] is None or b[0] <= 0 and log:
                continue
            v, lo, hi, txt = b
            y = i + (k - (nser - 1) / 2) * h
            err = None
            if lo is not None and hi is not None:
                err = [[max(v - lo, 0)], [max(hi - v, 0)]]
            ax.barh(y, v, height=h * 0.9, color=PALETTE[k % len(PALETTE)], xerr=err,
                    error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "#333"},
                    label=None if k in labelled else series[k])
            labelled.add(k)
            ax.text((hi if hi is not None else v) * (1.04 if log else 1.0) + (0 if log else 0.01 * v), y,
                    " " + (txt if txt is not None else value_fmt(v)), va="center", fontsize=7, color="#333")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels)
    ax.invert_yaxis()
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel + (" (log scale)" if log else ""))
    ax.margins(x=0.15)
    ax.grid(axis="x", color="#ddd", lw=0.6)
    ax.set_axisbelow(True)
    if nser > 1:
        ax.legend(loc="lower right", fontsize=8)
    _title(fig, ax, title, note)
    return _svg(fig)


def lines(title, series, xlabel, ylabel, logx=False, logy=False, width=820, height=460, note=None):
    """series: [(name, [(x, y, lo, hi)])] — whiskers lo..hi on y."""
    fig, ax = plt.subplots(figsize=(width / 100, height / 100))
    for k, (name, pts) in enumerate(series):
        if not pts:
            continue
        pts = sorted(pts)
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        err = [[max(p[1] - p[2], 0) if p[2] is not None else 0 for p in pts],
               [max(p[3] - p[1], 0) if p[3] is not None else 0 for p in pts]]
        ax.errorbar(xs, ys, yerr=err, fmt="o-", ms=3, lw=1.2, capsize=2, color=PALETTE[k % len(PALETTE)],
                    label=name)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel + (" (log scale)" if logx else ""))
    ax.set_ylabel(ylabel + (" (log scale)" if logy else ""))
    ax.grid(color="#ddd", lw=0.6)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    _title(fig, ax, title, note)
    return _svg(fig)
