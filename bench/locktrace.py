"""Kernel lock-contention measurement from tracepoints, in a private tracefs instance.

Uses lock:contention_begin/contention_end (with a stacktrace trigger on begin) and
the mmap_lock:* events, recorded into ``instances/<prefix>-<pid>-<n>`` (a
``tracefs.TracefsInstance``) so the global trace buffer and other tracers are not
disturbed.  Everything changed is undone by ``cleanup()`` (events, trigger, options,
instance, and the tracefs mount if we made it).

Timestamps: the text ``trace`` output prints microseconds only; the ``raw`` output
option prints exact nanoseconds but no event fields.  The buffer is read both ways
(tracing is off, so both reads see the same entries in the same order) and zipped;
if the two do not line up, microsecond timestamps are used and the summary says
``time_resolution_ns: 1000``.
"""

from __future__ import annotations

import bisect
import collections
import itertools
import re
import threading
from typing import NamedTuple

from .tracefs import InstanceTracer, TracefsInstance, require_events

LOCK_EVENTS = ("contention_begin", "contention_end")
# mmap_lock_released is left out: the summary never uses it, and it was a third of
# every event recorded (and of the time spent reading and parsing the trace)
MMAP_EVENTS = ("mmap_lock_start_locking", "mmap_lock_acquire_returned")

# Stack frames whose names contain one of these are lock/tracing internals, not the
# caller we want to blame.
_INTERNAL_FRAME_PARTS = (
    "spin_lock", "queued_", "_raw_", "mutex_lock", "rwsem", "down_", "lock_acquire",
    "contention", "__pv_", "osq_", "rt_mutex", "rwbase", "percpu_down", "trace_event",
    "__traceiter", "read_lock", "write_lock", "mutex_spin", "mutex_optimistic",
)


# ----------------------------------------------------------------------------- parsing

# "  python3-3090    [001] d..1.   272.548046: contention_begin: ffff888... (flags=SPIN)"
_ENTRY_RE = re.compile(
    r"^\s*(?P<comm>.*?)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+"
    r"(?:(?P<irq>[^\s\[]{4,6})\s+)?(?P<sec>\d+)\.(?P<usec>\d{6}):\s+(?P<event>[^:]+)(?::\s?(?P<rest>.*))?$"
)
_RAW_RE = re.compile(r"^(\d+) (\d+) (\d+) ")
_BEGIN_RE = re.compile(r"^(?:0x)?([0-9a-fA-F]+) \(flags=([^)]*)\)")
_END_RE = re.compile(r"^(?:0x)?([0-9a-fA-F]+) \(ret=(-?\d+)\)")
# the fields of both mmap_lock events in one search: mm, write, success (acquire only)
_MM_FIELDS_RE = re.compile(r"mm=(\S+)(?:.*? write=(\w+))?(?:.*? success=(\w+))?")
# a whole mmap_lock line in one match (they are nearly every line at scale): pid, cpu,
# sec, usec, which event, mm, write, success; anything else takes the general pattern
_MM_LINE_RE = re.compile(
    r"-(\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(\d+)\]\s+(?:[^\s\[]{4,6}\s+)?(\d+)\.(\d{6}):\s+"
    r"mmap_lock_(start_locking|acquire_returned)\s*:\s?.*?mm=(\S+)(?:.*? write=(\w+))?"
    r"(?:.*? success=(\w+))?")   # searched, not matched: no lazy scan over the comm
_LOST_RE = re.compile(r"LOST (\d+) EVENTS")
_HEADER_RE = re.compile(r"entries-in-buffer/entries-written:\s*(\d+)/(\d+)")


def _is_internal(frame: str) -> bool:
    name = frame.split("+", 1)[0]
    return any(p in name for p in _INTERNAL_FRAME_PARTS)


def _strip_len(frame: str) -> str:
    # "func+0x1a3/0x200" -> "func+0x1a3"
    return frame.split("/", 1)[0]


class Entry(NamedTuple):
    """One kept trace event (mmap_lock events are MmEntry)."""
    idx: int           # position in the buffer: the raw read's line for the same event
    pid: int
    cpu: int
    ts_text_ns: int    # the text read's microseconds, in ns
    event: str
    rest: str
    irq: str           # the irq/preempt flags column
    stack: list | None  # "<stack trace>" entries: the frames that follow


class MmEntry(NamedTuple):
    idx: int
    pid: int
    ts_text_ns: int
    acquire: bool      # acquire_returned (else start_locking)
    mm: str
    write: str | None
    success: str | None


class _Read(NamedTuple):
    entries: list
    mm_entries: list
    raw_ts: list | None   # ns timestamps by buffer position, when the raw read lines up
    unparsed: int
    lost_lines: int
    header_lost: int


def _read_raw(raw_lines) -> tuple[list, list, list]:
    raw_pid, raw_cpu, raw_ts = [], [], []
    match = _RAW_RE.match
    for line in raw_lines:
        m = match(line)
        if m:
            pid, cpu, ts_ns = m.groups()
            raw_pid.append(int(pid))
            raw_cpu.append(int(cpu))
            raw_ts.append(int(ts_ns))
    return raw_pid, raw_cpu, raw_ts


def _read(text_lines, raw_lines, tidset) -> _Read:
    """Parse the text read into kept entries; line the raw read up with it (same
    order; the kernel rounds ns to the nearest us in text) for ns timestamps."""
    raw_pid, raw_cpu, raw_ts = _read_raw(raw_lines) if raw_lines is not None else ([], [], [])
    use_raw = bool(raw_ts)

    def lines_up(idx, pid, cpu, ts_us):
        return (idx < len(raw_ts) and raw_pid[idx] == pid and raw_cpu[idx] == cpu
                and (raw_ts[idx] + 500) // 1000 == ts_us)

    entries, mm_entries = [], []
    mm_append = mm_entries.append
    nraw = len(raw_ts)
    last_kept = None  # stack frames follow the "<stack trace>" entry they belong to
    unparsed = lost_lines = 0
    header_in = header_written = None
    idx = -1
    match, mm_match = _ENTRY_RE.match, _MM_LINE_RE.search
    for line in text_lines:
        # mmap_lock lines are nearly every line at scale: first, and inline (this loop
        # runs for millions of lines at 256 vCPUs)
        if "mmap_lock_start" in line or "mmap_lock_acq" in line:
            f = mm_match(line)
            if f:
                idx += 1
                pid, cpu, sec, usec, kind, mm_id, write, success = f.groups()
                pid = int(pid)
                ts_us = int(sec) * 1_000_000 + int(usec)
                if use_raw and not (idx < nraw and raw_pid[idx] == pid and raw_cpu[idx] == int(cpu)
                                    and (raw_ts[idx] + 500) // 1000 == ts_us):
                    use_raw = False
                last_kept = None
                if tidset is None or pid in tidset:
                    mm_append(MmEntry(idx, pid, ts_us * 1000, kind == "acquire_returned",
                                      mm_id, write, success))
                continue
        if not line.strip():
            continue
        if line[0] == "#":
            m = _HEADER_RE.search(line)
            if m:
                header_in, header_written = int(m.group(1)), int(m.group(2))
            continue
        if line.startswith(" => "):
            if last_kept is not None and last_kept.event == "<stack trace>":
                last_kept.stack.append(line[4:].strip())
            continue
        m = match(line)
        if not m:
            lm = _LOST_RE.search(line)
            if lm:
                lost_lines += int(lm.group(1))
            elif "buffer started" not in line:
                unparsed += 1
            last_kept = None
            continue
        idx += 1
        # one call for every field: this loop runs for millions of lines at 256 vCPUs
        pid, cpu, sec, usec, ev, rest, irq = m.group("pid", "cpu", "sec", "usec", "event",
                                                     "rest", "irq")
        pid, cpu, ts_us = int(pid), int(cpu), int(sec) * 1_000_000 + int(usec)
        use_raw = use_raw and lines_up(idx, pid, cpu, ts_us)
        if tidset is not None and pid not in tidset:
            last_kept = None
            continue
        ev = ev.strip()
        if ev in ("mmap_lock_start_locking", "mmap_lock_acquire_returned"):
            # an mmap_lock line the dedicated pattern did not take: the same entry
            f = _MM_FIELDS_RE.search(rest or "")
            mm_id, write, success = f.groups() if f else ("?", None, None)
            mm_entries.append(MmEntry(idx, pid, ts_us * 1000, ev == "mmap_lock_acquire_returned",
                                      mm_id, write, success))
            last_kept = None
            continue
        last_kept = Entry(idx, pid, cpu, ts_us * 1000, ev, rest or "", irq or "",
                          [] if ev == "<stack trace>" else None)
        entries.append(last_kept)
    if use_raw and idx + 1 != len(raw_ts):
        use_raw = False
    header_lost = (header_written - header_in) if header_in is not None and header_written is not None else 0
    return _Read(entries, mm_entries, raw_ts if use_raw else None, unparsed, lost_lines, header_lost)


class _Paired(NamedTuple):
    waits: list               # finished contentions (dicts: lock, flags, t0, t1, wait, stack...)
    open_contentions: list    # begins that never ended
    unmatched_ends: int
    irq_contentions: int
    unparsed: int
    mm: dict
    mm_waits: list            # (pid, start, end) of every mmap_lock acquisition timed
    pids_seen: set


def _pair(read: _Read) -> _Paired:
    """Match each contention_begin with its end (and its stack), and each mmap_lock
    start_locking with its acquire_returned."""
    def ts(e):
        return read.raw_ts[e.idx] if read.raw_ts is not None else e.ts_text_ns

    pending = collections.defaultdict(list)   # pid-key -> stack of open contentions
    # (pid, cpu) -> begins awaiting their "<stack trace>" entry.  LIFO: an interrupt that
    # contends while the task's stack is being unwound records begin+stack in between.
    awaiting_stack = collections.defaultdict(list)
    waits = []
    unmatched_ends = irq_contentions = 0
    unparsed = read.unparsed
    pids_seen = set()
    for e in read.entries:
        key = (e.pid, e.cpu) if e.pid == 0 else e.pid   # idle tasks are per CPU, all pid 0
        pids_seen.add(e.pid)
        t = ts(e)
        if e.event == "contention_begin":
            m = _BEGIN_RE.match(e.rest)
            if not m:
                unparsed += 1
                continue
            addr, flags = m.group(1), m.group(2) or "NONE"
            st = pending[key]
            if st and st[-1]["lock"] == addr:
                # mutexes emit begin twice (spin, then sleep) before one end: keep the
                # first timestamp, take the later flags.
                st[-1]["flags"] = flags
                awaiting_stack[(e.pid, e.cpu)].append({"stack": ()})  # soaks up its stack
            else:
                rec = {"lock": addr, "flags": flags, "t0": t, "stack": None, "stack_t": None,
                       "irq": len(e.irq) >= 3 and e.irq[2] in "hHszZ", "pid": e.pid}
                st.append(rec)
                aw = awaiting_stack[(e.pid, e.cpu)]
                aw.append(rec)
                del aw[:-8]   # a begin whose stack never came must not pile up
        elif e.event == "<stack trace>":
            aw = awaiting_stack.get((e.pid, e.cpu))
            rec = aw.pop() if aw else None
            if rec is not None and rec["stack"] is None:
                rec["stack"] = e.stack
                rec["stack_t"] = t
        elif e.event == "contention_end":
            m = _END_RE.match(e.rest)
            if not m:
                unparsed += 1
                continue
            addr = m.group(1)
            st = pending[key]
            for i in range(len(st) - 1, -1, -1):
                if st[i]["lock"] == addr:
                    rec = st.pop(i)
                    rec["wait"] = max(0, t - rec["t0"])
                    rec["t1"] = t
                    waits.append(rec)
                    irq_contentions += rec["irq"]
                    break
            else:
                unmatched_ends += 1
        # other events (none enabled by us) are ignored

    mm = {"acquisitions": 0, "wait_ns_total": 0, "wait_ns_max": 0, "contended": 0, "write": 0}
    mm_pending = {}   # (pid, mm) -> (start ts, write)
    mm_waits = []
    for e in read.mm_entries:
        pids_seen.add(e.pid)
        t = ts(e)
        if not e.acquire:
            mm_pending[(e.pid, e.mm)] = (t, e.write == "true")
            continue
        if e.success is not None and e.success != "true":
            mm_pending.pop((e.pid, e.mm), None)
            continue
        mm["acquisitions"] += 1
        mm["write"] += e.write == "true"
        start = mm_pending.pop((e.pid, e.mm), None)
        if start is not None:
            w = max(0, t - start[0])
            mm["wait_ns_total"] += w
            mm["wait_ns_max"] = max(mm["wait_ns_max"], w)
            mm_waits.append((e.pid, start[0], t))
    open_contentions = [rec for v in pending.values() for rec in v]
    return _Paired(waits, open_contentions, unmatched_ends, irq_contentions, unparsed, mm,
                   mm_waits, pids_seen)


def _mm_contended(p: _Paired) -> int:
    """An mmap_lock acquisition is "contended" when its thread entered the rwsem slowpath
    (a task-context READ/WRITE contention_begin) between start_locking and
    acquire_returned: exact at any timestamp resolution, unlike "wait > 0"."""
    begins_by_pid = collections.defaultdict(list)
    for rec in itertools.chain(p.waits, p.open_contentions):
        if not rec["irq"] and ("READ" in rec["flags"] or "WRITE" in rec["flags"]):
            begins_by_pid[rec["pid"]].append(rec["t0"])
    for v in begins_by_pid.values():
        v.sort()
    contended = 0
    for pid, t0, t1 in p.mm_waits:
        v = begins_by_pid.get(pid)
        if v:
            i = bisect.bisect_left(v, t0)
            contended += i < len(v) and v[i] <= t1
    return contended


def _top_locks(waits: list, top: int, addresses_hashed: bool, resolve_symbol) -> tuple:
    """(contentions by lock type, the `top` locks by total wait with their call
    sites, the stacktrace trigger's own time)."""
    by_type, per_lock = {}, {}
    stack_ns = 0
    for rec in waits:
        bt = by_type.setdefault(rec["flags"], {"count": 0, "wait_ns_total": 0})
        bt["count"] += 1
        bt["wait_ns_total"] += rec["wait"]
        if rec["stack_t"] is not None and rec["stack_t"] <= rec["t1"]:
            stack_ns += rec["stack_t"] - rec["t0"]
        pl = per_lock.get(rec["lock"])
        if pl is None:
            pl = per_lock[rec["lock"]] = {"count": 0, "wait_ns_total": 0, "wait_ns_max": 0,
                                          "types": collections.Counter(),
                                          "sites": collections.Counter(), "site_stack": {}}
        pl["count"] += 1
        pl["wait_ns_total"] += rec["wait"]
        pl["wait_ns_max"] = max(pl["wait_ns_max"], rec["wait"])
        pl["types"][rec["flags"]] += 1
        frames = [_strip_len(f) for f in (rec["stack"] or [])]
        site = next((f for f in frames if not _is_internal(f)), None)
        if site is not None:
            pl["sites"][site] += rec["wait"] + 1
            best = pl["site_stack"].get(site)
            if best is None or rec["wait"] > best[0]:
                # keep the frames from the call site on, lock internals dropped
                pl["site_stack"][site] = (rec["wait"], frames[frames.index(site):][:8])
    top_locks = []
    for addr, pl in sorted(per_lock.items(), key=lambda kv: -kv[1]["wait_ns_total"])[:top]:
        site = pl["sites"].most_common(1)[0][0] if pl["sites"] else None
        sym = None
        if not addresses_hashed and resolve_symbol is not None:
            try:
                sym = resolve_symbol(int(addr, 16))
            except ValueError:
                sym = None
        top_locks.append({
            "lock": addr, "symbol": sym, "call_site": site,
            "stack": pl["site_stack"][site][1] if site else [],
            "count": pl["count"], "wait_ns_total": pl["wait_ns_total"],
            "wait_ns_max": pl["wait_ns_max"], "type": pl["types"].most_common(1)[0][0],
        })
    return by_type, top_locks, stack_ns


def parse_trace(text_lines, raw_lines=None, tids=None, addresses_hashed=True,
                resolve_symbol=None, top=5, events_lost=0) -> dict:
    """Build the summary from the text ``trace`` lines (and optionally the same buffer
    printed with the ``raw`` option, which carries nanosecond timestamps): read,
    pair, summarise.

    ``tids``: keep only events of these pids (None = all).  ``resolve_symbol``:
    callable(addr_int) -> str|None for unhashed addresses.
    """
    tidset = None if tids is None else {int(t) for t in tids}
    read = _read(text_lines, raw_lines, tidset)
    paired = _pair(read)
    paired.mm["contended"] = _mm_contended(paired)
    by_type, top_locks, stack_ns = _top_locks(paired.waits, top, addresses_hashed, resolve_symbol)
    waits = paired.waits
    return {
        "contentions": len(waits),
        "wait_ns_total": sum(r["wait"] for r in waits),
        "wait_ns_max": max((r["wait"] for r in waits), default=0),
        "by_type": by_type,
        "top_locks": top_locks,
        "unmatched_begins": len(paired.open_contentions),
        "unmatched_ends": paired.unmatched_ends,
        "mmap_lock": paired.mm,
        "events_lost": max(events_lost, read.header_lost, read.lost_lines),
        "threads_seen": len(paired.pids_seen),
        "unparsed_lines": paired.unparsed,
        "time_resolution_ns": 1 if read.raw_ts is not None else 1000,
        "addresses_hashed": bool(addresses_hashed),
        "irq_contentions": paired.irq_contentions,
        # Time from contention_begin to the end of the stacktrace trigger's unwind:
        # instrumentation cost included in wait_ns_total.
        "stacktrace_ns_total": stack_ns,
    }


# ----------------------------------------------------------------------------- symbols

def read_kallsyms(path: str, kinds: str, skip_prefix: str | None = None) -> tuple[list, list]:
    """(addresses, names) of /proc/kallsyms' symbols of these kinds (its type letters),
    sorted by address; zero addresses (kptr_restrict) left out."""
    pairs = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[1] in kinds and not (
                    skip_prefix and parts[2].startswith(skip_prefix)):
                a = int(parts[0], 16)
                if a:
                    pairs.append((a, parts[2]))
    pairs.sort()
    return [a for a, _ in pairs], [n for _, n in pairs]


class _Kallsyms:
    """Nearest-preceding data symbol lookup for static kernel lock addresses.

    Without CONFIG_KALLSYMS_ALL, /proc/kallsyms lists text symbols only (plus a few
    section markers); "marker+0x12345" would be misleading, so nothing resolves then.
    """

    MIN_DATA_SYMBOLS = 1000   # fewer means only section markers are listed
    MAX_OFFSET = 1 << 16      # a lock lies inside its variable; dense tables keep this small

    def __init__(self, path="/proc/kallsyms"):
        self.addrs, self.names = read_kallsyms(path, "dDbB")
        self.complete = len(self.addrs) >= self.MIN_DATA_SYMBOLS

    def lookup(self, addr: int):
        if not self.complete or addr < 0xffffffff80000000:   # heap/vmalloc: no symbol
            return None
        i = bisect.bisect_right(self.addrs, addr) - 1
        if i < 0:
            return None
        off = addr - self.addrs[i]
        if off > self.MAX_OFFSET:
            return None
        return self.names[i] if off == 0 else f"{self.names[i]}+{off:#x}"


_kallsyms_loaded = None


def _kallsyms():
    """/proc/kallsyms parsed once per process (75 ms a time; every traced run asked)."""
    global _kallsyms_loaded
    if _kallsyms_loaded is None:
        _kallsyms_loaded = _Kallsyms()
    return _kallsyms_loaded


# ----------------------------------------------------------------------------- tracer

class LockTracer(InstanceTracer):
    #: the instance's trace clock: ns since boot, the same on all CPUs
    CLOCK = "mono"

    def __init__(self, name_prefix="faultbench", top=5, buffer_kb=16384, stacks=True,
                 pids=None, mmap_lock=True):
        # stacks=False drops the stacktrace trigger (about 3 us per contention here,
        # which inflates short spinlock waits); pids limits recording in the kernel
        # to these tasks and what they fork or clone afterwards (event-fork)
        self.stacks = stacks
        self.mmap_lock = mmap_lock
        self.pids = list(pids) if pids else []
        self.name_prefix = name_prefix
        self.top = top
        self.buffer_kb = buffer_kb
        # the instance owns every change to tracefs and its undoing (also at exit and
        # on garbage collection); it can be created again after a cleanup
        self._tf = TracefsInstance(name_prefix)
        self._lock = threading.RLock()
        self._hashed = True
        self.mmap_events = []

    def _start(self, tf):
        tf.mount()
        require_events("lock", LOCK_EVENTS)
        tf.create()
        tf.set_buffer_kb(self.buffer_kb)
        # without mono the instance's default clock is kept; any other clock's stamps
        # would be misread if it were missing
        tf.set_clock(self.CLOCK, required=self.CLOCK != "mono")
        # Raw addresses (so static locks resolve) and "func+off/len" frames.
        self._hashed = not tf.set_option("hash-ptr", "0")
        tf.set_option("sym-offset", "1")
        tf.set_option("raw", "0")
        if self.pids:
            tf.follow_pids(self.pids)
        tf.enable_events("lock", LOCK_EVENTS)
        if self.stacks:
            tf.add_trigger("lock", "contention_begin", "stacktrace")
        self.mmap_events = []
        for ev in MMAP_EVENTS if self.mmap_lock else ():
            if tf.has_event("mmap_lock", ev):
                tf.enable_event("mmap_lock", ev)
                self.mmap_events.append(ev)
        tf.tracing(True)

    def drain(self) -> tuple:
        """Stop recording, read the buffer and undo every tracefs change: (text lines,
        raw lines, events lost, addresses hashed, static-lock resolver or None)."""
        tf = self._tf
        try:
            tf.tracing(False)
            lost = tf.lost_events()
            text = tf.trace_lines()
            raw = tf.raw_trace_lines()
            hashed = self._hashed
        finally:
            self.cleanup()
        resolver = None
        if not hashed:
            try:
                ks = _kallsyms()
                if ks.complete:
                    resolver = ks.lookup
            except OSError:
                pass
        return text, raw, lost, hashed, resolver

    def stop(self, tids) -> dict:
        with self._lock:
            if self.path is None:
                raise RuntimeError("LockTracer not started")
            text, raw, lost, hashed, resolver = self.drain()
            summary = parse_trace(text, raw, tids=tids, addresses_hashed=hashed,
                                  resolve_symbol=resolver, top=self.top, events_lost=lost)
            summary["mmap_lock_events"] = list(self.mmap_events)
            # False when kallsyms lists no data symbols: "symbol" is then always null.
            summary["lock_symbols_resolvable"] = resolver is not None
            return summary

