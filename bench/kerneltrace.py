"""Reading the in-kernel tracer's counters (bench/csrc/bpf/fb_trace.bpf.c).

The BPF object logs every change of state of each harness thread (on a CPU, runnable
but waiting, asleep) with the thread's cumulative counters at that instant: wall ns on
a CPU, wall ns waiting, and the scheduler's own sum_exec_runtime and run_delay (the
figures /proc/<pid>/task/<tid>/schedstat shows, so the cross-check compares like with
like; inside one wait, run_delay is interpolated linearly). A thread's counters
at any instant t are then exact from the last entry at or before t:

    on(t)   = on[k]   + (t - t[k])   if the state entered at t[k] is "on a CPU"
    wait(t) = wait[k] + (t - t[k])   if it is "waiting"

so a segment [a, b] of its owner splits into on-CPU, waiting and asleep (the rest)
without replaying a stream of events: a lost entry cannot skew the entries after it.

On a guest (as this host is) the hypervisor can take a CPU from under a running
thread: wall time on a CPU then exceeds CPU time. sum_exec_runtime excludes that
steal; it is exact at each switch, and inside one stretch on a CPU it is placed by a
model (ThreadLog.at: steal spread evenly; an excess charged from a stale rq clock, one
lump at the switch-in), which the per-thread cross-check tests at the window's ends.

`BpfTracer` loads the object (bench/fb_trace.bpf.o, built by the install) around one
run; the runner splits each fault's segments with `segment_split` and checks every
thread with `cross_check_threads` against its own clocks.
"""
from __future__ import annotations

import os
import time

import numpy as np

from .breakdown import max_at_once
from .native import ffi, lib
from .schedtrace import segment_owners

# bench/csrc/bpf/fb_trace_shared.h; the states of FB_BPF_*
UNKNOWN, ON_CPU, WAITING, ASLEEP = 0, 1, 2, 3
SLEEPING_PREEMPTED = 0x100   # FB_BPF_SLEEPING_PREEMPTED: a wait run_delay does not count
TRANS_DTYPE = np.dtype([("t", "<u8"), ("on_ns", "<u8"), ("wait_ns", "<u8"), ("exec_ns", "<u8"),
                        ("kdelay_ns", "<u8"), ("slot", "<u4"), ("state", "<u4")])          # struct fb_bpf_trans
THREAD_DTYPE = np.dtype([("tid", "<u4"), ("state", "<u4"), ("since", "<u8"), ("on_ns", "<u8"),
                         ("wait_ns", "<u8"), ("exec_ns", "<u8"), ("kdelay_ns", "<u8"),
                         ("migrations", "<u4"),
                         ("pad", "<u4"), ("switches_in", "<u8"), ("preempted", "<u8"),
                         ("wakeups", "<u8")])                          # struct fb_bpf_thread
TOTALS_DTYPE = np.dtype([("log_used", "<u8"), ("log_dropped", "<u8"), ("slots_used", "<u4"),
                         ("threads_dropped", "<u4"), ("locks_dropped", "<u8"),
                         ("slots_missed", "<u8")])  # struct fb_bpf_totals
LOCK_KEY_DTYPE = np.dtype([("lock", "<u8"), ("stackid", "<i4"), ("flags", "<u4"),
                           ("name_kind", "<u4"), ("pad", "<u4")])      # struct fb_bpf_lock_key
LOCK_VAL_DTYPE = np.dtype([("count", "<u8"), ("wait_ns", "<u8"), ("max_ns", "<u8")])
MM_DTYPE = np.dtype([("acquisitions", "<u8"), ("wait_ns", "<u8"), ("max_ns", "<u8"),
                     ("contended", "<u8")])                           # struct fb_bpf_mm
BPF_OBJECT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fb_trace.bpf.o")


def _repair(e: np.ndarray) -> tuple[np.ndarray, int]:
    """Switches the log did not see, put back from the scheduler's own counters.

    On this kernel some switches onto a CPU fire no sched_switch (the tracefs path saw
    it too: no idle-to-task switch on one CPU). The thread's sum_exec_runtime still
    grows, so an entry after a stretch "waiting" or "asleep" shows CPU time the log
    did not place. That stretch ended at the entry (the next change of state is a
    switch-out), so it began exec-gain earlier: a switch-in is inserted there, its
    wait already over (its run_delay is the next entry's). A switch-in after a stretch
    on a CPU means a missed switch-out: inserted exec-gain after the stretch began, as
    asleep until the run delay that ended it began. Returns the repaired entries and
    how many were inferred."""
    if e.size < 2:
        return e, 0
    st, t, ex, kd = e["state"], e["t"].astype(np.int64), e["exec_ns"].astype(np.int64), e["kdelay_ns"].astype(np.int64)
    gain = ex[1:] - ex[:-1]
    missed_in = (st[:-1] != ON_CPU) & (gain > 0) & (st[1:] != ON_CPU)
    missed_out = (st[:-1] == ON_CPU) & (st[1:] == ON_CPU)
    if not (missed_in.any() or missed_out.any()):
        return e, 0
    add = []
    for k in np.flatnonzero(missed_in):
        x = e[k + 1].copy()
        x["t"] = max(int(t[k]), int(t[k + 1] - gain[k]))
        x["exec_ns"] = ex[k]
        x["state"] = ON_CPU
        x["on_ns"] = e[k]["on_ns"]
        x["wait_ns"] = e[k]["wait_ns"] + (x["t"] - t[k] if st[k] == WAITING else 0)
        add.append(x)
    for k in np.flatnonzero(missed_out):
        x = e[k].copy()
        x["t"] = min(int(t[k + 1]), int(t[k] + max(gain[k], 0)))
        x["exec_ns"] = ex[k + 1]
        # the run delay through stretch k: the next switch-in's (stale there, so it is
        # the value after stretch k's arrival, before the next wait is added)
        x["kdelay_ns"] = kd[k + 1]
        x["state"] = ASLEEP
        x["on_ns"] = e[k]["on_ns"] + (x["t"] - t[k])
        add.append(x)
    out = np.concatenate([e, np.array(add, dtype=e.dtype)])
    out = out[np.lexsort((out["exec_ns"], out["t"]))]
    # the wall-clock counters again from the repaired states (the BPF object's own
    # counted the unseen stretch as the state it believed)
    span = np.diff(out["t"].astype(np.int64))
    st = out["state"][:-1]
    for field, state in (("on_ns", ON_CPU), ("wait_ns", WAITING)):
        out[field] = out[field][0] + np.concatenate([[0], np.cumsum(np.where(st == state, span, 0))])
    return out, len(add)


class ThreadLog:
    """One thread's entries, in time order."""

    def __init__(self, entries: np.ndarray):
        # time order (ties: the counters' order); lexsort on plain columns, as a
        # structured sort is slow at a million entries
        e = entries[np.lexsort((entries["wait_ns"], entries["on_ns"], entries["t"]))]
        # one thread's entries share a slot: the field carries the entry's flag from here on
        e["slot"] = (e["state"] & SLEEPING_PREEMPTED) != 0
        e["state"] &= 0xFF
        e, self.inferred = _repair(e)
        self.t = e["t"].astype(np.int64)
        self.on = e["on_ns"].astype(np.int64)
        self.wait = e["wait_ns"].astype(np.int64)
        self.exec = e["exec_ns"].astype(np.int64)
        self.state = e["state"].astype(np.int64)
        on = np.flatnonzero(self.state == ON_CPU)
        self.first_on = int(on[0]) if on.size else -1
        # waits the kernel's run_delay leaves out (preempted while going to sleep):
        # cumulative up to each entry, as on_ns and wait_ns are
        flagged = (e["slot"] != 0) & (self.state == WAITING)
        spans = np.append(np.diff(self.t), 0)
        self.uncounted = np.concatenate([[0], np.cumsum(np.where(flagged, spans, 0))[:-1]])
        self.flagged = flagged
        # the scheduler's run_delay is stale at a switch-in (it is added just after the
        # tracepoint) and nothing adds to it while the thread runs: take the next entry's
        kd = e["kdelay_ns"].astype(np.int64)
        later = np.append(kd[1:], kd[-1:]) if kd.size else kd
        self.kdelay = np.where(self.state == ON_CPU, later, kd)
        if kd.size and self.state[-1] == ON_CPU:
            self.kdelay[-1] = -1   # still on a CPU at the end: its last wait is unknown
        # its wake-ups: the instants it left sleep (to wait for a CPU, or straight onto one)
        woke = np.flatnonzero((self.state[:-1] == ASLEEP) & (self.state[1:] != ASLEEP)) + 1
        self.wakes = self.t[woke]

    def last_wake(self, a, b) -> np.ndarray:
        """Per interval (a, b] (ns), the thread's last wake-up inside it; NaN where none."""
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        k = np.searchsorted(self.wakes, b, side="right") - 1
        w = self.wakes[np.maximum(k, 0)].astype(np.float64) if self.wakes.size else np.zeros(b.size)
        return np.where((k >= 0) & (w > a), w, np.nan)

    def at(self, t) -> dict:
        """Cumulative counters at each instant of `t` (ns, the log's clock). Before the
        first entry nothing is known: NaN there."""
        t = np.asarray(t, dtype=np.int64)
        k = np.searchsorted(self.t, t, side="right") - 1
        known = k >= 0
        kk = np.maximum(k, 0)
        dt = (t - self.t[kk]).astype(np.float64)
        st = self.state[kk]
        on = self.on[kk] + np.where(st == ON_CPU, dt, 0.0)
        wait = self.wait[kk] + np.where(st == WAITING, dt, 0.0)
        # sum_exec_runtime inside a stretch on a CPU. Less than the stretch's wall time:
        # steal, taken as even over the stretch (linear). More: the scheduler began the
        # stretch at a stale rq clock and charged the thread from then, so the excess is
        # one lump at the switch-in and the CPU clock runs at wall rate after it.
        nxt = np.minimum(kk + 1, self.t.size - 1)
        span = (self.t[nxt] - self.t[kk]).astype(np.float64)
        gain = (self.exec[nxt] - self.exec[kk]).astype(np.float64)
        inside = (st == ON_CPU) & (nxt > kk) & (span > 0)
        frac = np.divide(dt, span, out=np.zeros_like(dt), where=span > 0)
        # A new thread's first stretch is the exception: its excess was seen added after
        # the thread read its own clock inside it (a reader of uffd-many at 8 vCPUs: 577 us),
        # so it stays linear there.
        lump = np.maximum(gain - span, 0.0)
        first = kk == self.first_on
        within = np.where((gain >= span) & ~first, np.minimum(lump + np.clip(dt, 0.0, None), gain),
                          np.clip(frac, 0.0, 1.0) * gain)
        exe = self.exec[kk] + np.where(inside, within, np.where(st == ON_CPU, dt, 0.0))
        # the scheduler's run delay inside a wait: linear between its two ends
        kgain = (self.kdelay[nxt] - self.kdelay[kk]).astype(np.float64)
        kdel = self.kdelay[kk] + np.where((st == WAITING) & (nxt > kk) & (span > 0),
                                          np.clip(frac, 0.0, 1.0) * kgain,
                                          np.where(st == WAITING, dt, 0.0))
        kdel = np.where((self.kdelay[kk] < 0) | (self.kdelay[nxt] < 0), np.nan, kdel)
        unc = self.uncounted[kk] + np.where(self.flagged[kk], dt, 0.0)
        nan = np.where(known, 1.0, np.nan)
        return {"on_ns": on * nan, "wait_ns": wait * nan, "exec_ns": exe * nan,
                "run_delay_ns": kdel * nan, "uncounted_wait_ns": unc * nan}


def thread_logs(log: np.ndarray, used: int) -> dict[int, ThreadLog]:
    """Per slot, its entries of the first `used` (the rest of the array is unwritten)."""
    e = log[:min(int(used), log.size)]
    e = e[np.argsort(e["slot"], kind="stable")]
    slots, first = np.unique(e["slot"], return_index=True)
    bounds = np.append(first, e.size)
    return {int(s): ThreadLog(e[bounds[i]:bounds[i + 1]]) for i, s in enumerate(slots)}


def split(tl: ThreadLog, a, b) -> dict:
    """Per segment [a, b] (ns) of this owner, two views of the same time.

    The log's wall clock (exact: the tracepoints' own stamps), which sums to b - a:
    on_cpu_wall_ns + wait_wall_ns + asleep_ns.
    The scheduler's accounting, as the thread's own clocks count it: on_cpu_ns
    (sum_exec_runtime, what CLOCK_THREAD_CPUTIME_ID and schedstat show) and wait_ns
    (sched_info.run_delay, schedstat's second field). The two views differ by steal
    (on a guest, a CPU taken by the hypervisor: on the wall clock, not CPU time) and by
    where the scheduler's rq clock puts a switch: measured here, reader threads' CPU
    time ran up to 4% above their wall time on a CPU (a stretch begun at a stale rq
    clock is charged from then). steal_ns is wall on a CPU beyond CPU time, where
    positive."""
    x, y = tl.at(a), tl.at(b)
    total = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    on_wall = y["on_ns"] - x["on_ns"]
    wait_wall = y["wait_ns"] - x["wait_ns"]
    cpu = y["exec_ns"] - x["exec_ns"]
    wait = y["run_delay_ns"] - x["run_delay_ns"]
    return {"on_cpu_ns": cpu, "steal_ns": np.maximum(on_wall - cpu, 0.0), "wait_ns": wait,
            "on_cpu_wall_ns": on_wall, "wait_wall_ns": wait_wall,
            "wait_uncounted_ns": y["uncounted_wait_ns"] - x["uncounted_wait_ns"],
            "asleep_ns": total - on_wall - wait_wall}


# The log's own waiting time against the kernel's run delay, per thread: within 0.4%
# for every thread in runs at 1-64 vCPUs here, but for the async resolver (3.7-13%,
# more in the log, not explained by preemptions while going to sleep, which are taken
# out). Recorded, and listed beyond this limit; it does not withhold the split.
LOG_WAIT_LIMIT = 0.02
# ... or this much a wait: the log stamps a wait at its tracepoints, the kernel at its
# rq clock, which lags by about 100 ns here (packed 1-vCPU uffd: 97 us over 1,029 waits)
LOG_WAIT_PER_WAIT_NS = 200.0


def agrees(got: float, want: float, limit: float, floor_ns: float) -> bool:
    """The cross-check's rule: within `limit` of the thread's own figure, or within
    `floor_ns` where that figure is tiny."""
    return abs(got - want) <= max(limit * want, floor_ns)


def cross_check(tl: ThreadLog, t0: int, t1: int, cputime_ns: float, run_delay_ns: float,
                limit: float = 0.02, floor_ns: float = 5000.0) -> dict:
    """The log's CPU time and waiting time of one thread over [t0, t1] against what
    the thread read itself over the same window (CLOCK_THREAD_CPUTIME_ID, schedstat's
    run delay). Each must agree within `limit` of the thread's own figure, or within
    `floor_ns` where that figure is tiny (a thread that never waited), else the split
    is withheld."""
    s = split(tl, np.array([t0]), np.array([t1]))
    cpu, wait = float(s["on_cpu_ns"][0]), float(s["wait_ns"][0])
    # less the waits the kernel leaves out of run_delay (preempted while going to sleep)
    uncounted = float(s["wait_uncounted_ns"][0])
    wall_wait = float(s["wait_wall_ns"][0]) - uncounted

    def rel(got, want):
        if want <= 0:
            return 0.0 if got <= 0 else float("inf")
        return abs(got - want) / want

    err_cpu, err_wait = rel(cpu, cputime_ns), rel(wait, run_delay_ns)
    # the independent part: the log's own waiting stretches (switch and wakeup stamps)
    # against the kernel's run-delay counter. A missed or misread change of state
    # moves the first and not the second.

    return {"cpu_ns": cpu, "thread_cputime_ns": cputime_ns, "cpu_rel_error": err_cpu,
            "wait_ns": wait, "schedstat_run_delay_ns": run_delay_ns, "wait_rel_error": err_wait,
            "log_wait_ns": wall_wait, "log_wait_rel_error": rel(wall_wait, run_delay_ns),
            "log_wait_uncounted_ns": uncounted,
            "log_waits": int(((tl.t >= t0) & (tl.t <= t1) & (tl.state == WAITING)).sum()),
            "switches_inferred": tl.inferred,
            "steal_ns": float(s["steal_ns"][0]), "limit": limit, "floor_ns": floor_ns,
            "ok": bool(agrees(cpu, cputime_ns, limit, floor_ns)
                       and agrees(wait, run_delay_ns, limit, floor_ns))}


# ----------------------------------------------------------------------------- the tracer

class BpfUnavailable(Exception):
    """The in-kernel tracer cannot run here (why: the message)."""


def unavailable() -> str | None:
    """Why the in-kernel tracer cannot run on this host and build, or None."""
    why = ffi.new("char[]", 256)
    if not lib.fb_bpf_built(why, 256):
        return ffi.string(why).decode()
    if not os.path.exists(BPF_OBJECT):
        return f"the BPF object {BPF_OBJECT} is missing (reinstall: pip install -e .)"
    if os.geteuid() != 0:
        return "loading BPF programs needs root"
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        return "the kernel has no BTF (/sys/kernel/btf/vmlinux): the CO-RE object cannot load"
    return None


def load_problem() -> str | None:
    """unavailable(), then a trial load and attach of the object (closed at once): a
    kernel can have BTF yet refuse the programs. None where it loads."""
    why = unavailable()
    if why:
        return why
    t = BpfTracer(1 << 16)
    try:
        t.start()
    except BpfUnavailable as exc:
        return str(exc)
    finally:
        t.close()
    return None


def log_capacity(pages: int, threads: int) -> int:
    """Entries for one run's state log. A fault costs its owner threads a few changes of
    state (uffd: the vCPU sleeps, wakes, runs; its reader the same); preemptions add more
    on a busy host. Zeroing the map at load costs about 0.2 s per million entries here,
    so it is sized to the run, with 16 entries a page and 256 a thread of headroom; the
    chunks the CPUs hold part-filled (under FB_BPF_LOG_CHUNK entries each, per CPU) fit
    in the 65,536-entry floor."""
    return int(min(1 << 26, max(1 << 16, 16 * pages + 256 * threads)))


class BpfData:
    """What one run left in the tracer's maps, copied out before it is closed."""

    def __init__(self, threads, log, totals, lock_keys, lock_vals, stacks, names, mm, log_cap):
        self.threads = threads        # THREAD_DTYPE, the slots used
        self.log = log                # TRANS_DTYPE, the entries written
        self.totals = totals          # dict of TOTALS_DTYPE's fields
        self.lock_keys = lock_keys    # LOCK_KEY_DTYPE
        self.lock_vals = lock_vals    # LOCK_VAL_DTYPE
        self.stacks = stacks          # stackid -> [kernel IPs], innermost first
        self.names = names            # lock address -> slab cache name
        self.mm = mm                  # "read"/"write" -> dict of MM_DTYPE's fields
        self.log_cap = log_cap

    def logs_by_tid(self) -> dict[int, ThreadLog]:
        by_slot = thread_logs(self.log, self.log.size)
        return {int(self.threads[s]["tid"]): tl for s, tl in by_slot.items()
                if s < self.threads.size and self.threads[s]["tid"]}


class BpfTracer:
    """The in-kernel tracer around one run: start() loads it, begin() before the run's
    threads exist starts recording, stop() after they are joined (it reads the
    maps and closes: nothing stays loaded, attached or pinned, and a crash of this
    process detaches everything with its fds)."""

    def __init__(self, log_cap: int, stacks: bool = True):
        self.log_cap = int(log_cap)
        self.stacks = stacks
        self._b = None
        self._tgid = 0
        self.prog_stats = None
        self.unfinished_exits = 0

    def start(self) -> None:
        """Load and attach, not yet recording (begin() starts it)."""
        why = unavailable()
        if why:
            raise BpfUnavailable(why)
        err = ffi.new("char[]", 256)
        b = lib.fb_bpf_open(BPF_OBJECT.encode(), 0, 0, self.log_cap, int(self.stacks), err, 256)
        if b == ffi.NULL:
            raise BpfUnavailable(ffi.string(err).decode())
        self._b, self._lib = b, lib   # close() may run at interpreter exit: no import then

    def begin(self, tgid2: int = 0, tgid: int | None = None) -> None:
        """Record this process (and a second one: the network worker) from now on."""
        if self._b is not None:
            self._tgid = tgid or os.getpid()
            self._lib.fb_bpf_configure(self._b, self._tgid, int(tgid2))

    def _await_exits(self, tids, timeout_s: float = 0.2) -> int:
        """Wait (at most timeout_s) until each of these threads' last logged state is
        asleep. pthread_join returns when the kernel clears a thread's tid, before its
        last switch off the CPU: stopping the log then would leave its window's end in
        a stretch with no end. Returns how many had not switched out by the timeout."""
        want = {int(t) for t in tids if t}
        deadline = time.monotonic() + timeout_s
        while True:
            n = min(int(self.peek_totals()["slots_used"]), lib.FB_BPF_MAX_THREADS)
            th = np.frombuffer(ffi.buffer(lib.fb_bpf_threads(self._b), THREAD_DTYPE.itemsize * n),
                               dtype=THREAD_DTYPE)
            live = int(np.isin(th["tid"], list(want)).sum() - (np.isin(th["tid"], list(want))
                                                               & (th["state"] == ASLEEP)).sum())
            if not live or time.monotonic() >= deadline:
                return live
            time.sleep(0.001)

    def peek_totals(self) -> dict:
        tot = np.zeros(1, dtype=TOTALS_DTYPE)
        lib.fb_bpf_totals(self._b, ffi.from_buffer(tot))
        return {k: int(tot[0][k]) for k in TOTALS_DTYPE.names}

    def stop(self, tids=()) -> BpfData:
        """Read the maps once `tids` (the run's joined threads) have switched out for
        the last time, and close."""
        if self._b is None:
            raise RuntimeError("BpfTracer not started")
        b = self._b
        try:
            self.unfinished_exits = self._await_exits(tids) if tids else 0
            lib.fb_bpf_stop(b)
            ns, cnt = ffi.new("uint64_t *"), ffi.new("uint64_t *")
            # the programs' own run time: counted only while someone holds stats on
            self.prog_stats = ({"run_ns": int(ns[0]), "run_count": int(cnt[0]), "by_program": {}}
                               if lib.fb_bpf_prog_stats(b, ns, cnt) == 0 else None)
            for i in range(64 if self.prog_stats else 0):
                name = lib.fb_bpf_prog_stat(b, i, ns, cnt)
                if name == ffi.NULL:
                    break
                self.prog_stats["by_program"][ffi.string(name).decode()] = {
                    "run_ns": int(ns[0]), "run_count": int(cnt[0])}
            totals = self.peek_totals()
            nslots = min(totals["slots_used"], lib.FB_BPF_MAX_THREADS)
            threads = np.frombuffer(ffi.buffer(lib.fb_bpf_threads(b), THREAD_DTYPE.itemsize * nslots),
                                    dtype=THREAD_DTYPE).copy()
            used = min(totals["log_used"], self.log_cap)
            log = np.frombuffer(ffi.buffer(lib.fb_bpf_log(b), TRANS_DTYPE.itemsize * used),
                                dtype=TRANS_DTYPE)
            # CPUs take the log in chunks (FB_BPF_LOG_CHUNK); a chunk's unfilled tail is zero
            log = log[log["t"] != 0].copy()
            keys = np.zeros(lib.FB_BPF_MAX_LOCKS, dtype=LOCK_KEY_DTYPE)
            vals = np.zeros(lib.FB_BPF_MAX_LOCKS, dtype=LOCK_VAL_DTYPE)
            n = lib.fb_bpf_locks(b, ffi.from_buffer(keys), ffi.from_buffer(vals), keys.size)
            keys, vals = keys[:n], vals[:n]
            stacks = {}
            ips = np.zeros(lib.FB_BPF_STACK_DEPTH, dtype=np.uint64)
            for sid in np.unique(keys["stackid"]):
                if sid >= 0 and lib.fb_bpf_stack(b, int(sid), ffi.cast("uint64_t *", ffi.from_buffer(ips))) == 0:
                    stacks[int(sid)] = [int(x) for x in ips if x]
            names = {}
            buf = ffi.new("char[]", 32)
            for lock in np.unique(keys["lock"]):
                if lib.fb_bpf_lock_name(b, int(lock), buf) == 0:
                    names[int(lock)] = ffi.string(buf).decode(errors="replace")
            mm = {}
            for w, label in ((0, "read"), (1, "write")):
                m = np.zeros(1, dtype=MM_DTYPE)
                lib.fb_bpf_mm(b, w, ffi.from_buffer(m))
                mm[label] = {k: int(m[0][k]) for k in MM_DTYPE.names}
        finally:
            self.close()
        data = BpfData(threads, log, totals, keys, vals, stacks, names, mm, self.log_cap)
        data.unfinished_exits = self.unfinished_exits
        data.stacks_on = bool(self.stacks)
        return data

    def close(self) -> None:
        if self._b is not None:
            b, self._b = self._b, None
            self._lib.fb_bpf_close(b)

    def __del__(self):
        self.close()


# ----------------------------------------------------------------------------- one run

def tsc_to_mono(totals: dict):
    """The map from the core's TSC stamps to CLOCK_MONOTONIC ns (the tracer's clock),
    through the run's two (TSC, monotonic) pairs: linear, as the kernel's clocksource
    is over a run (clocksource tsc, no NTP here). Its own rate, not tsc_khz: a wrong
    tsc_khz is a fault of the latency conversion that the checks must find, and must
    not move this split. None without both pairs."""
    t0, t1 = totals.get("pair_start_tsc"), totals.get("pair_end_tsc")
    m0, m1 = totals.get("pair_start_mono_ns"), totals.get("pair_end_mono_ns")
    if not (t0 and t1 and m0 and m1) or t1 <= t0:
        return None
    slope = (m1 - m0) / (t1 - t0)

    def f(tsc):
        return m0 + (np.asarray(tsc, dtype=np.float64) - t0) * slope
    return f


def segment_split(cols: dict, seg: dict, names: dict, logs: dict, handles_on_vcpu: bool,
                  to_mono) -> dict:
    """Per named segment of the breakdown: its owner's mean on-CPU (CPU time), steal,
    waiting (run delay) and asleep ns, from the state log's counters. The owner is the
    thread that must run for the segment to end (schedtrace.segment_owners).

    One refinement the log allows: a resolver's segment whose end was cut at g1 (the
    vCPU resumed its guest before the resolver's install ioctl returned: on a shared
    CPU the woken vCPU preempts the resolver inside it) is the resolver's only up to
    the vCPU's wake-up inside it; from there the fault ends when the vCPU runs, so that
    piece is the vCPU's (`faults_handed_to_vcpu`; its mean length and CPU time, counted in
    the segment's figures, are `vcpu_after_wake_ns` and `vcpu_after_wake_on_cpu_ns`).
    Without a vCPU wake-up in the segment the resolver keeps it all
    (`faults_cut_without_wake`; `faults_cut_vcpu_unlogged` where the vCPU has no log). A
    fault whose owner has no log is left out and counted."""
    out = {}
    used = seg["used"]
    vtid = cols["vcpu_tid"][used]
    cut = seg.get("cut_at_g1")
    keys = ("on_cpu_ns", "steal_ns", "wait_ns", "asleep_ns", "on_cpu_wall_ns", "wait_wall_ns")
    for s, owner_is_resolver, owners, sa, sb in segment_owners(cols, seg, names, handles_on_vcpu):
        a, b = to_mono(sa), to_mono(sb)
        part = {k: np.full(a.size, np.nan) for k in keys}
        # where the segment passes to the vCPU: its last wake-up inside a resolver's
        # segment whose end (and not its start) was cut at g1
        hand = np.full(a.size, np.nan)
        end_cut = np.zeros(a.size, dtype=bool)
        unlogged = np.zeros(a.size, dtype=bool)
        if owner_is_resolver and cut is not None:
            j = seg["names"].index(s)
            end_cut = cut[:, j + 1] & ~cut[:, j] & (owners != vtid)
            for tid in np.unique(vtid[end_cut]):
                tl = logs.get(int(tid))
                sel = end_cut & (vtid == tid)
                if tl is None:
                    unlogged |= sel
                else:
                    hand[sel] = tl.last_wake(a[sel], b[sel])
        handed = ~np.isnan(hand)
        mid = np.where(handed, hand, b)
        for tid in np.unique(owners):
            tl = logs.get(int(tid))
            if tl is None:
                continue
            sel = owners == tid
            got = split(tl, a[sel], mid[sel])
            for k in part:
                part[k][sel] = got[k]
        after = {k: np.zeros(a.size) for k in ("total", "on_cpu_ns")}
        for tid in np.unique(vtid[handed]):
            sel = handed & (vtid == tid)
            got = split(logs[int(tid)], hand[sel], b[sel])
            for k in part:
                part[k][sel] = part[k][sel] + got[k]
            after["total"][sel] = b[sel] - hand[sel]
            after["on_cpu_ns"][sel] = got["on_cpu_ns"]
        ok = ~np.isnan(part["on_cpu_ns"]) & ~np.isnan(part["wait_ns"])
        n = int(ok.sum())

        def mean(x):
            return float(x[ok].mean()) if n else None
        out[names[s]] = {"total_ns": mean(b - a), "on_cpu_ns": mean(part["on_cpu_ns"]),
                         "steal_ns": mean(part["steal_ns"]), "cpu_wait_ns": mean(part["wait_ns"]),
                         "asleep_ns": mean(part["asleep_ns"]),
                         "on_cpu_wall_ns": mean(part["on_cpu_wall_ns"]),
                         "cpu_wait_wall_ns": mean(part["wait_wall_ns"]),
                         "owner": "resolver" if owner_is_resolver else "vcpu",
                         "faults_split": n, "faults": int(a.size)}
        if owner_is_resolver:
            out[names[s]].update({
                # the vCPU's pieces inside the figures above (0 where not handed over)
                "faults_handed_to_vcpu": int(handed.sum()),
                "vcpu_after_wake_ns": mean(after["total"]),
                "vcpu_after_wake_on_cpu_ns": mean(after["on_cpu_ns"]),
                "faults_cut_without_wake": int((end_cut & ~handed & ~unlogged).sum()),
                "faults_cut_vcpu_unlogged": int(unlogged.sum())})
    return out


def on_cpu_at_once_max(data: BpfData, tids) -> int:
    """Most of these threads on a CPU at once, from their logged switches."""
    slots = {int(s) for s, t in enumerate(data.threads["tid"]) if int(t) in set(tids)}
    e = data.log[np.isin(data.log["slot"], list(slots))]
    e = e[np.lexsort((e["t"], e["slot"]))]
    on = e["state"] == ON_CPU
    # each stretch on a CPU ends at its slot's next entry (or, for the last, never seen)
    same_next = np.append(e["slot"][1:] == e["slot"][:-1], False)
    starts = e["t"][on]
    ends = np.append(e["t"][1:], 0)[on & same_next]
    return max_at_once(np.concatenate([starts, ends]).astype(np.int64),
                       np.concatenate([np.ones(starts.size), -np.ones(ends.size)]).astype(np.int64))


def cross_check_threads(threads: list[dict], logs: dict, limit: float = 0.02,
                        floor_ns: float = 5000.0) -> dict:
    """Every harness thread's CPU time and run delay from the log over its measured
    window against its own CLOCK_THREAD_CPUTIME_ID and schedstat (the core reads both,
    with CLOCK_MONOTONIC beside them, at the window's ends). ok: every thread agrees."""
    rows = []
    for t in threads:
        if not t.get("tid"):
            continue   # never started
        if not t.get("mono_end_ns") or not t.get("mono_mark_ns"):
            rows.append({"role": t["role"], "index": t["index"], "tid": t["tid"], "ok": False,
                         "reason": "the thread read no clock at a window end: schedstat unreadable, or "
                                   "a switch fell between its two reads in each of 16 tries"})
            continue
        tl = logs.get(int(t["tid"]))
        if tl is None:
            rows.append({"role": t["role"], "index": t["index"], "tid": t["tid"], "ok": False,
                         "reason": "no entry in the tracer's log"})
            continue
        if not t["sched_ok"]:
            rows.append({"role": t["role"], "index": t["index"], "tid": t["tid"], "ok": False,
                         "reason": "schedstat unread at a window end: unreadable, or a switch fell "
                                   "between its two reads in each of 16 tries"})
            continue
        c = cross_check(tl, int(t["mono_mark_ns"]), int(t["mono_end_ns"]), float(t["sched_run_ns"]),
                        float(t["sched_wait_ns"]), limit, floor_ns)
        unknown = [k for k in ("cpu_ns", "wait_ns") if np.isnan(c[k])]
        ok = c["ok"] and not unknown
        # a record is standard JSON: a figure that is not finite (NaN where the log holds
        # none at a window end, inf for an error against a zero) is null
        row = {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
               for k, v in {"role": t["role"], "index": t["index"], "tid": t["tid"], **c,
                            "ok": bool(ok)}.items()}
        if unknown:
            row["reason"] = ("the log has no " + " or ".join(unknown) + " at the window's ends "
                             "(no entry before its start, or still on a CPU when the log ended)")
        rows.append(row)
    bad = [r for r in rows if not r["ok"]]

    def worst(key):
        v = [r[key] for r in rows if r.get(key) is not None and np.isfinite(r[key])]
        return max(v) if v else None
    # the log's own waiting against run_delay: independent of the split's figures, kept
    # apart from `ok` (it does not withhold the split): see docs/tracing.md for what it shows
    wall_far = [r for r in rows if r.get("log_wait_ns") is not None
                and r.get("schedstat_run_delay_ns") is not None
                and abs(r["log_wait_ns"] - r["schedstat_run_delay_ns"])
                > max(LOG_WAIT_LIMIT * r["schedstat_run_delay_ns"], floor_ns,
                      LOG_WAIT_PER_WAIT_NS * r["log_waits"])]
    return {"threads_checked": len(rows), "threads_failed": len(bad), "ok": bool(rows) and not bad,
            "log_wait_limit": LOG_WAIT_LIMIT, "log_wait_per_wait_ns": LOG_WAIT_PER_WAIT_NS,
            "log_wait_threads_beyond_limit": [{k: r[k] for k in ("role", "index", "log_wait_rel_error")}
                                              for r in wall_far],
            "worst_log_wait_rel_error": worst("log_wait_rel_error"),
            "switches_inferred": int(sum(r.get("switches_inferred", 0) for r in rows)),
            "limit": limit, "floor_ns": floor_ns,
            "worst_cpu_rel_error": worst("cpu_rel_error"),
            "worst_wait_rel_error": worst("wait_rel_error"),
            "failed": bad[:8], "threads": rows}
