"""Statistics over repeated runs and over bucketed latency histograms.

Pure Python on purpose: the result record keeps raw values and sparse
histograms, and everything here must be recomputable from a record alone.
"""

from __future__ import annotations

import math
import statistics
from fractions import Fraction
from typing import Callable, Iterable, Mapping, Sequence, Union

DEFAULT_PERCENTILES = (50, 90, 99, 99.9)

# Layout of the C core's log-linear histogram (bench/csrc/fb_api.h):
# values below 2**HIST_SUB_BITS have a bucket each, then every power of two
# is split into 2**HIST_SUB_BITS equal buckets.
HIST_SUB_BITS = 7
HIST_BUCKETS = 4608

# Above these the run-to-run spread is reported, as pyperf does.
CV_WARN = 0.10
MIN_MAX_WARN = 0.50
MIN_RUNS = 3

Bounds = Callable[[int], "tuple[int, int]"]
Histogram = Union[Mapping, Sequence]


def summarize(values: Iterable[float]) -> dict:
    """Median, min, max, mean, sample stdev, cv (stdev/mean) and n.

    stdev is 0 for a single value; cv is None when the mean is 0, where
    a relative spread means nothing.
    """
    values = [float(v) for v in values]
    if not values:
        raise ValueError("summarize() needs at least one value")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"non-finite value in {values!r}")
    mean = statistics.fmean(values)
    stdev = statistics.stdev(values) if len(values) > 1 else 0.0
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "mean": mean,
        "stdev": stdev,
        "cv": stdev / mean if mean != 0 else None,
        "n": len(values),
    }


def _fmt(value: float, unit: str | None) -> str:
    return f"{value:.4g} {unit}" if unit else f"{value:.4g}"


def instability_warnings(name: str, values: Iterable[float], unit: str | None,
                         *, min_runs: int = MIN_RUNS) -> list[str]:
    """Plain-words warnings when `values` look too spread out to trust.

    Same checks as pyperf: stdev over 10% of the mean, min or max more than
    50% away from the mean, and too few runs to tell (pass min_runs=0 to
    leave that last one out, e.g. when the caller already said it once).
    """
    stats = summarize(values)
    mean, n = stats["mean"], stats["n"]
    warnings = []
    if n < min_runs:
        warnings.append(f"{name}: only {n} run{'s' if n != 1 else ''}: "
                        "spread unknown")
    # Relative checks need a positive mean; all-zero counters are just stable.
    if mean <= 0 or n < 2:
        return warnings
    if stats["cv"] > CV_WARN:
        warnings.append(
            f"{name}: stdev is {stats['cv'] * 100:.0f}% of the mean "
            f"(stdev {_fmt(stats['stdev'], unit)}, mean {_fmt(mean, unit)})")
    if stats["min"] < mean * (1 - MIN_MAX_WARN):
        warnings.append(
            f"{name}: min is {(mean - stats['min']) / mean * 100:.0f}% below "
            f"the mean (min {_fmt(stats['min'], unit)}, mean {_fmt(mean, unit)})")
    if stats["max"] > mean * (1 + MIN_MAX_WARN):
        warnings.append(
            f"{name}: max is {(stats['max'] - mean) / mean * 100:.0f}% above "
            f"the mean (max {_fmt(stats['max'], unit)}, mean {_fmt(mean, unit)})")
    return warnings


def loglin_bucket_bounds(index: int, sub_bits: int = HIST_SUB_BITS) -> tuple[int, int]:
    """[lower, upper) in ns of bucket `index` of the C core's histogram."""
    sub = 1 << sub_bits
    if index < 0:
        raise ValueError(f"negative bucket index {index}")
    if index < sub:
        return index, index + 1
    octave, offset = divmod(index - sub, sub)
    width = 1 << octave
    lower = (sub + offset) * width
    return lower, lower + width


def loglin_bucket_index(value_ns: int, sub_bits: int = HIST_SUB_BITS) -> int:
    """Bucket of `value_ns` in the log-linear layout (inverse of the bounds)."""
    sub = 1 << sub_bits
    value_ns = int(value_ns)
    if value_ns < 0:
        raise ValueError(f"negative latency {value_ns}")
    if value_ns < sub:
        return value_ns
    octave = value_ns.bit_length() - 1 - sub_bits
    index = sub + octave * sub + ((value_ns >> octave) - sub)
    # as the C core: the last bucket also holds everything above 2**42 ns
    return min(index, HIST_BUCKETS - 1) if sub_bits == HIST_SUB_BITS else index


def log2_us_bucket_bounds(index: int) -> tuple[int, int]:
    """[lower, upper) in ns of QEMU's postcopy-latency-dist bucket `index`."""
    if index < 0:
        raise ValueError(f"negative bucket index {index}")
    return (1 << index) * 1000, (1 << (index + 1)) * 1000


def _buckets(hist: Histogram, bounds: Bounds) -> list[tuple[int, int, int]]:
    """Normalize any accepted histogram form to sorted (lower, upper, count)."""
    if isinstance(hist, Mapping):
        # Keys may be strings after a JSON round trip.
        items = [(int(k), int(c)) for k, c in hist.items()]
        rows = [(*bounds(i), c) for i, c in items]
    else:
        hist = list(hist)
        if all(isinstance(x, (tuple, list)) for x in hist):
            rows = [(int(lo), int(up), int(c)) for lo, up, c in hist]
        else:  # a dense array of counts, as the C core fills it
            rows = [(*bounds(i), int(c)) for i, c in enumerate(hist)]
    for lower, upper, count in rows:
        if count < 0:
            raise ValueError(f"negative count in bucket [{lower}, {upper})")
        if upper <= lower:
            raise ValueError(f"empty bucket [{lower}, {upper})")
    return sorted(r for r in rows if r[2] > 0)


def _rank(pct: float, total: int) -> int:
    if not 0 < pct <= 100:
        raise ValueError(f"percentile {pct} outside (0, 100]")
    # Fraction(str()) keeps 99.9 exact, so rank 999 of 1000 is not rounded to 1000.
    return max(1, math.ceil(Fraction(str(pct)) * total / 100))


def percentile_key(pct: float) -> str:
    """'p50', 'p99_9': the metric name of a percentile."""
    return "p" + f"{pct:g}".replace(".", "_")


def hist_percentile(hist: Histogram, pct: float,
                    bounds: Bounds = loglin_bucket_bounds) -> tuple[float, float] | None:
    """(estimate, error bound) of the pct-th percentile, None if empty.

    The estimate is the middle of the bucket holding the value of rank
    ceil(pct/100 * total). Values are whole nanoseconds, so a bucket
    [lower, upper) holds lower..upper-1 and the estimate is off by at most
    (upper - 1 - lower) / 2, under half the bucket width (0 for the exact
    buckets below 128 ns, under 0.4% of the value above).
    """
    rows = _buckets(hist, bounds)
    total = sum(c for _, _, c in rows)
    if total == 0:
        return None
    rank = _rank(pct, total)
    seen = 0
    for lower, upper, count in rows:
        seen += count
        if seen >= rank:
            return (lower + upper - 1) / 2, (upper - 1 - lower) / 2
    raise AssertionError("rank beyond total")  # unreachable: rank <= total


def percentiles_from_hist(hist: Histogram,
                          pcts: Sequence[float] = DEFAULT_PERCENTILES,
                          max_ns: float | None = None,
                          bounds: Bounds = loglin_bucket_bounds) -> dict:
    """{'p50': ..., 'p99_9': ..., 'max': ...} from a bucketed histogram.

    `hist` is a sparse {bucket index: count}, a dense list of counts, or a
    list of (lower_ns, upper_ns, count) with upper exclusive; `bounds` maps
    an index to [lower, upper) ns. See hist_percentile for the error bound.
    'max' is the last value the highest nonempty bucket can hold unless the
    caller knows the exact max_ns; estimates are clamped to that max, as no
    percentile can exceed it. An empty histogram gives None everywhere.
    """
    rows = _buckets(hist, bounds)
    result: dict = {}
    if max_ns is None and rows:
        max_ns = rows[-1][1] - 1
    for pct in pcts:
        found = hist_percentile(rows, pct, bounds)
        if found is None:
            result[percentile_key(pct)] = None
        else:
            result[percentile_key(pct)] = min(found[0], max_ns)
    result["max"] = max_ns
    return result


def merge_hist(a: Mapping, b: Mapping) -> dict:
    """Sum two sparse {bucket index: count} histograms; zero counts dropped."""
    merged: dict[int, int] = {}
    for hist in (a, b):
        for index, count in hist.items():
            merged[int(index)] = merged.get(int(index), 0) + int(count)
    return {i: c for i, c in sorted(merged.items()) if c}


def sparse_hist(counts: Sequence[int]) -> dict:
    """Dense counts (as the C core fills them) to a sparse {index: count}."""
    return {i: int(c) for i, c in enumerate(counts) if c}
