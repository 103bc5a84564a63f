"""Issue 7: what a figure is made of. CPU wait apart from mechanism cost, thread
placement chosen and seen, checks that can fail (each with the knob that makes it
fail), selftest wording, minimum duration, full content verification, no silent
drops, and each mechanism's kernel path."""
import json
import os
import subprocess
import sys

import pytest

from bench import kerneltrace, placement
from bench.validity import MIN_GUEST_MS_WARN, run_warnings, subject
from bench.mechanisms import REGISTRY
from bench.runner import execute
from helpers import make_plan, mech_names

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(tmp_path, *args, timeout=300):
    out = tmp_path / "r.json"
    p = subprocess.run([sys.executable, "run_bench.py", *args, "--no-trace-locks", "--no-fingerprint",
                        "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                       timeout=timeout)
    return p, (json.loads(out.read_text()) if out.exists() else None)


# ---- placement (planning is pure; what the threads did is measured)

def test_plan_cpus_policies():
    assert placement.plan_cpus("free", 2, 1, [0], [0, 1]) == ([-1, -1], [-1])
    assert placement.plan_cpus("packed", 1, 1, [0], [0, 1]) == ([0], [0])
    assert placement.plan_cpus("spread", 1, 1, [0], [0, 1]) == ([0], [1])
    # one userfaultfd per partition: each reader beside the vCPU it serves
    assert placement.plan_cpus("packed", 4, 4, [0, 1, 2, 3], [0, 1]) == ([0, 1, 0, 1], [0, 1, 0, 1])
    # no resolver threads: spread is round-robin over every CPU
    assert placement.plan_cpus("spread", 3, 0, [], [0, 1]) == ([0, 1, 0], [])
    with pytest.raises(ValueError, match="at least 2 CPUs"):
        placement.plan_cpus("spread", 1, 1, [0], [0])


def test_bimodality_check_finds_two_groups_and_only_then():
    assert placement.bimodal_groups([27000, 14000, 26500, 15000, 27200]) == [[1, 3], [0, 2, 4]]
    assert placement.bimodal_groups([27000, 26000, 26500, 27500, 26800]) is None
    # a lone run far off is a mode of its own (placement gives 2x); one a little off is not
    assert placement.bimodal_groups([27000, 26000, 26500, 27500, 13000]) == [[4], [0, 1, 2, 3]]
    assert placement.bimodal_groups([27000, 26000, 26500, 27500, 22000]) is None
    assert placement.bimodal_groups([27000, 13500, 26800]) == [[1], [0, 2]]   # --repeat 3
    assert placement.bimodal_groups([1, 2]) is None                             # too few


def test_bimodal_warning_names_the_runs():
    runs = [{"metrics": {"pages_per_s": v, "guest_seconds": 1.0, "content_errors": 0}}
            for v in (27000, 14000, 26500, 15000, 27200)]
    warnings = run_warnings({"config": {"vcpus": 1, "placement": "free"}, "runs": runs})
    assert any(w.startswith("bimodal") and "runs 2,4" in w and "runs 1,3,5" in w for w in warnings), warnings


@pytest.mark.parametrize("policy", ["packed", "spread"])
def test_placement_is_applied_and_seen(kvm, policy):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("placement needs 2 CPUs to tell packed from spread")
    metrics, raw = execute(make_plan("uffd", 1, extra=["--placement", policy]))
    roles = raw["placement"]["by_role"]
    assert roles["vcpu"]["pinned"] != [-1] and roles["reader"]["pinned"] != [-1]
    vcpu_cpus, reader_cpus = roles["vcpu"]["cpus_seen"], roles["reader"]["cpus_seen"]
    assert len(vcpu_cpus) == 1 and len(reader_cpus) == 1   # pinned: never seen elsewhere
    assert (vcpu_cpus == reader_cpus) == (policy == "packed")
    assert metrics["content_errors"] == 0


def test_every_run_records_cpu_wait_and_cpus(kvm):
    metrics, raw = execute(make_plan("uffd", 4))
    for role in ("vcpu", "reader"):
        s = metrics["sched"][role]
        assert s["on_cpu_ns"] > 0 and s["run_queue_wait_ns"] >= 0
        assert s["on_cpu_ns_per_fault"] == s["on_cpu_ns"] / metrics["faults"]
    for t in raw["threads"]:
        assert t["cpus_seen"] and t["sched_ok"]
        assert t["migrations"] is None or t["migrations"] >= 0


# ---- the checks, each made to fail

# cpu_time_vs_latency must allow for the hypervisor's steal: exactly per thread with the
# in-kernel tracer; /proc/stat's ticks are too coarse for a short run (it stands aside)
BPF_WHY = kerneltrace.unavailable()


def test_clean_run_passes_every_check(kvm):
    metrics, _ = execute(make_plan("exits", 2, trace_bpf=BPF_WHY is None))
    c = metrics["checks"]
    assert c["guest_window_vs_host_clock"]["ok"], c
    assert c["tsc_rate_vs_monotonic"]["ok"], c
    assert c["guest_tsc_within_host_bracket"]["ok"], c
    ct = c["cpu_time_vs_latency"]
    if BPF_WHY is None:
        assert ct["steal_source"].startswith("in-kernel tracer"), ct
    # it applies unless a vCPU thread blocked in the kernel (rare: mmap_lock, reclaim),
    # or (without the tracer) the steal it must allow for is known only coarsely
    assert ((ct["applies"] and ct["ok"])
            or ((ct["vcpu_sleeps"] > 0 or ct["steal_too_coarse"]) and ct["ok"] is None)), c


def test_cpu_time_check_stands_aside_when_steal_is_known_only_in_ticks(kvm):
    from bench.runner import _cpu_time_check
    plan = make_plan("exits", 1)
    sched = {"vcpu": {"on_cpu_ns": 80e6, "run_queue_wait_ns": 20e6}}
    threads = [{"role": "vcpu", "sleeps_in_window": 0}]

    class V:
        blocked_ns = 108e6   # 8% over the awake time
    coarse = _cpu_time_check(plan, sched, [V], threads, {"ns": 20e6, "source": "/proc/stat", "exact": False})
    assert coarse["steal_too_coarse"] and coarse["applies"] is False and coarse["ok"] is None
    exact = _cpu_time_check(plan, sched, [V], threads, {"ns": 1e6, "source": "tracer", "exact": True})
    assert exact["applies"] and exact["ok"] is False and exact["ratio"] > 1.06
    # the same latency with 7.5 ms of steal measured: 108 / 107.5, within the 0.5% slack
    covered = _cpu_time_check(plan, sched, [V], threads, {"ns": 7.5e6, "source": "tracer", "exact": True})
    assert covered["applies"] and covered["ok"] is True and covered["ratio_without_steal"] > 1.07


@pytest.mark.parametrize("ppm", [-100_000, 200_000])
def test_wrong_tsc_frequency_fails_the_clock_checks(kvm, ppm):
    # guest timings converted with a TSC frequency 10% low / 20% high (the limits of
    # each check, and the 5% either way: tests/test_checks.py)
    metrics, _ = execute(make_plan("exits", 1, tsc_khz_error_ppm=ppm, trace_bpf=BPF_WHY is None))
    c = metrics["checks"]
    assert not c["guest_window_vs_host_clock"]["ok"], c
    assert not c["tsc_rate_vs_monotonic"]["ok"], c
    if ppm < 0:   # latency inflated past the time the vCPU thread was awake
        ct = c["cpu_time_vs_latency"]
        # stands aside only if it slept, or without the tracer's exact steal
        assert ct["ok"] is False or ct["vcpu_sleeps"] > 0 or ct["steal_too_coarse"], c
        if BPF_WHY is None and not ct["vcpu_sleeps"]:
            assert ct["ok"] is False, c
    rec = {"config": {"vcpus": 1}, "runs": [{"metrics": metrics}]}
    assert any("check failed" in w for w in run_warnings(rec))


def test_inside_kvm_run_counts_real_concurrency(kvm):
    m_uffd, _ = execute(make_plan("uffd", 8))
    assert m_uffd["vcpus_inside_kvm_run_max"] == 8    # all asleep inside KVM_RUN together
    m_exits, _ = execute(make_plan("exits", 8))
    assert 1 <= m_exits["vcpus_inside_kvm_run_max"] <= 8


# ---- selftest wording

def test_selftest_rates_use_the_selftest_definitions(kvm):
    m, _ = execute(make_plan("exits", 4))
    assert m["pages_per_s_per_vcpu"] == pytest.approx(m["pages"] / 4 / m["guest_seconds"])
    assert m["pages_per_s"] == pytest.approx(m["pages_per_s_per_vcpu"] * 4)
    assert m["pages_per_s_per_vcpu_own_window"] >= m["pages_per_s_per_vcpu"] * 0.999


def test_printout_names(kvm, tmp_path):
    p, rec = run_cli(tmp_path, "--vcpus", "2", "--mech", "exits", "--mem-per-vcpu", "2",
                     "--repeat", "1")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    for line in ("Total guest execution time:", "Per-vcpu demand paging rate:",
                 "Overall demand paging rate:", "own window (harness measure",
                 "Mechanism cost per fault", "CPU wait per fault", "Placement free"):
        assert line in out, out


# ---- minimum duration

def test_short_run_is_warned():
    def rec(ms):
        return {"config": {"vcpus": 1}, "runs": [
            {"metrics": {"guest_seconds": ms / 1000, "pages_per_s": 1.0, "content_errors": 0}}]}
    assert any("--min-guest-ms" in w for w in run_warnings(rec(MIN_GUEST_MS_WARN * 0.9)))
    assert not any("--min-guest-ms" in w for w in run_warnings(rec(MIN_GUEST_MS_WARN * 1.1)))
    assert [subject(w) for w in run_warnings(rec(MIN_GUEST_MS_WARN * 0.9))] == ["configuration"]


def test_min_guest_ms_sizes_up(kvm, tmp_path):
    # 2 MiB is ~80 ms of guest time here, 160 ms on a host busy enough to halve it:
    # 400 ms asks for more on either (a CI run under load kept 2 MiB against 120 ms)
    p, rec = run_cli(tmp_path, "--vcpus", "1", "--mech", "exits", "--mem-per-vcpu", "2",
                     "--repeat", "1", "--min-guest-ms", "400")
    assert p.returncode == 0, p.stderr
    sizing = rec["config"]["memory_sizing"]
    assert sizing["asked_mib"] == 2 and sizing["sizing_run_guest_ms"] < 400, sizing
    assert sizing["sized_mib"] > 2
    assert rec["config"]["mem_per_vcpu_mib"] == sizing["sized_mib"]
    rerun = rec["command"]["rerun"]
    assert f"--mem-per-vcpu {sizing['sized_mib']}" in rerun and "--min-guest-ms" not in rerun
    # sized from one run's rate: several times the memory, a longer run (noise allowed)
    assert rec["runs"][0]["metrics"]["guest_seconds"] * 1000 > sizing["sizing_run_guest_ms"]


# ---- content verification

@pytest.mark.parametrize("mech", mech_names(one_per_c_mechanism=True))
def test_full_verify_passes_on_correct_content(kvm, mech):
    m, _ = execute(make_plan(mech, 2, extra=["--verify", "full"]))
    assert m["content_errors"] == 0


@pytest.mark.parametrize("mech", ["uffd", "exits", "prefault"])
def test_torn_copy_is_caught_by_full_and_missed_by_header(kvm, mech):
    torn_full, _ = execute(make_plan(mech, 1, extra=["--verify", "full"], corrupt_tail_every=8))
    assert torn_full["content_errors"] == 512 // 8   # 2 MiB: 512 pages, every 8th torn
    torn_header, _ = execute(make_plan(mech, 1, corrupt_tail_every=8))
    assert torn_header["content_errors"] == 0         # the header check cannot see the tail


def test_full_verify_with_precopy_continue(kvm):
    m, _ = execute(make_plan("uffd", 2, workload="precopy-stale", extra=["--verify", "full"]))
    assert m["content_errors"] == 0


@pytest.mark.parametrize("verify", ["header", "full"])
def test_none_expects_zeros_and_catches_non_zero(kvm, verify):
    clean, _ = execute(make_plan("none", 1, extra=["--verify", verify]))
    assert clean["content_errors"] == 0
    dirty, _ = execute(make_plan("none", 1, extra=["--verify", verify], corrupt_every=16))
    assert dirty["content_errors"] == 512 // 16
    # a zero page whose last byte is not zero: only the full check sees it
    torn, _ = execute(make_plan("none", 1, extra=["--verify", verify], corrupt_tail_every=16))
    assert torn["content_errors"] == (512 // 16 if verify == "full" else 0)


def test_full_verify_refused_with_worker(tmp_path):
    p = subprocess.run([sys.executable, "run_bench.py", "--fetch", "worker", "--verify", "full"],
                       cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 2 and "--verify full" in p.stderr and len(p.stderr.splitlines()) == 1


# ---- no silent drops

def test_drop_counts_are_in_every_result_and_warned(kvm):
    m, _ = execute(make_plan("uffd", 4))
    assert m["fault_records_dropped"] == 0 and m["faults_unattributed"] == 0
    fake = dict(m, fault_records_dropped=3, faults_unattributed=2)
    warnings = run_warnings({"config": {"vcpus": 4}, "runs": [{"metrics": fake}]})
    assert any("3 fault records did not fit" in w for w in warnings)
    assert any("2 userfaultfd messages came from no vCPU" in w for w in warnings)


# ---- what each path costs

def test_every_mechanism_states_its_kernel_path():
    for name, cls in REGISTRY.items():
        assert len(cls.kernel_path) > 40, name
    assert "mmap_lock" in REGISTRY["exits"].kernel_path
    assert "EMULATED" in REGISTRY["async"].kernel_path
    assert "userspace" in REGISTRY["async"].kernel_path


def test_exit_paths_are_counted_per_fault(kvm):
    m, raw = execute(make_plan("exits", 2))
    paths = m["exits_by_path"]
    assert sum(paths.values()) == m["faults"]
    assert raw["exit_path"] in paths and paths[raw["exit_path"]] > 0


def test_read_userfault_is_not_reported_as_a_probe_result(kvm):
    from bench.probes import probe
    assert "not provided by any kernel" in probe()["kvm_read_userfault"]


# ---- the scheduler's view, on synthetic traces (the pure functions)

def _line(ts, cpu, body, ev="sched_switch"):
    return f"          task-1     [{cpu:03d}] d..2. {ts}: {ev}: {body}"


def test_sched_intervals_wait_and_run():
    from bench import schedtrace
    lines = [
        _line(100, 0, "comm=v pid=7 prio=120 target_cpu=000", "sched_wakeup"),       # woken at 100
        _line(130, 0, "prev_comm=x prev_pid=9 prev_prio=120 prev_state=S ==> next_comm=v next_pid=7 next_prio=120"),
        _line(200, 0, "prev_comm=v prev_pid=7 prev_prio=120 prev_state=R ==> next_comm=x next_pid=9 next_prio=120"),
        _line(260, 0, "prev_comm=x prev_pid=9 prev_prio=120 prev_state=S ==> next_comm=v next_pid=7 next_prio=120"),
        # a wakeup seen while it runs, then it sleeps: no wait may start there
        _line(280, 1, "comm=v pid=7 prio=120 target_cpu=000", "sched_wakeup"),
        _line(300, 0, "prev_comm=v prev_pid=7 prev_prio=120 prev_state=S ==> next_comm=x next_pid=9 next_prio=120"),
        _line(400, 0, "comm=v pid=7 prio=120 target_cpu=000", "sched_wakeup"),
        _line(410, 0, "prev_comm=x prev_pid=9 prev_prio=120 prev_state=S ==> next_comm=v next_pid=7 next_prio=120"),
    ]
    events = schedtrace.parse(lines)
    assert len(events) == 8
    waiting, running = schedtrace.intervals(events, {7})
    assert list(zip(*waiting[7])) == [(100, 130), (200, 260), (400, 410)]
    assert list(zip(*running[7])) == [(130, 200), (260, 300)]
    import numpy as np
    t = np.array([0, 115, 130, 230, 1000])
    assert list(schedtrace.cumulative(waiting[7], t)) == [0, 15, 30, 60, 100]
    assert schedtrace.max_running_at_once(running, [7]) == 1


def test_migration_to_schema_2():
    from bench import result
    rec = result.new_record(["run_bench.py"], {"mech": "exits", "vcpus": 4}, {}, {}, False, None)
    rec["schema_version"] = 1
    m = {"pages": 4096, "guest_seconds": 2.0, "pages_per_s": 2048.0, "pages_per_s_per_vcpu": 600.0,
         "content_errors": 0, "vcpus_running_at_once_max": 4,
         "fault_latency_ns": {"p50": 1, "p90": 2, "p99": 3, "p99_9": 4, "max": 5},
         "fault_breakdown_ns": {"parts": {"fetch": 1.0}, "sum_of_parts": 1.0, "sum_vs_mean": 1.0,
                                "host_clock_check": {"sum": 1.0}}}
    result.add_run(rec, m)
    rec["warnings"] = ["run 1: breakdown parts sum to 0.50 x the mean fault latency", "kept"]
    out = result.migrate(json.loads(json.dumps(rec)))
    m2 = out["runs"][0]["metrics"]
    assert out["schema_version"] == 2
    assert m2["pages_per_s_per_vcpu"] == 4096 / 4 / 2.0
    assert m2["pages_per_s_per_vcpu_own_window"] == 600.0
    assert m2["vcpu_windows_overlapping_max"] == 4 and "vcpus_running_at_once_max" not in m2
    assert set(m2["fault_breakdown_ns"]) == {"parts"}
    assert out["warnings"][0] == "kept" and not any("breakdown parts" in w for w in out["warnings"])
    assert out["summary"]["pages_per_s_per_vcpu"]["median"] == 512.0
    assert result.validate(out) == []


def test_report_shows_mechanism_cost_and_cpu_wait_apart(kvm, tmp_path):
    for v in ("1", "2"):
        p, _ = run_cli(tmp_path, "--vcpus", v, "--mech", "exits",
                       "--mem-per-vcpu", "2", "--repeat", "1")
        os.rename(tmp_path / "r.json", tmp_path / f"exits-{v}.json")
    out = tmp_path / "report"
    p = subprocess.run([sys.executable, "run_bench.py", "report", str(tmp_path / "exits-1.json"),
                        str(tmp_path / "exits-2.json"), "--out", str(out)], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    text = (out / "report.txt").read_text()
    assert "how long do its threads wait for a CPU" in text
    assert "on-CPU us" in text and "CPU wait us" in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_cpu_time_check_stands_aside_when_vcpu_threads_slept(kvm):
    # a sleeping fetch delay blocks the vCPU thread in every fault: the scheduler then
    # owes the latency nothing, and the check says it does not apply instead of failing
    m, raw = execute(make_plan("exits", 1, fetch_delay_us=20.0, fetch_delay_mode="sleep"))
    c = m["checks"]["cpu_time_vs_latency"]
    # nearly every fault sleeps (a timer that has expired by the call returns at once)
    assert c["vcpu_sleeps"] >= m["faults"] // 2 and c["applies"] is False and c["ok"] is None
    quiet, _ = execute(make_plan("exits", 1))
    q = quiet["checks"]["cpu_time_vs_latency"]
    assert q["vcpu_sleeps"] < quiet["faults"] // 10   # blocking in the kernel is rare, not per fault


def _probe(ns):
    return {"cpus": [0, 1], "before_ns_per_call": [ns, ns], "after_ns_per_call": [ns, ns],
            "calls": 4000, "batches": 5}


def test_traced_run_warnings_name_another_pace_and_a_slowed_cpu():
    """A traced run taken unlike the measured runs is said so: a touch rate more than
    10% below their range (or above it, for a whole walk), or its CPU in the probe's
    slowed state. Synthetic runs."""
    from bench.point import _traced_run_warnings, touch_rate

    def run(touches_per_s, probe_ns):
        return {"metrics": {"touches": int(touches_per_s), "guest_seconds": 1.0},
                "raw": {"cpu_probe": _probe(probe_ns)}}
    rec = {"runs": [run(r, 100) for r in (9000, 10000, 11000)]}
    measured = [touch_rate(r["metrics"]) for r in rec["runs"]]
    rec["traced_runs"] = [run(8200, 101)]   # within 10% of the slowest, CPU at its floor
    assert _traced_run_warnings(rec, [8200.0], measured) == []
    rec["traced_runs"] = [run(8000, 101)]   # 11% under the slowest
    w = _traced_run_warnings(rec, [8000.0], measured)
    assert len(w) == 1 and "traced run 1 ran 8000 touches/s" in w[0] and "9000..11000" in w[0]
    rec["traced_runs"] = [run(12200, 100)]  # 11% over the fastest
    assert len(_traced_run_warnings(rec, [12200.0], measured)) == 1
    # a part of the walk ran faster untraced here (up to 17%): only a slower one is warned
    assert _traced_run_warnings(rec, [12200.0], measured, share=0.25) == []
    assert len(_traced_run_warnings(rec, [8000.0], measured, share=0.25)) == 1
    rec["traced_runs"] = [run(10000, 125)]  # the pace is fine, the CPU was slowed (x1.25)
    w = _traced_run_warnings(rec, [10000.0], measured)
    assert len(w) == 1 and w[0].startswith("the CPU was slowed around traced run(s) 1")
    assert "x1.25" in w[0] and subject(w[0]) == "host"
