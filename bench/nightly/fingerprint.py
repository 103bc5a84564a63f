"""The host fingerprint: a short calibration of the platform's own costs.

Measured at the start of every invocation and stored in `machine.fingerprint`,
so that a comparison can tell "the code got slower" from "tonight's host is
slower" (on this machine type the same loop ran 1.4-5x apart on two boots).

Each component is measured SAMPLES times, interleaved with the others, so a
burst of load on the host touches every component alike; a component's spread
is the range of its samples. The KVM and userfaultfd parts go through the C
core's own run API (one vCPU, 2 MiB: 512 faults a sample), so they time exactly
the paths the benchmark times; the futex and memcpy parts are C kernels in
bench/csrc/calib.c. This module says what a fingerprint is and how two compare
(no C core needed); bench/nightly/fingerprint_run.py measures one.
"""
from __future__ import annotations

import math
import statistics

from bench import cpustate
from dataclasses import dataclass

FINGERPRINT_VERSION = 1
SAMPLES = 8   # rounds; those the CPU-state probe calls slowed are left out, 4 a side must remain
MIN_ROUNDS = 4   # with 4 a side, Mann-Whitney's smallest two-sided p is 0.029, under CHANGE_P
FUTEX_ROUND_TRIPS = 500
MEMCPY_BYTES = 16 << 20
SPIN_ITERATIONS = 5_000_000   # about 7 ms of one core here
CHANGE_P = 0.05

# name -> (unit, better direction, what is timed, tolerance). The tolerance is the
# relative change of the median below which a difference is not called a host
# change, however clear. Measured here: back-to-back fingerprints of a quiet host
# had medians within 1% (KVM and uffd parts), 6% (futex) and 9% (memcpy); a
# neighbour's benchmark moved memcpy by 30-50%; a CPU hog moved the futex wake
# 5-20x and cpu_share to 0.1-0.5; two boots of this machine type differ 1.4-5x.
# Two back-to-back fingerprints of an idle host (2026-12-07, an Intel Xeon boot, the
# CPU-state probe up to x1.46 its floor) had futex medians x1.51 apart, the cause not
# found (both threads run on the one pinned CPU), so the futex takes a doubling; a
# hog's 5-20x still shows.
COMPONENTS: dict[str, tuple[str, str, str, float]] = {
    "kvm_exit_fault_ns": (
        "ns", "lower", "memory-fault exit round trip: KVM_RUN returns -EFAULT, UFFDIO_COPY, "
        "re-entry (p50 over 512 faults, 1 vCPU, mechanism exits)", 0.30),
    "kvm_zero_fill_fault_ns": (
        "ns", "lower", "zero-fill page fault through KVM, no userfaultfd (first-touch p50 over "
        "512 pages, 1 vCPU, mechanism none)", 0.30),
    "uffd_round_trip_ns": (
        "ns", "lower", "userfaultfd round trip: vCPU sleeps, reader thread reads the message and "
        "UFFDIO_COPYs (p50 over 512 faults, 1 vCPU, mechanism uffd)", 0.30),
    "futex_wake_ns": (
        "ns", "lower", f"futex wake between two threads (mean of {2 * FUTEX_ROUND_TRIPS} hand-offs, "
        "each a FUTEX_WAKE of a thread in FUTEX_WAIT)", 1.00),
    "memcpy_bytes_per_s": (
        "bytes/s", "higher", f"memcpy bandwidth ({MEMCPY_BYTES >> 20} MiB between two "
        "prefaulted buffers)", 0.30),
    "cpu_loop_ns": (
        "ns", "lower", f"CPU time of {SPIN_ITERATIONS:,} dependent xorshift steps (the core's own "
        "speed, whatever else runs)", 0.20),
    "cpu_share": (
        "ratio", "higher", "thread CPU time / wall time over that loop: the share of its CPU the "
        "calibration got (1.0 on an idle CPU; a CPU hog or a busy neighbour lowers it)", 0.25),
}

# The parts that run the kernel's fault paths, the very paths the cells measure: a
# kernel or harness regression moves them and the cells alike, so they never veto a
# verdict (a veto would hide exactly the regression a nightly job is for); they are
# reported beside it. The other parts describe the hardware and the host's share of
# it, which the code under test does not change: they can say "host changed".
KERNEL_PATH = frozenset({"kvm_exit_fault_ns", "kvm_zero_fill_fault_ns", "uffd_round_trip_ns"})


def kind(name: str) -> str:
    return "kernel path" if name in KERNEL_PATH else "hardware"


@dataclass
class ComponentChange:
    name: str
    base_median: float
    new_median: float
    unit: str
    ratio: float          # new / base
    slower: bool          # in the component's bad direction

    @property
    def kernel_path(self) -> bool:
        return self.name in KERNEL_PATH

    def describe(self) -> str:
        direction = "slower" if self.slower else "faster"
        return (f"{self.name} {_fmt(self.base_median, self.unit)} -> "
                f"{_fmt(self.new_median, self.unit)} (x{self.ratio:.2f}, {direction})")


def _fmt(value: float, unit: str) -> str:
    if unit == "bytes/s":
        return f"{value / 1e9:.2f} GB/s"
    if unit == "ratio":
        return f"{value:.2f}"
    if unit == "ns" and value >= 10_000:
        return f"{value / 1000:.1f} us"
    return f"{value:.0f} {unit}"


def round_probes(fingerprints: list[dict | None]) -> list[dict]:
    """The CPU-state probes around each fingerprint round (bench/cpustate.py)."""
    return [p for fp in fingerprints if fp for p in fp.get("cpu_probe") or []]


def pooled(fingerprints: list[dict], floor: dict[int, float] | None = None) -> dict | None:
    """One fingerprint from several (one side of a comparison): samples pooled.

    A round the CPU-state probe says ran on a slowed CPU (over CONTENDED_RATIO x
    `floor`, or the floor of these fingerprints' own probes) is left out of every
    component: on this host a slow spell moves memcpy by up to 1.7x, which is no
    change of hardware. Fingerprints without probes (older ones) keep every round."""
    fps = [fp for fp in fingerprints if fp]
    if not fps:
        return None
    # the same invocation's fingerprint appears in each of its records once
    unique = {(fp.get("measured"), repr(fp["components"].get("futex_wake_ns", {}).get("values"))): fp
              for fp in fps}
    if floor is None:
        floor = cpustate.floors(round_probes(list(unique.values())))
    keep: dict[int, list[bool]] = {}
    left_out = 0
    for key, fp in unique.items():
        probes = fp.get("cpu_probe")
        if probes:
            ratios = cpustate.contended(probes, floor)
            keep[id(fp)] = [r is None or r <= cpustate.CONTENDED_RATIO for r in ratios]
            left_out += keep[id(fp)].count(False)
    out = {"version": FINGERPRINT_VERSION, "components": {}, "rounds_left_out": left_out}
    for name in COMPONENTS:
        vals = []
        for fp in unique.values():
            values = fp["components"].get(name, {}).get("values", [])
            flags = keep.get(id(fp))
            if flags is not None and len(flags) != len(values):
                flags = None   # not one value per round: nothing to leave out by
            vals += [v for i, v in enumerate(values) if flags is None or flags[i]]
        if vals:
            out["components"][name] = {"values": vals, "median": statistics.median(vals),
                                       "min": min(vals), "max": max(vals),
                                       "unit": COMPONENTS[name][0]}
    return out


def pooled_records(records: list[dict]) -> dict | None:
    """One side's pooled fingerprint, its rounds judged against the floor of every
    CPU-state probe on that side: its fingerprints' rounds and its runs."""
    fps = [r["machine"].get("fingerprint") for r in records]
    runs = [p for r in records for p in cpustate.run_probes(r)]
    return pooled(fps, cpustate.floors(round_probes(fps) + runs))


def uncompared(base: dict | None, new: dict | None) -> list[str]:
    """Components that pooled() left with too few rounds on a side to compare."""
    if not base or not new:
        return []
    return [name for name in COMPONENTS
            if min(len(fp["components"].get(name, {}).get("values", [])) for fp in (base, new)) < MIN_ROUNDS]


def changes(base: dict | None, new: dict | None) -> list[ComponentChange] | None:
    """Components that differ beyond their noise; None when a side has no fingerprint.

    Beyond noise means both: the two sets of samples differ by rank (Mann-Whitney,
    two-sided p below CHANGE_P: with 5 samples a side, at most two of the 25 pairs
    out of order, so one sample caught by a burst of load on either side does not
    hide a change), and the medians differ by more than the component's tolerance.
    """
    from scipy.stats import mannwhitneyu
    if not base or not new:
        return None
    out = []
    for name, (unit, better, _what, tolerance) in COMPONENTS.items():
        b, n = base["components"].get(name), new["components"].get(name)
        if not b or not n or b["median"] <= 0:
            continue
        if min(len(b["values"]), len(n["values"])) < MIN_ROUNDS:
            continue   # too few (unslowed) rounds to tell: host_differences notes it
        ratio = n["median"] / b["median"]
        separated = mannwhitneyu(b["values"], n["values"]).pvalue < CHANGE_P
        # symmetric in log: x1.3 slower and x1/1.3 faster are the same size
        if separated and ratio > 0 and abs(math.log(ratio)) > math.log1p(tolerance):
            slower = ratio > 1 if better == "lower" else ratio < 1
            out.append(ComponentChange(name, b["median"], n["median"], unit, ratio, slower))
    return out
