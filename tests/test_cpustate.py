"""The CPU-state probe (bench/cpustate.py) and how the verdicts use it."""
import copy
import os

import pytest

from bench import cpustate
from bench import result as resultmod
from bench.nightly.verdict import compare_records

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NIGHTS = os.path.join(REPO, "tests", "data", "nightly-exits-v1.json")   # 48 runs, no probes
QUICK, SLOW = 163.5, 218.0   # ns a call, the two states measured here


def probe(before: float, after: float, cpu: int = 0) -> dict:
    return {"cpus": [cpu], "before_ns_per_call": [before], "after_ns_per_call": [after],
            "calls": cpustate.PROBE_CALLS, "batches": cpustate.PROBE_BATCHES}


def test_slow_probe_before_or_after_marks_the_run():
    probes = [probe(QUICK, QUICK)] * 8 + [probe(SLOW, QUICK), probe(QUICK, SLOW), None]
    ratios = cpustate.contended(probes)
    flagged = [r is not None and r > cpustate.CONTENDED_RATIO for r in ratios]
    assert flagged == [False] * 8 + [True, True, False]
    assert ratios[-1] is None


def test_a_uniformly_slower_side_flags_nothing():
    """A kernel whose system calls all got slower moves the floor with them."""
    ratios = cpustate.contended([probe(SLOW, SLOW * 1.01)] * 10)
    assert all(r <= cpustate.CONTENDED_RATIO for r in ratios)


def test_smallest_slowdown_flagged_is_the_ratio():
    base = [probe(QUICK, QUICK)] * 9
    r = cpustate.CONTENDED_RATIO
    assert cpustate.contended(base + [probe(QUICK * (r + 0.01), QUICK)])[-1] > r
    assert cpustate.contended(base + [probe(QUICK * (r - 0.01), QUICK)])[-1] <= r


def test_floors_are_per_cpu():
    probes = [{"cpus": [0, 1], "before_ns_per_call": [QUICK, 2 * QUICK],
               "after_ns_per_call": [QUICK, 2 * QUICK]}] * 10
    assert all(r == pytest.approx(1.0) for r in cpustate.contended(probes))


def test_cpus_to_probe():
    allowed = sorted(os.sched_getaffinity(0))
    assert cpustate.cpus_to_probe([allowed[0]], [allowed[0]]) == [allowed[0]]
    assert cpustate.cpus_to_probe([-1, -1], []) == allowed[:cpustate.MAX_PROBED_CPUS]


def test_probe_runs_on_the_asked_cpu_and_restores_affinity():
    pytest.importorskip("bench._native", reason="the C core (bench/_native) is not built")
    before = os.sched_getaffinity(0)
    cpu = min(before)
    values = cpustate.probe([cpu])
    assert len(values) == 1 and 10 < values[0] < 100_000   # ns per getppid call
    assert os.sched_getaffinity(0) == before


# --- the verdict: the committed 48-run record has two p50 modes, 32 and 43 us ---

def night(record: dict, runs: list[int], slow_probe: list[bool], day: int) -> dict:
    """A record holding the chosen runs of `record`, each given a probe that reads
    the slow state where slow_probe says so."""
    out = copy.deepcopy(record)
    out["created"] = f"2099-01-{day:02d}T02:00:00+00:00"
    out["runs"] = [copy.deepcopy(record["runs"][i]) for i in runs]
    for run, slow in zip(out["runs"], slow_probe):
        run.setdefault("raw", {})["cpu_probe"] = probe(SLOW if slow else QUICK, QUICK)
    out["summary"] = {}
    return resultmod.finalize(out)


def split_by_mode(record):
    p50 = [r["metrics"]["fault_latency_ns"]["p50"] for r in record["runs"]]
    quick = [i for i, v in enumerate(p50) if v < 36_000]
    slow = [i for i, v in enumerate(p50) if v >= 36_000]
    return quick, slow


def p50_verdict(cmp):
    return next(j for j in cmp.judgements if j.metric.path == "fault_latency_ns.p50")


def test_a_night_in_the_slow_state_is_not_a_regression_when_the_probe_saw_it():
    rec = resultmod.load(NIGHTS)
    quick, slow = split_by_mode(rec)
    assert len(quick) >= 18 and len(slow) >= 20
    # base: mostly quick runs; new: mostly slow runs, which the probe saw
    base = night(rec, quick[:12] + slow[:2], [False] * 12 + [True] * 2, 1)
    new = night(rec, quick[12:18] + slow[2:20], [False] * 6 + [True] * 18, 2)
    cmp = compare_records([base], [new])
    assert p50_verdict(cmp).verdict != "DIFFERENT", p50_verdict(cmp).reason
    assert any("CPU itself was slowed" in n for n in cmp.notes), cmp.notes
    # the same runs without probes: the slow state reads as a regression
    for r in (base, new):
        for run in r["runs"]:
            del run["raw"]["cpu_probe"]
    blind = compare_records([base], [new])
    assert p50_verdict(blind).verdict == "DIFFERENT" and p50_verdict(blind).worse


def test_the_probe_does_not_hide_a_regression():
    """A 20% slower fault path on a side whose probes all read higher (a kernel
    whose system calls got slower too): the floor moves with them, nothing is left
    out, the regression stands."""
    rec = resultmod.load(NIGHTS)
    quick, _ = split_by_mode(rec)
    base = night(rec, quick[:12], [False] * 12, 1)
    new = night(rec, quick[12:24], [False] * 12, 2)
    for run in new["runs"]:
        m = run["metrics"]
        for k in m["fault_latency_ns"]:
            if k != "count":
                m["fault_latency_ns"][k] *= 1.2
        m["pages_per_s"] /= 1.2
        run["raw"]["cpu_probe"] = probe(SLOW, SLOW)
    new["summary"] = {}
    resultmod.finalize(new)
    cmp = compare_records([base], [new])
    assert cmp.exit_status() == 1
    assert any("floor moved" in n for n in cmp.notes), cmp.notes


def test_too_few_quick_runs_is_host_busy():
    rec = resultmod.load(NIGHTS)
    quick, slow = split_by_mode(rec)
    base = night(rec, quick[:12], [False] * 12, 1)
    new = night(rec, quick[12:15] + slow[:12], [False] * 3 + [True] * 12, 2)
    cmp = compare_records([base], [new])
    assert cmp.exit_status() == 2 and cmp.host_busy
    assert "CPU itself was slowed" in cmp.host_busy[0]
