#!/usr/bin/env python3
"""What the in-kernel tracer (bench/csrc/bpf) costs a measured run (issue 16, point 3).

For each mechanism and vCPU count, pairs of runs side by side: one untraced, one with
the tracer recording (lock contention per kernel stack, mmap_lock waits, the state log
of every harness thread). The order inside a pair alternates, so drift on the host
falls on both arms alike. Two measures:

- the paging rate, traced / untraced: the median of the per-pair ratios, with the
  smallest and largest pair;
- the tracer's own CPU time, exact: the kernel's run-time statistics of the tracer's
  programs (BPF_ENABLE_STATS, on only while this script holds its fd; the process's
  exit turns them off) per fault, and as a share of the CPUs' time over the run. It
  times the programs' bodies (stats add two clock reads to each), not the tracepoints'
  dispatch into them nor what their cache traffic costs other code.

    python3 benchmarks/bpf_cost.py [--mech uffd,uffd-many,exits,async] [--vcpus 1,16,256]
                                   [--pairs 5] [--out FILE.json]
"""
import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench import kerneltrace  # noqa: E402
from bench.native import lib  # noqa: E402
from bench.point import make_plan  # noqa: E402
from bench.runner import execute  # noqa: E402


def cell(mech: str, vcpus: int, pairs: int, mem: int) -> dict:
    argv = ["--vcpus", str(vcpus), "--mech", mech, "--mem-per-vcpu", str(mem), "--no-trace-locks"]
    plain, traced = make_plan(argv), make_plan(argv, trace_bpf=True)
    rows = []
    for i in range(pairs):
        out = {}
        for arm in (("untraced", "traced") if i % 2 == 0 else ("traced", "untraced")):
            m, raw = execute(traced if arm == "traced" else plain)
            out[arm] = m["pages_per_s"]
            if arm == "traced":
                progs = raw.get("bpf_programs") or {}
                out["bpf_run_ns"] = progs.get("run_ns", 0)
                out["bpf_runs"] = progs.get("run_count", 0)
                out["by_program"] = progs.get("by_program", {})
                out["guest_s"] = m["guest_seconds"]
                out["faults"] = m["faults"]
                split = (m.get("fault_breakdown_ns") or {}).get("sched_split") or {}
                out["split_withheld"] = split.get("withheld")
        rows.append(out)
    ratios = [r["traced"] / r["untraced"] for r in rows]
    ncpu = len(os.sched_getaffinity(0))
    share = [r["bpf_run_ns"] / (r["guest_s"] * 1e9 * ncpu) for r in rows]
    return {"mech": mech, "vcpus": vcpus, "pairs": pairs, "mem_per_vcpu_mib": mem,
            "untraced_pages_per_s_median": statistics.median(r["untraced"] for r in rows),
            "traced_pages_per_s_median": statistics.median(r["traced"] for r in rows),
            "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "bpf_ns_per_fault_median": statistics.median(r["bpf_run_ns"] / max(r["faults"], 1) for r in rows),
            "bpf_runs_per_fault_median": statistics.median(r["bpf_runs"] / max(r["faults"], 1) for r in rows),
            "bpf_cpu_share_median": statistics.median(share), "bpf_cpu_share_max": max(share),
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mech", default="uffd,uffd-many,exits,async")
    ap.add_argument("--vcpus", default="1,16,256")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--mem-per-vcpu", type=int, default=4)
    ap.add_argument("--out")
    ap.add_argument("--by-program", action="store_true",
                    help="also print each program's runs a fault and ns a run")
    a = ap.parse_args()
    why = kerneltrace.unavailable()
    if why:
        print(f"bpf_cost.py: the in-kernel tracer cannot run: {why}", file=sys.stderr)
        return 2
    stats_fd = lib.fb_bpf_enable_stats()
    if stats_fd < 0:
        print("bpf_cost.py: BPF_ENABLE_STATS refused (needs root)", file=sys.stderr)
        return 2
    results = []
    try:
        print(f"{'mech':10} {'vCPUs':>5} {'untraced/s':>11} {'traced/s':>10} {'ratio':>6} "
              f"{'[min-max]':>13} {'bpf ns/flt':>10} {'cpu share':>9} {'withheld':>8}")
        for v in (int(x) for x in a.vcpus.split(",")):
            for mech in a.mech.split(","):
                r = cell(mech, v, a.pairs, a.mem_per_vcpu)
                results.append(r)
                print(f"{mech:10} {v:5d} {r['untraced_pages_per_s_median']:11.0f} "
                      f"{r['traced_pages_per_s_median']:10.0f} {r['ratio_median']:6.3f} "
                      f"[{r['ratio_min']:.3f}-{r['ratio_max']:.3f}] {r['bpf_ns_per_fault_median']:10.0f} "
                      f"{100 * r['bpf_cpu_share_median']:8.2f}% {r['splits_withheld']:8d}", flush=True)
                if a.by_program:
                    print("    " + ", ".join(f"{n} {p['runs_per_fault']:.2f}/flt x {p['ns_per_run']:.0f} ns"
                                           for n, p in r["by_program"].items() if p["runs_per_fault"]))
    finally:
        os.close(stats_fd)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"machine_cpus": len(os.sched_getaffinity(0)), "cells": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
