"""The scheduler's view of a traced run: when each harness thread waited for a CPU.

A private tracefs instance (a ``tracefs.TracefsInstance``, apart from the lock
tracer's) records sched_switch and sched_wakeup for the harness's threads with the
`x86-tsc` trace clock, so event times are the same TSC the per-fault stamps use. From
them, per thread: intervals runnable-but-not-running (woken or preempted, until
switched in) and intervals on a CPU. Each fault segment is charged to the thread that
must run for it to end (its owner), and split into CPU wait, on-CPU time and the rest
(sleeping or blocked).
"""
from __future__ import annotations

import re
import threading

import numpy as np

from .breakdown import max_at_once
from .tracefs import InstanceTracer, TracefsInstance, require_events

SCHED_EVENTS = ("sched_switch", "sched_wakeup", "sched_wakeup_new")
_LINE = re.compile(r"\[(\d+)\]\s+\S+\s+(\d+): (sched_switch|sched_wakeup|sched_wakeup_new): (.*)$")
_SWITCH = re.compile(r"prev_pid=(\d+) .*prev_state=(\S+) ==> .*next_pid=(\d+)")
_WAKE = re.compile(r"\bpid=(\d+)")
# segments the resolving thread must run to end; the rest wait on the vCPU thread
RESOLVER_SEGMENTS = {"queue", "dispatch", "wait", "fetch", "install"}


class SchedTracer(InstanceTracer):
    """sched_switch/sched_wakeup(_new) of ``pids`` and their later threads, stamped
    with the TSC; start(), then stop() for the trace lines."""
    #: the TSC the per-fault stamps use, so both sets of times compare directly
    CLOCK = "x86-tsc"

    def __init__(self, pids, buffer_kb):
        self.pids = list(pids) if pids else []
        self.buffer_kb = buffer_kb
        self.name_prefix = "faultbench-sched"
        # owns every change to tracefs and its undoing (also at exit and on garbage
        # collection); it can be created again after a cleanup
        self._tf = TracefsInstance(self.name_prefix)
        self._lock = threading.RLock()

    def _start(self, tf):
        tf.mount()
        require_events("sched", SCHED_EVENTS)
        tf.create()
        tf.set_buffer_kb(self.buffer_kb)
        tf.set_clock(self.CLOCK)   # required: stamps in another clock would be misread
        # The lock tracer's options, kept from when this class borrowed its set-up:
        # raw=0 gives the text lines parse() reads; no sched field is a pointer or a
        # symbol, so hash-ptr and sym-offset change nothing here.
        tf.set_option("hash-ptr", "0")
        tf.set_option("sym-offset", "1")
        tf.set_option("raw", "0")
        if self.pids:
            tf.follow_pids(self.pids)
        tf.enable_events("sched", SCHED_EVENTS)
        tf.tracing(True)

    def stop(self, tids=None) -> tuple[list[str], int]:
        """(trace lines, events lost); everything undone. ``tids`` is not used: the
        kernel already kept only ``pids`` and their threads."""
        with self._lock:
            tf = self._tf
            try:
                tf.tracing(False)
                lost = tf.lost_events()
                lines = tf.trace_lines()
            finally:
                self.cleanup()
        return lines, lost



def parse(lines: list[str]) -> list[tuple[int, str, tuple]]:
    """(tsc, event, fields) in time order."""
    out = []
    for line in lines:
        m = _LINE.search(line)
        if not m:
            continue
        ts, ev, body = int(m.group(2)), m.group(3), m.group(4)
        if ev == "sched_switch":
            s = _SWITCH.search(body)
            if s:
                out.append((ts, ev, (int(s.group(1)), s.group(2), int(s.group(3)))))
        else:
            w = _WAKE.search(body)
            if w:
                out.append((ts, ev, (int(w.group(1)),)))
    out.sort(key=lambda e: e[0])
    return out


def intervals(events, tids: set[int]) -> tuple[dict, dict]:
    """Per tid: (starts, ends) arrays of waiting (runnable, not on a CPU) and of running."""
    waiting: dict[int, list] = {t: [] for t in tids}
    running: dict[int, list] = {t: [] for t in tids}
    runnable_since: dict[int, int] = {}
    on_cpu_since: dict[int, int] = {}
    for ts, ev, f in events:
        if ev == "sched_switch":
            prev, state, nxt = f
            if prev in tids:
                if prev in on_cpu_since:
                    running[prev].append((on_cpu_since.pop(prev), ts))
                runnable_since.pop(prev, None)   # a wakeup seen while it ran is void
                if state.startswith("R"):    # preempted: still runnable
                    runnable_since[prev] = ts
            if nxt in tids:
                if nxt in runnable_since:
                    waiting[nxt].append((runnable_since.pop(nxt), ts))
                on_cpu_since[nxt] = ts
        else:
            tid = f[0]
            if tid in tids and tid not in on_cpu_since:
                runnable_since.setdefault(tid, ts)
    return ({t: _arrays(v) for t, v in waiting.items()},
            {t: _arrays(v) for t, v in running.items()})


def _arrays(pairs):
    a = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    return a[:, 0], a[:, 1]


def cumulative(iv, t: np.ndarray) -> np.ndarray:
    """Time inside the (sorted, disjoint) intervals before each instant t."""
    starts, ends = iv
    if starts.size == 0:
        return np.zeros(t.shape, dtype=np.float64)
    dur = ends - starts
    before = np.concatenate([[0], np.cumsum(dur)])
    k = np.searchsorted(starts, t, side="right")   # intervals starting at or before t
    partial = np.where(k > 0, np.minimum(t - starts[np.maximum(k - 1, 0)], dur[np.maximum(k - 1, 0)]), 0)
    return before[np.maximum(k - 1, 0)] * (k > 0) + np.maximum(partial, 0)


def max_running_at_once(running: dict, tids: list[int]) -> int:
    t, d = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for tid in tids:
        s, e = running.get(tid, (np.empty(0, np.int64), np.empty(0, np.int64)))
        t += [s, e]
        d += [np.ones(s.size, np.int64), -np.ones(e.size, np.int64)]
    return max_at_once(np.concatenate(t), np.concatenate(d))


def segment_owners(cols: dict, seg: dict, names: dict, handles_on_vcpu: bool):
    """Per named segment: (name, owned by the resolver?, owner tid per fault, start and
    end stamps per fault). The stamps are the breakdown's own filled and cut ones, so
    these are the same segments; the owner is the thread that must run for it to end."""
    use = seg["used"]
    stamps = seg["stamps"]
    vtid, rtid = cols["vcpu_tid"][use], cols["resolver_tid"][use]
    for j, s in enumerate(seg["names"]):
        if s not in names:
            continue
        owner_is_resolver = s in RESOLVER_SEGMENTS or (s == "notify" and not handles_on_vcpu)
        owners = np.where(owner_is_resolver & (rtid != 0), rtid, vtid)
        yield s, owner_is_resolver, owners, stamps[:, j], stamps[:, j + 1]


def segment_split(cols: dict, seg: dict, names: dict, waiting: dict, running: dict,
                  handles_on_vcpu: bool, to_ns) -> dict:
    """Per named segment: mean total, CPU wait and on-CPU time of its owner thread."""
    out = {}
    for s, owner_is_resolver, owners, a, b in segment_owners(cols, seg, names, handles_on_vcpu):
        wait = np.zeros(a.size)
        run = np.zeros(a.size)
        for tid in np.unique(owners):
            sel = owners == tid
            if tid in waiting:
                wait[sel] = cumulative(waiting[tid], b[sel]) - cumulative(waiting[tid], a[sel])
                run[sel] = cumulative(running[tid], b[sel]) - cumulative(running[tid], a[sel])
        total = (b - a).astype(np.float64)
        out[names[s]] = {"total_ns": to_ns(float(total.mean())),
                         "cpu_wait_ns": to_ns(float(wait.mean())),
                         "on_cpu_ns": to_ns(float(run.mean())),
                         "owner": "resolver" if owner_is_resolver else "vcpu"}
    return out
