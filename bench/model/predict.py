"""Predictions from a calibration: one row per (mechanism, vCPU count).

    run_bench.py model --calibration CAL.json --pcpus P --vcpus LIST --mech LIST
                       [--mmu shadow|tdp] [--fetch-delay-us D] [--out FILE]
                       [--line-transfer-ns N] [--faults N]
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time

from ..cmdline import OneLineParser, int_list
from . import params as paramsmod
from . import sim

MECHS = ("uffd", "uffd-many", "exits", "async")
MMUS = ("shadow", "tdp")
# a shared thing counts as the limit once it is busy this share of the time
SATURATED = 0.85
# the calibration host's MMU: PVM shadow paging takes mmu_lock for write in
# paging64_page_fault (contention type SPIN|WRITE in its records)
DEFAULT_MMU = "shadow"


def default_faults(vcpus: int) -> int:
    """Faults measured per cell after the warm-up: enough that every vCPU
    completes several (checked against twice as many: tests/test_model.py)."""
    return max(2000, 4 * vcpus)


def _quantile(sorted_vals, q):
    if not sorted_vals:
        return None
    i = min(len(sorted_vals) - 1, max(0, int(math.ceil(q * len(sorted_vals))) - 1))
    return sorted_vals[i]


def simulate_row(p: paramsmod.Params, mech: str, vcpus: int, pcpus: int, mmu: str,
                 faults: int | None = None) -> dict:
    stats, window = sim.simulate(mech, vcpus, pcpus, p, mmu=mmu,
                                 faults=faults or default_faults(vcpus))
    lat = sorted(stats.latencies)
    n = stats.faults
    rate = n / window * 1e9 if window > 0 else 0.0
    busy = stats.busy
    util = {"CPUs": sum(v for k, v in busy.items() if k.startswith("cpu:")) / (pcpus * window)}
    n_res = sim.cell_threads(mech, vcpus, p.readers, p.uffds) - vcpus
    if n_res:
        role = "resolver" if mech == "async" else "reader"
        util[f"{role} thread" + ("s" if n_res > 1 else "")] = busy.get("cpu:" + role, 0.0) / (n_res * window)
    n_fds = min(p.uffds or vcpus, vcpus) if mech == "uffd-many" else 1
    for k, v in busy.items():
        if k.startswith("lock:"):
            name = k[5:]
            util[name] = v / window / (n_fds if name == "uffd_wq" else 1)
    # a saturated lock or thread names the limit before the CPUs do: spinning
    # on a lock, and the async vCPUs' busy-wait, keep CPUs busy without being the cause.
    # A lock nobody waited for is not a limit however busy (TDP uffd-many at 256 vCPUs:
    # mmu_lock's read-side line 86% busy, no wait, CPUs 99.8%)
    # (a wait under 1 ns a fault is the clock's rounding, not a queue)
    locks = {k[5:] for k in busy if k.startswith("lock:")}
    shared = [kv for kv in util.items() if kv[0] != "CPUs" and kv[1] >= SATURATED
              and (kv[0] not in locks or stats.lock_wait.get(kv[0], 0.0) >= max(n, 1))]
    if shared:
        limit = max(shared, key=lambda kv: kv[1])[0]
    elif util["CPUs"] >= SATURATED:
        limit = "CPUs"
    else:
        limit = "each vCPU's own fault path (nothing shared saturated)"
    lock_wait = {k: v / n for k, v in stats.lock_wait.items()} if n else {}
    return {
        "mech": mech, "vcpus": vcpus, "pcpus": pcpus, "mmu": mmu,
        "pages_per_s": rate,
        "pages_per_s_per_vcpu": rate / vcpus,
        "fault_latency_ns": {"p50": _quantile(lat, 0.50), "p99": _quantile(lat, 0.99),
                             "mean": sum(lat) / n if n else None},
        # blocktime as QEMU's postcopy-vcpu-blocktime, per second of run: the
        # share of each vCPU's time spent inside a fault
        "blocktime_ns_per_s_per_vcpu": (sum(lat) / (vcpus * window) * 1e9) if window else None,
        "lock_wait_ns_per_fault": sum(lock_wait.values()),
        "lock_wait_ns_per_fault_by_lock": lock_wait,
        "limit": limit,
        "utilisation": util,
        "simulated_faults": n,
        "simulated_window_ns": window,
    }


def _one(job):
    cal, mech, v, pcpus, mmu, fetch_delay_us, line_transfer_ns, scale, faults, probe, queue = job
    p = paramsmod.for_prediction(cal, mech, pcpus, fetch_delay_us=fetch_delay_us,
                                 line_scale=scale, line_transfer_ns=line_transfer_ns,
                                 cpu_probe_ns=probe)
    if queue is not None:
        p = dataclasses.replace(p, run_queue_order=queue)
    return p.handoff_ns, simulate_row(p, mech, v, pcpus, mmu, faults)


def latency_shape(cal: dict, mech: str, vcpus: int, pcpus: int, fetch_delay_us: float | None):
    """The calibration's measured latency shape for this cell: (p50 share, p99 share,
    log2(threads / P)) of a vCPU's fault cycle, or (None, why) where it does not apply
    (docs/MODEL.md, "The run queue's latency shape")."""
    mc = cal["mechanisms"][mech]
    shape = mc.get("latency_shape")
    if shape is None:
        return None, "not in this calibration (made before latency shapes were calibrated)"
    if not shape.get("points"):
        return None, shape.get("not_applied") or f"missing: {shape.get('missing')}"
    threads = sim.cell_threads(mech, vcpus, int(mc["params"]["readers"]["value"] or 0),
                               int(mc["params"].get("uffds", {}).get("value") or 0))
    if threads <= pcpus:
        return None, "every thread has a CPU: no run-queue wait to shape"
    if fetch_delay_us is not None and fetch_delay_us != (cal.get("fetch_delay_us") or 0.0):
        return None, (f"--fetch-delay-us {fetch_delay_us:g} is not the calibration sweep's "
                      f"{cal.get('fetch_delay_us') or 0:g}: its shape was measured without that delay")
    d = math.log2(threads / pcpus)
    pts = shape["points"]
    if d < pts[0]["threads_log2"] - 1e-9:
        # below the least crowded calibrated cell the run queue's part of a wait shrinks
        # towards nothing; a share measured with more threads a CPU does not carry there
        return None, (f"fewer threads a CPU (log2 {d:.2f}) than any calibrated cell "
                      f"(log2 {pts[0]['threads_log2']:.2f})")
    if d <= pts[0]["threads_log2"]:
        lo = hi = pts[0]
    elif d >= pts[-1]["threads_log2"]:
        lo = hi = pts[-1]
    else:
        hi = next(q for q in pts if q["threads_log2"] >= d)
        lo = pts[pts.index(hi) - 1]
    span = hi["threads_log2"] - lo["threads_log2"]
    w = (d - lo["threads_log2"]) / span if span > 0 else 0.0
    return ((1 - w) * lo["p50_share"] + w * hi["p50_share"],
            (1 - w) * lo["p99_share"] + w * hi["p99_share"], d), None


def _apply_shape(row: dict, shares) -> None:
    """p50 and p99 as the measured shares of this row's own cycle (vCPUs / rate)."""
    cycle = row["vcpus"] / row["pages_per_s"] * 1e9
    row["fault_latency_ns"] = dict(row["fault_latency_ns"], p50=shares[0] * cycle, p99=shares[1] * cycle)


def predict(cal: dict, mechs, vcpus_list, pcpus: int, mmu: str | None = None,
            fetch_delay_us: float | None = None, line_transfer_ns: float | None = None,
            faults: int | None = None, sensitivity: bool = True, jobs: int = 1,
            cpu_probe_ns: float | None = None, run_queue: str | None = None) -> list[dict]:
    """Rows for every (mechanism, vCPU count). Where the prediction depends on a
    cited parameter (P above the calibration host's CPUs), each row also carries
    the same prediction at 0.5x and 2x that parameter (`cited_sensitivity`).
    `jobs` > 1 simulates cells in that many processes (each cell is independent).
    `cpu_probe_ns`: the modelled host's CPU-state probe (getppid ns a call); every CPU
    cost is scaled by it over the calibration's reference (None: unscaled).
    `run_queue`: the simulated run queue's order, where not the default ("wakecredit")
    ("random", "eevdf": docs/MODEL.md)."""
    mmu = mmu or cal.get("mmu") or DEFAULT_MMU
    if run_queue is not None:
        sim.check_run_queue_order(run_queue)   # here, not inside a worker process
    cpu_scale = paramsmod.cpu_scale(cal, cpu_probe_ns)   # a bad target fails here, once
    far = paramsmod.far_fraction(pcpus, cal["host"]["pcpus"])
    scales = [s for s in paramsmod.SENSITIVITY] if (sensitivity and far > 0) else [1.0]
    work = [(cal, mech, v, pcpus, mmu, fetch_delay_us, line_transfer_ns, scale, faults, cpu_probe_ns,
             run_queue)
            for mech in mechs for v in vcpus_list for scale in scales]
    if jobs > 1:
        # deferred: only a parallel table needs a process pool
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(_one, work))
    else:
        results = [_one(w) for w in work]
    line = paramsmod.CITED["line_transfer_ns"]["value"] if line_transfer_ns is None else line_transfer_ns
    rows = []
    by_cell = {}
    for w, (handoff, row) in zip(work, results):
        by_cell.setdefault((w[1], w[2]), {})[w[7]] = (handoff, row)
    for mech in mechs:
        for v in vcpus_list:
            handoff, row = by_cell[(mech, v)][1.0]
            row["calibration"] = {"host": cal["host"], "created": cal.get("created"),
                                  "records": len(cal.get("records", [])),
                                  "commands": cal.get("commands")}
            row["cited"] = {"line_transfer_ns": {
                "value": line, "applied_ns": handoff,
                "from": "flag --line-transfer-ns" if line_transfer_ns is not None
                else "CITED (docs/MODEL.md)"}} if far > 0 else {}
            if run_queue is not None:
                row["run_queue"] = run_queue
            shares, why = latency_shape(cal, mech, v, pcpus, fetch_delay_us)
            if shares is not None and not row["pages_per_s"] > 0:
                shares, why = None, "no faults completed in the simulated window: no cycle to scale"
            if shares is not None:
                row["fault_latency_ns_simulated"] = dict(row["fault_latency_ns"])
                _apply_shape(row, shares)
                row["latency_shape"] = {"applied": True, "p50_share": shares[0], "p99_share": shares[1],
                                        "threads_log2": shares[2],
                                        "from": "the calibration's measured shares of a fault cycle "
                                                "(docs/MODEL.md); the simulated p50/p99 are in "
                                                "fault_latency_ns_simulated"}
            else:
                row["latency_shape"] = {"applied": False, "why": why}
            row["cpu_state"] = {"probe_ns": cpu_probe_ns,
                                "calibration_probe_ns": (cal.get("cpu_probe") or {}).get("value"),
                                "cpu_cost_scale": cpu_scale}
            if len(scales) > 1:
                row["cited_sensitivity"] = {}
                for scale in scales:
                    if scale == 1.0:
                        continue
                    r2 = by_cell[(mech, v)][scale][1]
                    if shares is not None and r2["pages_per_s"] > 0:
                        _apply_shape(r2, shares)
                    row["cited_sensitivity"][f"line_transfer_ns_x{scale:g}"] = {
                        "pages_per_s": r2["pages_per_s"], "fault_latency_ns": r2["fault_latency_ns"],
                        "lock_wait_ns_per_fault": r2["lock_wait_ns_per_fault"], "limit": r2["limit"]}
            rows.append(row)
    return rows


def text_table(rows) -> str:
    out = [f"{'mech':9s} {'vcpus':>5s} {'P':>4s} {'mmu':6s} {'pages/s':>10s} {'p50 us':>9s} "
           f"{'p99 us':>9s} {'lockwait ns':>11s}  limit"]
    for r in rows:
        lat = r["fault_latency_ns"]
        extra = ""
        sens = r.get("cited_sensitivity")
        if sens:
            extra = "  [x0.5: {:.0f}, x2: {:.0f} pages/s]".format(
                sens["line_transfer_ns_x0.5"]["pages_per_s"], sens["line_transfer_ns_x2"]["pages_per_s"])
        out.append(f"{r['mech']:9s} {r['vcpus']:5d} {r['pcpus']:4d} {r['mmu']:6s} "
                   f"{r['pages_per_s']:10.0f} {lat['p50'] / 1e3:9.1f} {lat['p99'] / 1e3:9.1f} "
                   f"{r['lock_wait_ns_per_fault']:11.0f}  {r['limit']}{extra}")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = OneLineParser(prog="run_bench.py model",
                      description="Predict paging rate, latency and lock waits on P CPUs from a "
                                  "calibration (run_bench.py calibrate); docs/MODEL.md says how "
                                  "far to trust it.")
    p.add_argument("--calibration", required=True, help="calibration JSON")
    p.add_argument("--pcpus", type=int, required=True, help="physical CPUs of the modelled host")
    p.add_argument("--vcpus", type=int_list, required=True, help="vCPU counts, e.g. 1,16,256")
    p.add_argument("--mech", default=",".join(MECHS),
                   help=f"mechanisms, comma-separated (default {','.join(MECHS)})")
    p.add_argument("--mmu", choices=MMUS, default=None,
                   help="shadow: installs take mmu_lock for write (the calibration host, PVM); "
                        "tdp: they share its read side (default: the calibration host's)")
    p.add_argument("--fetch-delay-us", type=float, default=None,
                   help="fetch time per fault, slept by the resolving thread (default: the "
                        "calibration records')")
    p.add_argument("--line-transfer-ns", type=float, default=None,
                   help="cost of moving a contended cache line between far CPUs (default: the "
                        "cited value in docs/MODEL.md)")
    p.add_argument("--cpu-probe-ns", type=float, default=None,
                   help="the modelled host's CPU-state probe (getppid ns a call, as records' "
                        "raw.cpu_probe): every CPU cost is scaled by it over the calibration's "
                        "reference (default: unscaled, the calibration's own state)")
    p.add_argument("--faults", type=int, default=None, help="faults simulated per cell after the warm-up")
    p.add_argument("--jobs", type=int, default=1, help="cells simulated in parallel processes (default 1)")
    p.add_argument("--out", help="write the rows as JSON")
    a = p.parse_args(argv)
    mechs = [m for m in a.mech.split(",") if m]
    for m in mechs:
        if m not in MECHS:
            p.error(f"no model of mechanism {m!r} (choose from {', '.join(MECHS)})")
    if a.pcpus < 1 or any(v < 1 for v in a.vcpus):
        p.error("--pcpus and --vcpus must be positive")
    try:
        with open(a.calibration) as f:
            cal = json.load(f)
    except (OSError, ValueError) as exc:
        print(f"run_bench.py model: error: {a.calibration}: {exc}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    try:
        rows = predict(cal, mechs, a.vcpus, a.pcpus, a.mmu, a.fetch_delay_us, a.line_transfer_ns,
                       a.faults, jobs=max(1, a.jobs), cpu_probe_ns=a.cpu_probe_ns)
    except KeyError as exc:
        print(f"run_bench.py model: error: {exc.args[0]}", file=sys.stderr)
        return 2
    sys.stdout.write(text_table(rows))
    print(f"({len(rows)} cells in {time.monotonic() - t0:.1f} s; MODEL, calibrated on "
          f"{cal['host'].get('hostname')} with {cal['host']['pcpus']} CPUs)")
    if a.out:
        with open(a.out, "w") as f:
            # a list of rows, as the issue asks; each row names its calibration
            json.dump(rows, f, indent=1)
            f.write("\n")
    return 0
