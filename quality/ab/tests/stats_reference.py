"""Independent reference implementations of paired-comparison statistics.

Written from textbook definitions, deliberately without reference to the
project's own statistics code, so that the two can be cross-checked.
Clarity is preferred over speed throughout.
"""

import math

import numpy as np
from scipy.stats import binom, chi2, norm


def mcnemar_reference(b, c):
    """McNemar test p-values for discordant counts b and c.

    Source: Fagerland, Lydersen & Laake (2013), "The McNemar test for binary
    matched-pairs data: mid-p and asymptotic are better than exact
    conditional", BMC Med Res Methodol 13:91, section "Methods".

    Returns a dict with:
      exact_p      two-sided exact conditional p, min(1, 2 P(X <= k)),
                   X ~ Binomial(b + c, 1/2), k = min(b, c)
      midp         two-sided mid-p, 2 [P(X <= k) - P(X = k) / 2]
      asymptotic_p chi-square (b - c)^2 / (b + c), 1 df
      corrected_p  chi-square (|b - c| - 1)^2 / (b + c), 1 df
    All four are 1.0 when b + c = 0.
    """
    b = int(b)
    c = int(c)
    if b < 0 or c < 0:
        raise ValueError("counts must be non-negative")
    n = b + c
    if n == 0:
        return {"exact_p": 1.0, "midp": 1.0, "asymptotic_p": 1.0,
                "corrected_p": 1.0}
    k = min(b, c)
    tail = binom.cdf(k, n, 0.5)
    point = binom.pmf(k, n, 0.5)
    exact_p = min(1.0, 2.0 * tail)
    # Fagerland's mid-p is taken from the uncapped doubled tail; subtracting
    # P(X=k) from the capped exact_p would wrongly give 1 - P(X=k) < 1 when
    # b == c, where the mid-p is exactly 1 by symmetry.
    midp = min(1.0, 2.0 * tail - point)
    asymptotic_p = chi2.sf((b - c) ** 2 / n, 1)
    # Clamp at zero so that b == c gives statistic 0 (p = 1) rather than the
    # nonsensical 1/n from (0 - 1)^2; R's mcnemar.test behaves the same way.
    # For |b - c| >= 1 this is exactly (|b - c| - 1)^2 / (b + c).
    corrected_stat = max(0, abs(b - c) - 1) ** 2 / n
    corrected_p = chi2.sf(corrected_stat, 1)
    return {"exact_p": float(exact_p), "midp": float(midp),
            "asymptotic_p": float(asymptotic_p),
            "corrected_p": float(corrected_p)}


def holm_reference(pvalues):
    """Holm-Bonferroni adjusted p-values, returned in the input order.

    Source: Holm (1979), "A simple sequentially rejective multiple test
    procedure", Scand J Statist 6:65-70. With p_(1) <= ... <= p_(m),
    adjusted p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)).
    """
    p = [float(x) for x in pvalues]
    m = len(p)
    # Stable sort so tied p-values keep a deterministic order.
    order = sorted(range(m), key=lambda i: p[i])
    adjusted = [0.0] * m
    running_max = 0.0
    for rank, idx in enumerate(order):  # rank is j - 1
        candidate = min(1.0, (m - rank) * p[idx])
        # The running maximum enforces step-down monotonicity: a larger raw
        # p-value can never get a smaller adjusted one.
        running_max = max(running_max, candidate)
        adjusted[idx] = running_max
    return adjusted


def connor_n(delta, p_disc, alpha=0.05, power=0.8):
    """Connor (1987) sample size (number of pairs) for McNemar's test.

    Source: Connor (1987), "Sample size for testing differences in
    proportions for the paired-sample design", Biometrics 43:207-211:
      n = (z_{1-alpha/2} sqrt(p_disc) + z_power sqrt(p_disc - delta^2))^2
          / delta^2
    where p_disc is the discordant proportion and delta the difference of
    the marginal proportions.
    """
    z_a = norm.ppf(1.0 - alpha / 2.0)
    z_b = norm.ppf(power)
    # at delta = sqrt(p_disc) the difference can round below zero
    return (z_a * math.sqrt(p_disc)
            + z_b * math.sqrt(max(p_disc - delta ** 2, 0.0))) ** 2 / delta ** 2


def connor_mde_reference(n, p_disc, alpha=0.05, power=0.8):
    """Minimum detectable difference delta (a proportion) for n pairs.

    Inverts Connor (1987)'s sample size formula (see connor_n) for delta in
    (0, sqrt(p_disc)) by bisection to 1e-10.
    """
    if n <= 0 or not (0.0 < p_disc <= 1.0):
        raise ValueError("need n > 0 and 0 < p_disc <= 1")
    # connor_n is strictly decreasing in delta on (0, sqrt(p_disc)): the
    # numerator falls and the denominator rises. So the root is unique and
    # bisection on the sign of connor_n(delta) - n is safe.
    lo = 0.0
    hi = math.sqrt(p_disc)
    if connor_n(hi, p_disc, alpha, power) > n:
        # Even the largest possible delta needs more than n pairs.
        return float("nan")
    while hi - lo > 1e-10:
        mid = 0.5 * (lo + hi)
        if connor_n(mid, p_disc, alpha, power) > n:
            lo = mid  # mid needs too many pairs, so the MDE is larger
        else:
            hi = mid
    return 0.5 * (lo + hi)


def cluster_bootstrap_reference(d, clusters, n_resamples, seed,
                                confidence=0.95):
    """Cluster (block) bootstrap percentile CI for the mean paired difference.

    Source: Davison & Hinkley (1997), Bootstrap Methods and their
    Application, sec. 3.8 (resampling whole clusters with replacement).

    d: per-item paired differences (e.g. y_A - y_B); clusters: a label per
    item. Statistic = sum(d) / len(d). Each resample draws as many clusters
    as were observed, with replacement, and recomputes sum of d over the
    drawn clusters divided by the number of items drawn. Returns a dict with
    estimate, low, high (percentile interval) and se (ddof=1 std of the
    bootstrap distribution). Random numbers: numpy.random.default_rng(seed).
    """
    d = np.asarray(d, dtype=float)
    clusters = np.asarray(clusters)
    if d.ndim != 1 or d.shape != clusters.shape or d.size == 0:
        raise ValueError("d and clusters must be non-empty, same-length 1-D")
    labels, inverse = np.unique(clusters, return_inverse=True)
    g = len(labels)
    # A resample's statistic depends only on which clusters it draws, so
    # per-cluster totals and sizes are all that is needed.
    cluster_sum = np.zeros(g)
    cluster_size = np.zeros(g)
    for item, cl in enumerate(inverse):
        cluster_sum[cl] += d[item]
        cluster_size[cl] += 1
    rng = np.random.default_rng(seed)
    stats = np.empty(n_resamples)
    for r in range(n_resamples):
        drawn = rng.integers(0, g, size=g)
        stats[r] = cluster_sum[drawn].sum() / cluster_size[drawn].sum()
    tail = (1.0 - confidence) / 2.0
    return {"estimate": float(d.sum() / d.size),
            "low": float(np.quantile(stats, tail)),
            "high": float(np.quantile(stats, 1.0 - tail)),
            "se": float(np.std(stats, ddof=1))}


def wald_paired_ci(n10, n01, n, z=1.959963984540054):
    """Wald CI for the difference of paired proportions p_A - p_B.

    Source: Agresti (2013), Categorical Data Analysis, 3rd ed., sec. 11.1.
    n10 = items where A is right and B wrong, n01 = A wrong and B right,
    n = total pairs. delta = (n10 - n01) / n and
    se = sqrt((n10 + n01) / n - delta^2) / sqrt(n).
    Returns (delta, low, high).
    """
    delta = (n10 - n01) / n
    se = math.sqrt((n10 + n01) / n - delta ** 2) / math.sqrt(n)
    return delta, delta - z * se, delta + z * se
