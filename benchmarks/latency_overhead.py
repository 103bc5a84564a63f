#!/usr/bin/env python3
"""What per-fault latency recording costs: the same 1-vCPU, 64 MiB `uffd` run
with and without the guest's rdtsc timing, in alternation (so drift in the
machine hits both sides alike). Prints the paging rates and their ratio; exits
non-zero if recording costs more than --limit percent of the paging rate.

    python benchmarks/latency_overhead.py [--pairs 9] [--mech uffd] [--mib 64]
"""
import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench.plan import Plan  # noqa: E402
from bench.runner import execute  # noqa: E402
from bench.point import make_plan  # noqa: E402
from bench.mechanisms import REGISTRY as MECHANISMS  # noqa: E402


def plan(mech: str, mib: int, record: bool) -> Plan:
    return make_plan(["--vcpus", "1", "--mech", mech, "--mem-per-vcpu", str(mib)],
                     record_latency=record)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=9)
    p.add_argument("--mech", default="uffd", choices=list(MECHANISMS))
    p.add_argument("--mib", type=int, default=64)
    p.add_argument("--limit", type=float, default=5.0, help="allowed cost in percent")
    a = p.parse_args()
    on, off = [], []
    execute(plan(a.mech, a.mib, True))   # warm-up, not counted
    for i in range(a.pairs):
        for record, into in ((True, on), (False, off)) if i % 2 == 0 else ((False, off), (True, on)):
            metrics, _ = execute(plan(a.mech, a.mib, record))
            into.append(metrics["pages_per_s"])
    med_on, med_off = statistics.median(on), statistics.median(off)
    ratio = med_on / med_off
    print(f"{a.mech}, 1 vCPU x {a.mib} MiB, {a.pairs} alternating pairs")
    print(f"  latency recording on : median {med_on:.0f} pages/s  (min {min(on):.0f}, max {max(on):.0f})")
    print(f"  latency recording off: median {med_off:.0f} pages/s  (min {min(off):.0f}, max {max(off):.0f})")
    print(f"  ratio on/off: {ratio:.4f}  -> recording costs {100 * (1 - ratio):+.2f}% of the paging rate")
    return 0 if (1 - ratio) * 100 < a.limit else 1


if __name__ == "__main__":
    sys.exit(main())
