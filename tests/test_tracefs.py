"""Tests for bench.tracefs (the private instance both tracers record into) and for
SchedTracer, against the real tracefs (root only; skipped otherwise)."""

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench import locktrace, schedtrace, tracefs  # noqa: E402
from bench.tracefs import TraceUnavailable, TracefsInstance, enabled_events_in, leftover_instances  # noqa: E402

PREFIX = "fbtest-tfs"


@pytest.fixture(scope="module")
def tracing():
    if os.geteuid() != 0:
        pytest.skip("tracefs needs root")
    tf = TracefsInstance(PREFIX)
    try:
        with tf.setting_up():
            tf.create()
            if not tf.has_event("sched", "sched_switch"):
                pytest.skip("no sched:sched_switch event")
    except TraceUnavailable as e:
        pytest.skip(f"tracefs unavailable: {e}")
    finally:
        tf.cleanup()
    return True


def _state():
    """What an instance must leave as found: mount count, our instances, the events
    enabled at the top level, and this process's own mount holders."""
    with tracefs._TracefsView() as root:
        events = enabled_events_in(root)
    return {"mounts": tracefs.tracefs_mount_count(), "instances": leftover_instances(PREFIX),
            "events": events, "users": tracefs._mount_users, "we_mounted": tracefs._we_mounted}


def test_the_tracers_own_an_instance_rather_than_extend_one():
    assert not issubclass(schedtrace.SchedTracer, locktrace.LockTracer)
    for tracer in (locktrace.LockTracer(), schedtrace.SchedTracer(pids=[os.getpid()], buffer_kb=64)):
        assert isinstance(tracer._tf, tracefs.TracefsInstance)


def test_instance_settings_filter_trigger_undone(tracing):
    before = _state()
    tid = threading.get_native_id()
    tf = TracefsInstance(PREFIX)
    with tf:
        assert tf.name in leftover_instances(PREFIX) and tf.path.endswith(tf.name)
        assert tf.read("tracing_on").strip() == "0"   # off until set up
        if before["mounts"] == 0:
            assert tracefs._mount_users == before["users"] + 1 and tracefs._we_mounted
        tf.set_buffer_kb(64)
        assert 64 <= int(tf.read("buffer_size_kb").split()[0]) < 128   # rounded up to pages
        assert tf.set_clock("mono")
        assert not tf.set_clock("no-such-clock", required=False)
        with pytest.raises(TraceUnavailable, match="no-such-clock"):
            tf.set_clock("no-such-clock")
        assert tf.set_option("sym-offset", "1") and tf.read("options/sym-offset").strip() == "1"
        assert not tf.set_option("no-such-option", "1")
        tf.enable_event("sched", "sched_switch", filter=f"prev_pid == {tid}")
        tf.add_trigger("sched", "sched_switch", "stacktrace if prev_prio < 0")
        assert enabled_events_in(tf.path) == ["sched:sched_switch"]
        assert f"prev_pid == {tid}" in tf.read("events/sched/sched_switch/filter")
        assert "stacktrace" in tf.read("events/sched/sched_switch/trigger")
        tf.tracing(True)
        for _ in range(5):
            time.sleep(0.005)   # this thread sleeps: a switch away from it each time
        tf.tracing(False)
        lines = [l for l in tf.trace_lines() if "sched_switch:" in l]
        assert lines and all(f"prev_pid={tid} " in l for l in lines), lines[:3]
        raw = tf.raw_trace_lines()
        assert raw is not None and tf.read("options/raw").strip() == "0"
        assert len([l for l in raw if not l.startswith("#")]) >= len(lines)
        assert tf.lost_events() == 0
        path = tf.path
    # every undo worked: filter cleared, trigger removed, event off, instance gone
    assert tf.cleanup_errors == [] and tf.path is None and not os.path.exists(path)
    assert _state() == before
    tf.cleanup()   # a no-op now
    assert _state() == before


def test_failed_setup_leaves_nothing(tracing):
    before = _state()
    tf = TracefsInstance(PREFIX)
    with pytest.raises(TraceUnavailable, match="tracefs setup failed: .*no_such_event"):
        with tf.setting_up():
            tf.create()
            tf.enable_event("sched", "sched_switch")
            tf.enable_event("sched", "no_such_event")   # ENOENT: an OSError
    assert _state() == before
    with pytest.raises(RuntimeError, match="boom"):
        with tf.setting_up():
            tf.create()   # a second life after cleanup: a new name
            raise RuntimeError("boom")
    assert _state() == before


def test_sched_tracer_records_our_switches_and_leaves_nothing(tracing):
    before = _state()
    before_all = leftover_instances("faultbench-sched")
    with schedtrace.SchedTracer(pids=[os.getpid()], buffer_kb=256) as t:
        assert t.instance.startswith(f"faultbench-sched-{os.getpid()}-")
        assert sorted(enabled_events_in(t.path)) == [f"sched:{e}" for e in schedtrace.SCHED_EVENTS]
        assert t.path and open(os.path.join(t.path, "trace_clock")).read().count("[x86-tsc]") == 1
        with pytest.raises(RuntimeError, match="already started"):
            t.start()
        for _ in range(5):
            time.sleep(0.005)
        lines, lost = t.stop()
    assert t.path is None and t.cleanup_errors == []
    events = schedtrace.parse(lines)
    me = threading.get_native_id()
    assert lost == 0 and any(ev == "sched_switch" and f[0] == me for _, ev, f in events)
    assert leftover_instances("faultbench-sched") == before_all
    assert _state() == before


def test_sched_tracer_missing_event(tracing, monkeypatch):
    before = _state()
    monkeypatch.setattr(schedtrace, "SCHED_EVENTS", ("sched_switch", "no_such_event"))
    t = schedtrace.SchedTracer(pids=[os.getpid()], buffer_kb=64)
    with pytest.raises(TraceUnavailable, match="sched:no_such_event"):
        t.start()
    assert t.path is None and _state() == before


CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from bench.tracefs import TracefsInstance
    tf = TracefsInstance({prefix!r})
    tf.create()
    tf.enable_event("sched", "sched_switch")
    print(tf.name, flush=True)
    keep = tf   # never cleaned up: the exit handler must do it
""")


def test_exit_without_cleanup_leaves_nothing(tracing):
    before = _state()
    p = subprocess.run([sys.executable, "-c", CHILD.format(root=ROOT, prefix=PREFIX)],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(PREFIX + "-")
    assert _state() == before
