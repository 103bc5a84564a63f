"""Was the CPU itself slowed while a run ran? A probe on each CPU a run uses, just
before and just after it.

On this machine kind (a VM on a shared host) a CPU goes through spells of
seconds in which kernel-heavy code runs about 1.3x slower while a register-only
loop barely moves (measured: exits' p50 32 us in one state and 43 us in the
other, every segment of the fault scaled alike; the fingerprint's spin loop 2-3%
apart; see docs/nightly.md, "The CPU's own state"). Nothing in the harness or the mechanism
chooses the state, and a night of runs taken mostly in one state looks like a
regression against a night in the other. This probe times a fixed number of
`getppid` calls (kernel entry and exit, no fault path, no memory traffic) on the
run's CPUs, and stores the result in each run's `raw.cpu_probe`. The verdict
code (bench/nightly/verdict.py) leaves out runs whose probe sat well above the
floor of their side's probes. It never changes a measured number.
"""
from __future__ import annotations

import os

PROBE_CALLS = 4000     # about 0.7 ms a batch here
PROBE_BATCHES = 5      # the fastest batch is kept: an interrupt inside one batch is not a state
MAX_PROBED_CPUS = 16   # a 256-CPU host is probed on 16 CPUs spread over those the run uses


def cpus_to_probe(vcpu_cpus: list[int], resolver_cpus: list[int]) -> list[int]:
    """The CPUs a run's threads are pinned to; every allowed CPU where any thread
    is unpinned (-1). At most MAX_PROBED_CPUS, evenly spread."""
    planned = list(vcpu_cpus) + list(resolver_cpus)
    allowed = sorted(os.sched_getaffinity(0))
    cpus = allowed if (not planned or any(c < 0 for c in planned)) else sorted(set(planned))
    if len(cpus) > MAX_PROBED_CPUS:
        step = len(cpus) / MAX_PROBED_CPUS
        cpus = [cpus[int(i * step)] for i in range(MAX_PROBED_CPUS)]
    return cpus


def probe(cpus: list[int]) -> list[float]:
    """ns per getppid call on each CPU (the fastest of PROBE_BATCHES batches),
    with the calling thread moved to that CPU for the probe and put back after."""
    # deferred: records are read (compare, report) on machines without the C core built
    from bench.native import ffi, lib
    out = ffi.new("uint64_t[]", PROBE_BATCHES)
    err = ffi.new("char[]", 256)
    allowed = os.sched_getaffinity(0)
    values = []
    try:
        for cpu in cpus:
            os.sched_setaffinity(0, {cpu})
            if lib.fb_probe_syscalls(PROBE_CALLS, PROBE_BATCHES, out, err, 256):
                raise RuntimeError(ffi.string(err).decode())
            values.append(min(out[i] for i in range(PROBE_BATCHES)) / PROBE_CALLS)
    finally:
        os.sched_setaffinity(0, allowed)
    return values


def around(cpus: list[int], run):
    """Call run() between two probes; returns (run's result, raw.cpu_probe)."""
    before = probe(cpus)
    result = run()
    after = probe(cpus)
    return result, {"cpus": cpus, "before_ns_per_call": before, "after_ns_per_call": after,
                    "calls": PROBE_CALLS, "batches": PROBE_BATCHES}


# A run is "contended" when a probe on one of its CPUs, before or after it, sat
# above CONTENDED_RATIO x that CPU's floor: the 10th percentile of every probe
# on that CPU among the runs judged together (one side of a comparison, or one
# record). Measured here over 200 runs of exits and uffd at 1 vCPU, packed: the
# probe reads 163-168 ns a call in the quick state (x1.03 at most) and 200-243 ns
# in the slow one (x1.19-1.49); readings between are likely spells that began or
# ended near the probe. Of the 36 runs in the slow state (p50 above
# 35.5 us for exits, 40 us for uffd), x1.08 let 7 through and left out 63 runs
# in all (more quick runs than slow ones); x1.15 let 9 through and left out 54.
# A slow spell wholly inside one run is not seen (the likely reason for the 7).
CONTENDED_RATIO = 1.08
FLOOR_PERCENTILE = 10


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * pct / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def floors(probes: list[dict | None]) -> dict[int, float]:
    """CPU -> the floor of its probes over these runs' cpu_probe entries."""
    seen: dict[int, list[float]] = {}
    for p in probes:
        if not p:
            continue
        for cpu, b, a in zip(p["cpus"], p["before_ns_per_call"], p["after_ns_per_call"]):
            seen.setdefault(cpu, []).extend((b, a))
    return {cpu: _percentile(v, FLOOR_PERCENTILE) for cpu, v in seen.items()}


def contended(probes: list[dict | None], floor: dict[int, float] | None = None) -> list[float | None]:
    """For each run: its worst probe as a multiple of its CPU's floor (`floor`, or
    the floors of these probes), None where the run has no probe or its CPU no
    floor. Above CONTENDED_RATIO: the run was taken on a contended CPU."""
    fl = floors(probes) if floor is None else floor
    out: list[float | None] = []
    for p in probes:
        if not p or any(cpu not in fl for cpu in p["cpus"]):
            out.append(None)
            continue
        out.append(max(max(b, a) / fl[cpu] for cpu, b, a in
                       zip(p["cpus"], p["before_ns_per_call"], p["after_ns_per_call"])))
    return out


def run_probes(record: dict) -> list[dict | None]:
    """Each measured run's raw.cpu_probe (None where the run has none)."""
    return [(run.get("raw") or {}).get("cpu_probe") for run in record["runs"]]


def after_bias(probes: list[dict | None]) -> float | None:
    """The median over runs of after/before (each run's worst CPU): near 1 when
    the state is the host's. Well above CONTENDED_RATIO, the after-probe reads the
    run's own aftermath (work the code under test leaves on the CPU), which is
    not the host's state."""
    ratios = sorted(max(a / b for b, a in zip(p["before_ns_per_call"], p["after_ns_per_call"]))
                    for p in probes if p)
    return ratios[len(ratios) // 2] if ratios else None


def host_probes(probes: list[dict | None]) -> tuple[list[dict | None], float | None]:
    """The probes to judge the host's state by, and the after/before bias where it
    made the after-probes unusable (then each run is judged by its before-probe)."""
    bias = after_bias(probes)
    if bias is None or bias <= CONTENDED_RATIO:
        return probes, None
    return [None if not p else {**p, "after_ns_per_call": list(p["before_ns_per_call"])}
            for p in probes], bias


def slowed(probes: list[dict | None]) -> list[tuple[int, float]]:
    """(index, worst probe over its CPU's floor) of each run these probes judge slowed:
    over CONTENDED_RATIO, the probes taken as the host's (host_probes) and the floors
    from all of them together."""
    ratios = contended(host_probes(probes)[0])
    return [(i, x) for i, x in enumerate(ratios) if x is not None and x > CONTENDED_RATIO]
