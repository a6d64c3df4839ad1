"""xbstats — shared helpers for bench/run, bench/compare and bench/report.

Statistics with numpy and scipy (Debian's python3-numpy, python3-scipy;
run the tools with /usr/bin/python3). A result file is Google Benchmark's JSON
(context + benchmarks, every repetition kept) plus an "expert" block written
by bench/run (dataset, sizes, run parameters).

Statistics: each repetition of a case gives one value (the mean time per
iteration within that repetition). A case is summarised by the median of its
repetitions and its spread (min, p25, p75, max). A ratio A/B is the ratio of
the two medians; its 95% confidence interval comes from a percentile
bootstrap that resamples A's and B's repetitions independently
(scipy.stats.bootstrap, fixed seed, so the same files always give the same
interval).
"""

import json
import re

import numpy as np
from scipy import stats

UNIT_S = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}
COLD_LABEL = "cold (fadvise; host cache may remain)"


def case_name(entry):
    """Case name without Google Benchmark's suffixes."""
    name = entry.get("run_name") or entry["name"]
    return _SUFFIX.sub("", name)


_SUFFIX = re.compile(r"(/(iterations:\d+|repeats:\d+|min_time:[0-9.]+|min_warmup_time:[0-9.]+"
                     r"|manual_time|real_time|process_time|threads:\d+))+$")


class Case:
    __slots__ = ("name", "values", "unit", "bytes", "cold", "threads", "resident", "error",
                 "iterations", "items")

    def __init__(self, name):
        self.name = name
        self.values = []        # seconds per iteration, one per repetition
        self.unit = "ms"
        self.bytes = 0
        self.cold = False
        self.threads = 1
        self.resident = None
        self.error = None
        self.iterations = []
        self.items = 0          # operations per iteration (sections, lookups, ...)

    @property
    def median(self):
        return median(self.values) if self.values else float("nan")

    def parts(self):
        return self.name.split("/")


def load(path):
    with open(path) as f:
        doc = json.load(f)
    return doc


def cases(doc):
    """name -> Case, from a result document (iteration entries only)."""
    out = {}
    for b in doc.get("benchmarks", []):
        if b.get("run_type", "iteration") != "iteration":
            continue
        name = case_name(b)
        c = out.get(name)
        if c is None:
            c = out[name] = Case(name)
        if b.get("error_occurred"):
            c.error = b.get("error_message", "error")
            continue
        unit = b.get("time_unit", "ns")
        c.unit = unit
        c.values.append(float(b["real_time"]) * UNIT_S[unit])
        c.iterations.append(int(b.get("iterations", 0)))
        c.bytes = int(b.get("bytes_per_iter", 0) or 0)
        c.cold = bool(b.get("cold", 0)) or b.get("label") == COLD_LABEL
        c.threads = int(b.get("threads_used", 1) or 1)
        c.items = int(b.get("items_per_iter", 0) or 0)
        if "resident_after_evict" in b:
            c.resident = float(b["resident_after_evict"])
    return out


def median(xs):
    return float(np.median(xs)) if len(xs) else float("nan")


def quantile(xs, q):
    """Linear interpolation between the closest ranks (numpy's default)."""
    return float(np.quantile(xs, q)) if len(xs) else float("nan")


def spread(xs):
    """(min, p25, p75, max, relative IQR)."""
    if not len(xs):
        return (float("nan"),) * 5
    m = median(xs)
    q1, q3 = quantile(xs, 0.25), quantile(xs, 0.75)
    return (float(np.min(xs)), q1, q3, float(np.max(xs)), (q3 - q1) / m if m else float("nan"))


def ratio_ci(a, b, n=2000, level=0.95, seed=20240601):
    """median(a)/median(b) and a percentile-bootstrap CI over both samples,
    resampled independently."""
    if not len(a) or not len(b):
        return (float("nan"),) * 3
    r = median(a) / median(b)
    if len(a) == 1 and len(b) == 1:
        return (r, r, r)

    def ratio(x, y, axis=-1):
        return np.median(x, axis=axis) / np.median(y, axis=axis)

    res = stats.bootstrap((np.asarray(a, float), np.asarray(b, float)), ratio, paired=False,
                          vectorized=True, n_resamples=n, confidence_level=level, method="percentile",
                          random_state=np.random.default_rng(seed))
    return (r, float(res.confidence_interval.low), float(res.confidence_interval.high))


def fmt_time(sec):
    if sec != sec:
        return "n/a"
    if sec >= 1:
        return "%.2f s" % sec
    if sec >= 1e-3:
        return "%.3g ms" % (sec * 1e3) if sec < 0.1 else "%.0f ms" % (sec * 1e3)
    if sec >= 1e-6:
        return "%.3g µs" % (sec * 1e6)
    return "%.3g ns" % (sec * 1e9)


def fmt_rate(bytes_, sec):
    if not bytes_ or not sec or sec != sec:
        return ""
    r = bytes_ / sec / 1e6
    return "%.0f MB/s" % r if r >= 100 else "%.3g MB/s" % r


def fmt_ratio(r, lo=None, hi=None, digits=3):
    if r != r:
        return "n/a"
    s = "%.*g×" % (digits, r)
    if lo is not None and hi is not None and lo == lo:
        s += " [%.*g, %.*g]" % (digits, lo, digits, hi)
    return s


def context_of(doc):
    ctx = dict(doc.get("context", {}))
    return ctx


def machine_label(doc):
    ex = doc.get("expert", {})
    ctx = doc.get("context", {})
    lab = ex.get("machine_label")
    if lab:
        return lab
    return "%s, %s CPUs, %s" % (ctx.get("expert_cpu_model", "?"), ctx.get("num_cpus", "?"),
                                ctx.get("expert_kernel", "?"))
