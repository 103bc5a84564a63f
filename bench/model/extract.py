"""The few per-run figures the model is calibrated from and checked against, read
out of result records (bench/result.py's layout): one dict per measured run,
plus the lock figures of the cell's traced runs (or, in records made with
--trace-every-run, of its measured runs). Nothing here fits or guesses;
a figure a record lacks stays None and the calibration names it as missing."""
from __future__ import annotations

import statistics

# the vCPU-side segments of a blocking-uffd fault that pass while the vCPU sits
# on the userfaultfd's wait queue (bench/breakdown.py's names): their sum times
# the paging rate is the mean number of waiters (Little's law)
UFFD_QUEUED_SEGMENTS = ("fault_to_message_read", "message_to_resolver",
                        "wait_bitmap_or_other_fetch", "fetch", "install_ioctl")
# kernel call sites whose contention the model has a lock for (bench/locktrace.py)
MMU_LOCK_SITE = "paging64_page_fault"
UFFD_WQ_SITE = "handle_userfault"
RESOLVER_ROLES = ("reader", "resolver")


def _get(d, *path):
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def resolver_role(metrics: dict) -> str | None:
    sched = metrics.get("sched") or {}
    for role in RESOLVER_ROLES:
        if role in sched:
            return role
    return None


def probe_ns(cpu_probe) -> float | None:
    """A run's CPU-state reading (bench/cpustate.py): the mean over the CPUs probed of
    its getppid probe just before it (ns a call). Not the probe after it: that one can
    carry the run's own aftermath (docs/nightly.md), and the model's input must not be
    an outcome of the mechanism it predicts. A mean, as for a sweep's reading (where it
    matters: the readings are bimodal, quick and slow, and a median over a sweep's runs
    jumps between the two modes); on a run probed on 2 CPUs the two are the same. None
    without one."""
    if not isinstance(cpu_probe, dict):
        return None
    vals = [v for v in cpu_probe.get("before_ns_per_call") or [] if isinstance(v, (int, float)) and v > 0]
    return statistics.fmean(vals) if vals else None


def run_figures(metrics: dict, cpu_probe=None) -> dict:
    """The figures of one run the model uses (ns, per fault unless named)."""
    faults = metrics.get("faults") or 0
    role = resolver_role(metrics)
    out = {
        "faults": faults,
        "pages_per_s": metrics.get("pages_per_s"),
        "guest_seconds": metrics.get("guest_seconds"),
        "p50_ns": _get(metrics, "fault_latency_ns", "p50"),
        "p99_ns": _get(metrics, "fault_latency_ns", "p99"),
        "vcpu_cpu_ns": _get(metrics, "sched", "vcpu", "on_cpu_ns_per_fault"),
        "vcpu_slices": _get(metrics, "sched", "vcpu", "timeslices"),
        "vcpu_on_cpu_ns": _get(metrics, "sched", "vcpu", "on_cpu_ns"),
        "resolver_role": role,
        "resolver_cpu_ns": _get(metrics, "sched", role, "on_cpu_ns_per_fault") if role else None,
        "resolver_on_cpu_ns": _get(metrics, "sched", role, "on_cpu_ns") if role else None,
        "parts": _get(metrics, "fault_breakdown_ns", "parts") or {},
        "probe_ns": probe_ns(cpu_probe),
    }
    vol = _get(metrics, "cpu_by_role", role, "voluntary_ctxt_switches") if role else None
    out["resolver_sleeps_per_fault"] = vol / faults if vol is not None and faults else None
    invol = _get(metrics, "cpu_by_role", "vcpu", "involuntary_ctxt_switches")
    out["vcpu_invol_per_fault"] = invol / faults if invol is not None and faults else None
    parts = out["parts"]
    if all(k in parts for k in UFFD_QUEUED_SEGMENTS) and out["pages_per_s"]:
        queued_s = sum(parts[k] for k in UFFD_QUEUED_SEGMENTS) * 1e-9
        out["waiters_mean"] = out["pages_per_s"] * queued_s
    else:
        out["waiters_mean"] = None
    # the share of the CPUs nobody in the run used: 1 - on-CPU time / (CPUs x window)
    return out


def traced_locks(metrics: dict) -> dict:
    """Contentions per fault at the sites the model has a lock for, and the
    harness's own async list lock (acquisitions, contended)."""
    kl = metrics.get("kernel_locks") or {}
    faults = metrics.get("faults") or 0
    sites: dict[str, dict] = {}
    for lock in kl.get("top_locks") or []:
        site = (lock.get("call_site") or "").split("+")[0]
        s = sites.setdefault(site, {"count": 0, "wait_ns_total": 0, "types": set()})
        s["count"] += lock.get("count") or 0
        s["wait_ns_total"] += lock.get("wait_ns_total") or 0
        s["types"].add(lock.get("type"))
    out = {"faults": faults, "pages_per_s": metrics.get("pages_per_s"),
           "contentions": kl.get("contentions"),
           "stacktrace_ns_total": kl.get("stacktrace_ns_total"),
           "sites": {k: {"count": v["count"], "wait_ns_total": v["wait_ns_total"],
                         "types": sorted(t for t in v["types"] if t)} for k, v in sites.items()}}
    hl = _get(metrics, "harness_locks", "async_list")
    out["async_list"] = dict(hl) if hl else None
    return out


def cell(path: str, record: dict) -> dict:
    """One record as the model reads it: identity, host, each measured run's
    figures and the lock figures of each run that carries them (its traced runs,
    else its measured runs with kernel_locks)."""
    cfg = record.get("config") or {}
    machine = record.get("machine") or {}
    runs = [run_figures(r["metrics"], (r.get("raw") or {}).get("cpu_probe"))
            for r in record.get("runs") or [] if r.get("metrics")]
    # lock figures: the traced runs, else the measured runs that carry
    # kernel_locks (--trace-every-run: the in-kernel tracer records locks in every measured run)
    lock_runs = record.get("traced_runs") or [
        r for r in record.get("runs") or [] if isinstance((r.get("metrics") or {}).get("kernel_locks"), dict)]
    traced = [traced_locks(r["metrics"]) for r in lock_runs if r.get("metrics")]
    return {
        "path": path, "mech": cfg.get("mech"), "vcpus": cfg.get("vcpus"),
        "readers": cfg.get("readers_per_uffd", cfg.get("readers")), "uffds": cfg.get("uffds"), "seed": cfg.get("seed"),
        "fetch_delay_us": cfg.get("fetch_delay_us"), "workload": cfg.get("workload"),
        "rerun": (record.get("command") or {}).get("rerun"),
        "online_cpus": machine.get("online_cpus"),
        "host": host_identity(machine),
        "emulated": record.get("emulated"),
        # CPU time other processes took while the cell ran (bench/hostnoise.py)
        "other_cpu_share": (record.get("host_noise") or {}).get("other_cpu_share"),
        "runs": runs, "traced": traced,
    }


def host_identity(machine: dict) -> dict:
    return {k: machine.get(k) for k in ("hostname", "boot_id", "kernel_release", "cpu_model",
                                         "online_cpus")}


def median(values):
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def mean(values):
    """The mean, or None where there are none or any is None (unlike `median`, which
    leaves the Nones out: a CPU-state reading of only some runs is no sweep's reading)."""
    vals = list(values)
    return statistics.fmean(vals) if vals and None not in vals else None


def measured_medians(c: dict) -> dict:
    """The check figures of a cell: medians over its measured runs."""
    return {"mech": c["mech"], "vcpus": c["vcpus"], "runs": len(c["runs"]),
            "pages_per_s": median(r["pages_per_s"] for r in c["runs"]),
            "p50_ns": median(r["p50_ns"] for r in c["runs"]),
            "p99_ns": median(r["p99_ns"] for r in c["runs"]),
            "cpu_probe_ns": mean(r.get("probe_ns") for r in c["runs"]),
            # each run's rate and probe: what the CPU state's effect is measured from
            "per_run": [{"pages_per_s": r["pages_per_s"], "p50_ns": r["p50_ns"],
                         "cpu_probe_ns": r.get("probe_ns")} for r in c["runs"]],
            "other_cpu_share": c.get("other_cpu_share")}
