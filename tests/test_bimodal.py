"""Issue 15: a bimodality warning with a known false-alarm rate. Its thresholds
come from the simulation in benchmarks/bimodal_calibration.py (rerun here);
unimodal samples are flagged at most 5% of the time; clear two-group samples
are flagged with their runs named; a single run apart is called an outlier."""
import os
import sys

import numpy as np
import pytest

from bench import placement
from bench.validity import run_warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import bimodal_calibration as sim  # noqa: E402

CHECK_SEED = sim.SEED + 100   # fresh samples, not the calibration's


def warnings_for(rates, policy="free"):
    runs = [{"metrics": {"pages_per_s": v, "guest_seconds": 1.0, "content_errors": 0}} for v in rates]
    return [w for w in run_warnings({"config": {"vcpus": 1, "placement": policy}, "runs": runs})
            if w.startswith("bimodal") or "outlier" in w]


# ---- the calibration behind the thresholds

@pytest.mark.parametrize("n", [3, 5, 10, 20])
def test_the_simulation_gives_the_thresholds_in_placement(n):
    assert sim.calibrate(counts=[n]) == {n: placement.BIMODAL_INSIDE_MAX[n]}


def test_the_simulations_vectorised_statistic_is_placements():
    rng = np.random.default_rng(CHECK_SEED)
    for n in (3, 4, 5, 7, 12, 20):
        rows = np.concatenate([sim.unimodal(rng, "lognormal", 100, n, 0.2),
                               sim.two_groups(rng, 100, n // 2, n - n // 2, 2.0, 0.05)])
        fast = sim.inside_fractions(rows)
        exact = [placement.inside_fraction(list(r))[0] for r in rows]
        assert np.allclose(fast, exact, rtol=1e-6, atol=1e-12)


# ---- false alarms

@pytest.mark.parametrize("dist", sim.DISTRIBUTIONS)
def test_at_most_5_percent_of_unimodal_5_run_samples_are_flagged(dist):
    rng = np.random.default_rng([CHECK_SEED, 5])
    rows = sim.unimodal(rng, dist, 2500, 5, 0.10)
    assert sim.flagged_rate(rows) <= 0.05                                # the warning
    assert sim.flagged_rate(rows, min_gap=0, single_gap=0) <= 0.05       # its test alone


def test_at_most_5_percent_flagged_for_3_to_20_runs_and_beyond():
    rng = np.random.default_rng([CHECK_SEED, 0])
    for dist in sim.DISTRIBUTIONS:
        for n in (*sim.RUN_COUNTS, 30):
            rows = sim.unimodal(rng, dist, 1000, n, 0.10)
            assert sim.flagged_rate(rows) <= 0.05, (dist, n)
            # the test alone, on more samples (the vectorised statistic, checked above)
            many = sim.unimodal(rng, dist, 20000, n, 0.10)
            limit = placement.BIMODAL_INSIDE_MAX[min(n, 20)]
            assert np.mean(sim.inside_fractions(many) < limit) <= 0.05, (dist, n)


def test_unimodal_and_too_few_runs_give_no_warning():
    assert placement.bimodal_groups([27000, 26000, 26500, 27500, 26800]) is None
    assert placement.bimodal_groups([1, 2]) is None
    assert placement.bimodal_groups([5.0, 5.0, 5.0, 5.0, 5.0]) is None
    assert placement.bimodal_groups([30000, 31000, 60000, 0]) is None   # no log of 0
    # 4 runs: two tight groups of 2, 2x apart, are not looked for (BIMODAL_MIN_GROUP_RUNS)
    assert placement.bimodal_groups([30000, 30300, 60000, 60600]) is None
    assert warnings_for([30000, 30300, 60000, 60600]) == []


# ---- detection

def test_clear_two_groups_are_flagged_with_their_runs():
    assert placement.bimodal_groups([30000] * 3 + [60000] * 3) == [[0, 1, 2], [3, 4, 5]]
    (w,) = warnings_for([30000, 60000, 30500, 61000, 29800, 59500])
    assert w.startswith("bimodal: the repetitions fall into two groups (runs 1,3,5 at about 30,000 "
                        "pages/s vs runs 2,4,6 at about 60,000 pages/s); thread placement"), w
    (w,) = warnings_for([61000, 30000, 59000, 31000, 60000])            # 2 vs 3, 2x apart
    assert w.startswith("bimodal") and "runs 2,4 at about 31,000" in w and "runs 1,3,5" in w, w
    (w,) = warnings_for([61000, 30000, 59000, 31000, 60000], policy="spread")
    assert "placement is fixed (--placement spread): something else decides" in w, w


@pytest.mark.parametrize("n_low,n_high,cv,ratio", [(3, 3, 0.05, 2.0), (2, 3, 0.05, 2.0),
                                                     (2, 3, 0.02, 1.5), (5, 5, 0.10, 2.0)])
def test_simulated_two_groups_are_found_nine_times_in_ten(n_low, n_high, cv, ratio):
    # the true groups, not just some warning (docs/checks.md: the smallest separations)
    assert sim.detection(1000, CHECK_SEED, n_low, n_high, ratio, cv) >= 0.90


# ---- a single run apart

def test_a_single_run_apart_is_an_outlier_not_two_groups():
    rates = [27000, 26000, 26500, 13000, 27500]
    assert placement.bimodal_groups(rates) == [[3], [0, 1, 2, 4]]
    (w,) = warnings_for(rates)
    assert w.startswith("run 4 is an outlier at 13,000 pages/s (the other 4 runs at about "
                        "27,000 pages/s)"), w
    assert "bimodal" not in w and "groups" not in w
    (w,) = warnings_for([27000, 26000, 26500, 27500, 13000], policy="packed")
    assert w.startswith("run 5 is an outlier") and "placement is fixed (--placement packed)" in w, w
    # 10 runs, one far above the rest
    (w,) = warnings_for([20000, 20400, 19800, 20100, 19900, 20300, 41000, 20000, 20200, 19700])
    assert w.startswith("run 7 is an outlier at 41,000 pages/s (the other 9 runs"), w


def test_three_runs_can_only_show_an_outlier():
    (w,) = warnings_for([27000, 13500, 26800])   # the default --repeat 3
    assert w.startswith("run 2 is an outlier at 13,500 pages/s") and "under 5 runs" in w, w
    # a lone run a little off (17%) is not worth a warning
    assert warnings_for([27000, 26000, 26500, 27500, 22000]) == []
