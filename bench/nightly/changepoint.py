"""Change points in a series: E-divisive means with a permutation test.

The method of Matteson and James (2014), as Apache Otava (hunter) and MongoDB's
signal-processing service use it: for every split of a segment into a left part
L and a right part R, the divergence

    Q = |L||R|/(|L|+|R|) * (2 mean|l - r| - mean|l - l'| - mean|r - r'|)

(energy distance with exponent 1) is large where the two parts differ in
distribution. The best split of the segment with the largest Q is tested by
permuting that segment's values: its significance is the share of permutations
whose best Q is at least as large. A significant split is kept and both halves
are searched again, until no split is significant.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_SEGMENT = 3
PERMUTATIONS = 499
ALPHA = 0.01


@dataclass
class ChangePoint:
    index: int            # first element of the new segment
    q: float              # divergence of the split
    p: float              # permutation significance
    before_median: float  # of the segment left of the split
    after_median: float   # right of it

    @property
    def ratio(self) -> float:
        return self.after_median / self.before_median if self.before_median else float("inf")


def _best_split(x: np.ndarray, min_segment: int) -> tuple[int, float]:
    """(split index, Q) of the best split of x, or (-1, -inf) when too short."""
    n = x.size
    if n < 2 * min_segment:
        return -1, -np.inf
    dist = np.abs(x[:, None] - x[None, :])
    # 2-D prefix sums: the sum over any block of the distance matrix in O(1)
    prefix = np.zeros((n + 1, n + 1))
    prefix[1:, 1:] = dist.cumsum(0).cumsum(1)

    def block(r0, r1, c0, c1):
        return prefix[r1, c1] - prefix[r0, c1] - prefix[r1, c0] + prefix[r0, c0]

    t = np.arange(min_segment, n - min_segment + 1)
    between = block(0, t, t, n)
    within_left = block(0, t, 0, t) / 2          # each pair counted twice in the matrix
    within_right = block(t, n, t, n) / 2
    left, right = t, n - t
    q = (left * right / n) * (2 * between / (left * right)
                              - within_left / (left * (left - 1) / 2)
                              - within_right / (right * (right - 1) / 2))
    best = int(np.argmax(q))
    return int(t[best]), float(q[best])


def find(series, *, alpha: float = ALPHA, permutations: int = PERMUTATIONS,
         min_segment: int = MIN_SEGMENT, seed: int = 0) -> list[ChangePoint]:
    """Significant change points of `series`, in order of position."""
    x = np.asarray(series, dtype=float)
    if not np.all(np.isfinite(x)):
        raise ValueError("series holds a non-finite value")
    rng = np.random.default_rng(seed)
    splits: list[int] = []
    found: list[ChangePoint] = []
    while True:
        bounds = [0] + sorted(splits) + [x.size]
        candidates = []
        for lo, hi in zip(bounds, bounds[1:]):
            at, q = _best_split(x[lo:hi], min_segment)
            if at > 0:
                candidates.append((q, lo, hi, lo + at))
        if not candidates:
            break
        q, lo, hi, at = max(candidates)
        segment = x[lo:hi]
        exceed = sum(_best_split(rng.permutation(segment), min_segment)[1] >= q
                     for _ in range(permutations))
        p = (exceed + 1) / (permutations + 1)
        if p >= alpha:
            break
        splits.append(at)
        found.append(ChangePoint(at, q, p, float(np.median(x[lo:at])), float(np.median(x[at:hi]))))
    return sorted(found, key=lambda c: c.index)
