"""Measurement fields on real runs: kernel lock contention, blocktime, latency
histograms, cost breakdown, CPU per role; and tracefs left as found."""
import json
import os
import signal
import subprocess
import sys
import time
import warnings

import pytest

from bench import kerneltrace, options
from bench.runner import touches_walked

from bench import result as resultmod

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tracefs():
    from bench.locktrace import LockTracer
    from bench.tracefs import TraceUnavailable
    t = LockTracer(name_prefix="fbprobe")
    try:
        t.start()
    except TraceUnavailable as exc:
        pytest.skip(f"tracefs lock events unavailable: {exc}")
    finally:
        t.cleanup()


def tracefs_state():
    from bench.tracefs import enabled_events_in, leftover_instances, tracefs_mount_count
    top = "/sys/kernel/tracing"
    enabled = enabled_events_in(top) if tracefs_mount_count() else []
    return tracefs_mount_count(), leftover_instances("faultbench"), enabled


def run_cli(tmp_path, *args, timeout=300):
    out = tmp_path / "r.json"
    p = subprocess.run([sys.executable, "run_bench.py", *args, "--out", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=timeout)
    return p, out


def one_thread_cpu_refusal(split):
    """Asserts that a withheld split is of the kind seen once in CI (2026-12-07, exits
    at 64 vCPUs: one thread of 65, CPU 2.2% off, any thread's run delay at most 0.7%,
    where 88 runs the next day put the worst thread at 0.01-0.17% and withheld none):
    the log complete, exactly one thread failed, its run delay within the check's own
    limit, its CPU under 5% off (docs/tracing.md). A broken reader fails more threads
    or the run delay as well. Forgiving it once turns a fault of this kind that strikes
    a share p of runs into a failure of this test in p^2 of them, with a warning each
    time."""
    why = split["withheld"]
    cc = split["cross_check"]
    assert split["log_dropped"] == 0 and split["events_missed"] == 0, why
    assert split["threads_dropped"] == 0, why
    assert cc["threads_failed"] == 1 and len(cc["failed"]) == 1, (why, cc["failed"])
    row = cc["failed"][0]
    assert row.get("cpu_rel_error") is not None and row.get("wait_rel_error") is not None, row
    wait_ok = kerneltrace.agrees(row["wait_ns"], row["schedstat_run_delay_ns"], row["limit"], row["floor_ns"])
    assert wait_ok and row["cpu_rel_error"] < 0.05, (why, row)


@pytest.mark.parametrize("mech", ["uffd", "exits"])
def test_64_vcpu_result_carries_every_measurement(kvm, tracefs, tmp_path, mech):
    before = tracefs_state()
    bpf = kerneltrace.unavailable() is None   # the default tracer where it can run
    for attempt in range(2):
        p, out = run_cli(tmp_path, "--vcpus", "64", "--mech", mech, "--mem-per-vcpu", "2",
                         "--repeat", "1")
        assert p.returncode == 0, p.stderr
        assert tracefs_state() == before
        rec = json.loads(out.read_text())
        split = rec["traced_runs"][0]["metrics"]["fault_breakdown_ns"]["sched_split"]
        if not (bpf and "withheld" in split and attempt == 0):
            break
        # A withheld split is the check doing its job; once, it may be the rare refusal
        # CI met (one_thread_cpu_refusal). Forgiven with a warning that carries the
        # thread's row; the run is made again, and must split.
        one_thread_cpu_refusal(split)
        warnings.warn(f"64-vCPU {mech}: split withheld once and forgiven: {split['withheld']}; "
                      f"{split['cross_check']['failed']}")
    assert resultmod.validate(rec) == []
    m = rec["runs"][0]["metrics"]
    assert rec["tracing"]["tracer"] == ("bpf" if bpf else "tracefs")
    # headline runs are never traced: lock data and the split come from one extra run,
    # which walks the first part of each vCPU's touches (--trace-share auto)
    assert "kernel_locks" not in m and "sched_split" not in m["fault_breakdown_ns"]
    assert rec["config"]["trace_every_run"] is False and rec["config"]["trace_share"] == "auto"
    share = options.trace_share_for("auto", m["guest_seconds"])
    assert len(rec["traced_runs"]) == 1 and rec["tracing"]["touch_share"] == share
    traced = rec["traced_runs"][0]["metrics"]
    assert traced["pages"] == 64 * touches_walked(512, share) == rec["tracing"]["traced_pages"][0]
    # the rerun line pins the share auto chose, so a rerun's traced run walks the same
    rerun = options.build_parser().parse_args(rec["command"]["argv"][1:])
    assert rerun.trace_share == share and rec["command"]["rerun"].endswith(f"--trace-share {share!r}")
    kl = traced["kernel_locks"]
    assert kl["events_lost"] == 0
    assert kl["contentions"] > 0 and kl["wait_ns_total"] > 0
    assert 1 <= len(kl["top_locks"]) <= 5
    # a site for every top lock, except one whose every contention came without a stack
    assert all(t["call_site"] or t.get("contentions_without_stack") == t["count"]
               for t in kl["top_locks"])
    assert any(t["call_site"] for t in kl["top_locks"])
    assert "acquisitions" in kl["mmap_lock"]
    roles = m["cpu_by_role"]
    assert roles["vcpu"]["threads"] == 64
    assert roles["vcpu"]["user_ns"] + roles["vcpu"]["system_ns"] > 0
    if mech == "uffd":
        assert roles["reader"]["system_ns"] > 0
    bt = m["blocktime_ns"]
    assert 0 <= bt["all_vcpus"] <= m["guest_seconds"] * 1e9
    assert 0 < bt["per_vcpu_mean"] <= bt["per_vcpu_max"]
    log2 = m["latency_dist_log2_us"]
    assert len(log2) == 32 and sum(log2) == m["pages"]
    bd = m["fault_breakdown_ns"]
    assert rec["runs"][0]["raw"]["clock_check"]["guest_tsc_within_host_bracket"]
    assert bd["faults_used"] + bd["faults_skipped"] == m["faults"]
    assert bd["faults_used"] > 0.9 * m["faults"]
    assert all(v >= 0 for v in bd["parts"].values())
    assert set(bd["parts_median"]) <= set(bd["parts"])
    # the independent checks (each has a test that makes it fail: test_checks.py, test_validity.py)
    checks = m["checks"]
    assert checks["guest_window_vs_host_clock"]["ok"], checks
    assert checks["tsc_rate_vs_monotonic"]["ok"], checks
    assert checks["guest_tsc_within_host_bracket"]["ok"], checks
    if mech == "exits":
        ct = checks["cpu_time_vs_latency"]
        assert (ct["applies"] and ct["ok"]) or (ct["vcpu_sleeps"] > 0 and ct["ok"] is None), checks
    sched = m["sched"]
    assert sched["vcpu"]["on_cpu_ns"] > 0 and sched["vcpu"]["run_queue_wait_ns"] > 0   # 64 on 2 CPUs
    if mech == "uffd":
        assert m["vcpus_inside_kvm_run_max"] == 64   # asleep in the kernel counts as inside
    assert 1 <= m["vcpus_inside_kvm_run_max"] <= 64
    assert m["fault_records_dropped"] == 0 and m["faults_unattributed"] == 0
    # the traced run splits each segment with the scheduler's view
    assert split is traced["fault_breakdown_ns"]["sched_split"]
    if bpf:
        assert "withheld" not in split, (split["withheld"], split["cross_check"]["failed"])
        assert split["cross_check"]["ok"] and split["log_dropped"] == 0
        assert split["cross_check"]["threads_checked"] == len(rec["traced_runs"][0]["raw"]["threads"])
    else:
        assert split["events"] > 0 and split["events_lost"] == 0
    assert 1 <= split["vcpus_on_cpu_at_once_max"] <= len(os.sched_getaffinity(0))
    for name, part in split["parts"].items():
        assert part["cpu_wait_ns"] >= 0 and part["on_cpu_ns"] >= 0
    # the split covers the same faults as the breakdown
    total = sum(p["total_ns"] for p in split["parts"].values())
    assert total == pytest.approx(traced["fault_breakdown_ns"]["mean_fault_latency"], rel=0.01)
    # on-CPU time the trace puts in vCPU-owned segments cannot exceed what the
    # thread CPU clock gave the vCPU threads (two accountings of the same time)
    vcpu_on = sum(p["on_cpu_ns"] for p in split["parts"].values() if p["owner"] == "vcpu")
    # ... and in the pieces of resolver segments handed to the vCPU at its wake-up
    vcpu_on += sum(p.get("vcpu_after_wake_on_cpu_ns") or 0.0 for p in split["parts"].values())
    assert vcpu_on <= traced["sched"]["vcpu"]["on_cpu_ns_per_fault"] * 1.02
    # 64 vCPU threads on 2 CPUs: most of a fault is waiting for a CPU
    waited = sum(p["cpu_wait_ns"] for p in split["parts"].values())
    assert waited > 0.3 * sum(p["total_ns"] for p in split["parts"].values())
    assert 0 < rec["tracing"]["overhead_ratio"] < 10


def test_trace_every_run_puts_lock_data_and_the_split_in_every_measured_run(kvm, tmp_path):
    """--trace-every-run: the in-kernel tracer records in the measured runs themselves,
    and no traced run is made."""
    why = kerneltrace.unavailable()
    if why is not None:
        pytest.skip(f"in-kernel tracer unavailable: {why}")
    p, out = run_cli(tmp_path, "--vcpus", "4", "--mech", "uffd", "--mem-per-vcpu", "2",
                     "--repeat", "2", "--trace-every-run", "--no-fingerprint")
    assert p.returncode == 0, p.stderr
    rec = json.loads(out.read_text())
    assert resultmod.validate(rec) == []
    assert "traced_runs" not in rec and rec["config"]["trace_every_run"] is True
    assert rec["tracing"]["tracer"] == "bpf" and rec["tracing"]["every_measured_run"] is True
    for run in rec["runs"]:
        m = run["metrics"]
        assert m["kernel_locks"]["tracer"] == "bpf" and "mmap_lock" in m["kernel_locks"]
        assert m["fault_breakdown_ns"]["sched_split"]["tracer"] == "bpf"
    assert "in every measured run (--trace-every-run)" in p.stdout


def test_async_reports_its_list_lock(kvm, tmp_path):
    p, out = run_cli(tmp_path, "--vcpus", "8", "--mech", "async", "--mem-per-vcpu", "2",
                     "--repeat", "1", "--no-trace-locks", "--no-fingerprint")
    assert p.returncode == 0, p.stderr
    rec = json.loads(out.read_text())
    assert rec["emulated"] is True and "KVM_READ_USERFAULT" in rec["emulation_reason"]
    assert "EMULATED" in p.stdout
    lock = rec["runs"][0]["metrics"]["harness_locks"]["async_list"]
    # one push per fault, pops until empty: at least two acquisitions a fault
    assert lock["acquisitions"] >= 2 * rec["runs"][0]["metrics"]["faults"]
    assert "tracing" not in rec


def interrupt_when(argv: list[str], started, settle: float, what: str) -> tuple[int, str]:
    """Start run_bench.py with argv, wait until started() holds, SIGINT it `settle`
    seconds later; (return code, stderr). The process is killed if it outlives that."""
    # one BLAS thread: numpy's OpenBLAS starts one a CPU (up to 64), which would blur a
    # thread count taken as the sign that the vCPU threads exist
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "run_bench.py", *argv], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not started(proc) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        assert started(proc), f"the {what} never started"
        time.sleep(settle)   # inside the run
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


def test_sigint_mid_traced_run_leaves_tracefs_as_found(kvm, tracefs, tmp_path):
    before = tracefs_state()
    from bench.tracefs import leftover_instances

    def ours(proc):   # this run's instance, not one another process left
        return [i for i in leftover_instances("faultbench") if i.startswith(f"faultbench-{proc.pid}-")]
    # one untraced run, then the traced runs (4, each at least 1 s of guest time: the
    # interrupt lands inside them even when a CPU hog slows the wait)
    rc, err = interrupt_when(["--vcpus", "64", "--mech", "uffd", "--mem-per-vcpu", "4", "--repeat",
                              "1", "--tracer", "tracefs", "--trace-runs", "4", "--no-fingerprint",
                              "--results-dir", str(tmp_path)], ours, 1.0, "traced run")
    assert rc != 0, err
    assert "interrupted" in err, err
    assert tracefs_state() == before, err
    assert list(tmp_path.iterdir()) == [], err   # nothing half-written


def test_sigint_mid_bpf_traced_run_leaves_no_program_behind(kvm, tmp_path):
    """Ctrl-C while the in-kernel tracer is attached: the process ends with its fds, so
    every program and link goes with it; nothing is pinned, nothing stays loaded."""
    why = kerneltrace.unavailable()
    if why:
        pytest.skip(why)
    from bench.native import lib
    before = lib.fb_bpf_programs_named(b"fb_")
    # one measured run, then the traced run, where the tracer is attached. The start-up
    # check loads and closes the programs too (for about 20 ms, before any vCPU thread
    # exists): the traced run is where the programs are loaded while the 64 vCPU threads
    # exist (the process has a few threads besides: interrupt_when keeps BLAS to one)

    def traced(proc):
        try:
            threads = len(os.listdir(f"/proc/{proc.pid}/task"))
        except FileNotFoundError:
            return False
        return threads > 64 and lib.fb_bpf_programs_named(b"fb_") > before
    rc, err = interrupt_when(["--vcpus", "64", "--mech", "uffd", "--mem-per-vcpu", "4", "--repeat",
                              "1", "--tracer", "bpf", "--no-fingerprint", "--results-dir", str(tmp_path)],
                             traced, 0.3, "traced run")
    assert rc != 0, err
    deadline = time.monotonic() + 5   # the kernel frees programs after an RCU grace period
    while lib.fb_bpf_programs_named(b"fb_") > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lib.fb_bpf_programs_named(b"fb_") == before
    assert not [p for p in tmp_path.rglob("*.json")], "a half-written record was left"


def test_the_one_refusal_the_64_vcpu_test_forgives_is_narrow():
    """one_thread_cpu_refusal accepts the refusal CI met (its figures) and nothing wider."""
    row = {"cpu_ns": 34039873.5, "thread_cputime_ns": 34039873.5 / 1.0216, "cpu_rel_error": 0.0216,
           "wait_ns": 1.0e8, "schedstat_run_delay_ns": 1.0e8 * 1.007, "wait_rel_error": 0.007,
           "limit": 0.02, "floor_ns": 5000.0}

    def split(rows, **over):
        s = {"withheld": "1 of 65 threads' totals ...", "log_dropped": 0, "events_missed": 0,
             "threads_dropped": 0, "cross_check": {"threads_failed": len(rows), "failed": rows}}
        s.update(over)
        return s
    one_thread_cpu_refusal(split([row]))
    for bad in (split([row, dict(row)]),                                    # two threads
                split([{**row, "wait_ns": 1.0e8 * 1.05, "wait_rel_error": 0.043}]),  # run delay too
                split([{**row, "cpu_rel_error": 0.06}]),                    # too far
                split([row], log_dropped=3), split([row], events_missed=2),  # log incomplete
                split([row], threads_dropped=1)):
        with pytest.raises(AssertionError):
            one_thread_cpu_refusal(bad)
