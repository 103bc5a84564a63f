"""Calibrate the scaling model from result records of the host being modelled.

    run_bench.py calibrate RECORDS... --out CAL.json

Every parameter of every mechanism gets a value and says where it came from:
`measured` (a median over runs; the CPU-state reference, a mean), `fitted` (least
squares over the sweep's cells, with the residual of every point), `config` (the
records' own configuration), `derived` (from other parameters by a stated rule) or,
when the records cannot determine it, `value: null` with `missing` naming the
measurement that would.
What a 2-CPU host cannot measure at all lives in bench/model/params.py:CITED.
"""
from __future__ import annotations

import copy
import datetime
import json
import math
import os
import sys

import numpy as np
import scipy.optimize

from ..cmdline import OneLineParser
from ..nightly import cells as cellsmod
from . import extract

CALIBRATION_KIND = "faultbench-model-calibration"
CALIBRATION_VERSION = 3   # 3: latency_shape per mechanism
MECHS = ("uffd", "uffd-many", "exits", "async")


class CalibrationInputError(Exception):
    """Records the calibration cannot use: one line, exit 2."""


def _param(value, kind, source, unit="ns", **extra):
    out = {"value": None if value is None else float(value), "unit": unit, "kind": kind,
           "from": source}
    out.update(extra)
    return out


def _fitted(value, fit, column, source, unit="ns"):
    """A fitted parameter: `fit` names its fit in `fits`, `column` the coefficient it is
    ('1': the intercept). Both are kept in the calibration beside the prose `from`, so
    that what reads a parameter back (`_note_bounds`, `_refuse_negative_costs`) does
    not parse the prose."""
    return _param(value, "fitted", source, unit, fit=fit, column=column)


def _missing(what, unit="ns"):
    return {"value": None, "unit": unit, "kind": "missing", "missing": what}


def threads_per_cpu_log2(threads: int, pcpus: int) -> float:
    """The scheduler/cache-pressure regressor: log2 of runnable-or-sleeping
    threads per CPU, 0 when every thread can have a CPU of its own."""
    return math.log2(max(1.0, threads / pcpus))


# Bounded below at 0 where a plain fit makes one negative: a slope that is a cost per
# event (a sleep, a waiter, a yield). Not the intercept, the cost a fault: a negative one
# is no fit at all, and `_refuse_negative_costs` makes it missing; nor the pressure slope
# on log2(threads/P), which may fall (more threads per CPU can cost less a fault).
FREE_SIGN = ("1", "threads_log2", "threads_log2_sq")


# a square pressure term is kept only where the records determine it: |t| at least this
SQUARE_T_MIN = 2.0
VCPU_FIT_FORMULA = "sched.vcpu.on_cpu_ns_per_fault = a + s*log2(threads/P) [+ s2*log2(threads/P)^2]"


def _t_stat(rows, columns, target, column) -> float | None:
    """The plain least-squares t statistic of one column (coefficient / its standard
    error); None where the fit has no residual degrees of freedom."""
    A = np.array([[1.0 if c == "1" else r[c] for c in columns] for r in rows], dtype=float)
    y = np.array([r[target] for r in rows], dtype=float)
    n, k = A.shape
    if n <= k:
        return None
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    resid = y - A @ coef
    cov = (resid @ resid) / (n - k) * np.linalg.pinv(A.T @ A)
    se = float(np.sqrt(cov[columns.index(column), columns.index(column)]))
    return float(coef[columns.index(column)]) / se if se > 0 else None


def _pressure_columns(rows, other_columns, target="vcpu_cpu_ns") -> tuple[list[str], str]:
    """A vCPU's CPU a fault against threads per CPU: the slope on log2(threads/P), and a
    square term where the fit supports it: at least 4 thread counts among the runs (a
    square term through 3 points is no fit) and |t| >= SQUARE_T_MIN in the least-squares
    fit over the runs (`uffd`'s vCPU cost dips between 4 and 256 vCPUs on the 2-CPU
    host; for the other mechanisms the square term's sign changed from sweep to sweep).
    The runs of one cell share its state, so they are not independent and this t is a
    lenient test. Returns the columns and why the square term is in or out."""
    counts = {round(r["threads_log2"], 6) for r in rows}
    if len(counts) < 4:
        return ["threads_log2"], f"no square term: {len(counts)} thread counts among the fitted runs (4 needed)"
    cols = ["1"] + list(other_columns) + ["threads_log2", "threads_log2_sq"]
    # t of the fit the model would use: without the columns `lstsq` drops (no spread)
    # or holds at its bound (a cost per event it could not separate)
    _coef, _res, _rms, dropped, bound = lstsq(rows, cols, target)
    cols = [c for c in cols if c not in dropped and c not in bound]
    t = _t_stat(rows, cols, target, "threads_log2_sq") if "threads_log2_sq" in cols else None
    if t is None or abs(t) < SQUARE_T_MIN:
        return ["threads_log2"], (f"no square term: its t statistic {t:+.2f} is below {SQUARE_T_MIN:g} in size"
                                  if t is not None else "no square term: no residual degrees of freedom")
    return ["threads_log2", "threads_log2_sq"], f"square term kept: t = {t:+.2f}"


def _square_term(coef, why: str) -> dict:
    if "threads_log2_sq" in coef:
        return _fitted(coef["threads_log2_sq"], "vcpu_cpu_ns", "threads_log2_sq",
                       f"square term s2 of fits.vcpu_cpu_ns ({why})")
    return _param(0.0, "config", why)


def _square_params(coef, why: str, fitted_runs) -> dict:
    """The vCPU fit's square term and the calibrated range it holds over."""
    return {"vcpu_pressure_ns_per_doubling_sq": _square_term(coef, why),
            "pressure_doublings_max": _param(max(r["threads_log2"] for r in fitted_runs), "derived",
                                             "the most log2(threads/P) among the fitted runs",
                                             unit="doublings")}


def lstsq(rows, columns, target):
    """Least squares of `target` on `columns` (names of row keys; '1' is the
    intercept). Drops a column with no spread and says so. A cost per event cannot be
    negative: where the plain fit makes a column outside FREE_SIGN negative, the fit is
    redone with every such column bounded at >= 0 (scipy.optimize.lsq_linear, bounded-
    variable least squares); otherwise it is the plain fit. Returns coefficients,
    residuals per row, the fit's relative RMS, the dropped columns and {column: plain
    fit's coefficient} for every column the bounded fit left at its bound."""
    X, kept, dropped = [], [], []
    for col in columns:
        vals = [1.0 if col == "1" else r[col] for r in rows]
        if col != "1" and (max(vals) - min(vals) < 1e-9 * max(1.0, abs(max(vals)))):
            dropped.append(col)
            continue
        kept.append(col)
        X.append(vals)
    A = np.array(X, dtype=float).T
    y = np.array([r[target] for r in rows], dtype=float)
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    bound = {}
    if any(v < 0 and c not in FREE_SIGN for c, v in zip(kept, coef)):
        # the records did not separate that cost from the others: fit the rest with it
        # held at 0 at most, and say so (a sweep on a slow host gave the async
        # resolver's wake-up -49 us unbounded)
        lo = [-np.inf if c in FREE_SIGN else 0.0 for c in kept]
        fit = scipy.optimize.lsq_linear(A, y, bounds=(lo, np.inf), method="bvls")
        # every column the solution sits on its bound at (active_mask -1), whatever its
        # sign in the plain fit: then exactly 0
        bound = {c: float(u) for c, u, a in zip(kept, coef, fit.active_mask) if a == -1}
        coef = np.where(fit.active_mask == -1, 0.0, fit.x)
    pred = A @ coef
    resid = y - pred
    rel_rms = float(np.sqrt(np.mean((resid / y) ** 2))) if len(y) else None
    return ({c: float(v) for c, v in zip(kept, coef)},
            [{"vcpus": r["vcpus"], "measured": float(m), "fitted": float(f),
              "residual_rel": float((m - f) / m)} for r, m, f in zip(rows, y, pred)],
            rel_rms, dropped, bound)


def _fit_param(coef_name, coef, residuals, rel_rms, dropped, formula, cells_used, bound=None):
    out = {"target": coef_name, "coefficients": coef, "formula": formula, "rel_rms": rel_rms,
           "dropped_columns": dropped, "points": residuals, "cells": cells_used}
    if bound:   # {column: its plain-fit coefficient}, for each slope the bounded fit held at 0
        out["bound_at_zero"] = bound
    return out


def _bound_note(fit_name, fit, column) -> str:
    """' (held at 0 by ...)' where that column's bound bound in that fit, else ''."""
    u = (fit.get("bound_at_zero") or {}).get(column)
    return "" if u is None else (f" (held at 0 by its bound >= 0: the unbounded fit gave {u:.0f} ns; "
                                 f"fits.{fit_name} could not separate it from its other terms)")


def _runs(cells, mech):
    out = []
    for c in cells:
        if c["mech"] != mech:
            continue
        for r in c["runs"]:
            out.append(dict(r, vcpus=c["vcpus"], readers=c["readers"] or 1,
                            uffds=c["uffds"] or (c["vcpus"] if mech == "uffd-many" else 1)))
    return out


def _med(values):
    return extract.median(list(values))


def _resolver_threads(mech, r):
    if mech == "exits":
        return 0
    if mech == "uffd-many":
        return r["readers"] * r["uffds"]
    return r["readers"]


# mechanisms whose fault latency is a wait for another thread (a reader, a resolver):
# the run queue's order shapes it. An `exits` fault is its own vCPU's path.
SHAPED_MECHS = ("uffd", "uffd-many", "async")


def _cell_threads(c) -> int:
    """A record's threads: its vCPUs and their readers or resolvers, from its config."""
    return c["vcpus"] + _resolver_threads(c["mech"], dict(readers=c["readers"] or 1,
                                                         uffds=c["uffds"] or c["vcpus"]))


def _latency_shape(cells, mech, P) -> dict:
    """The run queue's measured latency shape for `mech`: in each cell with more
    threads than CPUs, the median over its runs of p50 x rate / vCPUs and p99 x rate /
    vCPUs, each a share of a vCPU's fault cycle (vCPUs / rate). A FIFO queue makes every
    wait about one cycle (share ~1); the host's scheduler spreads the waits, which these
    shares carry. Taken from the records as measured (before the probe scaling: both
    factors of a share come from the same run)."""
    if mech not in SHAPED_MECHS:
        return {"value": None, "kind": "structure",
                "not_applied": f"{mech}: a fault's latency is its own vCPU's path, which the "
                               "model simulates; it waits for no other thread"}
    points = []
    for c in cells:
        if c["mech"] != mech:
            continue
        threads = _cell_threads(c)
        if threads <= P:
            continue
        ok = [r for r in c["runs"] if r.get("p50_ns") and r.get("p99_ns") and r.get("pages_per_s")]
        if not ok:
            continue
        cyc = [c["vcpus"] / r["pages_per_s"] * 1e9 for r in ok]
        points.append({"vcpus": c["vcpus"], "threads_log2": threads_per_cpu_log2(threads, P),
                       "p50_share": _med(r["p50_ns"] / y for r, y in zip(ok, cyc)),
                       "p99_share": _med(r["p99_ns"] / y for r, y in zip(ok, cyc)),
                       "runs": len(ok)})
    if not points:
        return _missing(f"{mech} records with more threads than the host's {P} CPUs "
                        "(fault_latency_ns p50, p99 and pages_per_s)")
    points.sort(key=lambda q: q["threads_log2"])
    return {"value": len(points), "unit": "cells", "kind": "measured", "points": points,
            "from": "per cell with threads > CPUs: median over its runs of p50 (p99) x "
                    "pages_per_s / vCPUs; applied by `model` where threads > P, "
                    "interpolated in log2(threads / P), held at the most crowded cell beyond "
                    "it, not applied below the least crowded one"}


def calibrate_cells(cells: list[dict]) -> dict:
    if not cells:
        raise CalibrationInputError("no records")
    # the fits scale and annotate runs: on a copy, so that the caller's cells (the
    # medians written beside the calibration) stay as measured
    cells = copy.deepcopy(cells)
    pcpus = {c["online_cpus"] for c in cells}
    if len(pcpus) != 1:
        raise CalibrationInputError(f"records from hosts with different CPU counts: {sorted(pcpus)}")
    P = pcpus.pop()
    hosts = {json.dumps(c["host"], sort_keys=True) for c in cells}
    if len(hosts) != 1:
        raise CalibrationInputError("records from more than one host or boot (machine identity "
                                    "differs): calibrate from one host's records")
    delays = {c["fetch_delay_us"] for c in cells}
    if len(delays) != 1:
        raise CalibrationInputError(f"records with different --fetch-delay-us: {sorted(delays)}")
    out = {"kind": CALIBRATION_KIND, "version": CALIBRATION_VERSION,
           "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "host": dict(json.loads(hosts.pop()), pcpus=P),
           "records": sorted({c["path"] for c in cells}),
           "commands": sorted({c["rerun"] for c in cells if c["rerun"]}),
           "seeds": sorted({c["seed"] for c in cells if c["seed"] is not None}),
           "fetch_delay_us": delays.pop(),
           "mechanisms": {}, "missing": []}
    for c in cells:
        for r in c["runs"]:
            r["threads_log2"] = threads_per_cpu_log2(_cell_threads(c), P)
            r["threads_log2_sq"] = r["threads_log2"] ** 2
    shapes = {mech: _latency_shape(cells, mech, P) for mech in ("uffd-many", "uffd", "exits", "async")}
    out["cpu_probe"] = _normalise_to_probe(cells)
    quantum = _quantum(cells, P)
    shared = {"quantum_ns": quantum, "mmu_hold_ns": _mmu_hold(cells, P)}
    uffd_many = None
    for mech in ("uffd-many", "uffd", "exits", "async"):
        runs = _runs(cells, mech)
        if not runs:
            out["missing"].append(f"{mech}: no records (a sweep with --mech {mech})")
            continue
        if mech == "uffd-many":
            mc = _cal_uffd(runs, P, mech, None, cells)
            uffd_many = mc
        elif mech == "uffd":
            mc = _cal_uffd(runs, P, mech, uffd_many, cells)
        elif mech == "exits":
            mc = _cal_exits(runs, P)
        else:
            mc = _cal_async(runs, P, cells)
        mc["params"]["cpu_share"] = _cpu_share(runs, P, mech)
        mc["params"]["quantum_ns"] = shared["quantum_ns"]
        mc["params"]["mmu_hold_ns"] = shared["mmu_hold_ns"]
        mc["params"]["fetch_delay_ns"] = _param(out["fetch_delay_us"] * 1e3, "config",
                                                "the records' --fetch-delay-us")
        mc["latency_shape"] = shapes[mech]
        _note_bounds(mc)
        _refuse_negative_costs(mech, mc)
        out["mechanisms"][mech] = mc
        for k, v in mc["params"].items():
            if v.get("value") is None:
                out["missing"].append(f"{mech}.{k}: {v.get('missing')}")
        if mc["latency_shape"].get("kind") == "missing":
            out["missing"].append(f"{mech}.latency_shape: {mc['latency_shape']['missing']}")
    return out


# the per-run figures that are CPU time (or, at 1 vCPU, mostly CPU time), which a
# run in the CPU's slow state shows larger (bench/cpustate.py)
PROBE_SCALED = ("vcpu_cpu_ns", "resolver_cpu_ns", "p50_ns")


def _normalise_to_probe(cells) -> dict:
    """The calibration's CPU-state reference: the mean getppid probe (ns a call)
    over every measured run. Each run's CPU figures (PROBE_SCALED) are scaled by
    reference / its own probe before any fit, so that runs taken in the CPU's slow
    state (docs/MODEL.md, "The CPU's state") do not bend the fits; a prediction then
    scales every CPU cost by target probe / reference (`--cpu-probe-ns`). Where any
    run lacks a probe, nothing is scaled and the reference is missing."""
    runs = [r for c in cells for r in c["runs"]]
    vals = [r.get("probe_ns") for r in runs]
    if not runs or any(v is None for v in vals):
        lacking = sum(v is None for v in vals)
        return _missing(f"raw.cpu_probe in every measured run ({lacking} of {len(runs)} lack one): "
                        "records from a harness that probes the CPU's state around each run",
                        unit="ns per getppid call")
    ref = float(np.mean(vals))     # a mean: the readings are bimodal (extract.probe_ns)
    for r in runs:
        for k in PROBE_SCALED:
            if r.get(k) is not None:
                r[k] = r[k] * ref / r["probe_ns"]
    return _param(ref, "measured", "mean over every measured run of raw.cpu_probe (getppid ns "
                  "a call just before the run, mean over its CPUs); each run's "
                  f"{', '.join(PROBE_SCALED)} scaled by this / its own probe before the fits",
                  unit="ns per getppid call", n=len(vals), spread=[min(vals), max(vals)])


def _note_bounds(mc: dict) -> None:
    """A fitted parameter whose column its fit held at 0, or dropped for want of spread
    (its value is then 0: the cost stays inside the intercept), says so in its `from`."""
    for v in mc["params"].values():
        fit = mc.get("fits", {}).get(v.get("fit"))
        if v.get("kind") != "fitted" or fit is None:
            continue
        if v["column"] in fit.get("dropped_columns", ()):
            v["from"] = v["from"] + " (dropped: no spread; inside a)"
        else:
            v["from"] = v["from"] + _bound_note(v["fit"], fit, v["column"])


def _refuse_negative_costs(mech: str, mc: dict) -> None:
    """A fitted cost (a time, not a per-doubling slope, which may fall) below zero is no
    cost at all: the records did not separate it from the fit's other terms. It is made
    missing, naming the fit, rather than handed to the model. Since `lstsq` bounds the
    per-event slopes, only an intercept (the cost a fault) can come here negative; before
    the bound, two sweeps gave the async resolver's wake-up -105 and -116 us."""
    for k, v in list(mc["params"].items()):
        if (v.get("kind") == "fitted" and k.endswith("_ns") and "_per_doubling" not in k
                and v.get("value") is not None and v["value"] < 0):
            src = v.get("from") or "a fit"
            fit = mc.get("fits", {}).get(v.get("fit"))
            rms = f", rel. RMS residual {fit['rel_rms']:.0%}" if fit and fit.get("rel_rms") is not None else ""
            mc["params"][k] = _missing(
                f"records that determine {k}: {src} gave {v['value']:.0f} ns, a negative cost{rms}; "
                f"a sweep on a quiet host whose cells separate it")


def _cpu_share(runs, P, mech):
    """How much of P busy CPUs the benchmark's roles got: (vCPU + resolver on-CPU
    time) / (P x guest window), median over runs with >= 4 threads per CPU."""
    vals = []
    for r in runs:
        if r["vcpus"] < 4 * P or not r["guest_seconds"]:
            continue
        on = (r["vcpu_on_cpu_ns"] or 0) + (r["resolver_on_cpu_ns"] or 0)
        vals.append(min(1.0, on / (P * r["guest_seconds"] * 1e9)))
    if not vals:
        return _missing(f"{mech} records with >= {4 * P} vCPUs (every CPU busy)", unit="ratio")
    return _param(_med(vals), "measured", "median of (vcpu + resolver sched on_cpu_ns) / "
                  "(P x guest_seconds) over runs with >= 4 vCPUs per CPU", unit="ratio",
                  n=len(vals), spread=[min(vals), max(vals)])


def _quantum(cells, P):
    """Slice of a CPU-bound thread: on-CPU time per timeslice of `exits` vCPUs
    (which never block) where there are at least 4 per CPU."""
    vals = []
    for c in cells:
        if c["mech"] == "exits" and c["vcpus"] >= 4 * P:
            vals += [r["vcpu_on_cpu_ns"] / r["vcpu_slices"] for r in c["runs"] if r["vcpu_slices"]]
    if not vals:
        return _missing(f"exits records with >= {4 * P} vCPUs (CPU-bound vCPU threads whose "
                        "on-CPU time per timeslice is the scheduler's slice)")
    return _param(_med(vals), "measured", "median over exits runs with >= 4 vCPUs per CPU of "
                  "sched.vcpu.on_cpu_ns / sched.vcpu.timeslices", n=len(vals))


def _mmu_hold(cells, P):
    """mmu_lock write hold per fault on the shadow MMU, from how often an exits
    fault found it taken: with the other P-1 CPUs acquiring at X(P-1)/P per second,
    P(contended) = hold x that rate. (Contention *wait* times are no use here:
    with --lock-stacks each contention's stack trace costs more than the wait.)"""
    vals = []
    for c in cells:
        if c["mech"] != "exits" or c["vcpus"] < 2 * P:
            continue
        for t in c["traced"]:
            site = t["sites"].get(extract.MMU_LOCK_SITE)
            if site and t["faults"] and t["pages_per_s"]:
                pc = site["count"] / t["faults"]
                vals.append(pc / (t["pages_per_s"] * (P - 1) / P) * 1e9)
    if not vals:
        return _missing(f"a traced exits run (--trace-locks) with >= {2 * P} vCPUs: "
                        f"{extract.MMU_LOCK_SITE} contentions per fault")
    return _param(_med(vals), "derived", "exits traced runs: (mmu_lock contentions per fault "
                  f"at {extract.MMU_LOCK_SITE}) / (paging rate x (P-1)/P)", n=len(vals),
                  points=vals)


def _split_vcpu(total, parts, pre_keys, post_keys, note):
    """Split a vCPU's per-fault CPU between before and after it waits, by its
    1-vCPU segments when the breakdown separates them, half/half otherwise."""
    pre = sum(parts.get(k, 0.0) for k in pre_keys)
    post = sum(parts.get(k, 0.0) for k in post_keys)
    share = pre / (pre + post) if pre + post > 0 else 0.5
    return total * share, total * (1 - share), (note if pre + post > 0 else
                                                "not separable in the breakdown: half each")


def _cal_uffd(runs, P, mech, uffd_many_cal, cells):
    # every cell joins the fits: the 1-vCPU one is the only one whose reader
    # sleeps at every fault, so it is what determines the wake-up cost
    busy = list(runs)
    idle = [r for r in runs if r["vcpus"] == 1]
    params, fits = {}, {}
    if len(busy) < 3:
        return {"params": {"vcpu_pre_ns": _missing(f"{mech} records at >= {2 * P} vCPUs")}, "fits": {}}
    # vCPU: per-fault CPU against threads per CPU
    pcols, square_why = _pressure_columns(busy, [])
    coef, res, rms, dropped, bound = lstsq(busy, ["1"] + pcols, "vcpu_cpu_ns")
    fits["vcpu_cpu_ns"] = _fit_param("vcpu_cpu_ns", coef, res, rms, dropped,
                                     VCPU_FIT_FORMULA,
                                     sorted({r["vcpus"] for r in busy}), bound=bound)
    a_v, s_v = coef.get("1", 0.0), coef.get("threads_log2", 0.0)
    # resolver: per-fault CPU = a + wake*sleeps/fault + s*log2(threads/P) [+ w*waiters]
    for r in busy + idle:
        r["waiters_per_uffd"] = (r["waiters_mean"] or 0.0) / r["uffds"]
        # the wake walk's own term: uffd-many's pressure slope is taken as known
    if uffd_many_cal is None:
        # one reader per vCPU sleeps about once per fault at every count: its
        # wake-up cost is not separable from a, and stays inside it
        cols = ["1", "threads_log2"]
        coef_r, res_r, rms_r, dropped_r, bound_r = lstsq(busy, cols, "resolver_cpu_ns")
        dropped_r.append("resolver_sleeps_per_fault")
        formula = ("reader on_cpu_ns_per_fault = a + s*log2(threads/P) (wake-up inside a: "
                   "each reader sleeps about once per fault at every vCPU count)")
        w = None
    else:
        s_r = uffd_many_cal["fits"]["resolver_cpu_ns"]["coefficients"].get("threads_log2", 0.0)
        for r in busy:
            r["resolver_cpu_less_pressure"] = r["resolver_cpu_ns"] - s_r * r["threads_log2"]
        coef_r, res_r, rms_r, dropped_r, bound_r = lstsq(busy, ["1", "resolver_sleeps_per_fault",
                                                       "waiters_per_uffd"],
                                                "resolver_cpu_less_pressure")
        coef_r["threads_log2"] = s_r
        formula = ("reader on_cpu_ns_per_fault - s_many*log2(threads/P) = a + b*sleeps/fault "
                   "+ w*waiters (s_many: uffd-many's reader slope, same C code, one waiter)")
        w = coef_r.get("waiters_per_uffd")
    fits["resolver_cpu_ns"] = _fit_param("resolver_cpu_ns", coef_r, res_r, rms_r, dropped_r,
                                         formula, sorted({r["vcpus"] for r in busy}), bound=bound_r)
    a_r = coef_r.get("1", 0.0)
    b_r = coef_r.get("resolver_sleeps_per_fault", 0.0)
    s_r = coef_r.get("threads_log2", 0.0)
    idle_parts = {}
    for r in idle:
        for k, v in r["parts"].items():
            idle_parts.setdefault(k, []).append(v)
    parts1 = {k: _med(v) for k, v in idle_parts.items()}
    pre, post, note = _split_vcpu(a_v, {}, (), (), "")
    params["vcpu_pre_ns"] = _fitted(pre, "vcpu_cpu_ns", "1", f"intercept a of fits.vcpu_cpu_ns, {note}")
    params["vcpu_post_ns"] = _fitted(post, "vcpu_cpu_ns", "1", f"intercept a of fits.vcpu_cpu_ns, {note}")
    params["vcpu_pressure_ns_per_doubling"] = _fitted(s_v, "vcpu_cpu_ns", "threads_log2",
                                                      "slope s of fits.vcpu_cpu_ns")
    params.update(_square_params(coef, square_why, busy))
    params["reader_msg_ns"] = _fitted(a_r, "resolver_cpu_ns", "1", "intercept a of fits.resolver_cpu_ns")
    params["reader_wake_ns"] = _fitted(b_r, "resolver_cpu_ns", "resolver_sleeps_per_fault",
                                       "sleeps/fault slope b of fits.resolver_cpu_ns")
    params["reader_pressure_ns_per_doubling"] = _fitted(s_r, "resolver_cpu_ns", "threads_log2",
                                                        "slope s of fits.resolver_cpu_ns")
    if mech == "uffd":
        if w is None:
            params["wake_per_waiter_ns"] = _missing("uffd cells where the waiters per queue vary "
                                                    "apart from the thread count (uffd and uffd-many "
                                                    "records of one sweep)")
        else:
            params["wake_per_waiter_ns"] = _fitted(w, "resolver_cpu_ns", "waiters_per_uffd",
                                                   "waiters slope w of fits.resolver_cpu_ns")
    params["readers"] = _param(_med(r["readers"] for r in runs), "config", "config.readers", unit="threads")
    params["uffds"] = _param(0 if mech == "uffd-many" else 1, "config",
                             "config.uffds (0: one per vCPU)", unit="count")
    # idle-wake costs from the 1-vCPU cell, where every wake-up finds an idle CPU
    if idle:
        v1 = _med(r["vcpu_cpu_ns"] for r in idle)
        r1 = _med(r["resolver_cpu_ns"] for r in idle)
        sl1 = _med(r["resolver_sleeps_per_fault"] for r in idle)
        p50 = _med(r["p50_ns"] for r in idle)
        v_extra = max(0.0, v1 - a_v)
        r_extra = max(0.0, r1 - (a_r + b_r * sl1 + (w or 0.0) * _med(r["waiters_per_uffd"] for r in idle)))
        # what the 1-vCPU latency has beyond both threads' CPU: two idle wake-ups a fault
        lat_extra = max(0.0, p50 - v1 - r1) / 2
        params["vcpu_idle_cpu_ns"] = _param(v_extra, "measured", "1-vCPU vcpu on_cpu_ns_per_fault "
                                            "- fitted a (clipped at 0)")
        params["reader_idle_cpu_ns"] = _param(r_extra, "measured", "1-vCPU reader on_cpu_ns_per_fault "
                                              "- fitted cost there (clipped at 0)")
        params["vcpu_idle_wake_ns"] = _param(lat_extra, "measured", "(1-vCPU p50 - vCPU CPU - reader "
                                             "CPU) / 2 wake-ups per fault")
        params["reader_idle_wake_ns"] = dict(params["vcpu_idle_wake_ns"])
    else:
        for k in ("vcpu_idle_cpu_ns", "reader_idle_cpu_ns", "vcpu_idle_wake_ns", "reader_idle_wake_ns"):
            params[k] = _missing(f"a 1-vCPU {mech} record (every wake-up finds an idle CPU)")
    params["enqueue_ns"] = _enqueue(cells, mech, P, w or 0.0)
    params["one_vcpu_segments_ns"] = {"value": None, "kind": "measured", "unit": "ns",
                                      "segments": parts1, "from": "1-vCPU fault_breakdown_ns.parts "
                                      "(medians; reported, not simulated apart)"}
    params["one_vcpu_segments_ns"]["value"] = sum(parts1.values()) if parts1 else None
    return {"params": params, "fits": fits}


def _enqueue(cells, mech, P, w):
    """The fault wait queue's spinlock held to enqueue: handle_userfault
    contentions per fault over the rate of the other CPUs' acquisitions, less the
    share the wake walk holds it (each fault: one enqueue, one walk)."""
    vals = []
    for c in cells:
        if c["mech"] != mech or c["vcpus"] < 2 * P:
            continue
        for t in c["traced"]:
            site = t["sites"].get(extract.UFFD_WQ_SITE)
            if t["faults"] and t["pages_per_s"]:
                pc = (site["count"] if site else 0) / t["faults"]
                vals.append(pc / (t["pages_per_s"] * (P - 1) / P) * 1e9)
    if not vals:
        return _missing(f"a traced {mech} run with >= {2 * P} vCPUs: {extract.UFFD_WQ_SITE} "
                        "contentions per fault")
    return _param(_med(vals), "derived", f"{mech} traced runs: ({extract.UFFD_WQ_SITE} contentions "
                  "per fault) / (paging rate x (P-1)/P); an upper bound: it also counts waits "
                  "behind the walk", n=len(vals), points=vals)


def _cal_exits(runs, P):
    busy = list(runs)
    if len(busy) < 3:
        return {"params": {"vcpu_pre_ns": _missing(f"exits records at >= {2 * P} vCPUs")}, "fits": {}}
    pcols, square_why = _pressure_columns(busy, [])
    coef, res, rms, dropped, bound = lstsq(busy, ["1"] + pcols, "vcpu_cpu_ns")
    fits = {"vcpu_cpu_ns": _fit_param("vcpu_cpu_ns", coef, res, rms, dropped,
                                      VCPU_FIT_FORMULA,
                                      sorted({r["vcpus"] for r in busy}), bound=bound)}
    idle = [r for r in runs if r["vcpus"] == 1]
    parts1 = {}
    for r in idle:
        for k, v in r["parts"].items():
            parts1.setdefault(k, []).append(v)
    parts1 = {k: _med(v) for k, v in parts1.items()}
    a = coef.get("1", 0.0)
    pre, post, note = _split_vcpu(a, parts1, ("exit_to_userspace", "address_lookup"),
                                  ("wait_bitmap_or_other_fetch", "fetch", "install_ioctl",
                                   "reentry_to_guest_touch"),
                                  "split by the 1-vCPU segments (exit+lookup | fetch+install+re-entry)")
    params = {
        "vcpu_pre_ns": _fitted(pre, "vcpu_cpu_ns", "1", f"intercept a of fits.vcpu_cpu_ns, {note}"),
        "vcpu_post_ns": _fitted(post, "vcpu_cpu_ns", "1", f"intercept a of fits.vcpu_cpu_ns, {note}"),
        **_square_params(coef, square_why, busy),
        "vcpu_pressure_ns_per_doubling": _fitted(coef.get("threads_log2", 0.0), "vcpu_cpu_ns", "threads_log2",
                                                 "slope s of fits.vcpu_cpu_ns"),
        "one_vcpu_segments_ns": {"value": sum(parts1.values()) if parts1 else None, "unit": "ns",
                                 "kind": "measured", "segments": parts1,
                                 "from": "1-vCPU fault_breakdown_ns.parts (medians)"},
        "readers": _param(0, "config", "exits has no resolver thread", unit="threads"),
    }
    if idle:
        params["one_vcpu_cpu_ns"] = _param(_med(r["vcpu_cpu_ns"] for r in idle), "measured",
                                           "1-vCPU sched.vcpu.on_cpu_ns_per_fault (check on a)")
    return {"params": params, "fits": fits}


def _cal_async(runs, P, cells):
    busy = list(runs)
    idle = [r for r in runs if r["vcpus"] == 1]
    if len(busy) < 3:
        return {"params": {"vcpu_pre_ns": _missing(f"async records at >= {2 * P} vCPUs")}, "fits": {}}
    # vCPU: fixed path + one sched_yield round per involuntary switch + pressure,
    # where it has to yield (>= 2 per CPU); with a CPU of its own it spins in
    # place through the whole resolution, which the simulation produces itself
    over = [r for r in runs if r["vcpus"] >= 2 * P]
    if len(over) < 3:   # a sweep without them (or one that lost them) cannot fit the yield
        return {"params": {"vcpu_pre_ns": _missing(f"async records at >= {2 * P} vCPUs (at least "
                                                   f"3 runs; these records have {len(over)})")},
                "fits": {}}
    pcols, square_why = _pressure_columns(over, ["vcpu_invol_per_fault"])
    coef, res, rms, dropped, bound = lstsq(over, ["1", "vcpu_invol_per_fault"] + pcols, "vcpu_cpu_ns")
    fits = {"vcpu_cpu_ns": _fit_param("vcpu_cpu_ns", coef, res, rms, dropped,
                                      "sched.vcpu.on_cpu_ns_per_fault = a + y*involuntary "
                                      "switches/fault + s*log2(threads/P) [+ s2*log2(threads/P)^2] "
                                      "(a sched_yield that "
                                      "switches counts as involuntary)",
                                      sorted({r["vcpus"] for r in over}), bound=bound)}
    coef_r, res_r, rms_r, dropped_r, bound_r = lstsq(busy, ["1", "resolver_sleeps_per_fault", "threads_log2"],
                                            "resolver_cpu_ns")
    fits["resolver_cpu_ns"] = _fit_param("resolver_cpu_ns", coef_r, res_r, rms_r, dropped_r,
                                         "resolver on_cpu_ns_per_fault = a + b*sleeps/fault "
                                         "+ s*log2(threads/P)", sorted({r["vcpus"] for r in busy}), bound=bound_r)
    parts1 = {}
    for r in idle:
        for k, v in r["parts"].items():
            parts1.setdefault(k, []).append(v)
    parts1 = {k: _med(v) for k, v in parts1.items()}
    a = coef.get("1", 0.0)
    pre, post, note = _split_vcpu(a, parts1, ("exit_to_userspace", "list_lock_and_push"),
                                  ("reentry_to_guest_touch",),
                                  "split by the 1-vCPU segments (exit+push | re-entry)")
    params = {
        "vcpu_pre_ns": _fitted(pre, "vcpu_cpu_ns", "1", f"intercept a of fits.vcpu_cpu_ns, {note}"),
        "vcpu_post_ns": _fitted(post, "vcpu_cpu_ns", "1", f"intercept a of fits.vcpu_cpu_ns, {note}"),
        "yield_ns": _fitted(coef.get("vcpu_invol_per_fault"), "vcpu_cpu_ns", "vcpu_invol_per_fault",
                            "slope y of fits.vcpu_cpu_ns") if "vcpu_invol_per_fault" in coef else
        _missing("async cells whose vCPU involuntary switches per fault vary"),
        **_square_params(coef, square_why, over),
        "vcpu_pressure_ns_per_doubling": _fitted(coef.get("threads_log2", 0.0), "vcpu_cpu_ns", "threads_log2",
                                                 "slope s of fits.vcpu_cpu_ns"),
        "reader_msg_ns": _fitted(coef_r.get("1", 0.0), "resolver_cpu_ns", "1", "intercept a of fits.resolver_cpu_ns"),
        "reader_wake_ns": _fitted(coef_r.get("resolver_sleeps_per_fault", 0.0), "resolver_cpu_ns",
                                  "resolver_sleeps_per_fault", "sleeps/fault slope b of fits.resolver_cpu_ns"),
        "reader_pressure_ns_per_doubling": _fitted(coef_r.get("threads_log2", 0.0), "resolver_cpu_ns", "threads_log2",
                                                   "slope s of fits.resolver_cpu_ns"),
        "readers": _param(_med(r["readers"] for r in runs), "config", "config.readers", unit="threads"),
        "one_vcpu_segments_ns": {"value": sum(parts1.values()) if parts1 else None, "unit": "ns",
                                 "kind": "measured", "segments": parts1,
                                 "from": "1-vCPU fault_breakdown_ns.parts (medians)"},
    }
    if idle:
        r1 = _med(r["resolver_cpu_ns"] for r in idle)
        sl1 = _med(r["resolver_sleeps_per_fault"] for r in idle)
        p50 = _med(r["p50_ns"] for r in idle)
        a_r = coef_r.get("1", 0.0) + coef_r.get("resolver_sleeps_per_fault", 0.0) * sl1
        params["reader_idle_cpu_ns"] = _param(max(0.0, r1 - a_r), "measured",
                                              "1-vCPU resolver on_cpu_ns_per_fault - fitted cost there")
        # the vCPU spins through the fault: its latency is its fixed path, the
        # resolver's CPU and one idle wake-up of the resolver
        params["reader_idle_wake_ns"] = _param(max(0.0, p50 - a - r1), "measured",
                                               "1-vCPU p50 - fitted vCPU path a - resolver CPU")
        params["vcpu_idle_cpu_ns"] = _param(0.0, "config", "async vCPUs never sleep")
        params["vcpu_idle_wake_ns"] = _param(0.0, "config", "async vCPUs never sleep")
    else:
        for k in ("reader_idle_cpu_ns", "reader_idle_wake_ns"):
            params[k] = _missing("a 1-vCPU async record")
    params["list_hold_ns"] = _list_hold(cells, P)
    return {"params": params, "fits": fits}


def _list_hold(cells, P):
    """The async list lock's hold: its own counters (metrics.harness_locks) give
    P(contended) per acquisition; over the other CPUs' acquisition rate."""
    vals = []
    for c in cells:
        if c["mech"] != "async" or c["vcpus"] < 2 * P:
            continue
        for r in c.get("list_locks", []):
            if r.get("acquisitions") and r.get("guest_seconds"):
                rate = r["acquisitions"] / r["guest_seconds"]
                vals.append(r["contended"] / r["acquisitions"] / (rate * (P - 1) / P) * 1e9)
    if not vals:
        return _missing("metrics.harness_locks.async_list (acquisitions, contended) in async "
                        f"records with >= {2 * P} vCPUs")
    return _param(_med(vals), "derived", "async runs: (contended / acquisitions of "
                  "harness_locks.async_list) / (acquisitions per s x (P-1)/P)", n=len(vals),
                  points=vals)


def _sweep_commands(paths):
    """The sweep command of every directory named that holds a sweep index."""
    out = []
    for path in paths:
        index = os.path.join(path, cellsmod.INDEX_NAME)
        if os.path.isdir(path) and os.path.exists(index):
            with open(index) as f:
                out.append({"directory": path, "rerun": json.load(f).get("rerun")})
    return out


def medians(cells: list[dict]) -> dict:
    """The measured medians of every cell, with where they came from."""
    return {"kind": "faultbench-model-check-medians", "version": 2,   # 2: cpu_probe_ns, per_run
            # the sweep's CPU state: mean getppid probe over every measured run, as a
            # calibration's reference (None where any run lacks one), the target of
            # `model --cpu-probe-ns`
            "cpu_probe_ns": extract.mean(r.get("probe_ns") for c in cells for r in c["runs"]),
            "commands": sorted({c["rerun"] for c in cells if c["rerun"]}),
            "seed": extract.median(c["seed"] for c in cells),
            "host": cells[0]["host"] if cells else None,
            "records": sorted(c["path"] for c in cells),
            "cells": sorted((extract.measured_medians(c) for c in cells),
                            key=lambda m: (m["mech"], m["vcpus"]))}


def load_cells(paths: list[str]) -> list[dict]:
    try:
        records = cellsmod.load_records(paths)
    except cellsmod.BadInput as exc:
        raise CalibrationInputError(str(exc))
    out = []
    for path, rec in records:
        c = extract.cell(path, rec)
        c["list_locks"] = [dict(_async_list(r["metrics"]), guest_seconds=r["metrics"].get("guest_seconds"))
                           for r in rec.get("runs") or [] if _async_list(r.get("metrics") or {})]
        out.append(c)
    return out


def _async_list(metrics):
    hl = (metrics.get("harness_locks") or {}).get("async_list")
    return hl or {}


def main(argv=None) -> int:
    p = OneLineParser(prog="run_bench.py calibrate",
                      description="Calibrate the scaling model (docs/MODEL.md) from result "
                                  "records of one host: per-role CPU per fault, 1-vCPU costs, "
                                  "lock holds, fits with their residuals.")
    p.add_argument("records", nargs="+", help="result files or sweep directories")
    p.add_argument("--out", required=True, help="calibration JSON to write")
    p.add_argument("--medians-out", help="also write the records' measured medians per cell "
                   "(rate, p50, p99) with their command, seed and host: a compact check set")
    a = p.parse_args(argv)
    try:
        cells = load_cells(a.records)
        cal = calibrate_cells(cells)
    except CalibrationInputError as exc:
        print(f"run_bench.py calibrate: error: {exc}", file=sys.stderr)
        return 2
    sweeps = _sweep_commands(a.records)
    cal["sweeps"] = sweeps
    if a.medians_out:
        with open(a.medians_out, "w") as f:
            json.dump(dict(medians(cells), sweeps=sweeps), f, indent=1)
            f.write("\n")
    with open(a.out, "w") as f:
        json.dump(cal, f, indent=1, sort_keys=False)
        f.write("\n")
    print(f"{a.out}: {len(cal['mechanisms'])} mechanisms from {len(cal['records'])} records "
          f"on {cal['host']['hostname']} ({cal['host']['pcpus']} CPUs)")
    for m in cal["missing"]:
        print(f"missing: {m}")
    for mech, mc in cal["mechanisms"].items():
        for name, fit in mc["fits"].items():
            held = "".join(f"; {c} held at 0 by its bound (unbounded: {u:.0f} ns)"
                           for c, u in (fit.get("bound_at_zero") or {}).items())
            print(f"fit {mech}.{name}: {fit['formula']}; rel. RMS residual {fit['rel_rms']:.1%}{held}")
    return 0
