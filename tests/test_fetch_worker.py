"""--fetch worker on real vCPUs: content arrives through the worker, and a dead
worker ends the run with one line, never a hang."""
import os
import signal
import subprocess
import sys
import time

import pytest

from bench.runner import execute
from conftest import process_resources
from helpers import make_plan, mech_names

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker_plan(mech, vcpus, **kw):
    return make_plan(mech, vcpus, mib=2, extra=["--fetch", "worker", "--worker-threads", "2",
                                                 "--worker-batch", "4", "--service-us", "5"], **kw)


@pytest.mark.parametrize("mech", mech_names(delivers=True))
def test_worker_serves_every_page(kvm, mech):
    before = process_resources()
    metrics, raw = execute(worker_plan(mech, 8))
    assert metrics["content_errors"] == 0
    assert metrics["worker"]["requests"] == metrics["pages"] == 4096
    assert metrics["worker"]["copied_bytes"] == 4096 * 4096
    assert metrics["pages_installed"] == 4096
    assert "worker_ring" in metrics["harness_locks"]
    assert metrics["cpu_by_role"]["worker"]["threads"] >= 2
    assert process_resources() == before


def test_worker_with_precopy_stale_fetches_only_stale_pages(kvm):
    plan = make_plan("exits", 4, mib=2, workload="precopy-stale", extra=["--fetch", "worker"])
    metrics, _ = execute(plan)
    assert metrics["worker"]["requests"] == metrics["precopy"]["stale_pages"] == metrics["pages_copied"]
    assert metrics["content_errors"] == 0


def _worker_pid(parent: int) -> int | None:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if ppid == parent and b"bench.worker" in cmd:
            return int(pid)
    return None


def test_killing_the_worker_ends_the_run_with_one_line(kvm, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "run_bench.py", "--vcpus", "2", "--mech", "exits", "--fetch", "worker",
         "--service-us", "300", "--mem-per-vcpu", "64", "--repeat", "1", "--no-trace-locks",
         "--no-fingerprint", "--results-dir", str(tmp_path)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        pid = None
        while pid is None and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            pid = _worker_pid(proc.pid)
            time.sleep(0.05)
        assert pid, "worker process never appeared"
        time.sleep(1.0)   # mid-run: 32768 faults at 300 us each take about 10 s
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert time.monotonic() - killed < 10
    assert proc.returncode not in (0, None)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "network worker" in lines[0] and "9" in lines[0]
    assert list(tmp_path.iterdir()) == []
    assert _worker_pid(proc.pid) is None
