"""bench.bpflocks: the BPF tracer's lock maps as the tracefs path's `kernel_locks`
summary. Synthetic maps (flags, ordering, call sites, names, and the same contentions
through both paths giving the same summary), then the real object around a small real
run (root, clang, libbpf-dev, BTF and /dev/kvm; skips naming what is missing)."""
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from bench import bpflocks, kerneltrace as kt, locktrace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TRACING = ["bpf_prog_6deef7357e7b4530_fb_contention_begin", "bpf_trace_run2",
           "__traceiter_contention_begin"]


class Syms:
    """A fake kernel text: each function at 0x10000 * (its index + 1), 0x1000 long."""

    def __init__(self):
        self.names: list[str] = []

    def ip(self, name: str, off: int) -> int:
        if name not in self.names:
            self.names.append(name)
        return 0xffffffff81000000 + 0x10000 * (self.names.index(name) + 1) + off

    def __call__(self, ip: int):
        i, off = divmod(ip - 0xffffffff81000000, 0x10000)
        return f"{self.names[i - 1]}+{off:#x}" if 1 <= i <= len(self.names) and off < 0x1000 else None


def _data(rows, names=None, mm=None, totals=None):
    """rows: (lock, stack frames [(func, off)] innermost first, or None, or a negative
    errno, flags, name_kind, count, wait_ns, max_ns). Each distinct stack gets an id."""
    syms = Syms()
    keys = np.zeros(len(rows), dtype=kt.LOCK_KEY_DTYPE)
    vals = np.zeros(len(rows), dtype=kt.LOCK_VAL_DTYPE)
    stacks, ids = {}, {}
    for i, (lock, frames, flags, kind, count, wait, mx) in enumerate(rows):
        if isinstance(frames, int):
            sid = frames
        else:
            t = tuple(frames)
            if t not in ids:
                ids[t] = len(ids)
                stacks[ids[t]] = [syms.ip(f, o) for f, o in TRACING_FRAMES + list(frames)]
            sid = ids[t]
        keys[i] = (lock, sid, flags, kind, 0)
        vals[i] = (count, wait, mx)
    d = kt.BpfData(None, None, totals or {"slots_used": 3, "locks_dropped": 0}, keys, vals, stacks,
                   names or {}, mm or {"read": {}, "write": {}}, 0)
    return d, syms


TRACING_FRAMES = [(f, 0x20) for f in TRACING]
SPIN = [("__pv_queued_spin_lock_slowpath", 0x10e), ("_raw_spin_lock", 0x3b)]
RQ, UFFD, KVM, MM, STATIC = 0xffff888627c2fb80, 0xffff88811a02b9c0, 0xffff88810ddf2000, 0xffff8881030086f8, 0xffffffff82e74a20


def test_flags_read_as_the_tracepoint_prints_them():
    assert bpflocks.flag_string(0) == "NONE"
    assert bpflocks.flag_string(1) == "SPIN"
    assert bpflocks.flag_string(1 | 4) == "SPIN|WRITE"
    assert bpflocks.flag_string(2) == "READ"
    assert bpflocks.flag_string(1 | 32) == "SPIN|MUTEX"
    assert bpflocks.flag_string(32) == "MUTEX"
    assert bpflocks.flag_string(1 | 0x40) == "SPIN|0x40"
    assert bpflocks.flag_string(0xc0) == "0xc0"


ROWS = [
    # the run-queue lock, from two sites: try_to_wake_up has more wait
    (RQ, SPIN + [("try_to_wake_up", 0x218), ("pollwake", 0x73)], 1, 0, 10, 9000, 3000),
    (RQ, SPIN + [("__task_rq_lock", 0x35), ("try_to_wake_up", 0x43c)], 1, 0, 12, 4000, 900),
    # the userfaultfd context's wait-queue lock: the most wait in all
    (UFFD, SPIN + [("handle_userfault", 0x264), ("__handle_mm_fault", 0xa6c)], 1, 0, 20, 50000, 8000),
    (UFFD, [("__pv_queued_spin_lock_slowpath", 0x10e), ("_raw_spin_lock_irqsave", 0x4d),
            ("__wake_up", 0x1d), ("handle_userfault", 0x3c1)], 1, 0, 5, 2000, 1000),
    # KVM's mmu_lock, written
    (KVM, [("queued_write_lock_slowpath", 0xc4), ("paging64_page_fault", 0x171),
           ("kvm_mmu_do_page_fault", 0x145)], 1 | 4, 0, 7, 7000, 1500),
    # mmap_lock (the traced task's own), written
    (MM, [("rwsem_down_write_slowpath", 0x3cc), ("down_write_killable", 0x5c),
          ("vm_mmap_pgoff", 0xe9)], 4, 1, 1, 500, 500),
    # a static mutex with no name in the maps; and a contention whose stack failed
    (STATIC, [("__mutex_lock.constprop.0", 0x1f1), ("jump_label_update", 0x6c)], 32, 0, 2, 100, 60),
    (RQ, -14, 1, 0, 3, 300, 200),
]
NAMES = {RQ: "rq_lock[cpu 0]", UFFD: "userfaultfd_ctx_cache", KVM: "kmalloc-cg-4k"}


def test_summary_totals_types_and_top_order():
    d, syms = _data(ROWS, NAMES)
    kl = bpflocks.kernel_locks(d, top=3, resolve_symbol=lambda a: None, resolve_ip=syms)
    assert kl["tracer"] == "bpf"
    assert kl["contentions"] == 60
    assert kl["wait_ns_total"] == 72900 and kl["wait_ns_max"] == 8000
    assert kl["by_type"] == {"SPIN": {"count": 50, "wait_ns_total": 65300},
                             "SPIN|WRITE": {"count": 7, "wait_ns_total": 7000},
                             "WRITE": {"count": 1, "wait_ns_total": 500},
                             "MUTEX": {"count": 2, "wait_ns_total": 100}}
    # by total wait: UFFD 52000, RQ 13300, KVM 7000 (the top 3 of 5)
    assert [t["lock"] for t in kl["top_locks"]] == [f"{UFFD:016x}", f"{RQ:016x}", f"{KVM:016x}"]
    assert kl["top_locks"][1]["count"] == 25 and kl["top_locks"][1]["wait_ns_max"] == 3000
    assert kl["contentions_without_stack"] == 3 and kl["stack_errors"] == {"EFAULT": 3}
    assert kl["events_lost"] == 0 and kl["threads_seen"] == 3
    assert kl["time_resolution_ns"] == 1 and kl["addresses_hashed"] is False
    assert kl["stacktrace_ns_total"] == 0


def test_call_site_skips_tracing_and_lock_frames_and_each_lock_takes_its_heaviest():
    d, syms = _data(ROWS, NAMES)
    kl = bpflocks.kernel_locks(d, top=10, resolve_symbol=lambda a: None, resolve_ip=syms)
    top = {t["lock"]: t for t in kl["top_locks"]}
    rq = top[f"{RQ:016x}"]
    assert rq["call_site"] == "try_to_wake_up+0x218"   # 9000 + 10 against 4000 + 12
    assert rq["stack"] == ["try_to_wake_up+0x218", "pollwake+0x73"]
    assert rq["type"] == "SPIN"
    assert top[f"{UFFD:016x}"]["call_site"] == "handle_userfault+0x264"
    assert top[f"{KVM:016x}"]["call_site"] == "paging64_page_fault+0x171"
    assert top[f"{KVM:016x}"]["type"] == "SPIN|WRITE"
    assert top[f"{MM:016x}"]["call_site"] == "vm_mmap_pgoff+0xe9"   # rwsem and down_ frames are internal
    assert top[f"{STATIC:016x}"]["call_site"] == "jump_label_update+0x6c"
    # the table of call sites, by count over all locks; the stackless ones under None
    sites = {s["call_site"]: s for s in kl["call_sites"]}
    assert [s["call_site"] for s in kl["call_sites"]][:3] == ["handle_userfault+0x264", "__task_rq_lock+0x35",
                                                             "try_to_wake_up+0x218"]
    assert sites["__wake_up+0x1d"]["name"] == "userfaultfd_ctx_cache"
    assert sites[None]["count"] == 3 and sites[None]["name"] == "rq_lock"
    assert rq["contentions_without_stack"] == 3 and top[f"{UFFD:016x}"]["contentions_without_stack"] == 0


def test_a_lock_seen_only_without_a_stack_says_so_instead_of_a_site():
    rows = ROWS + [(0xffff888100000040, -14, 1, 0, 4, 900000, 500000)]   # the most wait, no stack
    d, syms = _data(rows, NAMES)
    kl = bpflocks.kernel_locks(d, top=2, resolve_symbol=lambda a: None, resolve_ip=syms)
    first = kl["top_locks"][0]
    assert first["lock"] == "ffff888100000040"
    assert first["call_site"] is None and first["stack"] == []
    assert first["contentions_without_stack"] == first["count"] == 4
    assert kl["stack_errors"] == {"EFAULT": 7}
    assert len(bpflocks.kernel_locks(d, resolve_symbol=lambda a: None, resolve_ip=syms, sites=2)["call_sites"]) == 2


def test_lock_names_and_how_they_were_found():
    d, syms = _data(ROWS, NAMES)
    kl = bpflocks.kernel_locks(d, top=10, resolve_ip=syms,
                               resolve_symbol=lambda a: "text_mutex" if a == STATIC else None)
    top = {t["lock"]: t for t in kl["top_locks"]}
    assert (top[f"{RQ:016x}"]["name"], top[f"{RQ:016x}"]["name_from"]) == ("rq_lock[cpu 0]", "run_queue")
    assert (top[f"{UFFD:016x}"]["name"], top[f"{UFFD:016x}"]["name_from"]) == ("userfaultfd_ctx_cache", "slab")
    assert (top[f"{MM:016x}"]["name"], top[f"{MM:016x}"]["name_from"]) == ("mmap_lock", "mmap_lock")
    st = top[f"{STATIC:016x}"]
    assert (st["name"], st["name_from"], st["symbol"]) == ("text_mutex", "kallsyms", "text_mutex")
    assert kl["by_name"]["rq_lock"]["count"] == 25
    # without a symbol the static lock stays unnamed
    kl = bpflocks.kernel_locks(d, top=10, resolve_ip=syms, resolve_symbol=lambda a: None)
    st = {t["lock"]: t for t in kl["top_locks"]}[f"{STATIC:016x}"]
    assert st["name"] is None and st["name_from"] is None
    assert kl["by_name"]["unnamed"]["count"] == 2


def test_mmap_lock_in_the_tracefs_paths_shape():
    mm = {"read": {"acquisitions": 100, "wait_ns": 5000, "max_ns": 300, "contended": 2},
          "write": {"acquisitions": 4, "wait_ns": 900, "max_ns": 700, "contended": 1}}
    d, syms = _data(ROWS[:1], NAMES, mm=mm, totals={"slots_used": 2, "locks_dropped": 7})
    kl = bpflocks.kernel_locks(d, resolve_symbol=lambda a: None, resolve_ip=syms)
    assert kl["mmap_lock"] == {"acquisitions": 104, "wait_ns_total": 5900, "wait_ns_max": 700,
                               "contended": 3, "write": 4,
                               "wait_covers": "contended acquisitions only (the lock's contention events)"}
    assert kl["events_lost"] == 7


def test_an_unresolved_address_prints_in_hex_and_is_never_a_tracing_frame():
    d, syms = _data(ROWS[:1], NAMES)
    d.stacks[0][0] = 0xffffffffc0001234   # the BPF program, unknown to kallsyms once unloaded
    kl = bpflocks.kernel_locks(d, resolve_symbol=lambda a: None, resolve_ip=syms)
    assert kl["top_locks"][0]["call_site"] == "try_to_wake_up+0x218"
    assert bpflocks.frames([0xffffffffc0001234, syms.ip("foo", 3)], syms) == ["0xffffffffc0001234", "foo+0x3"]


def _text_trace(contentions):
    """The tracefs text trace of these contentions (pid, lock, flags, frames, t0_us, t1_us)."""
    lines = []
    for pid, lock, flags, frames, t0, t1 in contentions:
        ts = f"{t0 // 1_000_000}.{t0 % 1_000_000:06d}"
        te = f"{t1 // 1_000_000}.{t1 % 1_000_000:06d}"
        lines.append(f"         python3-{pid}    [000] ...1.   {ts}: contention_begin: {lock:016x} (flags={flags})")
        lines.append(f"         python3-{pid}    [000] ...1.   {ts}: <stack trace>")
        lines.append(" => trace_event_raw_event_contention_begin+0x4b/0x90")
        lines += [f" => {f}+{o:#x}/0x100" for f, o in frames]
        lines.append(f"         python3-{pid}    [000] ...1.   {te}: contention_end: {lock:016x} (ret=0)")
    return lines


def test_same_contentions_same_summary_as_the_tracefs_path():
    """Every contention of ROWS (the stacked ones) written as a text trace and read by
    locktrace.parse_trace, against kernel_locks on the same contentions in maps."""
    rng = np.random.default_rng(1)
    flags = {1: "SPIN", 5: "SPIN|WRITE", 4: "WRITE", 32: "MUTEX"}
    events, rows = [], []
    t = 1_000_000
    for lock, frames, fl, kind, count, _, _ in ROWS:
        if isinstance(frames, int):
            continue
        waits = [int(x) for x in rng.integers(1, 400, size=count)]   # us
        for i, w in enumerate(waits):
            events.append((100 + i % 3, lock, flags[fl], frames, t, t + w))
            t += w + 5
        rows.append((lock, frames, fl, kind, count, sum(waits) * 1000, max(waits) * 1000))
    d, syms = _data(rows, NAMES)
    bpf = bpflocks.kernel_locks(d, top=5, resolve_symbol=lambda a: None, resolve_ip=syms)
    txt = locktrace.parse_trace(_text_trace(events), addresses_hashed=False, top=5)
    for k in ("contentions", "wait_ns_total", "wait_ns_max", "by_type"):
        assert bpf[k] == txt[k], k
    fields = ("lock", "call_site", "stack", "count", "wait_ns_total", "wait_ns_max", "type")
    assert [{f: x[f] for f in fields} for x in bpf["top_locks"]] == \
           [{f: x[f] for f in fields} for x in txt["top_locks"]]
    assert set(txt) - set(bpf) == {"unmatched_begins", "unmatched_ends", "unparsed_lines", "irq_contentions"}


def test_text_symbols_from_a_kallsyms_file(tmp_path):
    p = tmp_path / "kallsyms"
    p.write_text("ffffffff81000ff0 t __pfx_foo\nffffffff81001000 T foo\nffffffff81001200 t bar\t[kvm]\n"
                 "ffffffff82000000 D some_data\n")
    s = bpflocks.TextSymbols(str(p))
    assert s(0xffffffff81001010) == "foo+0x10"
    assert s(0xffffffff81000ff8) is None   # only a __pfx_ padding symbol precedes it
    assert s(0xffffffff81001234) == "bar+0x34"
    assert s(0xffffffff81000000) is None


# ----------------------------------------------------------------------------- the real kernel

def _why_not_real() -> str | None:
    if os.geteuid() != 0:
        return "loading BPF programs needs root"
    if not shutil.which("clang"):
        return "clang is not installed (Debian package clang)"
    if not os.path.exists("/usr/include/bpf/libbpf.h"):
        return "libbpf headers are missing (Debian package libbpf-dev)"
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        return "the kernel has no BTF (/sys/kernel/btf/vmlinux): CO-RE cannot load"
    return kt.unavailable()


def test_real_run_gives_contentions_with_resolved_call_sites(kvm):
    """The object (as the build made it) around one 8-vCPU uffd run on this host: its
    maps read through kernel_locks give contentions whose call sites resolve in
    /proc/kallsyms and whose locks are named the ways the module says."""
    why = _why_not_real()
    if why:
        pytest.skip(why)
    from bench.point import make_plan
    from bench.runner import execute
    plan = make_plan(["--vcpus", "8", "--mech", "uffd", "--mem-per-vcpu", "2", "--no-trace-locks"])
    tracer = kt.BpfTracer(kt.log_capacity(plan.memory_pages, 64))
    if hasattr(tracer, "begin"):   # the API that loads first and records from begin()
        tracer.start()
        tracer.begin(tgid=os.getpid())
    else:
        tracer.start(os.getpid())
    try:
        execute(plan)
        data = tracer.stop()
    finally:
        tracer.close()
    kl = bpflocks.kernel_locks(data)
    assert kl["tracer"] == "bpf"
    assert kl["contentions"] > 0, kl
    assert kl["mmap_lock"]["acquisitions"] > 0
    sites = [t["call_site"] for t in kl["top_locks"]]
    site_re = re.compile(r"^[A-Za-z_][\w.]*\+0x[0-9a-f]+$")
    assert any(s and site_re.match(s) for s in sites), kl["top_locks"]
    for t in kl["top_locks"]:
        assert t["name_from"] in (None, "mmap_lock", "run_queue", "slab", "kallsyms"), t
        if t["name_from"] == "run_queue":
            assert re.fullmatch(r"rq_lock\[cpu \d+\]", t["name"]), t
        assert t["type"] and re.fullmatch(r"(SPIN|READ|WRITE|RT|PERCPU|MUTEX|NONE|0x[0-9a-f]+)(\|\S+)*",
                                          t["type"]), t
    assert sum(c["count"] for c in kl["call_sites"]) <= kl["contentions"]


def test_lock_paths_script_compares_and_leaves_nothing_behind(kvm):
    """benchmarks/lock_paths.py on a small run with every path this host has: a table,
    and afterwards no tracefs instance of its, the tracefs mount as it was, no perf."""
    why = _why_not_real()
    if why:
        pytest.skip(why)
    from bench import tracefs
    paths = "bpf,tracefs" + (",perf" if shutil.which("perf") else "")
    mounts = tracefs.tracefs_mount_count()
    p = subprocess.Popen([sys.executable, os.path.join("benchmarks", "lock_paths.py"), "--paths", paths,
                          "--", "--vcpus", "4", "--mech", "uffd", "--mem-per-vcpu", "2"],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert re.search(r"^contentions\s+[\d,]+\s+[\d,]+", out, re.M), out
    assert "top call sites by count" in out
    assert not [n for n in tracefs.leftover_instances() if n.startswith(f"faultbench-{p.pid}-")]
    assert tracefs.tracefs_mount_count() == mounts
    ours = subprocess.run(["pgrep", "-f", "perf lock record .*lock_paths-"], capture_output=True, text=True)
    assert ours.stdout.strip() == "", ours.stdout


def test_summary_fits_the_records_kernel_locks_schema():
    import jsonschema
    from bench.schema import KERNEL_LOCKS
    d, syms = _data(ROWS, NAMES)
    kl = bpflocks.kernel_locks(d, resolve_symbol=lambda a: None, resolve_ip=syms)
    jsonschema.Draft202012Validator(KERNEL_LOCKS).validate(kl)
