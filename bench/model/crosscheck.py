"""Every ordered pair of a set of sweeps of one host, each calibrated on the first and
checked on the second (docs/MODEL.md, "The bands against the host's own
reproducibility"): the cells outside the issue's bands (rate within 25%, p50 within 35%)
for the model given the check sweep's CPU-state reading and without it, and for the
first sweep's own measured medians taken as the prediction, raw and scaled by the two
sweeps' readings; and each calibration against its own sweep.

    python3 -m bench.model.crosscheck CAL.json:MEDIANS.json CAL.json:MEDIANS.json ... [--jobs N]

Each argument is one sweep: its calibration and its medians, as `run_bench.py calibrate
DIR --out CAL.json --medians-out MEDIANS.json` writes them.
"""
from __future__ import annotations

import json
import os
import sys

from ..cmdline import OneLineParser
from . import predict, sim

RATE_BAND = 0.25
P50_BAND = 0.35


def outside(errors: dict) -> list:
    """The cells, sorted, whose (rate error, p50 error) is outside the bands."""
    return sorted(k for k, (er, ep) in errors.items() if abs(er) > RATE_BAND or abs(ep) > P50_BAND)


def measured_errors(a: dict, b: dict, scale: float = 1.0) -> dict:
    """Sweep a's medians as the 'prediction' of sweep b's, cell by cell; `scale`
    multiplies a's rates and divides its p50s (a CPU-state ratio)."""
    got = {(c["mech"], c["vcpus"]): c for c in a["cells"]}
    return {(c["mech"], c["vcpus"]): (got[(c["mech"], c["vcpus"])]["pages_per_s"] * scale / c["pages_per_s"] - 1,
                                      got[(c["mech"], c["vcpus"])]["p50_ns"] / scale / c["p50_ns"] - 1)
            for c in b["cells"]}


def probe_scale(a: dict, b: dict) -> float | None:
    """Sweep a's CPU-state reading over sweep b's (what `measured_errors` scales by), or
    None where either medians file lacks one."""
    if a.get("cpu_probe_ns") and b.get("cpu_probe_ns"):
        return a["cpu_probe_ns"] / b["cpu_probe_ns"]
    return None


def target_probe(cal: dict, check: dict) -> float | None:
    """The check sweep's CPU-state reading where both sides have one, else None."""
    if (cal.get("cpu_probe") or {}).get("value") and check.get("cpu_probe_ns"):
        return check["cpu_probe_ns"]
    return None


def model_errors(cal: dict, check: dict, use_probe: bool, jobs: int = 1,
                 run_queue: str | None = None) -> dict:
    """The model calibrated by `cal` against `check`'s medians at the calibration host's
    CPU count, given the check sweep's CPU-state reading where `use_probe` and both sides
    have one; `run_queue`: the simulated run queue's order (None: the default)."""
    probe = target_probe(cal, check) if use_probe else None
    mechs = sorted({c["mech"] for c in check["cells"]})
    vcpus = sorted({c["vcpus"] for c in check["cells"]})
    rows = {(r["mech"], r["vcpus"]): r for r in predict.predict(
        cal, mechs, vcpus, cal["host"]["pcpus"], sensitivity=False, jobs=jobs, cpu_probe_ns=probe,
        run_queue=run_queue)}
    return {(c["mech"], c["vcpus"]): (rows[(c["mech"], c["vcpus"])]["pages_per_s"] / c["pages_per_s"] - 1,
                                      rows[(c["mech"], c["vcpus"])]["fault_latency_ns"]["p50"] / c["p50_ns"] - 1)
            for c in check["cells"]}


def crosscheck(sweeps: dict, jobs: int = 1, run_queue: str | None = None) -> dict:
    """sweeps: {name: (calibration, medians)}. Returns {"pairs": {"a->b": {column: cells}},
    "in_sample": {name: cells}, "totals": {column: count over the pairs}}."""
    out = {"pairs": {}, "in_sample": {}}
    for a, (cal_a, med_a) in sweeps.items():
        out["in_sample"][a] = outside(model_errors(cal_a, med_a, False, jobs, run_queue))
        for b, (_cal_b, med_b) in sweeps.items():
            if a == b:
                continue
            scale = probe_scale(med_a, med_b)
            out["pairs"][f"{a}->{b}"] = {
                "measured": outside(measured_errors(med_a, med_b)),
                "measured, probe": outside(measured_errors(med_a, med_b, scale)) if scale else None,
                "model": outside(model_errors(cal_a, med_b, True, jobs, run_queue)),
                "model, no probe": outside(model_errors(cal_a, med_b, False, jobs, run_queue)),
            }
    columns = ("measured", "measured, probe", "model", "model, no probe")
    out["totals"] = {k: sum(len(p[k] or []) for p in out["pairs"].values()) for k in columns}
    return out


def main(argv=None) -> int:
    p = OneLineParser(prog="python3 -m bench.model.crosscheck",
                      description="Cells outside the issue's bands for every ordered pair of "
                                  "sweeps: the model and the sweeps' own medians (docs/MODEL.md).")
    p.add_argument("sweeps", nargs="+", help="CAL.json:MEDIANS.json, one per sweep")
    p.add_argument("--jobs", type=int, default=1, help="cells simulated in parallel processes")
    p.add_argument("--run-queue", choices=sim.RUN_QUEUE_ORDERS, default=None,
                   help="the simulated run queue's order (default: the model's, wakecredit)")
    a = p.parse_args(argv)
    sweeps = {}
    for arg in a.sweeps:
        cal_path, sep, med_path = arg.partition(":")
        if not sep:
            p.error(f"{arg}: give CAL.json:MEDIANS.json")
        try:
            with open(cal_path) as f, open(med_path) as g:
                cal, med = json.load(f), json.load(g)
        except (OSError, ValueError) as exc:
            print(f"crosscheck: error: {exc}", file=sys.stderr)
            return 2
        name = f"seed{med['seed']:g}" if isinstance(med.get("seed"), (int, float)) else os.path.basename(med_path)
        if name in sweeps:
            name = os.path.basename(med_path)
        sweeps[name] = (cal, med)
    result = crosscheck(sweeps, jobs=max(1, a.jobs), run_queue=a.run_queue)
    for name, cells in result["in_sample"].items():
        print(f"in-sample {name}: {len(cells)} {cells}")
    for pair, cols in result["pairs"].items():
        print(pair + "  " + "  ".join(f"{k} {'-' if v is None else len(v)}" for k, v in cols.items()))
    print("in all: " + ", ".join(f"{k} {v}" for k, v in result["totals"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
