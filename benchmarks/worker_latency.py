#!/usr/bin/env python3
"""What a modelled network fetch adds to a fault: `exits` at 1 vCPU with
`--fetch inline` and no delay against `--fetch worker` with a fixed service
time (30 us by default). Prints both latency distributions and the p50
difference; exits non-zero if the difference is below the service time.

    python benchmarks/worker_latency.py [--service-us 30] [--mib 16] [--repeat 3]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def run(extra: list[str], mib: int, repeat: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "r.json")
        # --no-fingerprint: the two records are compared with each other and thrown away;
        # a host fingerprint (1.4-6 s a run on a 2-CPU host) would go unread
        cmd = [sys.executable, "run_bench.py", "--vcpus", "1", "--mech", "exits", "--mem-per-vcpu",
               str(mib), "--repeat", str(repeat), "--no-trace-locks", "--no-fingerprint", "--quiet", "--out",
               out, *extra]
        subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        with open(out) as f:
            return json.load(f)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--service-us", type=float, default=30.0)
    p.add_argument("--mib", type=int, default=16)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    inline = run(["--fetch", "inline"], a.mib, a.repeat)
    worker = run(["--fetch", "worker", "--service", "fixed", "--service-us", str(a.service_us)],
                 a.mib, a.repeat)
    def line(name, rec):
        s = rec["summary"]
        pct = "  ".join(f"{k} {s['fault_latency_ns.' + k]['median'] / 1000:.1f}"
                        for k in ("p50", "p90", "p99", "max"))
        print(f"  {name:<28} {pct} us   ({s['pages_per_s']['median']:.0f} pages/s)")
        return s["fault_latency_ns.p50"]["median"]
    print(f"exits, 1 vCPU x {a.mib} MiB, {a.repeat} runs each (medians over runs)")
    p50_inline = line("--fetch inline, no delay", inline)
    p50_worker = line(f"--fetch worker, {a.service_us:g} us", worker)
    ws = worker["runs"][0]["metrics"]["worker"]
    print(f"  worker service time (taken -> done), mean: {ws['service_mean_ns'] / 1000:.1f} us; "
          f"modelled: {ws['model_mean_ns'] / 1000:.1f} us")
    diff = (p50_worker - p50_inline) / 1000
    print(f"  p50 difference: {diff:+.1f} us (service time {a.service_us:g} us)")
    return 0 if diff >= a.service_us else 1


if __name__ == "__main__":
    sys.exit(main())
