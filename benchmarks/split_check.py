#!/usr/bin/env python3
"""The in-kernel split against each thread's own clocks, over mechanisms and vCPU counts
(issue 16's table): one BPF-traced run per cell; per role, the worst relative error of
the split's CPU time against CLOCK_THREAD_CPUTIME_ID and of its run delay against
schedstat (the 2% cross-check of every run), and of the log's own waiting stretches
against schedstat (independent of the kernel's counter; recorded, not a limit); then
the install segment's share on a CPU for its owner (the resolver, and the vCPU from its
wake-up where it resumed before the install returned: docs/tracing.md), how many faults
were cut and handed over and the vCPU pieces' share of the install's time, the switches
put back, and
whether the split was withheld.

    python3 benchmarks/split_check.py [--mech uffd,uffd-many,exits,async] [--vcpus 1,8,64]
                                      [--placement free] [--out FILE.json]
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench import kerneltrace  # noqa: E402
from bench.point import make_plan  # noqa: E402
from bench.runner import execute  # noqa: E402


def cell(mech: str, vcpus: int, placement: str) -> dict:
    plan = make_plan(["--vcpus", str(vcpus), "--mech", mech, "--placement", placement,
                      "--no-trace-locks"], trace_bpf=True)
    m, _raw = execute(plan)
    split = m["fault_breakdown_ns"]["sched_split"]
    cc = split["cross_check"]
    install = next((p for n, p in (split.get("parts") or {}).items() if n.startswith("install")), None)
    return {"mech": mech, "vcpus": vcpus, "placement": placement,
            "threads_checked": cc["threads_checked"], "threads_failed": cc["threads_failed"],
            "failed": cc.get("failed"),
            "worst_cpu_rel_error": cc["worst_cpu_rel_error"],
            "worst_wait_rel_error": cc["worst_wait_rel_error"],
            "worst_log_wait_rel_error": cc["worst_log_wait_rel_error"],
            "log_wait_beyond_limit": cc["log_wait_threads_beyond_limit"],
            "switches_inferred": cc["switches_inferred"],
            "install_on_cpu_share": (install["on_cpu_ns"] / install["total_ns"]
                                     if install and install["total_ns"] else None),
            "install_wait_share": (install["cpu_wait_ns"] / install["total_ns"]
                                   if install and install["total_ns"] else None),
            # faults whose vCPU resumed before the install returned, and how many of them
            # the split handed to the vCPU at its wake-up; the mean of that vCPU piece
            "faults_cut": m["fault_breakdown_ns"]["faults_resumed_before_install_returned"],
            "install_handed_to_vcpu": (install or {}).get("faults_handed_to_vcpu"),
            "install_total_ns": (install or {}).get("total_ns"),
            "install_vcpu_after_wake_ns": (install or {}).get("vcpu_after_wake_ns"),
            "install_vcpu_after_wake_on_cpu_ns": (install or {}).get("vcpu_after_wake_on_cpu_ns"),
            "withheld": split.get("withheld")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mech", default="uffd,uffd-many,exits,async")
    ap.add_argument("--vcpus", default="1,8,64")
    ap.add_argument("--placement", default="free")
    ap.add_argument("--out")
    a = ap.parse_args()
    why = kerneltrace.unavailable()
    if why:
        print(f"split_check.py: the in-kernel tracer cannot run: {why}", file=sys.stderr)
        return 2
    out = []
    print(f"{'mech':10} {'vCPUs':>5} {'threads':>7} {'failed':>6} {'CPU err':>8} {'delay err':>9} "
          f"{'log wait >lim':>13} {'inferred':>8} {'install on/wait':>15} {'cut/handed':>10} "
          f"{'vCPU piece':>10} withheld")

    def pct(x):
        return f"{100 * x:.2f}%" if x is not None else "-"

    def piece(r):   # the vCPU's share of the install (its after-wake pieces), in time
        v, t = r["install_vcpu_after_wake_ns"], r["install_total_ns"]
        return pct(v / t) if v is not None and t else "-"
    for v in (int(x) for x in a.vcpus.split(",")):
        for mech in a.mech.split(","):
            r = cell(mech, v, a.placement)
            out.append(r)
            inst = (f"{pct(r['install_on_cpu_share'])}/{pct(r['install_wait_share'])}"
                    if r["install_on_cpu_share"] is not None else "-")
            print(f"{mech:10} {v:5d} {r['threads_checked']:7d} {r['threads_failed']:6d} "
                  f"{pct(r['worst_cpu_rel_error']):>8} {pct(r['worst_wait_rel_error']):>9} "
                  f"{len(r['log_wait_beyond_limit']):13d} {r['switches_inferred']:8d} {inst:>15} "
                  f"{r['faults_cut']:>4}/{r['install_handed_to_vcpu'] if r['install_handed_to_vcpu'] is not None else '-':<5} "
                  f"{piece(r):>10} {r['withheld'] or '-'}", flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
