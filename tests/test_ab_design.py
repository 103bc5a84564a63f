"""Issue 15, item 3: `ab`'s looks are fixed in advance and share ALPHA between them.

The simulations drive the real decision code (bench.nightly.ab.decide, and
through it verdict.compare_records) with simulated blocks: each block is the
real record tests/data/exits-v2.json with its runs replaced by runs whose
judged metrics (paging rate, fault latency p50 and p99) are drawn from a
lognormal around that record's medians. Nothing else verdict.py reads can take
part: the runs carry no schedstat split (metrics.sched) and no cpu_by_role, so
neither side looks loaded, and the record carries no host fingerprint (both
sides are one machine; comparing fingerprints would cost a third of each look
and could only say "no change").
"""
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from scipy import stats

from bench import result as resultmod
from bench.nightly import ab
from bench.nightly.verdict import ALPHA, MIN_REPETITIONS

DATA = "tests/data/exits-v2.json"
JUDGED = ("pages_per_s", "fault_latency_ns.p50", "fault_latency_ns.p99")
# a true 20% change: B pages 0.8 times as fast, its latencies 1.25 times as long
SLOWER = {"pages_per_s": 0.8, "fault_latency_ns.p50": 1.25, "fault_latency_ns.p99": 1.25}

# Simulated ab runs per scenario: 2 x 200 A/A runs (each stops at the first look
# where no UNKNOWN admits a regression, or at the cap) and 150 with a 20% change.
AA_RUNS = 200
POWER_RUNS = 150


@pytest.fixture(scope="module")
def real():
    record = resultmod.load(DATA)
    record["machine"] = dict(record["machine"], fingerprint=None)
    medians = {p: float(np.median(resultmod.metric_values(record, p))) for p in JUDGED}
    return record, medians


def block_maker(real, rng, sigma, b_factors=None):
    """run_block for ab.decide: one simulated record of `repeat` runs per call."""
    record, medians = real

    def run_block(side, pair, repeat):
        factors = b_factors if (side == "b" and b_factors) else {}
        draws = rng.lognormal(0.0, sigma, (repeat, len(JUDGED)))
        runs = []
        for row in draws:
            value = {p: medians[p] * factors.get(p, 1.0) * z for p, z in zip(JUDGED, row)}
            runs.append({"metrics": {
                "pages_per_s": value["pages_per_s"],
                "fault_latency_ns": {"p50": value["fault_latency_ns.p50"],
                                     "p99": value["fault_latency_ns.p99"]}}})
        return dict(record, runs=runs)
    return run_block


def _simulate_runs(real, seed, sigma, indices, b_factors, block, max_repeat):
    out = []
    for i in indices:
        # each simulated run draws from its own stream: the outcome of run i does not
        # depend on how the runs are shared between processes
        make = block_maker(real, np.random.default_rng([seed, i]), sigma, b_factors)
        out.append(ab.decide(lambda side, pair: make(side, pair, block), block, max_repeat))
    return out


def simulate(real, seed, sigma, runs, b_factors=None, block=ab.DEFAULT_BLOCK,
             max_repeat=ab.DEFAULT_MAX_REPEAT):
    """`runs` independent simulated ab runs, spread over the host's CPUs (the runs
    are pure computation; nothing else in the suite runs meanwhile)."""
    workers = min(runs, len(os.sched_getaffinity(0)))
    if workers < 2:
        return _simulate_runs(real, seed, sigma, range(runs), b_factors, block, max_repeat)
    chunks = [range(k, runs, workers) for k in range(workers)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        parts = list(pool.map(_simulate_runs, *zip(*[(real, seed, sigma, c, b_factors, block, max_repeat)
                                                        for c in chunks])))
    out = [None] * runs
    for c, part in zip(chunks, parts):
        for i, looks in zip(c, part):
            out[i] = looks
    return out


def any_different(looks) -> bool:
    return any(j.verdict == "DIFFERENT" for look in looks for j in look.comparison.judgements)


# --- the schedule ---------------------------------------------------------------

def test_default_looks_are_pairs_2_to_6_at_a_fifth_of_alpha_each():
    schedule = ab.look_alphas(ab.DEFAULT_BLOCK, ab.DEFAULT_MAX_REPEAT)
    assert list(schedule) == [2, 3, 4, 5, 6]
    assert all(a == pytest.approx(ALPHA / 5) for a in schedule.values())


@pytest.mark.parametrize("block,max_repeat", [(5, 30), (1, 10), (2, 4), (5, 5), (5, 9), (3, 100), (7, 20)])
def test_looks_spend_at_most_alpha_and_only_where_a_verdict_can_be_drawn(block, max_repeat):
    schedule = ab.look_alphas(block, max_repeat)
    assert sum(schedule.values()) <= ALPHA + 1e-12
    assert max(schedule) * block <= max_repeat or max(schedule) == 1
    for pairs, alpha in schedule.items():
        assert (alpha > 0) == (pairs * block >= MIN_REPETITIONS), (pairs, alpha)
    if any(pairs * block >= MIN_REPETITIONS for pairs in schedule):
        assert sum(schedule.values()) == pytest.approx(ALPHA)


def test_one_pair_is_looked_at_alone_only_when_no_second_fits():
    assert ab.look_alphas(5, 9) == {1: ALPHA}
    assert min(ab.look_alphas(5, 10)) == 2


def test_help_states_the_rate(capsys):
    with pytest.raises(SystemExit) as done:
        ab.main(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"at most {ALPHA:.0%}" in text and "over all looks" in text, text


# --- the decision loop on simulated blocks ----------------------------------------

def test_blocks_run_counterbalanced_and_each_look_tests_at_its_level(real, monkeypatch):
    calls, levels = [], []
    make = block_maker(real, np.random.default_rng(1), 0.25)
    real_compare = ab.compare_records

    def spy(base, new, **kw):
        levels.append((len(base), kw["alpha"]))
        return real_compare(base, new, **kw)
    monkeypatch.setattr(ab, "compare_records", spy)

    def run_block(side, pair):
        calls.append((side, pair))
        return make(side, pair, 5)
    looks = ab.decide(run_block, 5, 30)
    # A/A at sigma 0.25: never SAME on every metric (p99's interval is wider than
    # +-25%), and with this seed no false DIFFERENT; it stops at the first look
    # where no UNKNOWN admits a regression of its minimum effect
    last = looks[-1]
    assert [look.pairs for look in looks] == list(range(2, last.pairs + 1))
    pairs = last.pairs
    assert "".join(side for side, _pair in calls) == "abba" * (pairs // 2) + "ab" * (pairs % 2)
    assert [pair for _side, pair in calls] == [p for p in range(pairs) for _ in (0, 1)]
    assert levels == [(p, ALPHA / 5) for p in range(2, pairs + 1)]
    assert last.comparison.exit_status() == 0
    assert all(j.verdict == "SAME" or j.rules_out_regression for j in last.comparison.judgements)
    assert any(j.verdict == "UNKNOWN" for j in last.comparison.judgements)
    for look in looks[:-1]:
        assert look.comparison.exit_status() == 2


def test_stops_at_the_first_look_that_decides(real):
    # nearly no noise: SAME everywhere at the first look
    same = simulate(real, 2, 0.005, 1)[0]
    assert len(same) == 1 and same[0].pairs == 2 and same[0].comparison.exit_status() == 0
    # 20% slower with little noise: DIFFERENT worse at the first look
    slower = simulate(real, 3, 0.05, 1, SLOWER)[0]
    assert len(slower) == 1 and slower[0].comparison.exit_status() == 1


def test_a_failed_block_stops_everything(real):
    make = block_maker(real, np.random.default_rng(4), 0.25)

    def run_block(side, pair):
        if (side, pair) == ("b", 1):
            raise ab.BlockFailed(side, pair, 3)
        return make(side, pair, 5)
    with pytest.raises(ab.BlockFailed, match="block 1 of CONFIG_B failed"):
        ab.decide(run_block, 5, 30)


# --- the design's error rates ---------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("sigma,seed", [(0.25, 125), (0.35, 135)])
def test_aa_false_different_over_all_looks_is_at_most_alpha(real, sigma, seed):
    """A/A: any DIFFERENT (worse or better, at any look, shown or not) is false."""
    outcomes = simulate(real, seed, sigma, AA_RUNS)
    false = sum(any_different(looks) for looks in outcomes)
    ci = stats.binomtest(false, AA_RUNS).proportion_ci(0.95, method="exact")
    # The union bound caps the rate at ALPHA. Measured with this simulation over
    # 1,600 runs a noise level (two seeds each, an earlier stopping rule and effect
    # estimate): 1.7% at sigma 0.25, 2.8% at 0.35. Since each simulated run draws
    # from its own stream (seeded by the seed and its index), 1,200 runs a level (six
    # seeds of 200): 2.5% at 0.25 (2 to 10 a seed), 1.6% at 0.35; these seeds: 6 and
    # 1 of 200.
    # At 2.8% a count over ALPHA * AA_RUNS (10 of 200) has a binomial chance of 3%,
    # so a new seed seldom breaks the check, while the same loop without the
    # correction (every look at ALPHA: 10.75% at sigma 0.35) passes it with a
    # chance of 0.4%. (200 runs keep the suite short; the seeds are fixed.)
    assert false <= ALPHA * AA_RUNS, (
        f"{false}/{AA_RUNS} A/A runs found a false DIFFERENT (95% interval {ci.low:.3f}..{ci.high:.3f})")
    # the exit status follows the looks: a false "B worse" is one of them
    assert sum(looks[-1].comparison.exit_status() == 1 for looks in outcomes) <= false


@pytest.mark.slow
def test_true_20_percent_change_is_found_worse_by_the_cap(real):
    outcomes = simulate(real, 2025, 0.25, POWER_RUNS, SLOWER)
    found = sum(looks[-1].comparison.exit_status() == 1 for looks in outcomes)
    # one-sided 95% lower bound of the power, so that simulation noise cannot
    # carry a design below 80% past the check
    low = stats.binomtest(found, POWER_RUNS).proportion_ci(0.90, method="exact").low
    assert low >= 0.80, f"{found}/{POWER_RUNS} found B DIFFERENT and worse (lower bound {low:.3f})"
    assert all(looks[-1].repetitions <= ab.DEFAULT_MAX_REPEAT for looks in outcomes)
