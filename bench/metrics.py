"""What every metric in a result is: one table, as pyperf's metadata table.

Each entry: a dotted path pattern (`*` matches one name), its unit, which
direction is better (None: neither), whether it is a headline number (summarized
with spread warnings, shown first, compared by `compare`), and whether every
measured run must carry it. Printers, the summary, the tidy table and `compare`
read this table; nothing guesses a unit from a metric's name.
The most specific pattern wins: the one with the most literal characters.
"""
from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase


@dataclass(frozen=True)
class Metric:
    path: str
    unit: str | None          # pages/s, ns, s, count, ratio, bytes
    better: str | None = None  # "higher", "lower" or None
    headline: bool = False
    required: bool = False
    label: str = ""
    # judged by compare, ab, nightly and history: the relative change below which a
    # difference does not matter, however significant (None: not judged)
    min_effect: float | None = None

    @property
    def shown_unit(self) -> str | None:
        """The unit people read it in: latencies in us, the rest as recorded."""
        return "us" if self.unit == "ns" else self.unit

    @property
    def scale(self) -> float:
        """value * scale is the value in shown_unit."""
        return 1e-3 if self.unit == "ns" else 1.0


_LAT = ("p50", "p90", "p99", "p99_9", "max", "mean")

# The minimum effects of the judged metrics, measured here: the p50 of one
# configuration moved under 1% between invocations while a neighbour's load moved
# the paging rate (which counts every preemption of the vCPU) by 9% and p99 by 11%;
# each needs a change beyond its own noise to count.
_JUDGED = [
    Metric("pages_per_s", "pages/s", "higher", headline=True, required=True,
           label="overall demand paging rate", min_effect=0.15),
    Metric("fault_latency_ns.p50", "ns", "lower", headline=True, label="fault latency p50",
           min_effect=0.10),
    Metric("fault_latency_ns.p99", "ns", "lower", headline=True, label="fault latency p99",
           min_effect=0.25),
    # baselines (none, prefault) deliver no fault: their first touch is the latency
    Metric("first_touch_latency_ns.p50", "ns", "lower", label="first-touch latency p50",
           min_effect=0.10),
]
_NAMED = {m.path for m in _JUDGED}

METRICS: list[Metric] = [
    # headline numbers (the selftest's and the latency the vCPU saw), and what verdicts judge
    *_JUDGED,
    Metric("pages_per_s_per_vcpu", "pages/s", "higher", required=True,
           label="per-vcpu demand paging rate (selftest definition)"),
    Metric("pages_per_s_per_vcpu_own_window", "pages/s", "higher",
           label="per-vCPU rate over each vCPU's own window"),
    Metric("guest_seconds", "s", "lower", required=True, label="total guest execution time"),
    # records imported from demand_paging_test's output (bench/selftest_import.py): its
    # printed numbers under its own names and definitions (with -o, each page once per vCPU)
    Metric("selftest.total_guest_execution_time_s", "s", "lower",
           label="selftest Total guest execution time"),
    Metric("selftest.per_vcpu_demand_paging_rate", "pages/s", "higher",
           label="selftest Per-vcpu demand paging rate"),
    # judged in place of pages_per_s for imported records (bench/nightly/verdict.py),
    # so that compare names the selftest's own number; the harness's paging-rate effect
    Metric("selftest.overall_demand_paging_rate", "pages/s", "higher",
           label="selftest Overall demand paging rate",
           min_effect=0.15),
    Metric("selftest.pages_per_vcpu", "count", label="selftest pages per vCPU (-o: all of memory)"),
    Metric("pages", "count", required=True, label="pages of guest memory faulted in"),
    Metric("content_errors", "count", "lower", required=True),
    Metric("touches", "count"), Metric("faults", "count", label="faults delivered to userspace"),
    Metric("pages_installed", "count"), Metric("pages_copied", "count"),
    Metric("faults_attributed_to_vcpus", "count"), Metric("faults_unattributed", "count", "lower"),
    Metric("fault_records_dropped", "count", "lower"),
    Metric("pages_installed_more_than_once", "count"), Metric("pages_never_installed", "count"),
    Metric("vcpu_start_spread_s", "s", "lower"),
    Metric("vcpu_windows_overlapping_max", "count"), Metric("vcpus_inside_kvm_run_max", "count"),
    Metric("exits_by_path.*", "count"),
    *[Metric(f"{h}.{k}", "ns", "lower", label=f"{what}, {k.replace('_', '.')}")
      for h, what in (("fault_latency_ns", "fault latency as the vCPU saw it"),
                      ("first_touch_latency_ns", "first-touch latency (baselines: the kernel's path)"),
                      ("retouch_latency_ns", "re-touch latency of present pages"))
      for k in _LAT if f"{h}.{k}" not in _NAMED],
    *[Metric(f"{h}.count", "count") for h in ("fault_latency_ns", "first_touch_latency_ns",
                                              "retouch_latency_ns")],
    Metric("blocktime_ns.all_vcpus", "ns", "lower", label="time all vCPUs were blocked at once"),
    Metric("blocktime_ns.per_vcpu_mean", "ns", "lower",
           label="time a vCPU was blocked, mean over vCPUs"),
    Metric("blocktime_ns.*", "ns", "lower"),
    # the per-fault breakdown
    Metric("fault_breakdown_ns.parts.*", "ns"), Metric("fault_breakdown_ns.parts_median.*", "ns"),
    Metric("fault_breakdown_ns.mean_fault_latency", "ns", "lower",
           label="mean fault latency over the faults the breakdown covers"),
    Metric("fault_breakdown_ns.median_fault_latency", "ns"),
    Metric("fault_breakdown_ns.faults_*", "count"),
    Metric("fault_breakdown_ns.sched_split.events", "count"),
    Metric("fault_breakdown_ns.sched_split.events_lost", "count", "lower"),
    Metric("fault_breakdown_ns.sched_split.vcpus_on_cpu_at_once_max", "count"),
    Metric("fault_breakdown_ns.sched_split.parts.*.*", "ns"),
    # the in-kernel tracer's split: counts of faults, log entries, threads and switches
    Metric("fault_breakdown_ns.sched_split.parts.*.faults*", "count"),
    Metric("fault_breakdown_ns.sched_split.log_*", "count"),
    Metric("fault_breakdown_ns.sched_split.log_dropped", "count", "lower"),
    Metric("fault_breakdown_ns.sched_split.events_missed", "count", "lower"),
    Metric("fault_breakdown_ns.sched_split.threads_*", "count", "lower"),
    Metric("fault_breakdown_ns.sched_split.threads_by_role.*.*", "count"),
    Metric("fault_breakdown_ns.sched_split.cross_check.threads_*", "count"),
    Metric("fault_breakdown_ns.sched_split.cross_check.switches_inferred", "count"),
    Metric("fault_breakdown_ns.sched_split.cross_check.worst_*", "ratio", "lower",
           label="worst relative error of a thread's totals from the tracer's log against its own clocks"),
    Metric("fault_breakdown_ns.sched_split.cross_check.*limit", "ratio"),
    Metric("fault_breakdown_ns.sched_split.cross_check.*_ns", "ns"),
    # the scheduler's accounting, per role
    Metric("sched.*.on_cpu_ns", "ns"),
    Metric("sched.*.on_cpu_ns_per_fault", "ns", "lower",
           label="mechanism cost: on-CPU time per fault of the role's threads"),
    Metric("sched.*.run_queue_wait_ns", "ns"),
    Metric("sched.*.run_queue_wait_ns_per_fault", "ns", "lower",
           label="CPU wait: run-queue time per fault of the role's threads"),
    Metric("sched.*.timeslices", "count"),
    Metric("cpu_by_role.*.threads", "count"), Metric("cpu_by_role.*.user_ns", "ns"),
    Metric("cpu_by_role.*.system_ns", "ns"), Metric("cpu_by_role.*.*_ctxt_switches", "count"),
    Metric("resolved_by_role.*", "count"),
    # the checks
    Metric("checks.*.*_ns", "ns"), Metric("checks.*.*.*_ns", "ns"),
    Metric("checks.*.*_ns_*", "ns"), Metric("checks.*.*.*_ns_*", "ns"),
    Metric("checks.*.fill", "ratio"), Metric("checks.*.ratio", "ratio"),
    Metric("checks.*.ratio_without_steal", "ratio"),
    Metric("checks.*.max_vcpu_ratio", "ratio"), Metric("checks.*.min_vcpu_ratio", "ratio"),
    Metric("checks.*.limits.*", "ratio"), Metric("checks.*.limits.*_ns", "ns"),
    Metric("checks.*.deviation", "ratio"), Metric("checks.*.tolerance", "ratio"),
    Metric("checks.*.pairs_uncertainty", "ratio"), Metric("checks.*.*_khz", "kHz"),
    Metric("checks.*.*_cycles", "cycles"), Metric("checks.*.vcpus_*", "count"),
    Metric("checks.*.faults*", "count"), Metric("checks.*.resolutions_timed", "count"),
    Metric("checks.*.vcpu_sleeps", "count"),
    # segments_vs_monotonic, in records made before it was removed
    Metric("checks.*.*.faults_disagreeing", "count"), Metric("checks.*.*.share_disagreeing", "ratio"),
    # precopy, worker, locks
    Metric("precopy.stale_pages", "count"), Metric("precopy.pages_declared_clean", "count"),
    Metric("precopy.bitmap_arrived_after_s", "s"),
    Metric("worker.requests", "count"), Metric("worker.batches", "count"),
    Metric("worker.mean_batch", "ratio"), Metric("worker.copied_bytes", "bytes"),
    Metric("worker.*_ns", "ns"), Metric("worker.requester_waits", "count"),
    Metric("harness_locks.*.acquisitions", "count"), Metric("harness_locks.*.contended", "count"),
    Metric("harness_locks.*.*_ns", "ns"),
    Metric("kernel_locks.contentions", "count", "lower", label="kernel lock contentions (the tracer's runs)"),
    Metric("kernel_locks.wait_ns_total", "ns", "lower", label="kernel lock wait, summed (the tracer's runs)"),
    Metric("kernel_locks.*", "count"), Metric("kernel_locks.*_ns*", "ns"),
    Metric("kernel_locks.*.*", "count"), Metric("kernel_locks.*.*_ns*", "ns"),
    Metric("kernel_locks.*.*.*", "count"), Metric("kernel_locks.*.*.*_ns*", "ns"),
]

HEADLINE = tuple(m.path for m in METRICS if m.headline)
JUDGED = tuple(m for m in METRICS if m.min_effect is not None)
REQUIRED = tuple(m.path for m in METRICS if m.required)


def _specificity(m: Metric) -> int:
    return len(m.path) - m.path.count("*")


_ORDERED = sorted(METRICS, key=_specificity, reverse=True)


def lookup(path: str) -> Metric | None:
    """The most specific entry whose pattern matches the whole path (dots included)."""
    depth = path.count(".")
    for m in _ORDERED:
        if m.path.count(".") == depth and fnmatchcase(path, m.path):
            return m
    return None


def unit(path: str) -> str | None:
    m = lookup(path)
    return m.unit if m else None
