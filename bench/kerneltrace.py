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
steal; it is exact at each switch, and inside one stretch on a CPU it is interpolated
linearly (steal is taken as spread evenly over that stretch; say so where it is used).

`BpfTracer` loads the object (bench/fb_trace.bpf.o, built by the install) around one
run; the runner splits each fault's segments with `segment_split` and checks every
thread with `cross_check` against its own clocks.
"""
from __future__ import annotations

import os

import numpy as np

# bench/csrc/bpf/fb_trace_shared.h; the states of FB_BPF_*
UNKNOWN, ON_CPU, WAITING, ASLEEP = 0, 1, 2, 3
TRANS_DTYPE = np.dtype([("t", "<u8"), ("on_ns", "<u8"), ("wait_ns", "<u8"), ("exec_ns", "<u8"),
                        ("kdelay_ns", "<u8"), ("slot", "<u4"), ("state", "<u4")])          # struct fb_bpf_trans
THREAD_DTYPE = np.dtype([("tid", "<u4"), ("state", "<u4"), ("since", "<u8"), ("on_ns", "<u8"),
                         ("wait_ns", "<u8"), ("exec_ns", "<u8"), ("kdelay_ns", "<u8"),
                         ("migrations", "<u4"),
                         ("pad", "<u4"), ("switches_in", "<u8"), ("preempted", "<u8"),
                         ("wakeups", "<u8")])                          # struct fb_bpf_thread
TOTALS_DTYPE = np.dtype([("log_used", "<u8"), ("log_dropped", "<u8"), ("slots_used", "<u4"),
                         ("threads_dropped", "<u4"), ("locks_dropped", "<u8")])  # struct fb_bpf_totals
LOCK_KEY_DTYPE = np.dtype([("lock", "<u8"), ("stackid", "<i4"), ("flags", "<u4"),
                           ("name_kind", "<u4"), ("pad", "<u4")])      # struct fb_bpf_lock_key
LOCK_VAL_DTYPE = np.dtype([("count", "<u8"), ("wait_ns", "<u8"), ("max_ns", "<u8")])
MM_DTYPE = np.dtype([("acquisitions", "<u8"), ("wait_ns", "<u8"), ("max_ns", "<u8"),
                     ("contended", "<u8")])                           # struct fb_bpf_mm
BPF_OBJECT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fb_trace.bpf.o")


class ThreadLog:
    """One thread's entries, in time order."""

    def __init__(self, entries: np.ndarray):
        e = np.sort(entries, order=["t", "on_ns", "wait_ns"])
        self.t = e["t"].astype(np.int64)
        self.on = e["on_ns"].astype(np.int64)
        self.wait = e["wait_ns"].astype(np.int64)
        self.exec = e["exec_ns"].astype(np.int64)
        self.state = e["state"].astype(np.int64)
        # the scheduler's run_delay is stale at a switch-in (it is added just after the
        # tracepoint) and nothing adds to it while the thread runs: take the next entry's
        kd = e["kdelay_ns"].astype(np.int64)
        later = np.append(kd[1:], kd[-1:]) if kd.size else kd
        self.kdelay = np.where(self.state == ON_CPU, later, kd)
        if kd.size and self.state[-1] == ON_CPU:
            self.kdelay[-1] = -1   # still on a CPU at the end: its last wait is unknown

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
        # sum_exec_runtime inside a stretch on a CPU: linear between its two switches
        nxt = np.minimum(kk + 1, self.t.size - 1)
        span = (self.t[nxt] - self.t[kk]).astype(np.float64)
        gain = (self.exec[nxt] - self.exec[kk]).astype(np.float64)
        inside = (st == ON_CPU) & (nxt > kk) & (span > 0)
        frac = np.divide(dt, span, out=np.zeros_like(dt), where=span > 0)
        exe = self.exec[kk] + np.where(inside, np.clip(frac, 0.0, 1.0) * gain,
                                       np.where(st == ON_CPU, dt, 0.0))
        # the scheduler's run delay inside a wait: linear between its two ends
        kgain = (self.kdelay[nxt] - self.kdelay[kk]).astype(np.float64)
        kdel = self.kdelay[kk] + np.where((st == WAITING) & (nxt > kk) & (span > 0),
                                          np.clip(frac, 0.0, 1.0) * kgain,
                                          np.where(st == WAITING, dt, 0.0))
        kdel = np.where((self.kdelay[kk] < 0) | (self.kdelay[nxt] < 0), np.nan, kdel)
        nan = np.where(known, 1.0, np.nan)
        return {"on_ns": on * nan, "wait_ns": wait * nan, "exec_ns": exe * nan,
                "run_delay_ns": kdel * nan}


def thread_logs(log: np.ndarray, used: int) -> dict[int, ThreadLog]:
    """Per slot, its entries of the first `used` (the rest of the array is unwritten)."""
    e = log[:min(int(used), log.size)]
    return {int(s): ThreadLog(e[e["slot"] == s]) for s in np.unique(e["slot"])}


def split(tl: ThreadLog, a, b) -> dict:
    """Per segment [a, b] (ns) of this owner: on-CPU (CPU time, steal apart), steal,
    waiting (the scheduler's run delay) and asleep ns. Asleep is the rest, so the four
    sum to b - a."""
    x, y = tl.at(a), tl.at(b)
    total = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    on_wall = y["on_ns"] - x["on_ns"]
    cpu = np.minimum(y["exec_ns"] - x["exec_ns"], on_wall)
    wait = y["run_delay_ns"] - x["run_delay_ns"]
    return {"on_cpu_ns": cpu, "steal_ns": on_wall - cpu, "wait_ns": wait,
            "asleep_ns": total - on_wall - wait}


def cross_check(tl: ThreadLog, t0: int, t1: int, cputime_ns: float, run_delay_ns: float,
                limit: float = 0.02, floor_ns: float = 5000.0) -> dict:
    """The log's CPU time and waiting time of one thread over [t0, t1] against what
    the thread read itself over the same window (CLOCK_THREAD_CPUTIME_ID, schedstat's
    run delay). Each must agree within `limit` of the thread's own figure, or within
    `floor_ns` where that figure is tiny (a thread that never waited), else the split
    is withheld."""
    s = split(tl, np.array([t0]), np.array([t1]))
    cpu, wait = float(s["on_cpu_ns"][0]), float(s["wait_ns"][0])

    def rel(got, want):
        if want <= 0:
            return 0.0 if got <= 0 else float("inf")
        return abs(got - want) / want

    def agrees(got, want):
        return abs(got - want) <= max(limit * want, floor_ns)
    err_cpu, err_wait = rel(cpu, cputime_ns), rel(wait, run_delay_ns)
    return {"cpu_ns": cpu, "thread_cputime_ns": cputime_ns, "cpu_rel_error": err_cpu,
            "wait_ns": wait, "schedstat_run_delay_ns": run_delay_ns, "wait_rel_error": err_wait,
            "steal_ns": float(s["steal_ns"][0]), "limit": limit, "floor_ns": floor_ns,
            "ok": bool(agrees(cpu, cputime_ns) and agrees(wait, run_delay_ns))}


# ----------------------------------------------------------------------------- the tracer

class BpfUnavailable(Exception):
    """The in-kernel tracer cannot run here (why: the message)."""


def unavailable() -> str | None:
    """Why the in-kernel tracer cannot run on this host and build, or None."""
    from .native import ffi, lib
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


def log_capacity(pages: int, threads: int) -> int:
    """Entries for one run's state log. A fault costs its owner threads a few changes of
    state (uffd: the vCPU sleeps, wakes, runs; its reader the same); preemptions add more
    on a busy host. Zeroing the map at load costs about 0.2 s per million entries here,
    so it is sized to the run, with 16 entries a page and 256 a thread of headroom."""
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
    """The in-kernel tracer around one run: start() before the run's threads exist,
    add_process() for the network worker, stop() after they are joined (it reads the
    maps and closes: nothing stays loaded, attached or pinned, and a crash of this
    process detaches everything with its fds)."""

    def __init__(self, log_cap: int, stacks: bool = True):
        self.log_cap = int(log_cap)
        self.stacks = stacks
        self._b = None
        self._tgid = 0

    def start(self, tgid: int | None = None) -> None:
        from .native import ffi, lib
        why = unavailable()
        if why:
            raise BpfUnavailable(why)
        err = ffi.new("char[]", 256)
        self._tgid = tgid or os.getpid()
        b = lib.fb_bpf_open(BPF_OBJECT.encode(), self._tgid, 0, self.log_cap, int(self.stacks),
                            err, 256)
        if b == ffi.NULL:
            raise BpfUnavailable(ffi.string(err).decode())
        self._b, self._lib = b, lib   # close() may run at interpreter exit: no import then

    def add_process(self, tgid: int) -> None:
        from .native import lib
        if self._b is not None:
            lib.fb_bpf_configure(self._b, self._tgid, int(tgid))

    def stop(self) -> BpfData:
        from .native import ffi, lib
        if self._b is None:
            raise RuntimeError("BpfTracer not started")
        b = self._b
        try:
            lib.fb_bpf_stop(b)
            tot = np.zeros(1, dtype=TOTALS_DTYPE)
            lib.fb_bpf_totals(b, ffi.from_buffer(tot))
            totals = {k: int(tot[0][k]) for k in TOTALS_DTYPE.names}
            nslots = min(totals["slots_used"], lib.FB_BPF_MAX_THREADS)
            threads = np.frombuffer(ffi.buffer(lib.fb_bpf_threads(b), THREAD_DTYPE.itemsize * nslots),
                                    dtype=THREAD_DTYPE).copy()
            used = min(totals["log_used"], self.log_cap)
            log = np.frombuffer(ffi.buffer(lib.fb_bpf_log(b), TRANS_DTYPE.itemsize * used),
                                dtype=TRANS_DTYPE).copy()
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
        return BpfData(threads, log, totals, keys, vals, stacks, names, mm, self.log_cap)

    def close(self) -> None:
        if self._b is not None:
            b, self._b = self._b, None
            self._lib.fb_bpf_close(b)

    def __del__(self):
        self.close()
