#!/usr/bin/env python3
"""Does run length change the paging rate? The measurement behind the minimum
guest time that bench/validity.py warns about (docs/workloads.md).

Every (mechanism, vCPU count, memory size) cell is measured --repeat times per
round, cells interleaved, --rounds rounds; prints per cell the median guest
time, each round's median paging rate and coefficient of variation, and the
range of all runs.

    python benchmarks/run_length.py [--mib 2,4,8,32] [--vcpus 1,8] [--mech uffd,exits]
"""
import argparse
import json
import os
import statistics as st
import subprocess
import sys
import tempfile

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def run(mech: str, vcpus: int, mib: int, repeat: int, out: str) -> list[dict]:
    cmd = [sys.executable, "run_bench.py", "--vcpus", str(vcpus), "--mech", mech, "--mem-per-vcpu",
           str(mib), "--repeat", str(repeat), "--no-trace-locks", "--quiet", "--out", out]
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    with open(out) as f:
        return [r["metrics"] for r in json.load(f)["runs"]]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mib", default="2,4,8,32")
    p.add_argument("--vcpus", default="1,8")
    p.add_argument("--mech", default="uffd,exits")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()
    cells = [(m, int(v), int(s)) for m in a.mech.split(",") for v in a.vcpus.split(",")
             for s in a.mib.split(",")]
    got: dict = {c: [] for c in cells}
    with tempfile.TemporaryDirectory() as d:
        for _ in range(a.rounds):
            for c in cells:
                got[c].append(run(*c, a.repeat, os.path.join(d, "r.json")))
    print(f"{'cell':<22} {'guest ms':>8}  {'round medians (pages/s)':<26} {'cv per round':<16} all runs")
    for (mech, v, mib), rounds in got.items():
        rates = [[m["pages_per_s"] for m in r] for r in rounds]
        ms = st.median(m["guest_seconds"] * 1000 for r in rounds for m in r)
        meds = "; ".join(f"{st.median(r):.0f}" for r in rates)
        cvs = "; ".join(f"{st.stdev(r) / st.mean(r):.0%}" if len(r) > 1 else "-" for r in rates)
        flat = [x for r in rates for x in r]
        print(f"{mech:<6} {v:>3} vCPUs {mib:>3} MiB {ms:>8.0f}  {meds:<26} {cvs:<16} "
              f"{min(flat):.0f}..{max(flat):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
