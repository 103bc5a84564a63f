"""The scripts in benchmarks/ run (their thresholds are judged on full-size runs,
by the scripts themselves, not here: speed targets are not unit tests)."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(script, *args):
    return subprocess.run([sys.executable, os.path.join("benchmarks", script), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def test_latency_overhead_script_runs(kvm):
    p = run("latency_overhead.py", "--pairs", "1", "--mib", "4", "--limit", "100")
    assert p.returncode == 0, p.stderr
    assert "ratio on/off:" in p.stdout


def test_worker_latency_script_runs(kvm):
    p = run("worker_latency.py", "--mib", "4", "--repeat", "1")
    assert p.returncode in (0, 1), p.stderr
    assert "p50 difference:" in p.stdout and "worker service time" in p.stdout


def test_bpf_cost_script_runs_and_writes_its_intervals(kvm, tmp_path):
    import json

    import pytest

    from bench import kerneltrace
    why = kerneltrace.unavailable()
    if why:
        pytest.skip(f"the in-kernel (BPF) tracer cannot run: {why}")
    out = tmp_path / "cost.json"
    p = run("bpf_cost.py", "--mech", "exits", "--vcpus", "2", "--pairs", "2", "--mem-per-vcpu", "2",
            "--touch-share", "0.5", "--prog-stats", "--by-program", "--out", str(out))
    assert p.returncode == 0, p.stderr
    cell = json.loads(out.read_text())["cells"][0]
    assert cell["touch_share"] == 0.5   # both arms walked half of each vCPU's 512 touches
    assert all(r["faults"] == 2 * 256 for r in cell["pairs_raw"])
    lo, hi = cell["rate_ratio_ci95"]
    assert 0 < lo < hi and cell["ratio_min"] <= cell["ratio_median"] <= cell["ratio_max"]
    assert cell["cpu_per_fault_ratio_ci95"][0] > 0
    assert cell["bpf_ns_per_fault_median"] > 0 and "fb_switch" in cell["by_program"]
    assert "fb_mm_acquired" in p.stdout   # the per-program line
