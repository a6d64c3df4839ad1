#!/usr/bin/python3
"""test_stats.py — the A/B statistics (abstats.py) against published examples
and against an independent reference implementation written from the
textbook definitions without seeing abstats.py (stats_reference.py), plus
every branch of the decision rule. Exit 0 on success."""
import math
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import abstats  # noqa: E402
import stats_reference as ref  # noqa: E402

failures = []


def check(name, ok, detail=""):
    print(("ok: " if ok else "FAIL: ") + name + (f" ({detail})" if detail else ""))
    if not ok:
        failures.append(name)


# published examples (Fagerland et al. 2013; Holm; Connor's table)
sc = abstats.selfcheck()
check("self-check against published examples", sc["passed"], str(sc["failed"]))

# McNemar against the reference on a grid, including the small-count cases
worst = 0.0
for b in range(0, 40, 3):
    for c in range(0, 40, 4):
        m, r = abstats.mcnemar(b, c), ref.mcnemar_reference(b, c)
        worst = max(worst, abs(m["exact_p"] - r["exact_p"]), abs(m["midp"] - r["midp"]),
                    abs(m["chi2_p"] - r["corrected_p"]))
check("McNemar exact / mid-p / corrected = reference (1e-12)", worst < 1e-12, f"max diff {worst:.2e}")
check("decision p is the mid-p below midp_below, exact above",
      abstats.decision_p(1, 7, 25) == abstats.mcnemar(1, 7)["midp"] and
      abstats.decision_p(20, 40, 25) == abstats.mcnemar(20, 40)["exact_p"])

# Holm against the reference on random p-values
rng = np.random.default_rng(7)
worst = 0.0
for _ in range(200):
    p = list(rng.uniform(0, 0.2, size=int(rng.integers(1, 12))))
    worst = max(worst, max(abs(a - b) for a, b in zip(abstats.holm(p), ref.holm_reference(p))))
check("Holm = reference", worst < 1e-15, f"max diff {worst:.1e}")

# Connor MDE against the reference (bisection vs brentq)
worst = 0.0
for n in (1000, 10000, 50000):
    for pd in (0.02, 0.05, 0.2, 0.5):
        worst = max(worst, abs(abstats.connor_mde(n, pd) - ref.connor_mde_reference(n, pd)))
check("Connor MDE = reference (1e-8)", worst < 1e-8, f"max diff {worst:.1e}")
check("MDE is infinite without discordant pairs", math.isinf(abstats.connor_mde(1000, 0.0)))

# the cluster bootstrap: two independent implementations of the same
# resampling agree within Monte-Carlo error, and both match the Wald interval
# for singleton clusters
n = 5000
d = np.zeros(n)
d[:400], d[400:700] = 1.0, -1.0
rng.shuffle(d)
single = np.arange(n)
a = abstats.cluster_bootstrap(d, single, n, 10000, 11)
r = ref.cluster_bootstrap_reference(d, single, 10000, 12)
delta, lo, hi = ref.wald_paired_ci(400, 300, n)
check("bootstrap estimate = mean difference", abs(a["estimate"] - delta) < 1e-12)
check("bootstrap CI = Wald CI for singleton clusters (0.003)",
      abs(a["low"] - lo) < 0.003 and abs(a["high"] - hi) < 0.003,
      f"[{a['low']:.4f}, {a['high']:.4f}] vs [{lo:.4f}, {hi:.4f}]")
check("bootstrap = reference implementation (0.003)",
      abs(a["low"] - r["low"]) < 0.003 and abs(a["high"] - r["high"]) < 0.003 and abs(a["se"] - r["se"]) < 3e-4,
      f"se {a['se']:.5f} vs {r['se']:.5f}")
# clusters of 10 identical copies: the bootstrap must widen the interval by ~sqrt(10)
dc = np.repeat(d[:1000], 10)
cl = np.repeat(np.arange(1000), 10)
b1 = abstats.cluster_bootstrap(d[:1000], np.arange(1000), 1000, 10000, 3)
b10 = abstats.cluster_bootstrap(dc, cl, 1000, 10000, 3)
r10 = ref.cluster_bootstrap_reference(dc, cl, 10000, 4)
check("clustered copies: se the same as the unreplicated sample", abs(b10["se"] - b1["se"]) < 0.1 * b1["se"],
      f"{b10['se']:.5f} vs {b1['se']:.5f}")
check("clustered copies: reference agrees", abs(b10["se"] - r10["se"]) < 0.1 * r10["se"])
check("clustered copies: se about sqrt(10) x the naive i.i.d. se",
      2.5 < b10["se"] / abstats.wald_se(dc) < 4.0, f"ratio {b10['se'] / abstats.wald_se(dc):.2f}")

# compare(): Delta against the mean of the seeds; b, c, and the IUT p
treat = np.array([1, 1, 0, 1, 0, 1, 1, 0] * 250, dtype=float)
c1 = np.array([1, 0, 0, 1, 0, 0, 1, 1] * 250, dtype=float)
c2 = np.array([1, 1, 0, 0, 0, 0, 1, 0] * 250, dtype=float)
st = {"alpha": 0.05, "power": 0.8, "bootstrap_resamples": 2000, "bootstrap_seed": 1, "midp_below": 25}
res = abstats.compare(treat, np.stack([c1, c2]), np.arange(2000), 2000, st)
check("compare: Delta = treatment - mean of controls",
      abs(res["delta"] - 100 * (treat.mean() - (c1.mean() + c2.mean()) / 2)) < 1e-9)
pb = [abstats.mcnemar(int(((treat == 1) & (c == 0)).sum()), int(((treat == 0) & (c == 1)).sum()))["exact_p"]
      for c in (c1, c2)]
check("compare: p is the largest per-seed McNemar p (intersection-union)", res["p"] == max(pb))

# the decision rule, one case per branch
cases = [
    ((7.0, 5.5, 8.5, 0.001, 1.0), "GO-claim"),
    ((7.0, 5.5, 8.5, 0.2, 1.0), "INCONCLUSIVE"),  # CI above 5 but not significant after Holm
    ((2.0, 0.5, 3.5, 0.01, 1.0), "GO-useful"),
    ((2.0, 0.5, 3.5, 0.2, 1.0), "INCONCLUSIVE"),
    ((-2.0, -3.0, -1.0, 0.001, 1.0), "NO-GO"),
    ((0.1, -0.4, 0.6, 0.7, 1.0), "NO-GO"),       # within +-MDE at adequate power
    ((0.5, -1.5, 2.5, 0.6, 1.0), "NO-GO"),       # spans 0, adequately powered
    ((1.0, -4.0, 6.0, 0.6, 7.0), "INCONCLUSIVE"),  # underpowered
]
for args, want in cases:
    got, why = abstats.cell_verdict(*args, alpha=0.05, effect=5.0)
    check(f"cell verdict {args} -> {want}", got == want, f"got {got}: {why}")
check("task: GO-claim needs no NO-GO", abstats.task_verdict(["GO-claim", "INCONCLUSIVE"]) == "GO-claim" and
      abstats.task_verdict(["GO-claim", "NO-GO"]) == "INCONCLUSIVE")
check("task: all NO-GO / inconclusive", abstats.task_verdict(["NO-GO", "INCONCLUSIVE"]) == "NO-GO" and
      abstats.task_verdict(["INCONCLUSIVE"]) == "INCONCLUSIVE")
check("overall: the weakest task", abstats.overall_verdict(["GO-claim", "GO-useful"]) == "GO-useful" and
      abstats.overall_verdict(["GO-claim", "NO-GO"]) == "NO-GO")

# outcome files: pairing by id, refusal of mismatched or malformed files
tmp = os.environ.get("TMPDIR", "/tmp")
pa, pb2, pc = (os.path.join(tmp, f"ab-stats-{x}.jsonl") for x in "abc")
with open(pa, "w") as f:
    f.write('{"id":"x","correct":1,"cluster":"k"}\n{"id":"y","correct":0,"cluster":"k"}\n')
with open(pb2, "w") as f:
    f.write('{"id":"y","correct":1,"cluster":"k"}\n{"id":"z","correct":1,"cluster":"k"}\n')
with open(pc, "w") as f:
    f.write('{"id":"x","correct":3}\n')
oa, ob = abstats.load_outcomes(pa), abstats.load_outcomes(pb2)
try:
    abstats.aligned([oa, ob], "accuracy")
    check("arms with different items are refused", False)
except abstats.OutcomeError as e:
    check("arms with different items are refused", "do not hold the same items" in str(e), str(e))
try:
    abstats.load_outcomes(pc)
    check("correct must be 0/1", False)
except abstats.OutcomeError as e:
    check("correct must be 0/1", "line 1" in str(e), str(e))
for p in (pa, pb2, pc):
    os.remove(p)

if failures:
    print(f"{len(failures)} failure(s): {failures}")
    sys.exit(1)
print("all statistics checks passed")
