#!/usr/bin/env python3
"""What the in-kernel tracer (bench/csrc/bpf) costs a measured run (issue 16, point 3).

For each mechanism and vCPU count, pairs of runs side by side: one untraced, one with
the tracer recording (lock contention per kernel stack, mmap_lock waits, the state log
of every harness thread). The order inside a pair alternates, so drift on the host
falls on both arms alike. Three measures:

- the paging rate, traced / untraced: the median of the per-pair ratios, with the
  smallest and largest pair, and a 95% interval of their geometric mean (Student's t
  on the log ratios);
- the harness threads' CPU time a fault (user + system), traced / untraced, the same
  way: less disturbed by where the scheduler puts threads than the rate is; it counts
  the programs where they ran on harness threads (not a switch to the idle task);
- with --prog-stats, the tracer's own CPU time, exact: the kernel's run-time statistics of the tracer's
  programs (BPF_ENABLE_STATS, on only while this script holds its fd; the process's
  exit turns them off) per fault, and as a share of the CPUs' time over the run. It
  times the programs' bodies (stats add two clock reads to each), not the tracepoints'
  dispatch into them nor what their cache traffic costs other code.

    python3 benchmarks/bpf_cost.py [--mech uffd,uffd-many,exits,async] [--vcpus 1,16,256]
                                   [--pairs 5] [--touch-share F] [--prog-stats [--by-program]]
                                   [--out FILE.json]
"""
import argparse
import json
import os
import statistics
import sys

import numpy as np
import scipy.stats

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench import kerneltrace  # noqa: E402
from bench.native import lib  # noqa: E402
from bench.point import make_plan  # noqa: E402
from bench.runner import execute  # noqa: E402


def ratio_ci(ratios: list[float]) -> list[float] | None:
    """95% interval of the geometric mean ratio: Student's t on the pairs' log ratios
    (pairs side by side, so host drift slower than a pair cancels)."""
    if len(ratios) < 2:
        return None
    logs = np.log(ratios)
    half = scipy.stats.t.ppf(0.975, len(logs) - 1) * logs.std(ddof=1) / np.sqrt(len(logs))
    return [float(np.exp(logs.mean() - half)), float(np.exp(logs.mean() + half))]


def cell(mech: str, vcpus: int, pairs: int, mem: int, touch_share: float = 1.0) -> dict:
    argv = ["--vcpus", str(vcpus), "--mech", mech, "--mem-per-vcpu", str(mem), "--no-trace-locks"]
    # both arms walk the same share of each vCPU's touches (a traced run's --trace-share)
    plain = make_plan(argv, touch_share=touch_share)
    traced = make_plan(argv, trace_bpf=True, touch_share=touch_share)
    rows = []
    for i in range(pairs):
        out = {}
        for arm in (("untraced", "traced") if i % 2 == 0 else ("traced", "untraced")):
            m, raw = execute(traced if arm == "traced" else plain)
            out[arm] = m["pages_per_s"]
            # the harness threads' CPU time a fault (user + system, the tracer's programs
            # included where they ran on those threads: not where the next task was idle)
            out[arm + "_cpu_ns"] = sum(r["user_ns"] + r["system_ns"]
                                       for r in m["cpu_by_role"].values()) / max(m["faults"], 1)
            if arm == "traced":
                progs = raw.get("bpf_programs") or {}
                out["bpf_run_ns"] = progs.get("run_ns", 0)
                out["bpf_runs"] = progs.get("run_count", 0)
                out["by_program"] = progs.get("by_program", {})
                out["guest_s"] = m["guest_seconds"]
                out["faults"] = m["faults"]
                split = (m.get("fault_breakdown_ns") or {}).get("sched_split") or {}
                out["split_withheld"] = split.get("withheld")
                if split.get("withheld"):   # which threads, and by how much
                    out["cross_check_failed"] = [{k: f.get(k) for k in ("role", "index", "cpu_rel_error", "wait_rel_error", "reason")}
                                                for f in (split.get("cross_check") or {}).get("failed", [])]
        rows.append(out)
    ratios = [r["traced"] / r["untraced"] for r in rows]
    cpu_ratios = [r["traced_cpu_ns"] / r["untraced_cpu_ns"] for r in rows]
    ncpu = len(os.sched_getaffinity(0))
    share = [r["bpf_run_ns"] / (r["guest_s"] * 1e9 * ncpu) for r in rows]
    stats = any(r["bpf_runs"] for r in rows)
    return {"mech": mech, "vcpus": vcpus, "pairs": pairs, "mem_per_vcpu_mib": mem, "touch_share": touch_share,
            "untraced_pages_per_s_median": statistics.median(r["untraced"] for r in rows),
            "traced_pages_per_s_median": statistics.median(r["traced"] for r in rows),
            "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "rate_ratio_ci95": ratio_ci(ratios),
            "cpu_per_fault_ratio_median": statistics.median(cpu_ratios),
            "cpu_per_fault_ratio_ci95": ratio_ci(cpu_ratios),
            "bpf_ns_per_fault_median": (statistics.median(r["bpf_run_ns"] / max(r["faults"], 1) for r in rows)
                                        if stats else None),
            "bpf_runs_per_fault_median": statistics.median(r["bpf_runs"] / max(r["faults"], 1) for r in rows),
            "bpf_cpu_share_median": statistics.median(share) if stats else None,
            "bpf_cpu_share_max": max(share) if stats else None,
            "splits_withheld": sum(1 for r in rows if r["split_withheld"]),
            # per program: its runs a fault and ns a run (medians of the traced runs)
            "by_program": {name: {
                "runs_per_fault": statistics.median(r["by_program"].get(name, {}).get("run_count", 0)
                                                    / max(r["faults"], 1) for r in rows),
                "ns_per_run": statistics.median(r["by_program"][name]["run_ns"]
                                                / max(r["by_program"][name]["run_count"], 1)
                                                for r in rows if name in r["by_program"])}
                for name in sorted({n for r in rows for n in r["by_program"]})},
            "pairs_raw": rows}


def ci(iv) -> str:
    return f"{iv[0]:.3f}-{iv[1]:.3f}" if iv else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mech", default="uffd,uffd-many,exits,async")
    ap.add_argument("--vcpus", default="1,16,256")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--mem-per-vcpu", type=int, default=4)
    ap.add_argument("--touch-share", type=float, default=1.0,
                    help="both arms walk this share of each vCPU's touches, as a traced run "
                         "with --trace-share does (default 1: the whole walk)")
    ap.add_argument("--out")
    ap.add_argument("--prog-stats", action="store_true",
                    help="turn on BPF run-time statistics: the programs' own time a fault "
                         "(they slow every program run a little: the rates then include that)")
    ap.add_argument("--by-program", action="store_true",
                    help="with --prog-stats, also print each program's runs a fault and ns a run")
    a = ap.parse_args()
    if not 0 < a.touch_share <= 1:
        ap.error(f"--touch-share {a.touch_share:g} is out of range (0, 1]")
    why = kerneltrace.unavailable()
    if why:
        print(f"bpf_cost.py: the in-kernel tracer cannot run: {why}", file=sys.stderr)
        return 2
    # the run-time statistics add two clock reads to every program run, which the
    # paging-rate comparison would count as the tracer's cost: on only when asked
    stats_fd = lib.fb_bpf_enable_stats() if a.prog_stats else -1
    if a.prog_stats and stats_fd < 0:
        print("bpf_cost.py: BPF_ENABLE_STATS refused (needs root)", file=sys.stderr)
        return 2
    results = []
    try:
        print(f"{'mech':10} {'vCPUs':>5} {'untraced/s':>11} {'traced/s':>10} {'ratio':>6} "
              f"{'[min-max]':>13} {'rate 95% CI':>13} {'cpu/flt 95% CI':>14} {'bpf ns/flt':>10} "
              f"{'cpu share':>9} {'withheld':>8}")
        for v in (int(x) for x in a.vcpus.split(",")):
            for mech in a.mech.split(","):
                r = cell(mech, v, a.pairs, a.mem_per_vcpu, a.touch_share)
                results.append(r)
                print(f"{mech:10} {v:5d} {r['untraced_pages_per_s_median']:11.0f} "
                      f"{r['traced_pages_per_s_median']:10.0f} {r['ratio_median']:6.3f} "
                      f"[{r['ratio_min']:.3f}-{r['ratio_max']:.3f}] "
                      f"{ci(r['rate_ratio_ci95']):>13} {ci(r['cpu_per_fault_ratio_ci95']):>14} "
                      + (f"{r['bpf_ns_per_fault_median']:10.0f} {100 * r['bpf_cpu_share_median']:8.2f}% "
                         if r["bpf_ns_per_fault_median"] is not None else f"{'-':>10} {'-':>9} ")
                      + f"{r['splits_withheld']:8d}", flush=True)
                if a.by_program:
                    print("    " + ", ".join(f"{n} {p['runs_per_fault']:.2f}/flt x {p['ns_per_run']:.0f} ns"
                                           for n, p in r["by_program"].items() if p["runs_per_fault"]))
    finally:
        if stats_fd >= 0:
            os.close(stats_fd)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"machine_cpus": len(os.sched_getaffinity(0)), "cells": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
