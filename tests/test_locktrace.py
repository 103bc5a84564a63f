"""Tests for bench.locktrace against the real tracefs (root only; skipped otherwise).
The tracefs instance it records into has its own tests: tests/test_tracefs.py."""

import ctypes
import ctypes.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench import locktrace, tracefs  # noqa: E402
from bench.locktrace import LockTracer  # noqa: E402
from bench.tracefs import TraceUnavailable, enabled_events_in, leftover_instances  # noqa: E402

PREFIX = "fbtest"


@pytest.fixture(scope="module")
def tracing():
    if os.geteuid() != 0:
        pytest.skip("tracefs lock:contention_begin event not available: not running as root")
    t = LockTracer(name_prefix=PREFIX, buffer_kb=64)
    try:
        t.start()
    except TraceUnavailable as e:
        pytest.skip(f"tracefs lock:contention_begin event not available: {e}")
    except OSError as e:
        pytest.skip(f"tracefs lock:contention_begin event not available: {e}")
    finally:
        t.cleanup()
    return True


def _top_level_state():
    """Things a tracer must leave as found: mount count, our instances, global events
    and the global lock triggers."""
    with tracefs._TracefsView() as root:
        events = enabled_events_in(root)
        trig = []
        for ev in locktrace.LOCK_EVENTS:
            with open(os.path.join(root, "events", "lock", ev, "trigger")) as f:
                trig += [l.strip() for l in f if l.strip() and not l.startswith("#")]
    return {"mounts": tracefs.tracefs_mount_count(), "instances": leftover_instances(PREFIX),
            "events": events, "triggers": trig}


# -- a workload of this process's own threads; ctypes drops the GIL, so the threads
#    really run in parallel in the kernel (mmap_lock, page-table and LRU locks).
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
PROT_RW, MAP_PRIVATE_ANON, MADV_DONTNEED = 3, 0x22, 4


def _mmap_storm(nthreads=8, seconds=1.0):
    tids = []
    lock = threading.Lock()

    def work():
        with lock:
            tids.append(threading.get_native_id())
        n = 1 << 20
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            p = _libc.mmap(None, n, PROT_RW, MAP_PRIVATE_ANON, -1, 0)
            assert p not in (None, ctypes.c_void_p(-1).value)
            _libc.memset(p, 1, n)
            _libc.madvise(p, n, MADV_DONTNEED)
            _libc.memset(p, 2, n)
            _libc.munmap(p, n)

    threads = [threading.Thread(target=work) for _ in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return tids


def test_real_contention_summary(tracing):
    before = _top_level_state()
    tracer = LockTracer(name_prefix=PREFIX)
    tracer.start()
    try:
        tids = _mmap_storm(8, 1.0)
    finally:
        summary = tracer.stop(tids)
    json.dumps(summary)  # must be JSON-serialisable
    assert summary["contentions"] > 0
    assert summary["mmap_lock"]["acquisitions"] > 0
    assert summary["mmap_lock"]["write"] > 0
    assert 0 < summary["threads_seen"] <= 8
    assert summary["wait_ns_total"] >= summary["wait_ns_max"] > 0
    assert sum(v["count"] for v in summary["by_type"].values()) == summary["contentions"]
    assert summary["top_locks"] and len(summary["top_locks"]) <= 5
    assert summary["top_locks"][0]["call_site"]
    for tl in summary["top_locks"]:
        assert len(tl["stack"]) <= 8
        if tl["call_site"]:
            assert not locktrace._is_internal(tl["call_site"])
            assert "/" not in tl["call_site"]
    totals = [tl["wait_ns_total"] for tl in summary["top_locks"]]
    assert totals == sorted(totals, reverse=True)
    assert summary["unparsed_lines"] == 0
    assert _top_level_state() == before


def test_stop_leaves_system_as_found(tracing):
    before = _top_level_state()
    tracer = LockTracer(name_prefix=PREFIX, buffer_kb=256)
    tracer.start()
    assert tracer.instance in leftover_instances(PREFIX)
    enabled = enabled_events_in(tracer.path)
    assert "lock:contention_begin" in enabled and "lock:contention_end" in enabled
    with open(os.path.join(tracer.path, "events/lock/contention_begin/trigger")) as f:
        assert any(l.startswith("stacktrace") for l in f)
    summary = tracer.stop([threading.get_native_id()])
    assert isinstance(summary["contentions"], int)
    assert leftover_instances(PREFIX) == []
    assert _top_level_state() == before
    tracer.cleanup()  # after stop: a no-op
    assert _top_level_state() == before


def test_cleanup_idempotent_and_exit_on_exception(tracing):
    before = _top_level_state()
    tracer = LockTracer(name_prefix=PREFIX, buffer_kb=256)
    with pytest.raises(RuntimeError, match="boom"):
        with tracer:
            assert leftover_instances(PREFIX) == [tracer.instance]
            raise RuntimeError("boom")
    assert leftover_instances(PREFIX) == []
    tracer.cleanup()
    tracer.cleanup()
    assert _top_level_state() == before


def test_missing_event_raises_and_leaves_nothing(tracing, monkeypatch):
    before = _top_level_state()
    monkeypatch.setattr(locktrace, "LOCK_EVENTS", ("contention_begin", "no_such_event"))
    with pytest.raises(TraceUnavailable, match="no_such_event") as ei:
        LockTracer(name_prefix=PREFIX).start()
    assert "\n" not in str(ei.value)
    monkeypatch.undo()
    assert _top_level_state() == before


# Real lines captured on this kernel (6.18, mono clock, hash-ptr=0, sym-offset=1),
# lightly trimmed; the end of the mutex wait is on another CPU (a thread can migrate
# while it sleeps), the idle-task line is not one of our tids, the last begin has no end.
SAMPLE_TEXT = """\
# tracer: nop
#
# entries-in-buffer/entries-written: 14/16   #P:2
#
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
#              | |         |   |||||     |         |
         python3-4815    [001] d..4.   463.228372: contention_begin: ffff888627c2ba40 (flags=SPIN)
         python3-4815    [001] d..4.   463.228375: <stack trace>
 => trace_event_raw_event_contention_begin+0x4b/0x90
 => __pv_queued_spin_lock_slowpath+0x10e/0x380
 => _raw_spin_lock+0x3b/0x60
 => try_to_wake_up+0x206/0x650
 => wake_up_q+0x33/0x90
 => futex_wake+0x19a/0x1d0
 => do_futex+0x183/0x250
 => __x64_sys_futex+0x112/0x210
 => do_syscall_64+0x71/0x280
 => entry_SYSCALL_64_after_hwframe+0x76/0x7e
         python3-4815    [001] d..4.   463.228375: contention_end: ffff888627c2ba40 (ret=0)
         python3-4817    [000] .....   463.228375: mmap_lock_start_locking: mm=ffff88810006cb00 memcg_id=3137 write=true
         python3-4817    [000] .....   463.228375: mmap_lock_acquire_returned: mm=ffff88810006cb00 memcg_id=3137 write=true success=true
         python3-4817    [000] .....   463.228378: mmap_lock_acquire_returned: mm=ffff88810006cb00 memcg_id=3137 write=false success=true
         python3-4814    [000] ...1.   463.237704: contention_begin: ffff888118434890 (flags=SPIN|MUTEX)
         python3-4814    [000] ...1.   463.237706: <stack trace>
 => trace_event_raw_event_contention_begin+0x4b/0x90
 => __mutex_lock.constprop.0+0x1f1/0xa20
 => fdget_pos+0x82/0x170
 => ksys_lseek+0x17/0xd0
 => do_syscall_64+0x71/0x280
 => entry_SYSCALL_64_after_hwframe+0x76/0x7e
         python3-4814    [000] d..2.   463.237710: contention_begin: ffff888118434890 (flags=MUTEX)
         python3-4814    [000] d..2.   463.237711: <stack trace>
 => trace_event_raw_event_contention_begin+0x4b/0x90
 => __mutex_lock.constprop.0+0x798/0xa20
 => fdget_pos+0x82/0x170
 => ksys_lseek+0x17/0xd0
 => do_syscall_64+0x71/0x280
 => entry_SYSCALL_64_after_hwframe+0x76/0x7e
          <idle>-0       [000] d.s4.   463.237900: contention_begin: ffff8881003c35ec (flags=SPIN)
         python3-4814    [001] d..2.   463.240035: contention_end: ffff888118434890 (ret=0)
         python3-4815    [001] d..4.   463.240100: contention_begin: ffff888627c2ba40 (flags=SPIN)
this line is not trace output
""".splitlines()

# The same buffer printed with options/raw=1: pid, cpu, timestamp in ns.
SAMPLE_RAW = """\
# tracer: nop
#
4815 1 463228372356 type: 408
4815 1 463228374809 type: 4
4815 1 463228375000 type: 407
4817 0 463228375129 type: 677
4817 0 463228375430 type: 675
4817 0 463228377843 type: 675
4814 0 463237703558 type: 408
4814 0 463237705581 type: 4
4814 0 463237709867 type: 408
4814 0 463237711319 type: 4
0 0 463237900120 type: 408
4814 1 463240035210 type: 407
4815 1 463240100007 type: 408
""".splitlines()

TIDS = [4814, 4815, 4817]


def test_parser_on_captured_sample_us():
    s = locktrace.parse_trace(SAMPLE_TEXT, None, tids=TIDS, addresses_hashed=False)
    assert s["time_resolution_ns"] == 1000
    assert s["contentions"] == 2
    # spin: 463.228372 -> .228375; mutex: first begin .237704 -> end .240035 (other CPU)
    assert s["by_type"] == {"SPIN": {"count": 1, "wait_ns_total": 3000},
                            "MUTEX": {"count": 1, "wait_ns_total": 2331000}}
    assert s["wait_ns_max"] == 2331000
    assert s["wait_ns_total"] == 2334000
    assert s["unmatched_begins"] == 1 and s["unmatched_ends"] == 0
    assert s["unparsed_lines"] == 1
    assert s["events_lost"] == 2
    assert s["threads_seen"] == 3
    assert s["mmap_lock"] == {"acquisitions": 2, "wait_ns_total": 0, "wait_ns_max": 0,
                              "contended": 0, "write": 1}
    first, second = s["top_locks"]
    assert first["lock"] == "ffff888118434890" and first["type"] == "MUTEX"
    assert first["call_site"] == "fdget_pos+0x82"
    assert first["stack"][0] == "fdget_pos+0x82" and len(first["stack"]) == 4
    assert second["call_site"] == "try_to_wake_up+0x206"
    assert second["count"] == 1 and second["wait_ns_max"] == 3000
    assert first["symbol"] is None  # no resolver given


def test_parser_ns_timestamps_and_filters():
    s = locktrace.parse_trace(SAMPLE_TEXT, SAMPLE_RAW, tids=TIDS, addresses_hashed=False,
                              resolve_symbol=lambda a: "fake_lock" if a == 0xffff888118434890 else None)
    assert s["time_resolution_ns"] == 1
    assert s["by_type"]["SPIN"]["wait_ns_total"] == 463228375000 - 463228372356
    assert s["wait_ns_max"] == 463240035210 - 463237703558
    assert s["mmap_lock"]["wait_ns_total"] == s["mmap_lock"]["wait_ns_max"] == 301
    assert s["top_locks"][0]["symbol"] == "fake_lock"
    assert s["stacktrace_ns_total"] == (463228374809 - 463228372356) + (463237705581 - 463237703558)
    # A raw read that does not line up falls back to microseconds.
    bad = locktrace.parse_trace(SAMPLE_TEXT, SAMPLE_RAW[:-1], tids=TIDS)
    assert bad["time_resolution_ns"] == 1000 and bad["wait_ns_max"] == 2331000
    # Hashed addresses never get a symbol; top=1 trims the list; no filter keeps pid 0.
    h = locktrace.parse_trace(SAMPLE_TEXT, None, tids=None, top=1, addresses_hashed=True,
                              resolve_symbol=lambda a: "x")
    assert len(h["top_locks"]) == 1 and h["top_locks"][0]["symbol"] is None
    assert h["addresses_hashed"] is True
    assert h["unmatched_begins"] == 2 and h["threads_seen"] == 4


# Captured: a munmap/mmap writer entering the rwsem slowpath of its mm's mmap_lock.
MMAP_CONTENDED = """\
         python3-7086    [000] .....   617.684942: mmap_lock_start_locking: mm=ffff888104402580 memcg_id=3137 write=true
         python3-7086    [000] d..2.   617.684943: contention_begin: ffff888104402638 (flags=WRITE)
         python3-7086    [000] d..2.   617.684947: <stack trace>
 => trace_event_raw_event_contention_begin+0x4b/0x90
 => rwsem_down_write_slowpath+0x37f/0x6c0
 => down_write_killable+0x5c/0x90
 => vm_mmap_pgoff+0xe0/0x210
 => do_syscall_64+0x71/0x280
 => entry_SYSCALL_64_after_hwframe+0x76/0x7e
         python3-7086    [000] ...1.   617.684993: contention_end: ffff888104402638 (ret=0)
         python3-7086    [000] .....   617.684993: mmap_lock_acquire_returned: mm=ffff888104402580 memcg_id=3137 write=true success=true
         python3-7086    [000] .....   617.685010: mmap_lock_start_locking: mm=ffff888104402580 memcg_id=3137 write=false
         python3-7086    [000] d.h2.   617.685011: contention_begin: ffff888627c2ba40 (flags=SPIN)
         python3-7086    [000] d.h2.   617.685012: contention_end: ffff888627c2ba40 (ret=0)
         python3-7086    [000] .....   617.685013: mmap_lock_acquire_returned: mm=ffff888104402580 memcg_id=3137 write=false success=true
""".splitlines()


def test_parser_mmap_contended():
    s = locktrace.parse_trace(MMAP_CONTENDED, None, tids=[7086])
    # Only the first acquisition went through the rwsem slowpath; the second saw an
    # interrupt-context spin contention, which does not make the mmap_lock contended.
    assert s["mmap_lock"] == {"acquisitions": 2, "wait_ns_total": 54000, "wait_ns_max": 51000,
                              "contended": 1, "write": 1}
    assert s["by_type"]["WRITE"] == {"count": 1, "wait_ns_total": 50000}
    assert s["irq_contentions"] == 1
    top = s["top_locks"][0]
    assert top["call_site"] == "vm_mmap_pgoff+0xe0" and top["type"] == "WRITE"
    assert top["stack"] == ["vm_mmap_pgoff+0xe0", "do_syscall_64+0x71",
                            "entry_SYSCALL_64_after_hwframe+0x76"]


def test_cleanup_survives_interrupt(tracing):
    before = _top_level_state()
    tracer = LockTracer(name_prefix=PREFIX, buffer_kb=256)
    tracer.start()
    hits = []

    def interrupted_once():
        hits.append(1)
        if len(hits) == 1:
            raise KeyboardInterrupt

    tracer._tf.add_undo(interrupted_once)  # runs first, as a ^C during teardown would
    with pytest.raises(KeyboardInterrupt):
        tracer.cleanup()
    assert len(hits) == 2
    assert leftover_instances(PREFIX) == []
    assert _top_level_state() == before


def test_parser_interrupt_during_unwind():
    # Real line formats, arranged as an interrupt contending while the task's own stack
    # is being unwound: each stack must go to its own begin (LIFO per pid and CPU).
    lines = """\
         python3-4815    [001] ...1.   463.300000: contention_begin: ffff888118434890 (flags=SPIN|MUTEX)
         python3-4815    [001] d.h2.   463.300001: contention_begin: ffff888627c2ba40 (flags=SPIN)
         python3-4815    [001] d.h2.   463.300002: <stack trace>
 => __pv_queued_spin_lock_slowpath+0x10e/0x380
 => _raw_spin_lock+0x3b/0x60
 => try_to_wake_up+0x206/0x650
         python3-4815    [001] d.h2.   463.300003: contention_end: ffff888627c2ba40 (ret=0)
         python3-4815    [001] ...1.   463.300004: <stack trace>
 => __mutex_lock.constprop.0+0x1f1/0xa20
 => fdget_pos+0x82/0x170
         python3-4815    [001] ...1.   463.300010: contention_end: ffff888118434890 (ret=0)
""".splitlines()
    s = locktrace.parse_trace(lines, None, tids=[4815])
    sites = {tl["lock"]: tl["call_site"] for tl in s["top_locks"]}
    assert sites == {"ffff888118434890": "fdget_pos+0x82", "ffff888627c2ba40": "try_to_wake_up+0x206"}
    assert s["by_type"] == {"SPIN|MUTEX": {"count": 1, "wait_ns_total": 10000},
                            "SPIN": {"count": 1, "wait_ns_total": 2000}}
    assert s["irq_contentions"] == 1 and s["unmatched_begins"] == 0


def test_kallsyms_lookup(tmp_path):
    # A dense table, as with CONFIG_KALLSYMS_ALL.
    lines = [f"{0xffffffff83000000 + 64 * i:016x} d var{i}" for i in range(1200)]
    lines += ["ffffffff81000000 T _text", "ffffffff81000100 t some_func"]
    p = tmp_path / "kallsyms"
    p.write_text("\n".join(lines) + "\n")
    ks = locktrace._Kallsyms(str(p))
    assert ks.complete
    assert ks.lookup(0xffffffff83000000 + 64 * 5) == "var5"
    assert ks.lookup(0xffffffff83000000 + 64 * 5 + 8) == "var5+0x8"
    assert ks.lookup(0xffff888100000000) is None      # heap: never a symbol
    assert ks.lookup(0xffffffff81000100) is None      # before the first data symbol
    assert ks.lookup(0xffffffff83000000 + 64 * 1199 + (1 << 20)) is None  # too far
    # Only section markers listed (this kernel): nothing resolves.
    p.write_text("ffffffff8396f378 D __stop_syscalls_metadata\nffffffff81000000 T _text\n")
    sparse = locktrace._Kallsyms(str(p))
    assert not sparse.complete and sparse.lookup(0xffffffff8396f380) is None


CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from bench.locktrace import LockTracer
    try:
        with LockTracer(name_prefix={prefix!r}, buffer_kb=256) as t:
            print("started", t.instance, flush=True)
            time.sleep(30)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(0)
""")


def test_sigint_in_child_cleans_up(tracing):
    before = _top_level_state()
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(root=ROOT, prefix=PREFIX)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        assert line.startswith("started"), child.stderr.read()
        instance = line.split()[1]
        assert instance in leftover_instances(PREFIX)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)   # a teardown under a CPU hog is slow
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    assert "interrupted" in out
    assert leftover_instances(PREFIX) == []
    after = _top_level_state()
    assert after == before
    assert not [e for e in after["events"] if e.startswith("lock:")]
