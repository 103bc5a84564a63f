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


# --- the host fingerprint: rounds on a slowed CPU say nothing about the hardware ---

from bench.nightly import fingerprint as fpmod   # noqa: E402


def fingerprint(memcpy: list[float], slow: list[bool] | None, measured: str) -> dict:
    comps = {}
    for name, (unit, better, what, _tol) in fpmod.COMPONENTS.items():
        vals = memcpy if name == "memcpy_bytes_per_s" else [1000.0 + i for i in range(len(memcpy))]
        comps[name] = {"values": vals, "median": sorted(vals)[len(vals) // 2], "min": min(vals),
                       "max": max(vals), "unit": unit, "better": better, "what": what}
    fp = {"version": 1, "samples": len(memcpy), "measured": measured, "pinned_cpu": 0,
          "components": comps}
    if slow is not None:
        fp["cpu_probe"] = [probe(SLOW if s else QUICK, QUICK) for s in slow]
    return fp


def memcpy_change(base, new):
    return [c for c in fpmod.changes(fpmod.pooled([base]), fpmod.pooled([new]))
            if c.name == "memcpy_bytes_per_s"]


def test_fingerprint_rounds_on_a_slowed_cpu_are_left_out():
    quick = [13e9, 13.2e9, 12.9e9, 13.1e9, 13e9, 12.8e9, 13.3e9, 13e9]
    base = fingerprint(quick, [False] * 8, "a")
    # three rounds of tonight's fingerprint in a slow spell: memcpy x0.6 in them
    tonight = [8e9, 8.1e9, 7.9e9, 13e9, 13.1e9, 12.9e9, 13.2e9, 13e9]
    assert memcpy_change(base, fingerprint(tonight, [True] * 3 + [False] * 5, "b")) == []
    # the same values without probes: memcpy reads as changed hardware only if most
    # rounds are slow; with every round slow and no probe, it is a host change
    slow_all = [v * 0.6 for v in quick]
    assert memcpy_change(base, fingerprint(slow_all, None, "c"))
    # every round slow, and the probe saw it against the runs' quick floor: not compared
    pooled = fpmod.pooled([fingerprint(slow_all, [True] * 8, "d")], {0: QUICK})
    assert pooled["rounds_left_out"] == 8 and "memcpy_bytes_per_s" not in pooled["components"]


def test_real_hardware_change_still_seen_with_quick_rounds():
    quick = [13e9, 13.2e9, 12.9e9, 13.1e9, 13e9, 12.8e9, 13.3e9, 13e9]
    base = fingerprint(quick, [False] * 8, "a")
    slower_machine = fingerprint([v * 0.55 for v in quick], [False] * 8, "b")
    assert memcpy_change(base, slower_machine)


def test_a_fingerprint_taken_in_a_slow_spell_is_not_a_host_change():
    rec = resultmod.load(NIGHTS)
    quick, _ = split_by_mode(rec)
    base = night(rec, quick[:10], [False] * 10, 1)
    new = night(rec, quick[10:20], [False] * 10, 2)
    q = [13e9, 13.2e9, 12.9e9, 13.1e9, 13e9, 12.8e9, 13.3e9, 13e9]
    base["machine"]["fingerprint"] = fingerprint(q, [False] * 8, "a")
    new["machine"]["fingerprint"] = fingerprint([v * 0.6 for v in q], [True] * 8, "b")
    cmp = compare_records([base], [new])
    assert not cmp.host_changes, cmp.host_changes
    assert any("not compared" in n for n in cmp.notes), cmp.notes
    # without the probes, the same fingerprint is a host change
    del new["machine"]["fingerprint"]["cpu_probe"]
    assert compare_records([base], [new]).host_changes
