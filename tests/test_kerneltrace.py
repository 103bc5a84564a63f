"""The in-kernel tracer's counters: the exact split from the state-change log (pure,
synthetic logs), the layouts Python reads against the C structs, and the BPF object
itself on the real kernel (built with clang, loaded with libbpf; skips naming them)."""
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from bench import kerneltrace as kt

BPF_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "bench", "csrc", "bpf")


def _log(rows):
    a = np.zeros(len(rows), dtype=kt.TRANS_DTYPE)
    for i, (t, on, wait, exe, kd, state) in enumerate(rows):
        a[i] = (t, on, wait, exe, kd, 0, state)
    return kt.ThreadLog(a)


# waiting 0..100, on a CPU 100..400 (50 of it stolen), asleep 400..1000,
# waiting 1000..1100, on a CPU 1100..1200 (no steal). The scheduler's run delay is
# stale at each switch-in (the kernel adds it just after the tracepoint).
LOG = [(0, 0, 0, 0, 0, kt.WAITING), (100, 0, 100, 0, 0, kt.ON_CPU),
       (400, 300, 100, 250, 100, kt.ASLEEP), (1000, 300, 100, 250, 100, kt.WAITING),
       (1100, 300, 200, 250, 100, kt.ON_CPU), (1200, 400, 200, 350, 200, kt.ASLEEP)]


def test_counters_at_an_instant():
    tl = _log(LOG)
    got = tl.at([50, 250, 700, 1150])
    assert got["on_ns"].tolist() == [0, 150, 300, 350]
    assert got["wait_ns"].tolist() == [50, 100, 100, 200]
    assert got["exec_ns"].tolist() == [0, 125, 250, 300]   # linear inside a stretch
    assert got["run_delay_ns"].tolist() == [50, 100, 100, 200]   # stale switch-ins mended


def test_still_on_a_cpu_at_the_end_leaves_the_last_wait_unknown():
    tl = _log(LOG[:5])
    assert np.isnan(tl.at([1150])["run_delay_ns"][0])
    assert tl.at([700])["run_delay_ns"][0] == 100


def test_split_sums_to_the_segment_and_separates_steal():
    tl = _log(LOG)
    s = kt.split(tl, np.array([50]), np.array([1150]))
    assert s["on_cpu_ns"][0] == 300 and s["steal_ns"][0] == 50
    assert s["wait_ns"][0] == 150 and s["asleep_ns"][0] == 600


def test_before_the_first_entry_nothing_is_known():
    tl = _log(LOG[2:])
    assert np.isnan(tl.at([150])["on_ns"][0])


def test_entries_are_ordered_by_time_whatever_the_log_order():
    tl = _log(list(reversed(LOG)))
    assert tl.at([250])["on_ns"][0] == 150


def test_cross_check_fails_just_past_its_limit():
    tl = _log(LOG)
    # over [50, 1150]: CPU 300 ns, waiting 150 ns; floor 0 so the relative limit decides
    ok = kt.cross_check(tl, 50, 1150, cputime_ns=300 * 1.019, run_delay_ns=150, floor_ns=0)
    assert ok["ok"]
    bad = kt.cross_check(tl, 50, 1150, cputime_ns=300 * 1.021, run_delay_ns=150, floor_ns=0)
    assert not bad["ok"] and bad["cpu_rel_error"] > 0.02
    bad = kt.cross_check(tl, 50, 1150, cputime_ns=300, run_delay_ns=150 * 0.97, floor_ns=0)
    assert not bad["ok"]


def _c_sizes():
    src = ('#include <stdio.h>\n#include <stddef.h>\n#include <linux/types.h>\n#include "fb_trace_shared.h"\n'
           'int main(void){printf("%zu %zu %zu %zu\\n", sizeof(struct fb_bpf_trans), '
           'sizeof(struct fb_bpf_thread), offsetof(struct fb_bpf_trans, slot), '
           'offsetof(struct fb_bpf_thread, switches_in));return 0;}\n')
    return src


def test_numpy_layouts_match_the_c_structs(tmp_path):
    if not shutil.which("gcc"):
        pytest.skip("gcc is not installed")
    c = tmp_path / "sizes.c"
    c.write_text(_c_sizes())
    exe = tmp_path / "sizes"
    subprocess.run(["gcc", "-I", BPF_DIR, str(c), "-o", str(exe)], check=True)
    trans, thread, slot_off, sw_off = map(int, subprocess.run([str(exe)], capture_output=True,
                                                              text=True, check=True).stdout.split())
    assert kt.TRANS_DTYPE.itemsize == trans and kt.THREAD_DTYPE.itemsize == thread
    assert kt.TRANS_DTYPE.fields["slot"][1] == slot_off
    assert kt.THREAD_DTYPE.fields["switches_in"][1] == sw_off


def test_bpf_counters_agree_with_the_threads_own_clocks(tmp_path):
    """The real object on the real kernel: 4 threads on the host's CPUs, spinning or
    sleeping. The scheduler's sum_exec_runtime read by BPF at each switch must match each
    thread's CLOCK_THREAD_CPUTIME_ID (limit 1%), and the scheduler's run_delay read by
    BPF its schedstat run delay (limit 2%). Both sides are read while the finished threads
    sleep, so both end at the same switch-out: 12 threads matched to 4 digits here (when
    each thread read its own, a wait after that read put one 4.0% off, 2026-12-07).
    BPF's own wall-clock waiting time is printed, not held to a limit: against that run
    delay it was 0.95-1.11 here today (12 threads). Wall time on a CPU is not compared:
    on this guest the hypervisor's steal puts it 0.5-27% above CPU time."""
    if os.geteuid() != 0:
        pytest.skip("loading BPF programs needs root")
    for tool, pkg in (("clang", "clang"), ("gcc", "gcc")):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed (Debian package {pkg})")
    if not os.path.exists("/usr/include/bpf/libbpf.h"):
        pytest.skip("libbpf headers are missing (Debian package libbpf-dev)")
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        pytest.skip("the kernel has no BTF (/sys/kernel/btf/vmlinux): CO-RE cannot load")
    obj = tmp_path / "fb_trace.bpf.o"
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-mcpu=v3",
                    f"-I/usr/include/{sys.implementation._multiarch}", "-I", BPF_DIR, "-c",
                    os.path.join(BPF_DIR, "fb_trace.bpf.c"), "-o", str(obj)], check=True)
    exe = tmp_path / "counters_check"
    subprocess.run(["gcc", "-O2", "-I", BPF_DIR, os.path.join(BPF_DIR, "counters_check.c"),
                    os.path.join(BPF_DIR, "fb_bpf_loader.c"), "-lbpf", "-lpthread", "-o", str(exe)],
                   check=True)
    out = subprocess.run([str(exe), str(obj)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = re.findall(r"delay (\d+) vs bpf wait (\d+) \(([\d.]+)\).* exec ([\d.]+) kdelay ([\d.]+)",
                      out.stdout)
    assert len(rows) == 4, out.stdout
    for delay, _bpf_wait, wait, exe_ratio, kdelay in rows:
        assert abs(float(exe_ratio) - 1) < 0.01, out.stdout
        # ratios of tiny waits are noise (a host with more CPUs than threads hardly
        # queues them): the limits hold relative to the wait or within 50 us of it
        if int(delay) == 0:
            continue   # the ratios are then against 1 ns: nothing to compare
        assert abs(float(kdelay) - 1) < max(0.02, 50_000 / int(delay)), out.stdout


# ----------------------------------------------------------------------------- the run's split

def test_a_missed_switch_in_is_put_back_from_the_cpu_time():
    """Waiting from 0, then asleep at 1000 with 300 ns more CPU time and no switch-in
    logged: the thread ran 700..1000, so a switch-in is inferred at 700 and the wait
    ends there (the wall view no longer counts 1000 ns of waiting)."""
    tl = _log([(0, 0, 0, 0, 0, kt.WAITING), (1000, 0, 1000, 300, 700, kt.ASLEEP)])
    assert tl.inferred == 1
    s = kt.split(tl, np.array([0]), np.array([1000]))
    assert s["on_cpu_wall_ns"][0] == 300 and s["wait_wall_ns"][0] == 700
    assert s["on_cpu_ns"][0] == 300


def test_a_wait_the_kernel_leaves_out_is_taken_out_of_the_log_s_waiting():
    """Preempted while going to sleep (flagged by the BPF object): the log counts the
    wait, the kernel's run_delay does not; the cross-check compares like with like."""
    rows = [(0, 0, 0, 0, 0, kt.ON_CPU), (100, 100, 0, 100, 0, kt.WAITING | kt.SLEEPING_PREEMPTED),
            (600, 100, 500, 100, 0, kt.ON_CPU), (700, 200, 500, 200, 0, kt.ASLEEP)]
    tl = _log(rows)
    c = kt.cross_check(tl, 50, 650, cputime_ns=100, run_delay_ns=0, floor_ns=0)
    assert c["log_wait_uncounted_ns"] == 500 and c["log_wait_ns"] == 0


def _threads_for(tl_tid, cpu, delay):
    return [{"role": "vcpu", "index": 0, "tid": tl_tid, "sched_ok": True, "mono_mark_ns": 50,
             "mono_end_ns": 1150, "sched_run_ns": cpu, "sched_wait_ns": delay}]


def test_cross_check_threads_withholds_past_two_percent():
    """The run-level check over every thread: the log's CPU time (300 ns here) against
    the thread's own clock; 2% off passes with no floor only at the limit, 3% fails."""
    logs = {7: _log(LOG)}
    ok = kt.cross_check_threads(_threads_for(7, 300 * 1.02, 150), logs, floor_ns=0)
    bad = kt.cross_check_threads(_threads_for(7, 300 * 1.03, 150), logs, floor_ns=0)
    assert ok["ok"] and not bad["ok"] and bad["threads_failed"] == 1
    missing = kt.cross_check_threads(_threads_for(8, 300, 150), logs, floor_ns=0)
    assert not missing["ok"] and missing["failed"][0]["reason"] == "no entry in the tracer's log"


def test_a_thread_still_on_a_cpu_when_the_log_ends_fails_in_standard_json():
    """Its last wait is unknown, so its run delay over the window is NaN: the row fails,
    says why, and carries null, not NaN (a sweep lost three cells when a record with a
    NaN in `cross_check.failed` could not be written)."""
    import json
    got = kt.cross_check_threads(_threads_for(7, 300, 150), {7: _log(LOG[:5])}, floor_ns=0)
    assert not got["ok"] and got["threads_failed"] == 1
    row = got["failed"][0]
    assert row["wait_ns"] is None and "still on a CPU" in row["reason"]
    json.dumps({k: v for k, v in got.items()}, allow_nan=False)


def test_stamps_map_onto_the_tracer_s_clock_through_the_run_s_pairs():
    f = kt.tsc_to_mono({"pair_start_tsc": 1000, "pair_end_tsc": 3000,
                        "pair_start_mono_ns": 10, "pair_end_mono_ns": 1010})
    assert f(2000) == 510 and f(1000) == 10
    assert kt.tsc_to_mono({"pair_start_tsc": 0}) is None


def _install_segment(cut: bool):
    """One fault's fetch and install segments (resolver tid 2, vCPU tid 1): install from
    100 to 300, its end cut at g1 or not."""
    cols = {"vcpu_tid": np.array([1]), "resolver_tid": np.array([2])}
    seg = {"used": np.array([True]), "names": ["fetch", "install"],
           "stamps": np.array([[0, 100, 300]]), "cut_at_g1": np.array([[False, False, cut]])}
    return cols, seg, {"install": "install_ioctl"}


def test_a_cut_install_passes_to_the_vcpu_at_its_wake_up():
    """The resolver on a CPU throughout; the vCPU asleep until the install wakes it at
    150, waiting 10 ns, then on a CPU to g1 (300). The install's end was cut at g1 (the
    vCPU resumed before the ioctl returned), so 100..150 is the resolver's (on a CPU)
    and 150..300 the vCPU's (10 waiting, 140 on a CPU); uncut, all 200 is the
    resolver's; with no wake-up inside, the resolver keeps it and that is counted."""
    resolver = _log([(0, 0, 0, 0, 0, kt.ON_CPU), (2000, 2000, 0, 2000, 0, kt.ASLEEP)])
    vcpu = _log([(0, 0, 0, 0, 0, kt.ASLEEP), (150, 0, 0, 0, 0, kt.WAITING),
                 (160, 0, 10, 0, 10, kt.ON_CPU), (2000, 1840, 10, 1840, 10, kt.ASLEEP)])
    ident = lambda x: np.asarray(x, dtype=np.float64)  # noqa: E731
    cols, seg, names = _install_segment(cut=True)
    p = kt.segment_split(cols, seg, names, {1: vcpu, 2: resolver}, False, ident)["install_ioctl"]
    assert p["faults_handed_to_vcpu"] == 1 and p["faults_cut_without_wake"] == 0
    assert p["on_cpu_ns"] == 50 + 140 and p["cpu_wait_ns"] == 10 and p["asleep_ns"] == 0
    assert p["total_ns"] == 200 and p["owner"] == "resolver"
    assert p["vcpu_after_wake_ns"] == 150 and p["vcpu_after_wake_on_cpu_ns"] == 140
    cols, seg, names = _install_segment(cut=False)
    p = kt.segment_split(cols, seg, names, {1: vcpu, 2: resolver}, False, ident)["install_ioctl"]
    assert p["faults_handed_to_vcpu"] == 0 and p["on_cpu_ns"] == 200 and p["owner"] == "resolver"
    awake = _log([(0, 0, 0, 0, 0, kt.ON_CPU), (2000, 2000, 0, 2000, 0, kt.ASLEEP)])
    cols, seg, names = _install_segment(cut=True)
    p = kt.segment_split(cols, seg, names, {1: awake, 2: resolver}, False, ident)["install_ioctl"]
    assert p["faults_handed_to_vcpu"] == 0 and p["faults_cut_without_wake"] == 1
    assert p["on_cpu_ns"] == 200
    # a vCPU with no log: the resolver keeps it, counted apart from "no wake-up"
    p = kt.segment_split(cols, seg, names, {2: resolver}, False, ident)["install_ioctl"]
    assert p["faults_cut_vcpu_unlogged"] == 1 and p["faults_cut_without_wake"] == 0
    assert p["on_cpu_ns"] == 200
    # woken twice inside the segment: the last wake-up is the one it resumed from
    twice = _log([(0, 0, 0, 0, 0, kt.ASLEEP), (120, 0, 0, 0, 0, kt.WAITING),
                  (125, 0, 5, 0, 5, kt.ON_CPU), (130, 5, 5, 5, 5, kt.ASLEEP),
                  (150, 5, 5, 5, 5, kt.WAITING), (160, 5, 15, 5, 15, kt.ON_CPU),
                  (2000, 1845, 15, 1845, 15, kt.ASLEEP)])
    p = kt.segment_split(cols, seg, names, {1: twice, 2: resolver}, False, ident)["install_ioctl"]
    assert p["faults_handed_to_vcpu"] == 1 and p["vcpu_after_wake_ns"] == 150
    # a segment the vCPU owns itself (exits: it installs) is never handed over
    cols_self = {"vcpu_tid": np.array([1]), "resolver_tid": np.array([0])}
    p = kt.segment_split(cols_self, seg, names, {1: vcpu}, True, ident)["install_ioctl"]
    assert p["faults_handed_to_vcpu"] == 0 and p["faults_cut_without_wake"] == 0


def test_a_bpf_traced_run_splits_every_segment_and_checks_every_thread(kvm):
    """A real 1-vCPU uffd run with the in-kernel tracer: every segment split for every
    fault, every thread's totals within 2% of its own clocks; and the same check on
    the same run fails once a thread's CPU time is put 3% off."""
    why = kt.unavailable()
    if why:
        pytest.skip(why)
    from bench.point import make_plan
    from bench.runner import execute
    plan = make_plan(["--vcpus", "1", "--mech", "uffd", "--mem-per-vcpu", "2", "--no-trace-locks"],
                     trace_bpf=True)
    m, raw = execute(plan)
    split = m["fault_breakdown_ns"]["sched_split"]
    if "withheld" in split:
        # now and then a thread lands past 2% (a CI run: 2.2%; 6 of the 72 traced runs of
        # docs/tracing.md's cost table, 0 of 40 such 1-vCPU runs on a quiet host): the
        # withheld split must then name it, and a second run pass
        assert split["cross_check"]["failed"] and "disagree" in split["withheld"], split["withheld"]
        m, raw = execute(plan)
        split = m["fault_breakdown_ns"]["sched_split"]
    assert split["tracer"] == "bpf" and "withheld" not in split, split.get("withheld")
    assert split["cross_check"]["ok"] and split["cross_check"]["threads_checked"] == 2
    for name, p in split["parts"].items():
        assert p["faults_split"] == p["faults"] == m["faults"], name
        wall = p["on_cpu_wall_ns"] + p["cpu_wait_wall_ns"] + p["asleep_ns"]
        assert abs(wall - p["total_ns"]) < 1.0, name
    assert m["kernel_locks"]["tracer"] == "bpf"
    assert m["kernel_locks"]["mmap_lock"]["acquisitions"] > 0
    # the tracer detached and closed: none of its programs is left loaded by this process
    assert not any(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith("anon_inode:bpf")
                   for fd in os.listdir("/proc/self/fd")
                   if os.path.islink(f"/proc/self/fd/{fd}"))


def test_a_packed_uffd_install_is_on_a_cpu_for_its_owner(kvm):
    """Reader and vCPU on one CPU (issue 16's first point): the woken vCPU preempts the
    reader inside UFFDIO_COPY and resumes its guest before the ioctl returns. The
    install is the reader's until that wake-up and the vCPU's after it, so its owner is
    on a CPU for most of it (11-12% when the reader kept it whole, preempted)."""
    why = kt.unavailable()
    if why:
        pytest.skip(why)
    from bench.point import make_plan
    from bench.runner import execute
    plan = make_plan(["--vcpus", "1", "--mech", "uffd", "--mem-per-vcpu", "2", "--placement", "packed",
                      "--no-trace-locks"], trace_bpf=True)
    for _ in range(2):   # a split withheld by the 2% cross-check (now and then) gets one rerun
        m, raw = execute(plan)
        split = m["fault_breakdown_ns"]["sched_split"]
        if "withheld" not in split:
            break
    assert "withheld" not in split, split["withheld"]
    p = split["parts"]["install_ioctl"]
    cut = m["fault_breakdown_ns"]["faults_resumed_before_install_returned"]
    # on this kernel the woken vCPU preempts the reader inside the ioctl for a share of
    # the faults (413 of 1,024 in one run): the rule is exercised, not only its absence
    assert cut > 0 and p["faults_handed_to_vcpu"] > 0, (cut, p)
    assert (p["faults_handed_to_vcpu"] + p["faults_cut_without_wake"]
            + p["faults_cut_vcpu_unlogged"]) == cut
    assert p["faults_handed_to_vcpu"] >= p["faults_cut_without_wake"], p
    assert p["on_cpu_ns"] >= 0.5 * p["total_ns"], p


def test_an_explicit_bpf_tracer_that_cannot_run_is_an_error_and_auto_says_why(monkeypatch):
    import argparse
    from bench import preflight
    monkeypatch.setattr(kt, "load_problem", lambda: "the kernel has no BTF")
    args = argparse.Namespace(trace_locks=True, tracer="bpf")
    with pytest.raises(preflight.PreflightError, match="--tracer bpf: the kernel has no BTF"):
        preflight.choose_tracer(args)
    monkeypatch.setattr(preflight, "check_tracefs", lambda on: None)
    args = argparse.Namespace(trace_locks=True, tracer="auto")
    preflight.choose_tracer(args)
    assert args.tracer_used == "tracefs" and args.tracer_why == "the kernel has no BTF"
    args = argparse.Namespace(trace_locks=False, tracer="auto")
    preflight.choose_tracer(args)
    assert args.tracer_used is None
    # --trace-every-run never falls back: it is refused where auto would take tracefs
    args = argparse.Namespace(trace_locks=True, tracer="auto", trace_every_run=True)
    with pytest.raises(preflight.PreflightError,
                       match="--trace-every-run needs the in-kernel tracer: the kernel has no BTF"):
        preflight.choose_tracer(args)


def test_a_missed_switch_out_keeps_the_run_delay_of_the_stretch_before_it():
    """Waiting 0..100 (100 ns of run delay, added at the switch-in), on a CPU from 100 for
    100 ns of CPU time, a switch-out the log missed, on a CPU again at 1000: the missed
    switch-out is put at 200 and the run delay is 100 from the first switch-in on (the
    switch-in's own entry holds it stale, the next one has it)."""
    tl = _log([(0, 0, 0, 0, 0, kt.WAITING), (100, 0, 100, 0, 0, kt.ON_CPU),
               (1000, 900, 100, 100, 100, kt.ON_CPU), (1100, 1000, 100, 200, 100, kt.ASLEEP)])
    assert tl.inferred == 1
    rd = tl.at(np.array([50, 150, 500, 950]))["run_delay_ns"]
    assert list(rd) == [50, 100, 100, 100]
    assert tl.at(np.array([500]))["on_ns"][0] == 100   # the wall view: on a CPU 100..200 only
