"""Other busy processes during a run: CPU time spent outside the harness.

On a 2-CPU host any other busy process changes every number, so the CPU time
(user + system, from /proc/PID/stat) of every process that is not the harness
(this process and its descendants, e.g. the network worker) is sampled before
and after each measured point. A process that started during the point counts
whole; one that ended is only seen through its parent's cutime/cstime, which
are counted too (a process that exits unreaped by a watched parent is missed:
the result says it is a lower bound).
"""
from __future__ import annotations

import os
import time

# bench.validity.subject tells host warnings by how they start
WARNING_STARTS = ("other processes", "the hypervisor")
# other processes' CPU time, as a share of all CPUs over the point, that earns a warning
WARN_SHARE = 0.05
TOP = 5


def _clock_tick() -> int:
    return os.sysconf("SC_CLK_TCK")


def steal_ticks() -> int | None:
    """CPU time the hypervisor gave to others (all CPUs, /proc/stat's 8th field), in
    clock ticks; None where the kernel does not count it."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) if fields[0] == "cpu" and len(fields) > 8 else None
    except (OSError, ValueError):
        return None


def read_processes() -> dict[int, tuple[int, str, int]]:
    """{pid: (ppid, comm, CPU ticks incl. reaped children)} for every process."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                raw = f.read().decode("utf-8", "replace")
        except OSError:
            continue   # ended meanwhile
        comm = raw[raw.find("(") + 1:raw.rfind(")")]
        fields = raw[raw.rfind(")") + 2:].split()
        try:
            # fields from 'state': ppid is [1], utime [11], stime [12], cutime [13], cstime [14]
            ticks = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
            out[int(name)] = (int(fields[1]), comm, ticks)
        except (IndexError, ValueError):
            continue
    return out


def harness_pids(procs: dict, root: int) -> set[int]:
    """root and every descendant of it."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    seen, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo += children.get(pid, [])
    return seen


class NoiseSampler:
    """start() before a point's runs, stop() after: returns the record's
    `host_noise` block and the warnings to add."""

    def __init__(self, root_pid: int | None = None):
        self.root = root_pid or os.getpid()
        self._before: dict = {}
        self._t0 = 0.0
        self.busy: list[tuple[float, int, str]] = []

    def start(self) -> None:
        self._acc = {"interval": 0.0, "busy": {}, "kernel_s": 0.0, "steal": 0.0, "steal_known": True}
        self.resume()

    def resume(self) -> None:
        """Go on measuring after pause(): an interleaved sweep counts only the
        stretches in which this cell's own runs ran."""
        self._before = read_processes()
        self._steal0 = steal_ticks()
        self._t0 = time.monotonic()
        self._running = True

    def pause(self) -> None:
        if not getattr(self, "_running", False):
            return
        self._running = False
        interval = time.monotonic() - self._t0
        after = read_processes()
        steal1 = steal_ticks()
        ours = harness_pids(after, self.root) | harness_pids(self._before, self.root)
        # kernel threads (kthreadd's children: kworkers, RCU, ksoftirqd) also work for the
        # harness itself (VM teardown, page freeing, tracing): counted apart, not warned on
        kernel = harness_pids(after, 2) | harness_pids(self._before, 2)
        tick = _clock_tick()
        acc = self._acc
        acc["interval"] += interval
        for pid, (_, comm, ticks) in after.items():
            if pid in ours:
                continue
            before = self._before.get(pid)
            # same pid with less CPU than before: a new process that reused the pid
            spent = ticks - before[2] if before and before[2] <= ticks and before[1] == comm else ticks
            if spent > 0 and pid in kernel:
                acc["kernel_s"] += spent / tick
            elif spent > 0:
                acc["busy"][(pid, comm)] = acc["busy"].get((pid, comm), 0.0) + spent / tick
        if self._steal0 is None or steal1 is None:
            acc["steal_known"] = False
        else:
            acc["steal"] += (steal1 - self._steal0) / tick

    def stop(self) -> tuple[dict, list[str]]:
        self.pause()
        acc = self._acc
        interval, kernel_s = acc["interval"], acc["kernel_s"]
        busy = [(s, pid, comm) for (pid, comm), s in acc["busy"].items()]
        busy.sort(reverse=True)
        self.busy = busy   # every process outside the harness that used CPU: (s, pid, comm)
        cpus = len(os.sched_getaffinity(0)) or 1
        total = sum(s for s, _, _ in busy)
        share = total / (interval * cpus) if interval > 0 else 0.0
        # /proc/stat counts steal over every online CPU, not only the ones we may use
        steal = (None if not acc["steal_known"] or interval <= 0 else
                 acc["steal"] / (interval * (os.cpu_count() or 1)))
        block = {
            "interval_s": interval,
            "cpus": cpus,
            "other_cpu_s": total,
            "other_cpu_share": share,
            "top_processes": [{"pid": pid, "comm": comm, "cpu_s": s} for s, pid, comm in busy[:TOP]],
            "kernel_threads_cpu_s": kernel_s,
            # a virtual machine's CPUs taken by the hypervisor for others: outside load too
            "steal_share": steal,
            "note": "CPU time of processes outside the harness during this point, from /proc "
                    "(a lower bound: a process that ended unreaped is not seen); share is of "
                    "all CPUs over the interval; kernel threads are counted apart "
                    "(kernel_threads_cpu_s): they also work for the harness; steal_share: "
                    "CPU time the hypervisor gave to others, as a share of all CPUs",
        }
        warnings = []
        if share > WARN_SHARE:
            top = ", ".join(f"{comm} (pid {pid}) {s:.1f} s" for s, pid, comm in busy[:3])
            warnings.append(
                f"{WARNING_STARTS[0]} used {total:.1f} CPU-seconds ({share:.0%} of the {cpus} CPUs) "
                f"during this point: {top}; on a small host every number is affected")
        if steal is not None and steal > WARN_SHARE:
            warnings.append(f"{WARNING_STARTS[1]} gave {steal:.0%} of this machine's CPU time to "
                            "others during this point (steal time): every number is affected")
        return block, warnings
