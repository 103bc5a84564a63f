#!/usr/bin/env python3
"""Where the bimodality warning's thresholds come from (bench/placement.py,
docs/checks.md): simulated unimodal repetitions, and simulated two groups.

1. Calibration: for each run count n (3..20), many samples of n runs from one
   group: normal with cv 10%, normal with cv 20%, lognormal (on logs, the
   statistic's distribution is the same for every lognormal cv; 10% is drawn).
   BIMODAL_INSIDE_MAX[n] is the smallest of the three 4% quantiles of the best
   split's inside fraction, rounded down to 3 significant digits (rounding down
   can only flag less). The fixed seed makes the table reproducible; tests/test_bimodal.py
   reruns `calibrate()` and compares it with the table in bench/placement.py.
2. False alarms: the rate at which `placement.bimodal_groups` (the real rule,
   with its minimum gaps) flags fresh unimodal samples, per n, distribution
   and cv; and of the inside-fraction test alone (minimum gaps at 0).
3. Detection: two lognormal groups (cv within each group), their centres a
   ratio apart; a sample counts as detected when the rule returns exactly the
   true groups. Printed: the rate per ratio, and the smallest ratio detected in
   90% of samples.

    python3 benchmarks/bimodal_calibration.py [--samples 100000]
"""
import argparse
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench import placement  # noqa: E402

SEED = 15                  # issue 15
CALIBRATION_SAMPLES = 100_000
RUN_COUNTS = range(3, 21)
FALSE_ALARM = 0.04
NULLS = (("normal", 0.10), ("normal", 0.20), ("lognormal", 0.10))   # (distribution, cv)
DISTRIBUTIONS = ("normal", "lognormal")


def unimodal(rng, dist: str, samples: int, n: int, cv: float) -> np.ndarray:
    """samples x n positive rates around 1 with coefficient of variation cv."""
    if dist == "normal":
        x = rng.normal(1.0, cv, (samples, n))
        return np.maximum(x, 1e-9)   # cv up to 30%: a value at or below 0 is a 3-sigma rarity
    sigma = math.sqrt(math.log1p(cv * cv))
    return rng.lognormal(-sigma * sigma / 2, sigma, (samples, n))


def two_groups(rng, samples: int, n_low: int, n_high: int, ratio: float, cv: float) -> np.ndarray:
    """Lognormal groups of n_low runs around 1 and n_high around `ratio`."""
    low = unimodal(rng, "lognormal", samples, n_low, cv)
    high = unimodal(rng, "lognormal", samples, n_high, cv) * ratio
    return np.concatenate([low, high], axis=1)


def inside_fractions(rates: np.ndarray, splits=None) -> np.ndarray:
    """placement.inside_fraction's fraction for every row, vectorised: the same
    logs, the same splits (a lone run only under BIMODAL_MIN_GROUP_RUNS) unless
    `splits` (sizes of the lower group) says otherwise."""
    y = np.sort(np.log(rates), axis=1)
    y -= y.mean(axis=1, keepdims=True)
    n = y.shape[1]
    s, q = np.cumsum(y, axis=1), np.cumsum(y * y, axis=1)
    total = q[:, -1]
    if splits is None:
        splits = range(1, n) if n >= placement.BIMODAL_MIN_GROUP_RUNS else (1, n - 1)
    best = np.full(y.shape[0], np.inf)
    for k in splits:
        s_low, q_low = s[:, k - 1], q[:, k - 1]
        s_high, q_high = s[:, -1] - s_low, total - q_low   # s[:, -1] is 0 up to rounding
        inside = (q_low - s_low ** 2 / k) + (q_high - s_high ** 2 / (n - k))
        best = np.minimum(best, inside)
    return best / total


def round_down(x: float, digits: int = 3) -> float:
    scale = 10 ** (digits - 1 - math.floor(math.log10(x)))
    return math.floor(x * scale) / scale


def calibrate(samples: int = CALIBRATION_SAMPLES, seed: int = SEED,
              counts=RUN_COUNTS) -> dict[int, float]:
    """{n: BIMODAL_INSIDE_MAX[n]} for n in `counts`; each n from its own stream
    (seed, n), so a check of a few n draws what the whole table drew."""
    table = {}
    for n in counts:
        rng = np.random.default_rng([seed, n])
        q = [np.quantile(inside_fractions(unimodal(rng, d, samples, n, cv)), FALSE_ALARM)
             for d, cv in NULLS]
        table[n] = round_down(float(min(q)))
    return table


def flagged_rate(samples: np.ndarray, **gaps) -> float:
    return sum(placement.bimodal_groups(list(row), **gaps) is not None for row in samples) / len(samples)


def false_alarms(samples: int, seed: int, counts, cvs, gaps: dict | None = None) -> dict:
    """{(dist, cv, n): share of unimodal samples the rule flags}."""
    rng = np.random.default_rng(seed)
    return {(d, cv, n): flagged_rate(unimodal(rng, d, samples, n, cv), **(gaps or {}))
            for d in DISTRIBUTIONS for cv in cvs for n in counts}


def detection(samples: int, seed: int, n_low: int, n_high: int, ratio: float, cv: float) -> float:
    """Share of two-group samples for which the rule returns the true groups."""
    rng = np.random.default_rng(seed)
    truth = [list(range(n_low)), list(range(n_low, n_low + n_high))]
    rows = two_groups(rng, samples, n_low, n_high, ratio, cv)
    return sum(placement.bimodal_groups(list(r)) == truth for r in rows) / samples


def four_runs(samples: int, seed: int, cv: float = 0.05, ratio: float = 2.0) -> dict:
    """Why BIMODAL_MIN_GROUP_RUNS is 5: at 4 runs, each way of splitting (a lone
    run only, or 2 and 2 as well) calibrated as above, the share of samples
    found (inside fraction under the threshold) with groups of 2+2 and 1+3."""
    rng = np.random.default_rng([seed, 4])
    out = {}
    for label, splits in (("lone run only", (1, 3)), ("2 and 2 too", (1, 2, 3))):
        limit = min(np.quantile(inside_fractions(unimodal(rng, d, CALIBRATION_SAMPLES, 4, c), splits),
                                FALSE_ALARM) for d, c in NULLS)
        for shape in ((2, 2), (1, 3)):
            rows = two_groups(rng, samples, *shape, ratio, cv)
            out[(label, shape)] = float(np.mean(inside_fractions(rows, splits) < limit))
    return out


RATIOS = (1.1, 1.2, 1.3, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0)
SHAPES = ((1, 2), (1, 4), (2, 3), (3, 3), (1, 9), (5, 5))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=CALIBRATION_SAMPLES,
                   help="calibration samples per run count and distribution")
    p.add_argument("--check-samples", type=int, default=4000,
                   help="samples per false-alarm and detection figure")
    a = p.parse_args()
    table = calibrate(a.samples)
    print("BIMODAL_INSIDE_MAX =", table)
    if table != {n: placement.BIMODAL_INSIDE_MAX[n] for n in RUN_COUNTS}:
        print("differs from bench/placement.py's table")
    head = false_alarms(20_000, SEED + 1, (5,), (0.10,))
    alone = false_alarms(20_000, SEED + 1, (5,), (0.10,), {"min_gap": 0, "single_gap": 0})
    print("\n5 runs, cv 10%, 20000 samples each: flagged "
          + ", ".join(f"{d} {100 * head[(d, 0.10, 5)]:.2f}% (test alone {100 * alone[(d, 0.10, 5)]:.2f}%)"
                      for d in DISTRIBUTIONS))
    print("\n4 runs, two groups 2x apart, cv 5% inside each: share found")
    for (label, shape), found in four_runs(20_000, SEED + 3).items():
        print(f"  splitting {label:14} {shape[0]} vs {shape[1]}: {100 * found:.1f}%")
    cvs = (0.02, 0.05, 0.10, 0.20, 0.30)
    counts = (*RUN_COUNTS, 30, 50)
    for label, gaps in (("the warning's rule", None),
                        ("the inside-fraction test alone", {"min_gap": 0, "single_gap": 0})):
        fa = false_alarms(a.check_samples, SEED + 1, counts, cvs, gaps)
        print(f"\nfalse alarms, {label} (% of {a.check_samples} unimodal samples; rows n)")
        print("n    " + "  ".join(f"{d[:4]} {cv:.0%}".rjust(10) for d in DISTRIBUTIONS for cv in cvs))
        for n in counts:
            print(f"{n:<4} " + "  ".join(f"{100 * fa[(d, cv, n)]:10.1f}"
                                         for d in DISTRIBUTIONS for cv in cvs))
    for cv in (0.02, 0.05, 0.10):
        print(f"\ndetection of two lognormal groups, cv {cv:.0%} inside each (% of {a.check_samples}; "
              "columns: ratio of the groups' centres)")
        print("shape  " + "".join(f"{r:7}" for r in RATIOS) + "   90% from")
        for lo, hi in SHAPES:
            rates = [detection(a.check_samples, SEED + 2, lo, hi, r, cv) for r in RATIOS]
            first = next((r for r, d in zip(RATIOS, rates) if d >= 0.9), None)
            print(f"{lo} vs {hi} " + "".join(f"{100 * d:7.1f}" for d in rates)
                  + f"   {first if first else '> ' + str(RATIOS[-1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
