"""Kernel lock contention from the in-kernel tracer's maps, in the tracefs path's shape.

`kernel_locks(data)` turns what `kerneltrace.BpfTracer.stop()` read (a `BpfData`: the
`locks` map keyed by lock address, kernel stack, LCB flags and name kind, with count,
total and max wait; the stack map; the lock names; the mmap_lock counters) into the
summary `locktrace.parse_trace` makes from the text trace, so a record's
`kernel_locks` reads the same whichever tracer made it:

- `by_type` keys are the tracepoint's own rendering of the flags ("SPIN",
  "SPIN|WRITE", "MUTEX", "NONE" for none, "SPIN|0x40" for a bit it has no name for);
- a call site is "func+0xoff" of the first frame that is not lock or tracing
  internals (`locktrace._is_internal`), the return address as /proc/kallsyms places it:
  what the tracefs stacktrace trigger prints (less its "/len") and what
  `perf lock contention` prints as the caller;
- per lock, `call_site` is its heaviest site (summed wait, plus one a contention) and
  `stack` the frames from that site on of its longest single wait, as in the tracefs
  path. `call_site` is None when none of the lock's contentions came with a stack
  (`bpf_get_stackid` fails, EFAULT, for some interrupt contexts); its
  `contentions_without_stack` then equals its `count`.

Added here: `tracer: "bpf"`, a `name` per top lock (`name_from` says how it was found)
and `call_sites`, the busiest sites over all locks by count.

What BPF cannot say and the text path can (unmatched begins and ends, unparsed lines,
contentions in interrupt context) is left out rather than set to 0.
"""
from __future__ import annotations

import bisect
import collections
import errno
import os

from . import locktrace
from .locktrace import _is_internal, _kallsyms

# the lock:contention_begin flags (include/trace/events/lock.h), in the order the
# tracepoint prints them
LCB_FLAGS = ((1 << 0, "SPIN"), (1 << 1, "READ"), (1 << 2, "WRITE"), (1 << 3, "RT"),
             (1 << 4, "PERCPU"), (1 << 5, "MUTEX"))
NAME_MMAP_LOCK = 1          # FB_BPF_NAME_MMAP_LOCK (fb_trace_shared.h)
RQ_LOCK_PREFIX = "rq_lock[cpu "
STACK_FRAMES_KEPT = 8       # as the tracefs path keeps
# frames of the tracing itself, innermost first: the BPF program, the BPF run-time,
# the tracepoint's iterator. A stack starts after the last of them.
_TRACING_FRAME_PARTS = ("bpf_prog_", "bpf_trace_run", "__bpf_trace_", "__traceiter_", "trace_call_bpf")


def flag_string(flags: int) -> str:
    """The flags as lock:contention_begin prints them (__print_flags with "|"), and
    "NONE" where it prints nothing, as the tracefs path reads an empty field."""
    flags = int(flags)
    parts = []
    for mask, name in LCB_FLAGS:
        if flags & mask == mask:
            parts.append(name)
            flags &= ~mask
    if flags:
        parts.append(f"{flags:#x}")
    return "|".join(parts) or "NONE"


# ----------------------------------------------------------------------------- text symbols

class TextSymbols:
    """Kernel and module text symbols of /proc/kallsyms: an instruction address to
    "func+0xoff" (the nearest preceding function), or None where nothing precedes it
    or kallsyms shows zeros (kptr_restrict)."""

    MAX_OFFSET = 1 << 20

    def __init__(self, path: str = "/proc/kallsyms"):
        # functions (t/T, weak w/W), not the __pfx_ padding symbols before each
        self.addrs, self.names = locktrace.read_kallsyms(path, "tTwW", skip_prefix="__pfx_")

    def __call__(self, ip: int) -> str | None:
        i = bisect.bisect_right(self.addrs, ip) - 1
        if i < 0 or ip - self.addrs[i] > self.MAX_OFFSET:
            return None
        return f"{self.names[i]}+{ip - self.addrs[i]:#x}"


_text_loaded = None


def text_symbols() -> TextSymbols:
    """/proc/kallsyms' text symbols, read once a process. Read after the run: module
    addresses are those of the modules loaded now."""
    global _text_loaded
    if _text_loaded is None:
        _text_loaded = TextSymbols()
    return _text_loaded


def frames(ips, resolve_ip) -> list[str]:
    """The frames of one kernel stack (innermost first) after the tracing's own: each
    "func+0xoff", or the address in hex where it does not resolve."""
    out = []
    for ip in ips:
        s = resolve_ip(int(ip))
        out.append(s if s is not None else f"{int(ip):#x}")
    last = -1
    for i, f in enumerate(out[:8]):   # the tracing frames are the innermost few
        if any(p in f.split("+", 1)[0] for p in _TRACING_FRAME_PARTS):
            last = i
    return out[last + 1:]


def call_site(stack: list[str]) -> str | None:
    """The first frame that is not lock internals (as the tracefs path picks it)."""
    return next((f for f in stack if not _is_internal(f)), None)


def lock_name(lock: int, name_kind: int, names: dict, symbol: str | None) -> tuple:
    """(name, how it was found): mmap_lock (the traced task's own mm), a CPU's run-queue
    lock, the slab cache it lives in, a kallsyms data symbol; (None, None) otherwise."""
    if name_kind == NAME_MMAP_LOCK:
        return "mmap_lock", "mmap_lock"
    n = names.get(lock)
    if n:
        return n, ("run_queue" if n.startswith(RQ_LOCK_PREFIX) else "slab")
    if symbol:
        return symbol, "kallsyms"
    return None, None


def _name_group(name: str | None) -> str:
    if name is None:
        return "unnamed"
    return "rq_lock" if name.startswith(RQ_LOCK_PREFIX) else name


def _stack_error(stackid: int) -> str:
    return errno.errorcode.get(-stackid, str(stackid)) if stackid < 0 else "none"


# ----------------------------------------------------------------------------- the summary

def kernel_locks(data, top: int = 5, resolve_symbol=None, *, sites: int = 10,
                 resolve_ip=None) -> dict:
    """The `kernel_locks` summary of one BPF-traced run (see the module's docstring).

    `top`: how many locks `top_locks` keeps, by total wait. `resolve_symbol`:
    callable(lock address) -> str|None naming static locks; by default the data symbols
    of /proc/kallsyms where it lists them (CONFIG_KALLSYMS_ALL), else none.
    `sites`: how many call sites `call_sites` keeps, by count. `resolve_ip`:
    callable(instruction address) -> "func+0xoff"|None; by default /proc/kallsyms' text
    symbols."""
    if resolve_ip is None:
        resolve_ip = text_symbols()
    if resolve_symbol is None:
        try:
            ks = _kallsyms()
            resolve_symbol = ks.lookup if ks.complete else None
        except OSError:
            resolve_symbol = None
    keys, vals = data.lock_keys, data.lock_vals
    stack_cache: dict = {}

    def stack_of(sid: int) -> list[str]:
        if sid not in stack_cache:
            ips = data.stacks.get(sid)
            stack_cache[sid] = frames(ips, resolve_ip) if ips else []
        return stack_cache[sid]

    symbols: dict = {}

    def symbol_of(lock: int):
        if lock not in symbols:
            symbols[lock] = resolve_symbol(lock) if resolve_symbol else None
        return symbols[lock]

    by_type: dict = {}
    per_lock: dict = {}
    per_site: dict = {}
    by_name: dict = {}
    no_stack = collections.Counter()
    total = wait_total = wait_max = 0
    for k, v in zip(keys, vals):
        lock, sid, flags, kind = int(k["lock"]), int(k["stackid"]), int(k["flags"]), int(k["name_kind"])
        count, wait, mx = int(v["count"]), int(v["wait_ns"]), int(v["max_ns"])
        if not count:
            continue
        total += count
        wait_total += wait
        wait_max = max(wait_max, mx)
        ftype = flag_string(flags)
        bt = by_type.setdefault(ftype, {"count": 0, "wait_ns_total": 0})
        bt["count"] += count
        bt["wait_ns_total"] += wait
        stack = stack_of(sid) if sid >= 0 else []
        stackless = sid < 0 or not stack
        if stackless:
            no_stack[("stacks off (--no-lock-stacks)" if not getattr(data, "stacks_on", True)
                      else _stack_error(sid)) if sid < 0 else "not in the stack map"] += count
        site = call_site(stack)
        pl = per_lock.get(lock)
        if pl is None:
            pl = per_lock[lock] = {"count": 0, "wait_ns_total": 0, "wait_ns_max": 0,
                                   "types": collections.Counter(), "sites": collections.Counter(),
                                   "site_stack": {}, "kinds": collections.Counter(),
                                   "without_stack": 0}
        pl["count"] += count
        pl["without_stack"] += count if stackless else 0
        pl["wait_ns_total"] += wait
        pl["wait_ns_max"] = max(pl["wait_ns_max"], mx)
        pl["types"][ftype] += count
        pl["kinds"][kind] += count
        if site is not None:
            pl["sites"][site] += wait + count   # the tracefs path: wait + 1 a contention
            best = pl["site_stack"].get(site)
            if best is None or mx > best[0]:
                pl["site_stack"][site] = (mx, stack[stack.index(site):][:STACK_FRAMES_KEPT])
        name, _ = lock_name(lock, kind, data.names, symbol_of(lock))
        ps = per_site.get(site)
        if ps is None:
            ps = per_site[site] = {"count": 0, "wait_ns_total": 0, "wait_ns_max": 0,
                                   "types": collections.Counter(), "names": collections.Counter(),
                                   "locks": set()}
        ps["count"] += count
        ps["wait_ns_total"] += wait
        ps["wait_ns_max"] = max(ps["wait_ns_max"], mx)
        ps["types"][ftype] += count
        ps["names"][_name_group(name)] += count
        ps["locks"].add(lock)
        bn = by_name.setdefault(_name_group(name), {"count": 0, "wait_ns_total": 0})
        bn["count"] += count
        bn["wait_ns_total"] += wait

    top_locks = []
    for lock, pl in sorted(per_lock.items(), key=lambda kv: (-kv[1]["wait_ns_total"],
                                                              -kv[1]["count"], kv[0]))[:top]:
        site = pl["sites"].most_common(1)[0][0] if pl["sites"] else None
        sym = symbol_of(lock)
        name, how = lock_name(lock, pl["kinds"].most_common(1)[0][0], data.names, sym)
        top_locks.append({
            "lock": f"{lock:016x}", "symbol": sym, "name": name, "name_from": how,
            "call_site": site, "stack": pl["site_stack"][site][1] if site else [],
            # a lock seen only from contexts the unwinder could not walk has no site
            "contentions_without_stack": pl["without_stack"],
            "count": pl["count"], "wait_ns_total": pl["wait_ns_total"],
            "wait_ns_max": pl["wait_ns_max"], "type": pl["types"].most_common(1)[0][0],
        })
    call_sites = []
    for site, ps in sorted(per_site.items(), key=lambda kv: (-kv[1]["count"], -kv[1]["wait_ns_total"],
                                                              kv[0] or ""))[:sites]:
        call_sites.append({
            "call_site": site, "count": ps["count"], "wait_ns_total": ps["wait_ns_total"],
            "wait_ns_max": ps["wait_ns_max"], "type": ps["types"].most_common(1)[0][0],
            "name": ps["names"].most_common(1)[0][0], "locks": len(ps["locks"]),
        })
    mm = data.mm or {}
    rd, wr = mm.get("read") or {}, mm.get("write") or {}
    tot = data.totals or {}
    return {
        "tracer": "bpf",
        "contentions": total,
        "wait_ns_total": wait_total,
        "wait_ns_max": wait_max,
        "by_type": by_type,
        "top_locks": top_locks,
        "call_sites": call_sites,
        "by_name": by_name,
        "mmap_lock": {
            "acquisitions": rd.get("acquisitions", 0) + wr.get("acquisitions", 0),
            "wait_ns_total": rd.get("wait_ns", 0) + wr.get("wait_ns", 0),
            "wait_ns_max": max(rd.get("max_ns", 0), wr.get("max_ns", 0)),
            "contended": rd.get("contended", 0) + wr.get("contended", 0),
            "write": wr.get("acquisitions", 0),
            # not the tracefs path's meaning (start to acquired of every acquisition)
            "wait_covers": "contended acquisitions only (the lock's contention events)",
        },
        # acquisitions counted at acquire_returned (trylocks included); the waits are
        # those of contended acquisitions, from the lock's contention events
        "mmap_lock_events": ["mmap_lock_acquire_returned", "lock:contention_begin/end"],
        # contentions the locks map had no room for
        "events_lost": int(tot.get("locks_dropped", 0)),
        # the threads of the traced process(es) the scheduler hooks saw (the tracefs
        # path counts those with a lock or mmap_lock event)
        "threads_seen": int(tot.get("slots_used", 0)),
        "contentions_without_stack": sum(no_stack.values()),
        "stack_errors": dict(no_stack),
        "time_resolution_ns": 1,
        "addresses_hashed": False,
        "lock_symbols_resolvable": resolve_symbol is not None,
        # BPF takes a contention's start time after its stack unwind: no unwind time
        # is inside wait_ns_total (the tracefs path's stacktrace trigger's is)
        "stacktrace_ns_total": 0,
    }
