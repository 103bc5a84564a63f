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


def bimodal_groups(values: list[float], min_gap: float = 0.10,
                   single_gap: float = 0.25) -> list[list[int]] | None:
    """Split repetitions into two groups when they fall apart: the largest gap
    between sorted values exceeds `min_gap` of the median (`single_gap` when one
    group is a single run) and is larger than the spread inside each group put
    together. Returns the index groups or None."""
    if len(values) < 3:
        return None
    order = sorted(range(len(values)), key=lambda i: values[i])
    v = [values[i] for i in order]
    gaps = [v[k + 1] - v[k] for k in range(len(v) - 1)]
    k = max(range(len(gaps)), key=gaps.__getitem__)
    low, high = v[:k + 1], v[k + 1:]
    median = v[len(v) // 2]
    inside = (low[-1] - low[0]) + (high[-1] - high[0])
    # a lone run counts as a mode of its own only when far off (placement gives 2x)
    needed = single_gap if min(len(low), len(high)) == 1 else min_gap
    if gaps[k] < needed * median or gaps[k] <= inside:
        return None
    return [sorted(order[:k + 1]), sorted(order[k + 1:])]
