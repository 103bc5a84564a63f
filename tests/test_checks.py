"""Issue 16, point 4: each self-check fails at the smallest error docs/checks.md says it
catches and passes just below it. The limits are pinned with synthetic inputs (exact),
then the real core is run with the TSC-frequency knob on both sides of each limit."""
import copy
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from bench import breakdown as bd
from bench import console, result as resultmod, runner
from bench.runner import execute
from bench.validity import run_warnings
from helpers import make_plan

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KHZ = 2_300_000


def knob_khz(ppm: int) -> int:
    """The core's conversion frequency under --tsc-khz-error-ppm (bench/csrc/vm.c)."""
    return int(KHZ * (1.0 + ppm / 1e6))


def failed_names(warnings: list[str]) -> set[str]:
    return {w.split("check failed: ", 1)[1].split(":", 1)[0] for w in warnings if "check failed: " in w}


# ---- guest_window_vs_host_clock: two-sided, on the best vCPU's ratio

def window_check(true_ratios, error: float, host_ns: int = 50_000_000):
    """Windows of `host_ns` whose guest/host ratio is `true_ratios` on the real clock,
    checked with a conversion frequency off by `error` (+0.05: 5% high)."""
    vres = [SimpleNamespace(host_loop_ns=host_ns, guest_loop_cycles=r * host_ns * KHZ / 1e6)
            for r in true_ratios]
    khz = KHZ * (1.0 + error)
    return bd.check_guest_window(vres, len(vres), lambda c: c * 1e6 / khz)


def test_guest_window_catches_4_2_percent_high_and_passes_4_1():
    # an honest ratio is at most 1 (the host window holds the guest's loop): the
    # most a frequency set high can hide behind
    assert window_check([1.0], 0.0)["ok"]
    assert window_check([1.0], 0.041)["ok"]
    assert not window_check([1.0], 0.042)["ok"]
    assert not window_check([0.9967], 0.05)["ok"]   # the 5%, at the lowest ratio measured


def test_guest_window_catches_4_2_percent_low_and_passes_4_1():
    # an honest run that passes has its best ratio at least 0.96: the most a
    # frequency set low can hide behind
    assert window_check([0.96], 0.0)["ok"]
    assert window_check([0.96], -0.041)["ok"]
    assert not window_check([0.96], -0.042)["ok"]
    assert not window_check([1.0], -0.05)["ok"]
    # the usual run sits near 0.997-0.99998: there a frequency 0.5% low fails already
    assert not window_check([0.997], -0.005)["ok"]


def test_guest_window_reads_the_best_vcpu_and_bounds_every_one():
    # at 64 vCPUs a vCPU's completion exit can wait 260 ms for a CPU (measured: ratio
    # 0.947); one whose did not is there, and the aggregate fill would have hidden it
    c = window_check([0.5, 0.947, 0.99998], 0.0)
    assert c["ok"] and c["max_vcpu_ratio"] == pytest.approx(0.99998) and c["min_vcpu_ratio"] == 0.5
    assert not window_check([0.97, 1.0025], 0.0)["ok"]   # any vCPU's window over its host's
    assert window_check([0.5, 0.9], 0.0)["ok"] is False   # no vCPU near its host window
    assert bd.check_guest_window([SimpleNamespace(host_loop_ns=0, guest_loop_cycles=5)], 1,
                                 lambda c: c) is None


def test_guest_window_lower_side_stands_aside_in_short_windows():
    # `prefault` at 1 vCPU: a 3 ms window, of which the exits are 5% (measured 0.946-0.952)
    short = window_check([0.95], 0.0, host_ns=3_000_000)
    assert short["ok"] and short["lower_applies"] is False
    assert not window_check([0.95], -0.06, host_ns=3_000_000)["ok"]   # the upper side still holds
    assert window_check([0.95], 0.0, host_ns=20_000_000)["lower_applies"]
    assert not window_check([0.95], 0.0, host_ns=20_000_000)["ok"]


# ---- tsc_rate_vs_monotonic

def pair_totals(ppm: int, elapsed_ms: float = 50.0, widths=(100, 100)) -> dict:
    """The core's totals for a run `elapsed_ms` long between its pairs, converted
    with the knob's frequency."""
    t0, m0 = 10**12, 5 * 10**9
    ns = int(elapsed_ms * 1e6)
    return {"tsc_khz": knob_khz(ppm), "pair_start_tsc": t0, "pair_start_mono_ns": m0,
            "pair_start_width": widths[0], "pair_end_tsc": t0 + ns * KHZ // 10**6,
            "pair_end_mono_ns": m0 + ns, "pair_end_width": widths[1]}


@pytest.mark.parametrize("ppm", [600, -600, 50_000, -50_000])
def test_tsc_rate_catches_0_06_percent(ppm):
    c = bd.check_tsc_rate(pair_totals(ppm))
    assert not c["ok"] and c["deviation"] == pytest.approx(ppm / 1e6, abs=1e-6)


@pytest.mark.parametrize("ppm", [0, 400, -400])
def test_tsc_rate_passes_under_its_tolerance(ppm):
    c = bd.check_tsc_rate(pair_totals(ppm))
    assert c["ok"] and c["tolerance"] < 510e-6   # 500 ppm + the pairs' ~1 ppm over 50 ms


def test_tsc_rate_tolerance_grows_with_wide_pairs_over_a_short_run():
    # 0.1 ms between pairs 20,000 cycles wide (a preempted clock read): 87,000 ppm of doubt
    c = bd.check_tsc_rate(pair_totals(50_000, elapsed_ms=0.1, widths=(20_000, 20_000)))
    assert c["pairs_uncertainty"] > 0.05 and c["ok"]
    assert bd.check_tsc_rate({"tsc_khz": KHZ, "pair_start_tsc": 0, "pair_end_tsc": 0,
                              "pair_start_mono_ns": 0, "pair_end_mono_ns": 0,
                              "pair_start_width": 0, "pair_end_width": 0}) is None


# ---- the clock bracket: a failed one is a failed check, and latency is set aside

def test_clock_bracket_outside_fails_the_check():
    vres = [SimpleNamespace(tsc_host_before=100, tsc_guest=150, tsc_host_after=200),
            SimpleNamespace(tsc_host_before=100, tsc_guest=250, tsc_host_after=200)]
    c = runner._clock_check(vres, 2, True)
    assert c["ok"] is False and c["guest_tsc_within_host_bracket"] is False
    assert c["vcpus_outside"] == 1 and c["max_bracket_cycles"] == 100
    assert runner._clock_check(vres[:1], 1, True)["ok"] is True
    assert runner._clock_check(vres, 2, False) is None


def set_aside_record() -> dict:
    """A committed record whose run 2 failed the clock bracket, as the runner leaves it."""
    with open(os.path.join(DATA, "exits-v2.json")) as f:
        rec = json.load(f)
    run = rec["runs"][1]
    run["metrics"]["checks"] = {"guest_tsc_within_host_bracket": {
        "guest_tsc_within_host_bracket": False, "ok": False, "vcpus_checked": 2,
        "vcpus_outside": 1, "max_bracket_cycles": 4000},
        "cpu_time_vs_latency": copy.deepcopy(run["metrics"]["checks"].get("cpu_time_vs_latency"))}
    run["metrics"]["fault_breakdown_ns"] = {"omitted": runner.UNUSABLE_REASON}
    runner._set_aside_guest_timed(run["metrics"], run["raw"])
    rec["summary"] = {}
    rec["warnings"] = []
    resultmod.finalize(rec)
    rec["warnings"] += run_warnings(rec)
    return rec


def test_a_set_aside_run_is_valid_warned_and_never_summarized(capsys):
    rec = set_aside_record()
    m, raw = rec["runs"][1]["metrics"], rec["runs"][1]["raw"]
    for k in runner.GUEST_TIMED_METRICS:
        assert m[k] is None
    assert "fault_latency_ns" in m["unusable"]["metrics"] and m["unusable"]["reason"]
    assert raw["fault_latency_hist"] is None and raw["unusable_metrics"]["fault_latency_ns"]["p50"] > 0
    assert "raw.fault_latency_hist" in raw["unusable_metrics"]
    assert "cpu_time_vs_latency" not in m["checks"]   # its latency side is guest-timed
    assert resultmod.validate(rec) == []
    assert not [p for p in rec["summary"] if p.startswith(("fault_latency_ns.", "blocktime_ns."))]
    assert "guest_tsc_within_host_bracket" in failed_names(rec["warnings"])
    # the same null without the mark is still an invalid record
    del m["unusable"]
    assert any("is null but config.record_latency is on" in p for p in resultmod.validate(rec))
    console.print_point(set_aside_record(), "x.json")
    out = capsys.readouterr().out
    assert "unusable in run(s) 2 of" in out and "Fault latency (us" not in out
    assert "check failed: guest_tsc_within_host_bracket" in out


# ---- the real core, with the TSC-frequency knob

def checks_at(kvm, ppm: int) -> tuple[dict, set]:
    metrics, _ = execute(make_plan("exits", 1, tsc_khz_error_ppm=ppm))
    rec = {"config": {"vcpus": 1}, "runs": [{"metrics": metrics}]}
    return metrics["checks"], failed_names(run_warnings(rec))


@pytest.mark.parametrize("ppm", [50_000, -50_000, 45_000, -45_000])
def test_tsc_error_of_4_5_and_5_percent_fails_both_clock_checks(kvm, ppm):
    c, failed = checks_at(kvm, ppm)
    assert c["guest_window_vs_host_clock"]["ok"] is False, c
    assert c["tsc_rate_vs_monotonic"]["ok"] is False, c
    assert {"guest_window_vs_host_clock", "tsc_rate_vs_monotonic"} <= failed


@pytest.mark.parametrize("ppm", [600, -600])
def test_tsc_error_of_0_06_percent_fails_the_rate_check(kvm, ppm):
    c, failed = checks_at(kvm, ppm)
    tr = c["tsc_rate_vs_monotonic"]
    assert tr["ok"] is False and tr["tolerance"] < 600e-6, tr
    assert "tsc_rate_vs_monotonic" in failed


@pytest.mark.parametrize("ppm", [0, 400, -400])
def test_tsc_error_under_0_05_percent_passes(kvm, ppm):
    c, failed = checks_at(kvm, ppm)
    assert c["tsc_rate_vs_monotonic"]["ok"], c
    assert c["guest_window_vs_host_clock"]["ok"], c   # 0.04% either way: far inside its limits
    assert c["guest_tsc_within_host_bracket"]["ok"], c
    # cpu_time_vs_latency is left out: these runs have no in-kernel tracer, so the steal
    # it allows for is /proc/stat's coarse figure (it stands aside on short runs), and
    # before steal was counted it failed by 0.5-3% here when steal was high
    assert not failed - {"cpu_time_vs_latency"}, failed


def test_a_failed_clock_bracket_sets_latency_aside_end_to_end(kvm, monkeypatch, tmp_path, capsys):
    # no knob moves the guest's start-up rdtsc: move it after the core reported it
    # (but not in the host calibration's runs, which would stop the invocation: their
    # latency is what it measures)
    from bench import cli
    real, real_fingerprint, calibrating = runner._clock_check, cli.measure_fingerprint, []

    def outside(vres, vcpus, record_latency):
        if not calibrating:
            vres[0].tsc_guest = vres[0].tsc_host_after + 10**9
        return real(vres, vcpus, record_latency)

    def fingerprint(*a, **kw):
        calibrating.append(1)
        try:
            return real_fingerprint(*a, **kw)
        finally:
            calibrating.clear()
    monkeypatch.setattr(runner, "_clock_check", outside)
    monkeypatch.setattr(cli, "measure_fingerprint", fingerprint)
    out = tmp_path / "r.json"
    assert cli.main(["--mech", "exits", "--vcpus", "1", "--mem-per-vcpu", "2", "--repeat", "2",
                     "--no-trace-locks", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rec = json.loads(out.read_text())
    for r in rec["runs"]:
        m = r["metrics"]
        assert m["checks"]["guest_tsc_within_host_bracket"]["ok"] is False
        assert m["fault_latency_ns"] is None and m["unusable"]
        assert "omitted" in m["fault_breakdown_ns"]
        assert r["raw"]["unusable_metrics"]["fault_latency_ns"]["count"] > 0
    assert "fault_latency_ns.p50" not in rec["summary"]
    assert sum("check failed: guest_tsc_within_host_bracket" in w for w in rec["warnings"]) == 2
    assert "check failed: guest_tsc_within_host_bracket" in printed
    assert "unusable in run(s) 1,2 of 2" in printed


@pytest.mark.parametrize("ppm", [50_000, -50_000])
def test_tsc_knob_5_percent_warns_in_record_and_printout(kvm, tmp_path, ppm):
    # the done-when, as a user runs it
    out = tmp_path / "r.json"
    p = subprocess.run([sys.executable, "run_bench.py", "--vcpus", "1", "--mech", "uffd",
                        "--repeat", "2", "--no-trace-locks", "--tsc-khz-error-ppm", str(ppm),
                        "--out", str(out)], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    rec = json.loads(out.read_text())
    for name in ("guest_window_vs_host_clock", "tsc_rate_vs_monotonic"):
        assert sum(f"check failed: {name}:" in w for w in rec["warnings"]) == 2, rec["warnings"]
        assert p.stdout.count(f"check failed: {name}:") == 2, p.stdout
