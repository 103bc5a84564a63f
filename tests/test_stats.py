import math

import pytest

from bench import stats


def test_summarize_known_values():
    summary = stats.summarize([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0])
    assert summary["n"] == 8
    assert summary["median"] == 4.5
    assert summary["min"] == 2.0
    assert summary["max"] == 9.0
    assert summary["mean"] == 5.0
    # sample stdev: sum of squared deviations 32, over n-1 = 7
    assert summary["stdev"] == pytest.approx(math.sqrt(32 / 7))
    assert summary["cv"] == pytest.approx(math.sqrt(32 / 7) / 5.0)


def test_summarize_single_value_and_empty():
    summary = stats.summarize([3])
    assert summary == {"median": 3.0, "min": 3.0, "max": 3.0, "mean": 3.0,
                       "stdev": 0.0, "cv": 0.0, "n": 1}
    assert stats.summarize([0, 0])["cv"] is None
    with pytest.raises(ValueError):
        stats.summarize([])


def test_instability_warnings_quiet_when_stable():
    assert stats.instability_warnings("pages_per_s", [100, 101, 99, 100], "pages/s") == []


def test_instability_warnings_spread_and_outliers():
    warnings = stats.instability_warnings("pages_per_s", [100, 100, 100, 400], "pages/s")
    text = "\n".join(warnings)
    assert "pages_per_s: stdev is 86% of the mean" in text  # 150 / 175
    assert "max is 129% above the mean" in text
    low = stats.instability_warnings("x", [10, 100, 100, 100], None)
    assert any("min is 87% below the mean" in w for w in low)


def test_instability_warnings_few_runs():
    assert stats.instability_warnings("p", [5.0], "ns") == ["p: only 1 run: spread unknown"]
    assert stats.instability_warnings("p", [5.0, 5.0], "ns") == ["p: only 2 runs: spread unknown"]
    assert stats.instability_warnings("p", [5.0], "ns", min_runs=0) == []


def test_loglin_layout_round_trips():
    assert stats.loglin_bucket_bounds(5) == (5, 6)
    assert stats.loglin_bucket_bounds(128) == (128, 129)
    assert stats.loglin_bucket_bounds(256) == (256, 258)
    last_lower, last_upper = stats.loglin_bucket_bounds(stats.HIST_BUCKETS - 1)
    assert last_upper == 2 ** 42
    for value in (0, 127, 128, 255, 256, 1000, 12345, 10 ** 9):
        lower, upper = stats.loglin_bucket_bounds(stats.loglin_bucket_index(value))
        assert lower <= value < upper
        # a bucket is under 1/128 of its values wide
        assert upper - lower <= max(1, value / 128)


def test_percentiles_from_hand_built_hist():
    # 100 values: 50 in [1000, 1100), 40 in [2000, 2200), 9 in [5000, 6000),
    # 1 in [9000, 10000)
    hist = [(1000, 1100, 50), (2000, 2200, 40), (5000, 6000, 9), (9000, 10000, 1)]
    result = stats.percentiles_from_hist(hist)
    assert set(result) == {"p50", "p90", "p99", "p99_9", "max"}
    assert 1000 <= result["p50"] < 1100      # rank 50 is the last of the first bucket
    assert 2000 <= result["p90"] < 2200      # rank 90
    assert 5000 <= result["p99"] < 6000      # rank 99
    assert 9000 <= result["p99_9"] < 10000   # rank ceil(99.9) = 100
    assert result["max"] == 9999
    value, error = stats.hist_percentile(hist, 50)
    assert value == 1049.5
    assert error == 49.5
    assert error <= (1100 - 1000) / 2


def test_percentile_error_bound_holds_for_exact_values():
    values = [130, 700, 701, 4096, 5000, 123456, 123457, 2_000_000] * 3
    hist = {}
    for value in values:
        index = stats.loglin_bucket_index(value)
        hist[index] = hist.get(index, 0) + 1
    ordered = sorted(values)
    for pct in (50, 90, 99, 99.9):
        exact = ordered[math.ceil(pct / 100 * len(ordered)) - 1]
        estimate, error = stats.hist_percentile(hist, pct)
        assert abs(estimate - exact) <= error


def test_percentiles_sparse_dict_with_string_keys_and_exact_max():
    index = stats.loglin_bucket_index(5000)
    result = stats.percentiles_from_hist({str(index): 10}, pcts=(50, 99.9), max_ns=5001)
    lower, upper = stats.loglin_bucket_bounds(index)
    assert set(result) == {"p50", "p99_9", "max"}
    assert lower <= result["p50"] <= 5001
    assert result["max"] == 5001


def test_percentiles_clamped_to_exact_max():
    result = stats.percentiles_from_hist([(1000, 2000, 4)], max_ns=1200)
    assert result["p50"] == 1200
    assert result["max"] == 1200


def test_percentiles_empty_and_bad_input():
    assert stats.percentiles_from_hist({}) == {
        "p50": None, "p90": None, "p99": None, "p99_9": None, "max": None}
    with pytest.raises(ValueError):
        stats.percentiles_from_hist({1: -1})
    with pytest.raises(ValueError):
        stats.percentiles_from_hist({1: 1}, pcts=(0,))


def test_dense_counts_and_qemu_buckets():
    dense = [0] * stats.HIST_BUCKETS
    dense[stats.loglin_bucket_index(300)] = 3
    assert stats.sparse_hist(dense) == {stats.loglin_bucket_index(300): 3}
    assert 298 <= stats.percentiles_from_hist(dense)["p50"] <= 302
    # QEMU: bucket 3 holds [8, 16) us
    result = stats.percentiles_from_hist({3: 1}, pcts=(50,),
                                         bounds=stats.log2_us_bucket_bounds)
    assert 8000 <= result["p50"] < 16000


def test_merge_hist():
    a = {1: 2, 5: 1}
    b = {"5": 3, 7: 0, 9: 1}
    assert stats.merge_hist(a, b) == {1: 2, 5: 4, 9: 1}
    assert a == {1: 2, 5: 1}
