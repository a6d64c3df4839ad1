"""Paired statistics of the A/B: outcomes, McNemar, cluster bootstrap, Holm,
minimum detectable effect, and the pre-registered decision rule.

Everything reads only evaluator output (JSONL, quality/ab/PROTOCOL.md), so any
runtime that speaks the protocol can be compared. Distributions come from
scipy (binom, norm, chi2, bootstrap); nothing here re-derives them.

Conventions: accuracies and differences are proportions internally and
percentage points (x100) in results; Delta = treatment - control.
"""
import json
import math

import numpy as np
from scipy import optimize, stats


class OutcomeError(ValueError):
    """A malformed or mismatched outcomes file."""


def load_outcomes(path):
    """{metric: (ids, correct, cluster)} from an evaluator's JSONL output,
    with ids sorted so that two arms align by position."""
    by_metric = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                o = json.loads(line)
            except json.JSONDecodeError as e:
                raise OutcomeError(f"{path} line {lineno}: not JSON ({e})") from None
            if not isinstance(o, dict) or not isinstance(o.get("id"), str) or o.get("correct") not in (0, 1, True, False):
                raise OutcomeError(f"{path} line {lineno}: needs a string 'id' and 'correct' 0/1")
            metric = o.get("metric", "accuracy")
            cluster = o.get("cluster")
            by_metric.setdefault(metric, {})
            if o["id"] in by_metric[metric]:
                raise OutcomeError(f"{path} line {lineno}: duplicate id {o['id']!r}")
            by_metric[metric][o["id"]] = (int(o["correct"]), o["id"] if cluster is None else str(cluster))
    if not by_metric:
        raise OutcomeError(f"{path}: no outcomes")
    out = {}
    for metric, d in by_metric.items():
        ids = sorted(d)
        out[metric] = (ids, np.array([d[i][0] for i in ids], dtype=np.int8), [d[i][1] for i in ids])
    return out


def aligned(arms, metric):
    """Stacks the outcomes of several arms for one metric: (y [arms, n],
    cluster index [n], n_clusters). Every arm must have exactly the same ids."""
    ref_ids, _, ref_cl = arms[0][metric]
    for a in arms[1:]:
        if a[metric][0] != ref_ids:
            missing = set(ref_ids) ^ set(a[metric][0])
            raise OutcomeError(f"metric {metric!r}: arms do not hold the same items "
                               f"({len(missing)} ids differ, e.g. {sorted(missing)[:3]})")
    y = np.stack([a[metric][1] for a in arms]).astype(np.float64)
    names, cl = np.unique(np.array(ref_cl, dtype=object).astype(str), return_inverse=True)
    return y, cl, len(names)


# ---------------------------------------------------------------- McNemar

def mcnemar(b, c):
    """McNemar on discordant counts b (treatment right, control wrong) and c
    (the reverse): exact conditional two-sided p (b ~ Bin(b+c, 1/2)), its
    mid-p, and the continuity-corrected chi-square p."""
    n = b + c
    if n == 0:
        return {"exact_p": 1.0, "midp": 1.0, "chi2_p": 1.0}
    k = min(b, c)
    exact = min(1.0, 2.0 * stats.binom.cdf(k, n, 0.5))
    midp = min(1.0, 2.0 * stats.binom.cdf(k, n, 0.5) - stats.binom.pmf(k, n, 0.5))
    chi2 = (abs(b - c) - 1) ** 2 / n if abs(b - c) >= 1 else 0.0
    return {"exact_p": float(exact), "midp": float(midp), "chi2_p": float(stats.chi2.sf(chi2, 1))}


def decision_p(b, c, small):
    """The p used by the decision rule: the mid-p when b + c < small (Fagerland
    et al. 2013: closer to nominal size than the exact test), else exact."""
    m = mcnemar(b, c)
    return m["midp"] if b + c < small else m["exact_p"]


# ------------------------------------------------------------- bootstrap

def cluster_bootstrap(d, cl, ncl, resamples, seed, confidence=0.95):
    """Percentile CI of mean(d) resampling whole clusters (scipy.stats.bootstrap
    over the pairs (sum of d, items) per cluster: a ratio estimator)."""
    sums = np.bincount(cl, weights=d, minlength=ncl)
    counts = np.bincount(cl, minlength=ncl).astype(np.float64)
    est = float(sums.sum() / counts.sum())
    if ncl < 2 or np.all(d == d[0]):
        return {"estimate": est, "low": est, "high": est, "se": 0.0}

    def ratio(s, n, axis=-1):
        return s.sum(axis=axis) / n.sum(axis=axis)

    res = stats.bootstrap((sums, counts), ratio, paired=True, vectorized=True, n_resamples=resamples,
                          batch=max(1, min(resamples, int(2e7 // ncl))), method="percentile",
                          confidence_level=confidence, random_state=np.random.default_rng(seed))
    return {"estimate": est, "low": float(res.confidence_interval.low),
            "high": float(res.confidence_interval.high), "se": float(res.standard_error)}


def wald_se(d):
    """The i.i.d. standard error of mean(d) (the analytic check)."""
    n = len(d)
    return float(np.std(d, ddof=1) / math.sqrt(n)) if n > 1 else 0.0


# ------------------------------------------------------------------ Holm

def holm(pvalues):
    """Holm-Bonferroni adjusted p-values, in input order."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adj, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adj[i] = running
    return adj


# ------------------------------------------------------------------- MDE

def connor_mde(n, p_disc, alpha=0.05, power=0.8):
    """Minimum detectable difference (proportion) of a paired binary design:
    Connor (1987), n = (z_{1-a/2} sqrt(p) + z_pow sqrt(p - d^2))^2 / d^2,
    solved for d. inf when the design cannot detect anything (p_disc = 0)."""
    if n <= 0 or p_disc <= 0:
        return math.inf
    za, zb = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    top = math.sqrt(p_disc) * (1 - 1e-12)

    def f(dlt):
        return (za * math.sqrt(p_disc) + zb * math.sqrt(max(p_disc - dlt * dlt, 0.0))) ** 2 / dlt ** 2 - n

    if f(top) > 0:  # even the largest possible difference needs more items
        return math.inf
    return float(optimize.brentq(f, 1e-9, top, xtol=1e-12))


# ------------------------------------------------------------- decision

VERDICTS = ("GO-claim", "GO-useful", "INCONCLUSIVE", "NO-GO")


def cell_verdict(delta, low, high, p_adj, mde, alpha, effect):
    """The pre-registered rule (adapters-and-osd.md 6.4, completed for the
    case it leaves open), in points. Returns (verdict, reason)."""
    if low >= effect and p_adj < alpha:
        return "GO-claim", f"CI low {low:+.2f} >= +{effect:g} pts and Holm p {p_adj:.3g} < {alpha:g}"
    if low > 0 and p_adj < alpha:
        return "GO-useful", f"0 < CI low {low:+.2f} < +{effect:g} pts, Holm p {p_adj:.3g} < {alpha:g}"
    if high < 0:
        return "NO-GO", f"CI high {high:+.2f} < 0: worse than the control"
    if mde <= effect and low <= 0 <= high:
        within = -mde <= low and high <= mde
        return "NO-GO", ("CI within +-MDE of 0 at adequate power" if within else
                         f"CI spans 0 at adequate power (MDE {mde:.2f} <= {effect:g} pts): no improvement shown")
    if mde > effect:
        return "INCONCLUSIVE", f"underpowered: MDE {mde:.2f} > {effect:g} pts"
    return "INCONCLUSIVE", f"CI [{low:+.2f}, {high:+.2f}] excludes 0 but Holm p {p_adj:.3g} >= {alpha:g}"


def task_verdict(cells):
    """A task's verdict from its budgets' verdicts (plan.json decision.task)."""
    vs = [c for c in cells]
    go = [v for v in vs if v.startswith("GO")]
    nogo = [v for v in vs if v == "NO-GO"]
    if "GO-claim" in vs and not nogo:
        return "GO-claim"
    if go and not nogo:
        return "GO-useful"
    if nogo and not go:
        return "NO-GO"
    return "INCONCLUSIVE"


def overall_verdict(task_verdicts):
    """The weakest task verdict: the claim must hold on every task."""
    rank = {"GO-claim": 3, "GO-useful": 2, "INCONCLUSIVE": 1, "NO-GO": 0}
    return min(task_verdicts, key=lambda v: rank[v]) if task_verdicts else "INCONCLUSIVE"


# ------------------------------------------------------------- comparison

def compare(treat, controls, cl, ncl, st):
    """Treatment [n] against one or more control seeds [s, n] (0/1 outcomes).
    Delta is against the mean of the control seeds; McNemar per seed, the
    decision p is the largest (an intersection-union test: the treatment must
    beat every seed). st: the plan's statistics block."""
    n = len(treat)
    ctrl_mean = controls.mean(axis=0)
    d = treat - ctrl_mean
    boot = cluster_bootstrap(d, cl, ncl, st["bootstrap_resamples"], st["bootstrap_seed"], 1 - st["alpha"])
    per_seed, ps, pdisc = [], [], []
    for s in range(controls.shape[0]):
        b = int(np.sum((treat == 1) & (controls[s] == 0)))
        c = int(np.sum((treat == 0) & (controls[s] == 1)))
        m = mcnemar(b, c)
        p = decision_p(b, c, st["midp_below"])
        per_seed.append({"b": b, "c": c, "delta": 100.0 * (b - c) / n, **m, "p": p})
        ps.append(p)
        pdisc.append((b + c) / n)
    se_iid = wald_se(d)
    deff = (boot["se"] / se_iid) ** 2 if se_iid > 0 else 1.0
    n_eff = n / max(deff, 1.0)
    p_d = float(np.mean(pdisc))
    mde = 100.0 * connor_mde(n_eff, p_d, st["alpha"], st["power"])
    return {
        "n": n, "clusters": ncl,
        "treatment_acc": 100.0 * float(treat.mean()), "control_acc": 100.0 * float(ctrl_mean.mean()),
        "delta": 100.0 * boot["estimate"], "ci_low": 100.0 * boot["low"], "ci_high": 100.0 * boot["high"],
        "se_boot": 100.0 * boot["se"], "se_iid": 100.0 * se_iid, "design_effect": deff,
        "b": int(round(np.mean([x["b"] for x in per_seed]))), "c": int(round(np.mean([x["c"] for x in per_seed]))),
        "p_discordant": p_d, "mde": mde, "p": max(ps), "per_seed": per_seed,
    }


def accuracy_ci(y, cl, ncl, st):
    """Accuracy [points] of one arm (or the seed mean) with its cluster CI."""
    b = cluster_bootstrap(y, cl, ncl, st["bootstrap_resamples"], st["bootstrap_seed"], 1 - st["alpha"])
    return {"acc": 100.0 * b["estimate"], "low": 100.0 * b["low"], "high": 100.0 * b["high"]}


def selfcheck():
    """Published examples the statistics must reproduce before any result is
    trusted (run by quality/ab/run and by the tests):
      Fagerland, Lydersen & Laake 2013 (BMC Med Res Methodol 13:91), b=1, c=7:
        exact conditional p 0.070, mid-p 0.039, asymptotic (uncorrected) 0.034;
      Holm: p (0.01, 0.04, 0.03, 0.005) -> (0.03, 0.06, 0.06, 0.02);
      Connor's MDE, adapters-and-osd.md 6.3: p_d 5%, n 1,000 -> 2.0 pts,
        n 10,000 -> 0.63 pts; p_d 20%, n 1,000 -> 4.0 pts."""
    m = mcnemar(1, 7)
    asym = float(stats.chi2.sf((7 - 1) ** 2 / 8, 1))
    checks = {
        "mcnemar_exact": (round(m["exact_p"], 3), 0.070),
        "mcnemar_midp": (round(m["midp"], 3), 0.039),
        "mcnemar_asymptotic": (round(asym, 3), 0.034),
        "holm": ([round(x, 10) for x in holm([0.01, 0.04, 0.03, 0.005])], [0.03, 0.06, 0.06, 0.02]),
        "mde_5pct_1000": (round(100 * connor_mde(1000, 0.05), 1), 2.0),
        "mde_5pct_10000": (round(100 * connor_mde(10000, 0.05), 2), 0.63),
        "mde_20pct_1000": (round(100 * connor_mde(1000, 0.20), 1), 4.0),
    }
    failed = {k: v for k, v in checks.items() if v[0] != v[1]}
    return {"passed": not failed, "checks": {k: {"got": v[0], "published": v[1]} for k, v in checks.items()},
            "failed": sorted(failed)}
