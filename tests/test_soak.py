"""Soak: 200 consecutive runs in one process through the library API, mixed
mechanisms and workloads at small sizes. Open fds, threads, resident memory and
KVM VMs must stay flat. The figures at runs 0, 100 and 200 are printed straight
to the terminal (pytest's capture is bypassed, so they show in CI's -q output
too; `pytest -q tests/test_soak.py` shows them alone)."""
import os

from bench.runner import execute
from helpers import make_plan

RUNS = 200
CHECKPOINTS = (0, 100, 200)
# (mechanism, vCPUs, workload, extra flags): every mechanism, every fetch path
MIX = [
    ("uffd", 1, "sequential", []),
    ("exits", 2, "random", []),
    ("async", 1, "zipf", []),
    ("uffd-many", 2, "write-mix", []),
    ("none", 1, "sequential", []),
    ("prefault", 1, "phased", []),
    ("uffd", 2, "overlap", ["--readers", "2", "--wait", "epoll"]),
    ("exits", 1, "precopy-stale", []),
    ("uffd", 1, "random", ["--resolve", "continue", "--wait", "read"]),
    ("exits", 1, "sequential", ["--fault-around", "4"]),
]
WORKER_EVERY = 25   # a network-worker run now and then: a process started and stopped
# after the first 100 runs (allocator arenas, caches warm), what may still grow:
# a leak of 40 KiB per run (one page table, one small buffer) would exceed it
RSS_GROWTH_LIMIT = 4 << 20


def figures() -> dict:
    fds = os.listdir("/proc/self/fd")
    vms = 0
    for fd in fds:
        try:
            vms += os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:kvm-vm"
        except OSError:
            pass   # the fd listdir itself used
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    with open(f"/proc/self/task/{os.getpid()}/children") as f:
        children = len(f.read().split())
    return {"fds": len(fds), "threads": len(os.listdir("/proc/self/task")), "rss": rss,
            "kvm_vms": vms, "children": children}


def plan_for_run(i: int):
    if i % WORKER_EVERY == WORKER_EVERY - 1:
        return make_plan("exits", 1, mib=2, extra=["--fetch", "worker", "--service-us", "2"])
    mech, vcpus, workload, extra = MIX[i % len(MIX)]
    return make_plan(mech, vcpus, mib=2, workload=workload, extra=extra, seed=i)


def test_200_runs_stay_flat(kvm, capsys, record_property):
    seen = {0: figures()}
    for i in range(RUNS):
        metrics, _ = execute(plan_for_run(i))
        assert metrics["content_errors"] == 0, f"run {i}"
        if i + 1 in CHECKPOINTS:
            seen[i + 1] = figures()
    with capsys.disabled():
        print(f"\nsoak: {RUNS} runs ({len(MIX)} configurations + a network worker every {WORKER_EVERY})")
        for n in CHECKPOINTS:
            f = seen[n]
            print(f"soak: after {n:3d} runs: fds {f['fds']}, threads {f['threads']}, "
                  f"RSS {f['rss'] / 2**20:.1f} MiB, KVM VMs {f['kvm_vms']}, child processes {f['children']}")
    record_property("soak_figures", seen)
    first, mid, last = (seen[n] for n in CHECKPOINTS)
    for key in ("fds", "threads", "kvm_vms", "children"):
        assert first[key] == mid[key] == last[key], (key, first, mid, last)
    assert last["kvm_vms"] == 0
    assert last["rss"] - mid["rss"] < RSS_GROWTH_LIMIT, (mid["rss"], last["rss"])
