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
    unpinned = cpustate.cpus_to_probe([-1, -1], [])
    assert set(unpinned) <= set(allowed) and unpinned[0] == allowed[0]
    assert len(unpinned) == min(len(allowed), cpustate.MAX_PROBED_CPUS)


def test_many_cpus_are_probed_evenly_spread(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert cpustate.cpus_to_probe([-1], []) == list(range(0, 64, 4))
    assert cpustate.cpus_to_probe(list(range(32)), []) == list(range(0, 32, 2))


def test_probe_restores_affinity_and_reads_a_plausible_time():
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
    # tonight's fingerprint went on to 12 rounds, the first 7 in a slow spell
    # (memcpy x0.6 in them), the last 5 quick
    tonight = [v * 0.6 for v in quick[:7]] + quick[:5]
    assert memcpy_change(base, fingerprint(tonight, [True] * 7 + [False] * 5, "b")) == []
    # the same rounds without probes read as changed hardware
    assert memcpy_change(base, fingerprint(tonight, None, "c"))
    slow_all = [v * 0.6 for v in quick]
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



# --- the edges of the filter ---

def with_probes(record: dict, before: float, after: float) -> dict:
    for run in record["runs"]:
        run.setdefault("raw", {})["cpu_probe"] = probe(before, after)
    return record


def slower(record: dict, factor: float) -> dict:
    for run in record["runs"]:
        m = run["metrics"]
        for k in m["fault_latency_ns"]:
            if k != "count":
                m["fault_latency_ns"][k] *= factor
        m["pages_per_s"] /= factor
    record["summary"] = {}
    return resultmod.finalize(record)


def test_after_probes_slowed_by_the_run_itself_do_not_veto():
    """New code that leaves work on the CPU right after each run: its after-probes
    all read high, its before-probes do not. They are the run's aftermath, not the
    host's state: the side is judged by its before-probes, the regression stands."""
    rec = resultmod.load(NIGHTS)
    quick, _ = split_by_mode(rec)
    base = night(rec, quick[:12], [False] * 12, 1)
    new = with_probes(slower(night(rec, quick[12:24], [False] * 12, 2), 1.2), QUICK, SLOW)
    cmp = compare_records([base], [new])
    assert cmp.exit_status() == 1, [j.reason for j in cmp.judgements]
    assert any("aftermath" in n for n in cmp.notes), cmp.notes


def test_one_side_without_probes_filters_neither():
    rec = resultmod.load(NIGHTS)
    quick, slow = split_by_mode(rec)
    base = night(rec, quick[:12], [False] * 12, 1)
    new = night(rec, quick[12:18] + slow[:6], [False] * 6 + [True] * 6, 2)
    for run in base["runs"]:
        del run["raw"]["cpu_probe"]
    cmp = compare_records([base], [new])
    assert any("no run is left out" in n for n in cmp.notes), cmp.notes
    assert all(len(j.new) == 12 and len(j.base) == 12 for j in cmp.judgements)


def test_a_side_slowed_throughout_is_noted_beside_the_verdict():
    """Every probe of the new side slow: its floor is slow, nothing is left out
    (a kernel whose system calls got slower looks the same), and the output says
    the floor moved."""
    rec = resultmod.load(NIGHTS)
    quick, slow = split_by_mode(rec)
    base = night(rec, quick[:12], [False] * 12, 1)
    new = with_probes(night(rec, slow[:12], [True] * 12, 2), SLOW, SLOW)
    cmp = compare_records([base], [new])
    assert any("floor moved" in n for n in cmp.notes), cmp.notes
    assert all(len(j.new) == 12 for j in cmp.judgements)


def test_the_record_warns_about_slowed_runs_as_a_host_warning():
    from bench import validity
    rec = resultmod.load(NIGHTS)
    quick, slow = split_by_mode(rec)
    r = night(rec, quick[:8] + slow[:2], [False] * 8 + [True] * 2, 1)
    words = [w for w in validity.run_warnings(r) if w.startswith(validity.CPU_STATE_START)]
    assert len(words) == 1 and "2 of 10 runs (runs 9,10" in words[0], words
    assert validity.subject(words[0]) == "host"
    assert not [w for w in validity.run_warnings(night(rec, quick[:10], [False] * 10, 1))
                if w.startswith(validity.CPU_STATE_START)]


def test_probe_lists_of_different_length_are_refused():
    rec = resultmod.load(NIGHTS)
    r = night(rec, list(range(6)), [False] * 6, 1)
    assert not resultmod.validate(r)
    r["runs"][0]["raw"]["cpu_probe"]["cpus"] = [0, 1]
    assert any("differ in length" in p for p in resultmod.validate(r))
    r = night(rec, list(range(6)), [False] * 6, 1)
    r["machine"]["fingerprint"]["cpu_probe"] = [{"cpus": [0], "before_ns_per_call": [QUICK],
                                                 "after_ns_per_call": [QUICK, QUICK]}]
    assert any("machine.fingerprint.cpu_probe[0]" in p and "differ in length" in p
               for p in resultmod.validate(r)), resultmod.validate(r)
    r["machine"]["fingerprint"]["cpu_probe"][0]["after_ns_per_call"] = []   # the schema: not empty
    assert resultmod.validate(r)


# --- an UNKNOWN that rules out a regression ---

def judgement(better: str, interval, verdict="UNKNOWN", busy=None):
    from bench.metrics import Metric
    from bench.nightly.verdict import Judgement
    m = Metric(path="x", unit="ns", better=better, min_effect=0.25, label="x")
    return Judgement("cell", m, [1.0] * 5, [1.0] * 5, verdict=verdict, interval=interval, busy=busy)


@pytest.mark.parametrize("better,interval,rules_out", [
    ("lower", (0.777, 0.916), True),    # much faster possible, 25% slower not
    ("lower", (0.9, 1.26), False),      # 26% slower possible
    ("higher", (1.1, 1.4), True),       # a rate: 25% lower not plausible
    ("higher", (0.79, 1.1), False),     # a rate 21% lower (1/0.79 = 1.27) possible
])
def test_rules_out_regression_by_direction(better, interval, rules_out):
    assert judgement(better, interval).rules_out_regression is rules_out


def test_busy_or_decided_judgements_never_rule_out():
    assert not judgement("lower", (0.8, 0.9), busy="host busy").rules_out_regression
    assert not judgement("lower", (0.8, 0.9), verdict="DIFFERENT").rules_out_regression
    assert not judgement("lower", None).rules_out_regression
