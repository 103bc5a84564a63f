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
