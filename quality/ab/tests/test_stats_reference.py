#!/usr/bin/python3
"""Check stats_reference.py against published numbers.

Run with /usr/bin/python3 (needs numpy and scipy). Exits 0 on success and
non-zero with a message on the first failed check.
"""

import math
import os
import sys
from fractions import Fraction

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stats_reference import (  # noqa: E402
    cluster_bootstrap_reference,
    connor_mde_reference,
    connor_n,
    holm_reference,
    mcnemar_reference,
    wald_paired_ci,
)

failures = []


def check(ok, message):
    print(("ok    " if ok else "FAIL  ") + message)
    if not ok:
        failures.append(message)


def check_mcnemar_fagerland():
    # Fagerland, Lydersen & Laake (2013), BMC Med Res Methodol 13:91, worked
    # example: 21 pairs, discordant b = 1, c = 7.
    #
    # Why exact = 2 * 9/256: conditional on n = b + c = 8 discordant pairs,
    # b ~ Binomial(8, 1/2) under H0. With k = min(b, c) = 1,
    #   P(X <= 1) = [C(8,0) + C(8,1)] / 2^8 = (1 + 8) / 256 = 9/256,
    # so the two-sided exact p = 2 * 9/256 = 18/256 = 0.0703.
    # mid-p subtracts P(X = 1) = 8/256: 10/256 = 0.0391.
    # Asymptotic: (1 - 7)^2 / 8 = 4.5 on 1 df, p = 0.0339.
    r = mcnemar_reference(1, 7)
    tail = Fraction(math.comb(8, 0) + math.comb(8, 1), 2 ** 8)
    check(tail == Fraction(9, 256), "P(X<=1) = 9/256 by hand")
    check(abs(r["exact_p"] - float(2 * tail)) < 1e-12,
          f"exact_p = {r['exact_p']:.6f} equals 18/256 = {18/256:.6f}")
    check(round(r["exact_p"], 3) == 0.070,
          f"exact_p {r['exact_p']:.4f} -> published 0.070")
    check(abs(r["midp"] - 10 / 256) < 1e-12,
          f"midp = {r['midp']:.6f} equals 10/256")
    check(round(r["midp"], 3) == 0.039,
          f"midp {r['midp']:.4f} -> published 0.039")
    check(round(r["asymptotic_p"], 3) == 0.034,
          f"asymptotic_p {r['asymptotic_p']:.4f} -> published 0.034")
    # (|1-7| - 1)^2 / 8 = 25/8 = 3.125 on 1 df.
    check(abs(r["corrected_p"] - 0.077100) < 1e-4,
          f"corrected_p {r['corrected_p']:.4f} (chi2 3.125, 1 df)")

    # Edge cases: no discordant pairs, and b == c where every version is 1.
    check(all(v == 1.0 for v in mcnemar_reference(0, 0).values()),
          "b = c = 0 gives all p-values 1")
    eq = mcnemar_reference(5, 5)
    check(eq["exact_p"] == 1.0 and abs(eq["midp"] - 1.0) < 1e-12
          and eq["asymptotic_p"] == 1.0 and eq["corrected_p"] == 1.0,
          f"b = c = 5 gives all p-values 1 ({eq})")


def check_holm():
    got = holm_reference([0.01, 0.04, 0.03, 0.005])
    want = [0.03, 0.06, 0.06, 0.02]
    check(all(abs(g - w) < 1e-12 for g, w in zip(got, want)),
          f"Holm {got} == {want}")
    check(holm_reference([0.5, 0.9]) == [1.0, 1.0], "Holm caps at 1")


def check_connor():
    # (p_disc, n, published MDE in points = 100 * delta)
    table = [
        (0.02, 1000, 1.3), (0.02, 10000, 0.40),
        (0.05, 1000, 2.0), (0.05, 10000, 0.63),
        (0.10, 1000, 2.8),
        (0.20, 1000, 4.0), (0.20, 10000, 1.25),
    ]
    for p_disc, n, want in table:
        delta = connor_mde_reference(n, p_disc)
        points = 100 * delta
        check(abs(points - want) <= 0.05,
              f"Connor MDE p_disc={p_disc:.2f} n={n}: {points:.4f} points"
              f" vs table {want}")
        # The bisection must actually invert the formula.
        check(abs(connor_n(delta, p_disc) - n) < 1e-3 * n,
              f"  connor_n(MDE) = {connor_n(delta, p_disc):.3f} ~ {n}")
    n_at = connor_n(0.02, 0.05)
    check(abs(n_at - 979) < 1, f"Connor n at p_disc=0.05, delta=0.02:"
          f" {n_at:.2f} ~ 979")


def synthetic_sample(n, n10, n01, seed):
    d = np.zeros(n)
    d[:n10] = 1.0
    d[n10:n10 + n01] = -1.0
    np.random.default_rng(seed).shuffle(d)
    return d


def check_bootstrap():
    n, n10, n01 = 5000, 400, 300
    delta, lo, hi = wald_paired_ci(n10, n01, n)

    d = synthetic_sample(n, n10, n01, seed=20240611)
    single = cluster_bootstrap_reference(d, np.arange(n), 4000, seed=1)
    check(abs(single["estimate"] - delta) < 1e-12,
          f"bootstrap estimate {single['estimate']:.4f} == Wald delta"
          f" {delta:.4f}")
    check(abs(single["low"] - lo) < 0.003 and abs(single["high"] - hi) < 0.003,
          f"singleton bootstrap [{single['low']:.5f}, {single['high']:.5f}]"
          f" vs Wald [{lo:.5f}, {hi:.5f}]")

    # 500 clusters of 10 identical items: 40 all +1, 30 all -1, 430 all 0,
    # so item counts still give n10 = 400, n01 = 300. Only 500 independent
    # units remain, so the se should grow by about sqrt(10).
    g = n // 10
    cluster_d = synthetic_sample(g, n10 // 10, n01 // 10, seed=20240612)
    d10 = np.repeat(cluster_d, 10)
    labels = np.repeat(np.arange(g), 10)
    clustered = cluster_bootstrap_reference(d10, labels, 4000, seed=2)
    ratio = clustered["se"] / single["se"]
    check(abs(clustered["estimate"] - delta) < 1e-12,
          f"clustered estimate {clustered['estimate']:.4f} == {delta:.4f}")
    check(2.5 < ratio < 4.0,
          f"clustered se {clustered['se']:.5f} / singleton se"
          f" {single['se']:.5f} = {ratio:.3f} (sqrt(10) = {math.sqrt(10):.3f})")
    print(f"      Wald se {(hi - lo) / (2 * 1.959963984540054):.5f};"
          f" clustered CI [{clustered['low']:.5f}, {clustered['high']:.5f}]")


def main():
    check_mcnemar_fagerland()
    check_holm()
    check_connor()
    check_bootstrap()
    if failures:
        print(f"\n{len(failures)} check(s) failed:", file=sys.stderr)
        for f in failures:
            print("  " + f, file=sys.stderr)
        return 1
    print("\nall checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
