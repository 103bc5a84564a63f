"""Thread placement: which CPU each vCPU and resolver thread may run on.

On a 2-CPU host whether a vCPU and the reader that serves it share a CPU changes
a result by 2x (PLATFORM.md), so placement is a parameter, planned here and
recorded in every result:

- `free`: no affinity, the scheduler decides (and may move threads any time);
- `spread`: vCPU threads on the lower half of the allowed CPUs, resolver threads
  (uffd readers, async resolvers) on the upper half, so a vCPU never shares a CPU
  with its resolver; without resolver threads, vCPUs round-robin over all CPUs;
- `packed`: vCPU i on CPU i mod n; each resolver thread on the CPU of the first
  vCPU it serves (one userfaultfd per partition: that partition's vCPU), as far
  as CPUs allow.

The network worker process and the precopy bitmap thread stay unpinned.
"""
from __future__ import annotations

import math
import os

POLICIES = ("free", "spread", "packed")
FREE = -1   # FB_CPU_FREE


def allowed_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def plan_cpus(policy: str, vcpus: int, resolvers: int, resolver_first_vcpu: list[int],
              cpus: list[int] | None = None) -> tuple[list[int], list[int]]:
    """(CPU per vCPU, CPU per resolver thread), FREE where unpinned.
    `resolver_first_vcpu[r]` is the first vCPU resolver thread r serves."""
    if policy not in POLICIES:
        raise ValueError(f"unknown placement {policy!r} (choose from {', '.join(POLICIES)})")
    if policy == "free":
        return [FREE] * vcpus, [FREE] * resolvers
    cpus = list(cpus if cpus is not None else allowed_cpus())
    if policy == "packed" or resolvers == 0:
        vcpu_cpu = [cpus[i % len(cpus)] for i in range(vcpus)]
        return vcpu_cpu, [vcpu_cpu[resolver_first_vcpu[r] % vcpus] for r in range(resolvers)]
    if len(cpus) < 2:
        raise ValueError(f"--placement spread needs at least 2 CPUs for vCPU and resolver "
                         f"threads apart; this process may use {len(cpus)}")
    half = len(cpus) // 2
    vcpu_cpus, resolver_cpus = cpus[:half], cpus[half:]
    return ([vcpu_cpus[i % len(vcpu_cpus)] for i in range(vcpus)],
            [resolver_cpus[r % len(resolver_cpus)] for r in range(resolvers)])


def describe(threads: list[dict]) -> dict:
    """Per role: the CPUs its threads were seen on and their migrations."""
    out: dict[str, dict] = {}
    for t in threads:
        role = out.setdefault(t["role"], {"threads": 0, "cpus_seen": set(), "migrations": 0,
                                          "migrations_known": True, "pinned": set()})
        role["threads"] += 1
        role["cpus_seen"].update(t["cpus_seen"])
        if t["migrations"] is None:
            role["migrations_known"] = False
        else:
            role["migrations"] += t["migrations"]
        role["pinned"].add(t["pinned_cpu"])
    for role in out.values():
        role["cpus_seen"] = sorted(role["cpus_seen"])
        role["pinned"] = sorted(role["pinned"])
        if not role.pop("migrations_known"):
            role["migrations"] = None
    return out


# ---- bimodality: two groups of repetitions, or one run apart from the rest
#
# The repetitions' paging rates are taken as logs (runs vary by factors: 2x with
# placement) and sorted; every gap between neighbours splits them in two, and the
# split kept is the one that leaves the smallest fraction of the total sum of
# squares inside the two groups (2-means; for normal noise, the likelihood-ratio
# split). The fraction does not depend on the rates' scale nor, for lognormal
# noise, on their spread, so one threshold per run count serves every cell:
# BIMODAL_INSIDE_MAX[n] is the fraction that one group of n runs (lognormal, or
# normal with cv 10% or 20%) goes below in 4% of samples, from the simulation in
# benchmarks/bimodal_calibration.py (fixed seed; tests/test_bimodal.py reruns it
# and checks these figures). 4%, not 5%: room for the sampling error of a
# 2000-sample check of the 5% promise in docs/checks.md.
BIMODAL_INSIDE_MAX = {
    3: 0.000402, 4: 0.0176, 5: 0.0317, 6: 0.0548, 7: 0.0748, 8: 0.0934,
    9: 0.109, 10: 0.122, 11: 0.134, 12: 0.144, 13: 0.155, 14: 0.162,
    15: 0.170, 16: 0.177, 17: 0.183, 18: 0.189, 19: 0.194, 20: 0.199,
}
# Under 5 runs only a lone run is split off (an outlier, not two groups): 3 runs,
# the default --repeat, cannot hold two groups of two, and at 4 letting 2 and 2
# split as well finds two groups 2x apart (cv 5% inside each) in 64% of samples
# while the lone run's detection falls from 74% to 54% (the same simulation;
# 2 vs 3 of 5 runs: 94%).
BIMODAL_MIN_GROUP_RUNS = 5


def _prefix_ss(seq: list[float]) -> list[float]:
    """[sum of squares of seq[:k] about their own mean for k = 0..len(seq)],
    from running sums: every split's groups in one pass."""
    out, s, q = [0.0], 0.0, 0.0
    for k, v in enumerate(seq, 1):
        s += v
        q += v * v
        out.append(max(q - s * s / k, 0.0))
    return out


def inside_fraction(values: list[float]) -> tuple[float, list[int], list[int]] | None:
    """The best split of `values` by the rule above: (fraction of the sum of
    squares of their logs left inside the groups, indices of the lower group,
    of the upper). None under 3 values, for values that are all equal, or for
    one not above 0 (no log)."""
    n = len(values)
    if n < 3 or not all(v > 0 and math.isfinite(v) for v in values):
        return None
    order = sorted(range(n), key=lambda i: values[i])
    logs = [math.log(values[i]) for i in order]
    mean = math.fsum(logs) / n
    y = [v - mean for v in logs]   # centred: the sums of squares below lose no digits
    total = math.fsum(v * v for v in y)
    if total <= 0:
        return None
    low_ss, high_ss = _prefix_ss(y), _prefix_ss(y[::-1])[::-1]
    splits = range(1, n) if n >= BIMODAL_MIN_GROUP_RUNS else (1, n - 1)
    k = min(splits, key=lambda k: low_ss[k] + high_ss[k])
    return (low_ss[k] + high_ss[k]) / total, sorted(order[:k]), sorted(order[k:])


def bimodal_groups(values: list[float], min_gap: float = 0.10,
                   single_gap: float = 0.25) -> list[list[int]] | None:
    """The repetitions' two groups, [lower, upper] index lists, when they fall
    apart: the best split's inside fraction is under BIMODAL_INSIDE_MAX for
    their count (that of 20 runs above 20: a stricter threshold than theirs),
    and the gap between the groups is at least `min_gap` of the median
    (`single_gap` when one group is a single run: an outlier). None otherwise."""
    best = inside_fraction(values)
    if best is None:
        return None
    fraction, low, high = best
    limit = BIMODAL_INSIDE_MAX[min(len(values), max(BIMODAL_INSIDE_MAX))]
    v = sorted(values)
    gap = min(values[i] for i in high) - max(values[i] for i in low)
    # what is worth a warning at all: not a few percent between tight groups
    needed = single_gap if min(len(low), len(high)) == 1 else min_gap
    if fraction >= limit or gap < needed * v[len(v) // 2]:
        return None
    return [low, high]
