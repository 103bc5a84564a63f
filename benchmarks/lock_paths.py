#!/usr/bin/env python3
"""Kernel lock contention of one run, seen by three paths at once: the in-kernel (BPF)
tracer, the tracefs text path, and `perf lock`.

One point (default: 16 vCPUs, uffd) runs in this process with all three attached
over the same run: `kerneltrace.BpfTracer` (read with `bpflocks.kernel_locks`),
`locktrace.LockTracer` (a private tracefs instance with a stacktrace trigger), and
`perf lock record -p PID` in a subprocess (enabled and disabled through its control
fifo around the run, read with `perf lock contention -i`, tracepoint mode). Prints
per path: contentions, total and longest wait, and the busiest call sites with their
counts, and whether each path's counts agree with BPF's within 10%.

The three run together, so each one's cost lands inside the others' waits (the
tracefs stacktrace trigger unwinds inside the contention; perf records a callchain
there): waits are not comparable across paths, counts are. --paths runs a subset.

Everything is undone, also on Ctrl-C or SIGTERM: the tracefs instance, the BPF links,
the perf process, and the tracefs mount where this script made it (perf would
otherwise mount tracefs and leave it).

    python3 benchmarks/lock_paths.py [--runs 2] [--paths bpf,tracefs,perf] [-- --vcpus 16 --mech uffd ...]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)   # this checkout's bench, not an installed one

from bench import bpflocks, kerneltrace, locktrace, tracefs   # noqa: E402
from bench.point import make_plan                             # noqa: E402
from bench.runner import TRACER_FRAMES, execute                # noqa: E402

AGREE = 0.10
W = 40   # the table's first column
PATHS = ("bpf", "tracefs", "perf")
COLUMNS = ("bpf", "tracefs", "bpf_perf_rule", "perf")
HEAD = {"bpf_perf_rule": "bpf(perf)"}


# ----------------------------------------------------------------------------- perf

class PerfLock:
    """`perf lock record -p PID` with its events off until enable(); stop() ends it
    and returns the file. cleanup() ends it whatever happened."""

    def __init__(self, pid: int, workdir: str):
        self.data = os.path.join(workdir, "perf.data")
        self.ctl = os.path.join(workdir, "ctl")
        self.ack = os.path.join(workdir, "ack")
        self.log = os.path.join(workdir, "perf.log")
        os.mkfifo(self.ctl)
        os.mkfifo(self.ack)
        self.proc = None
        self.pid = pid
        self._ctl_fd = self._ack_fd = -1

    def start(self, timeout: float = 30.0) -> None:
        with open(self.log, "w") as log:
            # its own session: a terminal's ^C reaches this script, which stops perf
            self.proc = subprocess.Popen(
                ["perf", "lock", "record", "-o", self.data, "-p", str(self.pid), "-D", "-1",
                 "--control", f"fifo:{self.ctl},{self.ack}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._ack_fd = os.open(self.ack, os.O_RDONLY | os.O_NONBLOCK)
        end = time.monotonic() + timeout
        while self._ctl_fd < 0:
            try:
                self._ctl_fd = os.open(self.ctl, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:   # ENXIO: perf has not opened its end yet
                if self.proc.poll() is not None or time.monotonic() > end:
                    raise RuntimeError(f"perf lock record did not start: {self._log_tail()}")
                time.sleep(0.05)

    def _command(self, word: str, timeout: float = 30.0) -> None:
        os.write(self._ctl_fd, word.encode() + b"\n")
        got = b""
        end = time.monotonic() + timeout
        while b"ack" not in got:
            left = end - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise RuntimeError(f"perf did not acknowledge {word!r}: {self._log_tail()}")
            r, _, _ = select.select([self._ack_fd], [], [], min(left, 0.5))
            if r:
                got += os.read(self._ack_fd, 64)

    def enable(self) -> None:
        self._command("enable")

    def disable(self) -> None:
        self._command("disable")

    def stop(self) -> str:
        """End perf (its events are off already) and return its data file."""
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            raise RuntimeError("perf lock record did not finish writing in 120 s") from None
        if self.proc.returncode not in (0, -signal.SIGINT, 130):
            raise RuntimeError(f"perf lock record exited {self.proc.returncode}: {self._log_tail()}")
        self._close_fds()
        return self.data

    def _log_tail(self) -> str:
        try:
            with open(self.log) as f:
                return f.read()[-400:].strip()
        except OSError:
            return ""

    def _close_fds(self) -> None:
        for fd in (self._ctl_fd, self._ack_fd):
            if fd >= 0:
                os.close(fd)
        self._ctl_fd = self._ack_fd = -1

    def cleanup(self) -> None:
        p = self.proc
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self._close_fds()


_UNITS = {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9}
# "         591     35.12 ms     1.23 ms     59.42 us     spinlock   try_to_wake_up+0x218"
_PERF_ROW = re.compile(r"^\s*(\d+)\s+([\d.]+)\s+(\w+)\s+([\d.]+)\s+(\w+)\s+([\d.]+)\s+(\w+)\s+(\S+)\s+(\S+)")


def perf_contention(data: str) -> dict:
    """`perf lock contention -i` (tracepoint mode): totals and counts by caller (perf
    prints one row per call stack; rows with the same caller are summed)."""
    out = subprocess.run(["perf", "lock", "contention", "-i", data, "-E", "100000", "-k", "contended"],
                         capture_output=True, text=True, timeout=600)
    if out.returncode:
        raise RuntimeError(f"perf lock contention failed: {out.stderr[-400:]}")
    sites: dict = {}
    total = wait = 0
    wait_max = 0.0
    rows = 0
    for line in (out.stdout + "\n" + out.stderr).splitlines():   # perf lock prints with pr_info
        m = _PERF_ROW.match(line)
        if not m:
            continue
        rows += 1
        n = int(m.group(1))
        w = float(m.group(2)) * _UNITS[m.group(3)]
        mx = float(m.group(4)) * _UNITS[m.group(5)]
        caller = m.group(9)
        s = sites.setdefault(caller, {"count": 0, "wait_ns_total": 0.0, "type": m.group(8), "stacks": 0})
        s["count"] += n
        s["wait_ns_total"] += w
        s["stacks"] += 1
        total += n
        wait += w
        wait_max = max(wait_max, mx)
    return {"contentions": total, "wait_ns_total": wait, "wait_ns_max": wait_max, "sites": sites,
            "rows": rows}


class PerfRule:
    """The caller `perf lock contention` (6.1, tracepoint mode) names: it skips the first
    3 entries of the callchain perf records (the tracepoint's iterator and, for a
    spinlock, its two lock frames), then every frame in the kernel's sched or lock
    text (__sched_text_start.. and __lock_text_start..). Applied to the BPF stacks it
    gives perf's sites from BPF's counts: where a lock has one lock frame (a rwlock's
    queued_write_lock_slowpath) the fixed skip passes over the real caller, and a
    scheduler function (__schedule) is never a caller."""

    SKIP = 2   # BPF's stack after the tracing frames has no iterator frame: 3 - 1

    def __init__(self, path: str = "/proc/kallsyms"):
        marks = {}
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] in ("__sched_text_start", "__sched_text_end",
                                                    "__lock_text_start", "__lock_text_end"):
                    marks[parts[2]] = int(parts[0], 16)
        self.ranges = [(marks[a], marks[b]) for a, b in (("__sched_text_start", "__sched_text_end"),
                                                         ("__lock_text_start", "__lock_text_end"))
                       if a in marks and b in marks]

    def site(self, ips, resolve_ip) -> str:
        if not ips:
            return "Unknown"
        kept = bpflocks.frames(ips, resolve_ip)
        for ip in list(ips)[len(ips) - len(kept):][self.SKIP:]:
            if not any(a <= ip < b for a, b in self.ranges):
                return resolve_ip(int(ip)) or "Unknown"
        return "Unknown"


def bpf_perf_rule_sites(d) -> dict:
    rule, resolve = PerfRule(), bpflocks.text_symbols()
    sites: dict = {}
    for k, v in zip(d.lock_keys, d.lock_vals):
        sid = int(k["stackid"])
        site = rule.site(d.stacks.get(sid, []) if sid >= 0 else [], resolve)
        s = sites.setdefault(site, {"count": 0, "wait_ns_total": 0})
        s["count"] += int(v["count"])
        s["wait_ns_total"] += int(v["wait_ns"])
    return sites


# ----------------------------------------------------------------------------- tracefs

def stop_tracefs(tracer: locktrace.LockTracer, top: int) -> dict:
    """LockTracer.stop's reading, keeping the contentions for a table by call site
    (parse_trace's summary has one site per top lock only)."""
    text, raw, lost, hashed, resolver = tracer.drain()
    summary = locktrace.parse_trace(text, raw, tids=None, addresses_hashed=hashed,
                                    resolve_symbol=resolver, top=top, events_lost=lost)
    waits = locktrace._pair(locktrace._read(text, raw, None)).waits
    sites: dict = {}
    for rec in waits:
        frames = [locktrace._strip_len(f) for f in (rec["stack"] or [])]
        site = next((f for f in frames if not locktrace._is_internal(f)), None)
        s = sites.setdefault(site, {"count": 0, "wait_ns_total": 0, "type": rec["flags"]})
        s["count"] += 1
        s["wait_ns_total"] += rec["wait"]
    summary["sites"] = sites
    # contentions that began while the same task's contention on another lock was open
    # (an interrupt's, or the tracer's own inside its handler): BPF keeps one open
    # contention a task and does not count these
    nested = 0
    by_pid = collections.defaultdict(list)
    for rec in waits:
        by_pid[rec["pid"]].append(rec)
    for recs in by_pid.values():
        recs.sort(key=lambda r: r["t0"])
        open_until, open_lock = -1, None
        for r in recs:
            if r["t0"] < open_until and r["lock"] != open_lock:
                nested += 1
                continue
            if r["t1"] > open_until:
                open_until, open_lock = r["t1"], r["lock"]
    summary["nested"] = nested
    # this script's own thread: the one whose recording window differs between paths
    summary["main_thread"] = sum(1 for rec in waits if rec["pid"] == os.getpid())
    return summary


# ----------------------------------------------------------------------------- one run


def _on_term(signum, frame):
    raise KeyboardInterrupt


def start_bpf(plan) -> kerneltrace.BpfTracer:
    """Loaded and attached, not recording yet (record_bpf starts it)."""
    t = kerneltrace.BpfTracer(kerneltrace.log_capacity(plan.memory_pages, plan.vcpus * 4 + 16))
    if hasattr(t, "begin"):   # the newer API: start() loads without recording
        t.start()
    else:
        # the older API records from the load on: tgid -1 matches no process, so its
        # own attaching (which patches kernel text under text_mutex) is not recorded
        t.start(-1)
    return t


def record_bpf(t: kerneltrace.BpfTracer, on: bool) -> None:
    """Start or pause the BPF tracer's recording of this process (through the loader's
    fb_bpf_configure, which BpfTracer keeps private), so its window is the others'."""
    t._lib.fb_bpf_configure(t._b, os.getpid() if on else 0, 0)


def one_run(plan, paths, buffer_mb: int, top: int) -> dict:
    """The three recording windows nest tightly around execute(): tracefs (its start
    ends by turning tracing on) > BPF > perf. perf is spawned first, so that the
    tracefs instance, which follows this process's forks, does not record perf."""
    pid = os.getpid()
    bpf = lt = perf = None
    work = tempfile.mkdtemp(prefix="lock_paths-")
    got: dict = {}
    try:
        if "perf" in paths:
            perf = PerfLock(pid, work)
            perf.start()
        if "bpf" in paths:
            bpf = start_bpf(plan)
        if "tracefs" in paths:
            lt = locktrace.LockTracer(pids=[pid], stacks=True, top=top, buffer_kb=buffer_mb * 1024)
            lt.start()
        if bpf:
            record_bpf(bpf, True)
        if perf:
            perf.enable()
        t0 = time.monotonic()
        metrics, _ = execute(plan)
        got["run"] = {"seconds": time.monotonic() - t0, "pages_per_s": metrics["pages_per_s"],
                      "faults": metrics.get("faults"), "guest_seconds": metrics["guest_seconds"]}
        if perf:
            perf.disable()
        if bpf:
            record_bpf(bpf, False)
        if lt:
            lt._tf.tracing(False)
        # then read each
        if lt:
            got["tracefs"] = stop_tracefs(lt, top)
            lt = None
        if bpf:
            d = bpf.stop()
            bpf = None
            got["bpf"] = bpflocks.kernel_locks(d, top=top, sites=10**6)
            got["bpf"]["sites"] = {s["call_site"]: s for s in got["bpf"]["call_sites"]}
            if perf:
                b = got["bpf"]
                got["bpf_perf_rule"] = {k: b[k] for k in ("contentions", "wait_ns_total", "wait_ns_max")}
                got["bpf_perf_rule"]["sites"] = bpf_perf_rule_sites(d)
        if perf:
            got["perf"] = perf_contention(perf.stop())
        return got
    finally:
        if perf:
            perf.cleanup()
        if lt:
            lt.cleanup()
        if bpf:
            bpf.close()
        shutil.rmtree(work, ignore_errors=True)


# ----------------------------------------------------------------------------- the table

def _agree(x, ref) -> str:
    if x is None and ref is None:
        return "-"
    x, ref = x or 0, ref or 0
    if max(x, ref) == 0:
        return "yes"
    return "yes" if abs(x - ref) <= AGREE * max(x, ref) else "NO"


def _ref(col: str, present) -> str:
    """What a column is compared with: perf with BPF's counts by perf's rule, the
    others with BPF's."""
    if col == "perf" and "bpf_perf_rule" in present:
        return "bpf_perf_rule"
    return "bpf"


def report(got: dict, paths, nsites: int) -> None:
    r = got["run"]
    print(f"run: {r['seconds']:.2f} s, guest {r['guest_seconds']:.3f} s, {r['pages_per_s']:,.0f} pages/s, "
          f"{r['faults']} faults; {os.cpu_count()} CPUs")
    present = [p for p in COLUMNS if p in got]
    cmp = [p for p in present if p not in ("bpf", "bpf_perf_rule")] if "bpf" in present else []
    head = "".join(f"{HEAD.get(p, p):>12}" for p in present)
    print(f"{'':<{W}}{head}   agree within 10% (tracefs: with bpf; perf: with bpf(perf))")
    for label, key, scale in (("contentions", "contentions", 1), ("wait (ms)", "wait_ns_total", 1e6),
                              ("longest wait (us)", "wait_ns_max", 1e3)):
        vals = {p: got[p][key] for p in present}
        cells = "".join(f"{vals[p] / scale:>12,.{0 if scale == 1 else 2}f}" for p in present)
        ag = " ".join(f"{p}:{_agree(vals[p], vals[_ref(p, present)])}" for p in cmp) if key == "contentions" else ""
        print(f"{label:<{W}}{cells}   {ag}")
    # the busiest sites over all paths
    best = collections.Counter()
    for p in present:
        for site, s in got[p]["sites"].items():
            best[site] = max(best[site], s["count"])
    print(f"\n{'top call sites by count':<{W}}{head}")
    for site, _ in best.most_common(nsites):
        counts = {p: got[p]["sites"].get(site, {}).get("count") for p in present}
        cells = "".join(f"{counts[p]:>12,}" if counts[p] is not None else f"{'-':>12}" for p in present)
        ag = " ".join(f"{p}:{_agree(counts[p], counts[_ref(p, present)])}" for p in cmp)
        own = "  (the tracefs tracer's own)" if site and site.startswith(TRACER_FRAMES) else ""
        print(f"  {str(site):<{W - 2}.{W - 3}}" + cells + "   " + ag + own)
    if "bpf" in got:
        b = got["bpf"]
        names = ", ".join(f"{k} {v['count']}" for k, v in sorted(b["by_name"].items(), key=lambda kv: -kv[1]["count"]))
        print(f"\nbpf: by lock name: {names}")
        print(f"bpf: {b['contentions_without_stack']} contentions without a stack {b['stack_errors']}, "
              f"{b['events_lost']} lost; by type: " + ", ".join(f"{k} {v['count']}" for k, v in b["by_type"].items()))
        for t in b["top_locks"]:
            print(f"bpf: top lock {t['lock']} {t['name'] or '?'} ({t['name_from']}) {t['type']}: "
                  f"{t['count']} at {t['call_site']}, {t['wait_ns_total'] / 1e6:.2f} ms")
    if "tracefs" in got:
        t = got["tracefs"]
        print(f"tracefs: {t['main_thread']} contentions of this script's own thread, "
              f"{t['nested']} inside another of the same task, "
              f"{t['events_lost']} events lost, {t['unmatched_begins']} unmatched begins, "
              f"{t['unmatched_ends']} unmatched ends, stacktrace time {t['stacktrace_ns_total'] / 1e6:.2f} ms; by type: "
              + ", ".join(f"{k} {v['count']}" for k, v in t["by_type"].items()))
    if "bpf" in got and "tracefs" in got:
        for p in ("bpf", "tracefs"):
            m = got[p]["mmap_lock"]
            print(f"{p}: mmap_lock {m['acquisitions']:,} acquisitions ({m['write']} write), "
                  f"{m['contended']} contended, wait {m['wait_ns_total'] / 1e6:.2f} ms, max {m['wait_ns_max'] / 1e3:.1f} us")
    if "perf" in got:
        pf = got["perf"]
        print(f"perf: {pf['rows']} rows (call stacks) in {len(pf['sites'])} callers")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--paths", default=",".join(PATHS), help="any of bpf,tracefs,perf (default: all three)")
    ap.add_argument("--sites", type=int, default=10, help="call sites in the table")
    ap.add_argument("--buffer-mb", type=int, default=32, help="tracefs buffer per CPU")
    ap.add_argument("--json", help="write every run's summaries here")
    ap.add_argument("plan", nargs="*", help="run_bench point flags after --: default --vcpus 16 --mech uffd")
    a = ap.parse_args()
    paths = [p for p in a.paths.split(",") if p]
    if not paths or any(p not in PATHS for p in paths):
        ap.error(f"--paths: any of {','.join(PATHS)}")
    if os.geteuid() != 0:
        print("lock_paths: needs root (BPF, tracefs, perf)", file=sys.stderr)
        return 2
    why = kerneltrace.unavailable() if "bpf" in paths else None
    if why:
        print(f"lock_paths: the BPF tracer cannot run here: {why}", file=sys.stderr)
        return 2
    if "perf" in paths and not shutil.which("perf"):
        print("lock_paths: perf is not installed", file=sys.stderr)
        return 2
    argv = a.plan or ["--vcpus", "16", "--mech", "uffd"]
    if "--no-trace-locks" not in argv:
        argv = argv + ["--no-trace-locks"]
    plan = make_plan(argv)
    # ^C and SIGTERM end the run through the clean-up below (also where SIGINT came in
    # ignored, as in a shell's background job)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _on_term)
    mounted_here = False
    runs = []
    try:
        if ("perf" in paths or "tracefs" in paths) and tracefs.tracefs_mount_count() == 0:
            # perf mounts tracefs itself and leaves it mounted: mount it here, undo below
            tracefs._mount_tracefs()
            mounted_here = True
        for i in range(a.runs):
            got = one_run(plan, paths, a.buffer_mb, top=5)
            print(f"\n=== run {i + 1} of {a.runs}: {' '.join(argv)}; paths {','.join(paths)}")
            report(got, paths, a.sites)
            runs.append(got)
    except KeyboardInterrupt:
        print("lock_paths: interrupted; everything undone", file=sys.stderr)
        return 130
    finally:
        if mounted_here:
            tracefs._umount_tracefs()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(runs, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
