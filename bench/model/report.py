"""What a report draws from the model: predicted rows beside measured ones, and
the model's own answers to the seed thread's three claims (docs/MODEL.md).

    report_data(calibration, pcpus=256, vcpus=VCPUS, mechs=MECHS, mmu=None, ...)
        -> list of rows, the same fields as `run_bench.py model --out`
    claims(rows)  -> dict: the three claims answered from those rows
    committed_predictions(mmu) -> the rows committed in bench/model/data/
    provenance(calibration) -> one caption line
"""
from __future__ import annotations

import json
import os

from . import params as paramsmod
from . import predict

DATA_DIR = os.path.join(os.path.dirname(__file__), "data")
CALIBRATION_FILE = os.path.join(DATA_DIR, "calibration.json")
VCPUS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
MECHS = predict.MECHS
# which parameters decide a limit, by the limit's name (for the claims' answers)
DECIDED_BY = {
    "reader thread": ["reader_msg_ns", "reader_wake_ns", "wake_per_waiter_ns", "line_transfer_ns (cited)"],
    "reader threads": ["reader_msg_ns", "reader_wake_ns"],
    "resolver thread": ["reader_msg_ns", "reader_wake_ns", "list_hold_ns"],
    "uffd_wq": ["enqueue_ns", "wake_per_waiter_ns", "line_transfer_ns (cited)"],
    "mmu_lock": ["mmu_hold_ns", "line_transfer_ns (cited)"],
    "async_list": ["list_hold_ns", "line_transfer_ns (cited)"],
    "mmap_lock": ["line_transfer_ns (cited)"],
    "CPUs": ["vcpu_pre_ns", "vcpu_post_ns", "reader_msg_ns", "cpu_share"],
}


def load_calibration(calibration) -> dict:
    if isinstance(calibration, dict):
        return calibration
    with open(calibration) as f:
        return json.load(f)


def provenance(calibration) -> str:
    """One line for a figure's caption: where the calibration came from."""
    cal = load_calibration(calibration)
    h = cal["host"]
    return (f"MODEL calibrated {cal.get('created', '?')} from {len(cal.get('records', []))} records "
            f"on {h.get('hostname')} ({h.get('cpu_model')}, {h['pcpus']} CPUs, kernel "
            f"{h.get('kernel_release')}, boot {str(h.get('boot_id'))[:8]}); seeds {cal.get('seeds')}; "
            f"cited: line_transfer_ns = {paramsmod.CITED['line_transfer_ns']['value']:g} ns "
            f"(shown at 0.5x and 2x)")


def report_data(calibration, pcpus: int = 256, vcpus=VCPUS, mechs=MECHS, mmu: str | None = None,
                fetch_delay_us: float | None = None, line_transfer_ns: float | None = None,
                faults: int | None = None) -> list[dict]:
    """Predicted rows (fields as `run_bench.py model --out`), each with
    `cited_sensitivity` where P exceeds the calibration host's CPUs."""
    cal = load_calibration(calibration)
    return predict.predict(cal, list(mechs), list(vcpus), pcpus, mmu, fetch_delay_us,
                           line_transfer_ns, faults)


def committed_predictions(mmu: str) -> list[dict]:
    """The P = 256 rows committed with the calibration (no simulation)."""
    with open(os.path.join(DATA_DIR, f"predictions-p256-{mmu}.json")) as f:
        return json.load(f)


def _by_mech(rows):
    out = {}
    for r in rows:
        out.setdefault(r["mech"], []).append(r)
    for v in out.values():
        v.sort(key=lambda r: r["vcpus"])
    return out


def _peak(rows, key=lambda r: r["pages_per_s"]):
    best = max(rows, key=key)
    return {"vcpus": best["vcpus"], "pages_per_s": key(best), "limit": best["limit"]}


def _sens_peak(rows, scale):
    name = f"line_transfer_ns_x{scale:g}"
    if not all(name in (r.get("cited_sensitivity") or {}) for r in rows):
        return None
    return _peak(rows, key=lambda r: r["cited_sensitivity"][name]["pages_per_s"])


def _limit_params(limit):
    for k, v in DECIDED_BY.items():
        if limit.startswith(k):
            return v
    return ["vcpu_pre_ns", "vcpu_post_ns", "reader_idle_wake_ns", "vcpu_idle_wake_ns"]


def _curve(rows):
    return [{"vcpus": r["vcpus"], "pages_per_s": r["pages_per_s"], "limit": r["limit"],
             "p50_ns": r["fault_latency_ns"]["p50"],
             "lock_wait_ns_per_fault": r["lock_wait_ns_per_fault"],
             "x0.5": (r.get("cited_sensitivity") or {}).get("line_transfer_ns_x0.5", {}).get("pages_per_s"),
             "x2": (r.get("cited_sensitivity") or {}).get("line_transfer_ns_x2", {}).get("pages_per_s")}
            for r in rows]


def claims(rows: list[dict]) -> dict:
    """The seed thread's three claims, answered from predicted rows of one P and
    one MMU (report_data's or committed_predictions' output).

    Returns {"pcpus", "mmu", "one_uffd": {...}, "many_uffds": {...},
    "async_vs_exits": {...}}; each answer has `peak` ({vcpus, pages_per_s,
    limit}), `limit_at_max_vcpus`, `decided_by` (parameter names, "(cited)"
    marking the cited one), the peak at 0.5x/2x the cited parameter, the
    curve, and a one-sentence `answer` made from those numbers."""
    by = _by_mech(rows)
    pcpus = rows[0]["pcpus"]
    mmu = rows[0]["mmu"]
    out = {"pcpus": pcpus, "mmu": mmu}
    if "uffd" in by:
        u = by["uffd"]
        peak = _peak(u)
        last = u[-1]
        out["one_uffd"] = {
            "peak": peak, "limit_at_max_vcpus": last["limit"], "max_vcpus": last["vcpus"],
            "pages_per_s_at_max_vcpus": last["pages_per_s"],
            "decided_by": _limit_params(last["limit"]),
            "peak_at_cited_x0.5": _sens_peak(u, 0.5), "peak_at_cited_x2": _sens_peak(u, 2.0),
            "curve": _curve(u),
            "reader_busy_share_at_max_vcpus": last["utilisation"].get("reader thread"),
            "uffd_wq_busy_share_at_max_vcpus": last["utilisation"].get("uffd_wq"),
            "lock_wait_ns_per_fault_at_max_vcpus": last["lock_wait_ns_per_fault"],
            "answer": (f"one userfaultfd peaks at {peak['pages_per_s']:.0f} pages/s at {peak['vcpus']} "
                       f"vCPUs (limit: {peak['limit']}) and falls to {last['pages_per_s']:.0f} at "
                       f"{last['vcpus']} vCPUs, limited by {last['limit']}; there the wait-queue "
                       f"lock is busy {last['utilisation'].get('uffd_wq', 0):.0%} of the time (the "
                       f"reader's wake walk over every waiter, and the vCPUs' enqueue) and each fault "
                       f"waits {last['lock_wait_ns_per_fault'] / 1e3:.1f} us for locks"),
        }
    if "uffd-many" in by:
        m = by["uffd-many"]
        peak = _peak(m)
        last = m[-1]
        gain = {}
        if "uffd" in by:
            one = {r["vcpus"]: r["pages_per_s"] for r in by["uffd"]}
            gain = {r["vcpus"]: r["pages_per_s"] / one[r["vcpus"]] for r in m if one.get(r["vcpus"])}
        shared = not last["limit"].startswith(("CPUs", "each vCPU", "reader"))
        out["many_uffds"] = {
            "peak": peak, "limit_at_max_vcpus": last["limit"], "max_vcpus": last["vcpus"],
            "gain_over_one_uffd": gain,
            "underlying_issue_still_there": shared,
            "decided_by": _limit_params(last["limit"]),
            "peak_at_cited_x0.5": _sens_peak(m, 0.5), "peak_at_cited_x2": _sens_peak(m, 2.0),
            "curve": _curve(m),
            "answer": (f"one userfaultfd per vCPU reaches {peak['pages_per_s']:.0f} pages/s "
                       f"({gain.get(last['vcpus'], float('nan')):.1f}x one userfaultfd at "
                       f"{last['vcpus']} vCPUs); the limit becomes {last['limit']}"
                       + (", a lock every fault still shares: the underlying issue is still there"
                          if shared else ", not a shared lock")),
        }
    if "async" in by and "exits" in by:
        a, e = by["async"], by["exits"]
        sat = next((r for r in a if r["limit"].startswith(("async_list", "resolver"))), None)
        pa, pe = _peak(a), _peak(e)
        out["async_vs_exits"] = {
            "async_peak": pa, "exits_peak": pe,
            "async_list_saturates_at_vcpus": sat["vcpus"] if sat else None,
            "async_limit_at_max_vcpus": a[-1]["limit"], "exits_limit_at_max_vcpus": e[-1]["limit"],
            "decided_by": sorted(set(_limit_params(a[-1]["limit"]) + _limit_params(e[-1]["limit"]))),
            "async_peak_at_cited_x0.5": _sens_peak(a, 0.5), "async_peak_at_cited_x2": _sens_peak(a, 2.0),
            "exits_peak_at_cited_x0.5": _sens_peak(e, 0.5), "exits_peak_at_cited_x2": _sens_peak(e, 2.0),
            "async_curve": _curve(a), "exits_curve": _curve(e),
            "answer": (f"async peaks at {pa['pages_per_s']:.0f} pages/s at {pa['vcpus']} vCPUs "
                       f"(limit {a[-1]['limit']} at {a[-1]['vcpus']}); exits at "
                       f"{pe['pages_per_s']:.0f} at {pe['vcpus']} (limit {e[-1]['limit']})"
                       + (f"; the shared list/resolver saturates from {sat['vcpus']} vCPUs"
                          if sat else "; the shared list never is the limit up to "
                          f"{a[-1]['vcpus']} vCPUs")),
        }
    return out
