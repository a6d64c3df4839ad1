"""xbsvg — tiny SVG charts (standard library only) for bench/report.

hbars: horizontal grouped bars with whiskers (one group per row, one bar per
series), linear or log-scale axis. lines: x/y series with whiskers, linear or
log axes. Output is self-contained SVG 1.1 text.
"""

import math
from xml.sax.saxutils import escape

PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac"]
FONT = "font-family='DejaVu Sans, Helvetica, Arial, sans-serif'"


def _fmt(v):
    if v == 0:
        return "0"
    if 1e-3 <= abs(v) < 1e6:
        return "%g" % v
    return "%.0e" % v


def _nice_ticks(lo, hi, n=6):
    if hi <= lo:
        hi = lo + 1
    span = hi - lo
    step = 10 ** math.floor(math.log10(span / n))
    for m in (1, 2, 2.5, 5, 10):
        if span / (step * m) <= n:
            step *= m
            break
    start = math.floor(lo / step) * step
    ticks = []
    t = start
    while t <= hi + step * 1e-9:
        if t >= lo - step * 1e-9:
            ticks.append(round(t, 12))
        t += step
    return ticks


def _log_ticks(lo, hi):
    ticks = []
    e0, e1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    for e in range(e0, e1 + 1):
        for m in (1, 2, 5):
            v = m * 10 ** e
            if lo <= v <= hi:
                ticks.append(v)
    return ticks


class _Axis:
    def __init__(self, lo, hi, a, b, log):
        self.log = log
        if log:
            lo = max(lo, 1e-12)
            self.lo, self.hi = 10 ** math.floor(math.log10(lo)), 10 ** math.ceil(math.log10(hi))
            if self.hi <= self.lo:  # every value a power of ten: one decade
                self.hi = self.lo * 10
        else:
            t = _nice_ticks(min(0.0, lo), hi)
            self.lo, self.hi = t[0], t[-1] if t[-1] >= hi else hi
        self.a, self.b = a, b

    def __call__(self, v):
        if self.log:
            v = max(v, self.lo)
            f = (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        else:
            f = (v - self.lo) / (self.hi - self.lo) if self.hi > self.lo else 0
        return self.a + f * (self.b - self.a)

    def ticks(self):
        return _log_ticks(self.lo, self.hi) if self.log else _nice_ticks(self.lo, self.hi)


def _text(x, y, s, size=11, anchor="start", weight="normal", color="#222", rotate=None):
    tr = " transform='rotate(%d %.1f %.1f)'" % (rotate, x, y) if rotate else ""
    return ("<text x='%.1f' y='%.1f' font-size='%d' text-anchor='%s' font-weight='%s' fill='%s' %s%s>"
            "%s</text>" % (x, y, size, anchor, weight, color, FONT, tr, escape(s)))


def hbars(title, rows, series, xlabel, log=False, width=900, note=None, value_fmt=None):
    """rows: [(label, [bar or None per series])], bar = (value, lo, hi, text)."""
    value_fmt = value_fmt or (lambda v: "%.3g" % v)
    label_w = min(420, 12 + 6.4 * max([len(r[0]) for r in rows] + [10]))
    bar_h, gap = 13, 9
    nser = len(series)
    top = 46 + (16 if note else 0)
    group_h = nser * bar_h + gap
    plot_h = len(rows) * group_h
    legend_h = 24
    height = top + plot_h + 44 + legend_h
    x0, x1 = label_w, width - 90
    vals = [b[k] for r in rows for b in r[1] if b for k in (0, 1, 2) if b[k] is not None and b[k] > 0]
    if not vals:
        vals = [1]
    ax = _Axis(min(vals) if log else 0, max(vals) * (1.0 if log else 1.05), x0, x1, log)
    out = ["<svg xmlns='http://www.w3.org/2000/svg' width='%d' height='%d' viewBox='0 0 %d %d'>"
           % (width, height, width, height),
           "<rect width='100%' height='100%' fill='white'/>",
           _text(width / 2, 20, title, 14, "middle", "bold")]
    if note:
        out.append(_text(width / 2, 38, note, 10, "middle", color="#555"))
    for t in ax.ticks():
        x = ax(t)
        out.append("<line x1='%.1f' y1='%d' x2='%.1f' y2='%d' stroke='#ddd'/>" % (x, top - 4, x, top + plot_h))
        out.append(_text(x, top + plot_h + 14, _fmt(t), 10, "middle", color="#444"))
    out.append(_text((x0 + x1) / 2, top + plot_h + 32, xlabel + (" (log scale)" if log else ""), 11,
                     "middle"))
    for i, (label, bars) in enumerate(rows):
        gy = top + i * group_h
        out.append(_text(x0 - 6, gy + nser * bar_h / 2 + 4, label, 11, "end"))
        for k, b in enumerate(bars):
            if not b or b[0] is None or b[0] != b[0]:
                continue
            v, lo, hi, txt = b
            y = gy + k * bar_h
            xs = ax(ax.lo if log else 0)
            xv = ax(v)
            out.append("<rect x='%.1f' y='%.1f' width='%.1f' height='%d' fill='%s'/>" % (
                xs, y + 1, max(0.5, xv - xs), bar_h - 2, PALETTE[k % len(PALETTE)]))
            if lo is not None and hi is not None and hi > lo:
                yl = y + bar_h / 2
                out.append("<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#000' stroke-width='1'/>"
                           % (ax(lo), yl, ax(hi), yl))
                for xx in (ax(lo), ax(hi)):
                    out.append("<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#000'/>" % (
                        xx, yl - 3, xx, yl + 3))
            out.append(_text(max(xv, ax(hi) if hi else xv) + 4, y + bar_h - 3,
                             txt if txt is not None else value_fmt(v), 9, color="#333"))
    ly = height - 14
    lx = x0
    for k, s in enumerate(series):
        out.append("<rect x='%.1f' y='%d' width='12' height='10' fill='%s'/>" % (
            lx, ly - 9, PALETTE[k % len(PALETTE)]))
        out.append(_text(lx + 16, ly, s, 11))
        lx += 30 + 6.5 * len(s)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def lines(title, series, xlabel, ylabel, logx=False, logy=False, width=820, height=460, note=None):
    """series: [(name, [(x, y, lo, hi)])] — whiskers lo..hi on y."""
    left, right, top, bottom = 80, 200, 46 + (16 if note else 0), 56
    xs = [p[0] for _, pts in series for p in pts if p[0] and p[0] > 0]
    ys = [v for _, pts in series for p in pts for v in (p[1], p[2], p[3]) if v and v > 0]
    if not xs or not ys:
        xs, ys = [1], [1]
    ax = _Axis(min(xs) if logx else 0, max(xs) * (1 if logx else 1.05), left, width - right, logx)
    ay = _Axis(min(ys) if logy else 0, max(ys) * (1 if logy else 1.05), height - bottom, top, logy)
    out = ["<svg xmlns='http://www.w3.org/2000/svg' width='%d' height='%d' viewBox='0 0 %d %d'>"
           % (width, height, width, height),
           "<rect width='100%' height='100%' fill='white'/>",
           _text(width / 2, 20, title, 14, "middle", "bold")]
    if note:
        out.append(_text(width / 2, 38, note, 10, "middle", color="#555"))
    for t in ax.ticks():
        x = ax(t)
        out.append("<line x1='%.1f' y1='%d' x2='%.1f' y2='%d' stroke='#eee'/>" % (x, top, x, height - bottom))
        out.append(_text(x, height - bottom + 14, _fmt(t), 10, "middle", color="#444"))
    for t in ay.ticks():
        y = ay(t)
        out.append("<line x1='%d' y1='%.1f' x2='%d' y2='%.1f' stroke='#eee'/>" % (left, y, width - right, y))
        out.append(_text(left - 6, y + 3, _fmt(t), 10, "end", color="#444"))
    out.append("<rect x='%d' y='%d' width='%d' height='%d' fill='none' stroke='#999'/>" % (
        left, top, width - right - left, height - bottom - top))
    out.append(_text((left + width - right) / 2, height - 18, xlabel + (" (log)" if logx else ""), 11, "middle"))
    out.append(_text(18, (top + height - bottom) / 2, ylabel + (" (log)" if logy else ""), 11, "middle",
                     rotate=-90))
    for k, (name, pts) in enumerate(series):
        col = PALETTE[k % len(PALETTE)]
        pts = sorted(p for p in pts if p[0] and p[1] and p[1] == p[1])
        if not pts:
            continue
        d = " ".join("%s%.1f,%.1f" % ("M" if i == 0 else "L", ax(p[0]), ay(p[1])) for i, p in enumerate(pts))
        out.append("<path d='%s' fill='none' stroke='%s' stroke-width='2'/>" % (d, col))
        for p in pts:
            out.append("<circle cx='%.1f' cy='%.1f' r='3.5' fill='%s'/>" % (ax(p[0]), ay(p[1]), col))
            if p[2] and p[3] and p[3] > p[2]:
                out.append("<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='%s'/>" % (
                    ax(p[0]), ay(p[2]), ax(p[0]), ay(p[3]), col))
        ly = top + 14 + 18 * k
        out.append("<line x1='%d' y1='%d' x2='%d' y2='%d' stroke='%s' stroke-width='3'/>" % (
            width - right + 12, ly - 4, width - right + 32, ly - 4, col))
        out.append(_text(width - right + 38, ly, name, 11))
    out.append("</svg>")
    return "\n".join(out) + "\n"
