"""The network worker process and its shared-memory command ring (no KVM needed)."""
import concurrent.futures
import mmap
import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from bench.native import ffi, lib
from bench.worker import WorkerError, WorkerProcess, service_params

PAGE = 4096
GPA = 1 << 30
SEED = 0x5eed_1234_abcd


@pytest.fixture
def target():
    """An 8 MiB target memfd, as the harness's guest memory."""
    size = 8 << 20
    fd = os.memfd_create("fb-test-target", os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    yield fd, size
    os.close(fd)


def fixed(us):
    return {"model": "fixed", "us": us}


def check_content(fd, size, pages=None):
    m = mmap.mmap(fd, size)
    try:
        bad = []
        for off in (range(0, size, PAGE) if pages is None else pages):
            if struct.unpack_from("<QQ", m, off) != (GPA + off, SEED):
                bad.append(off)
            elif m[off + 16:off + PAGE].count(0) != PAGE - 16:
                bad.append(off)
        return bad
    finally:
        m.close()


def copy_all(wp, size, workers):
    def one(off):
        return lib.fb_ring_copy(wp.ring, off, off, PAGE, ffi.NULL)

    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        return list(ex.map(one, range(0, size, PAGE)))


def pid_gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_every_page_copied_from_threads(target):
    fd, size = target
    with WorkerProcess(fd, size, GPA, SEED, threads=2, batch=1, service=fixed(0)) as wp:
        assert wp.poll() is None
        assert lib.fb_ring_worker_alive(wp.ring) == 1
        assert set(copy_all(wp, size, 4)) == {0}
        stats = wp.stats()
    assert check_content(fd, size) == []
    assert stats["requests"] == size // PAGE
    assert stats["copied_bytes"] == size
    assert sum(t["requests"] for t in stats["threads"]) == size // PAGE
    assert stats["lock"]["acquisitions"] >= size // PAGE


def test_remote_and_local_offsets_are_separate(target):
    fd, size = target
    with WorkerProcess(fd, size, GPA, SEED, threads=1, batch=1, service=fixed(0)) as wp:
        # three pages of source starting at page 10 land at page 100
        assert lib.fb_ring_copy(wp.ring, 10 * PAGE, 100 * PAGE, 3 * PAGE, ffi.NULL) == 0
        assert lib.fb_ring_copy(wp.ring, size - PAGE, 0, 2 * PAGE, ffi.NULL) == lib.FB_RING_BADRANGE
        assert lib.fb_ring_copy(wp.ring, 0, 0, 0, ffi.NULL) == 0
    m = mmap.mmap(fd, size)
    try:
        for i in range(3):
            assert struct.unpack_from("<QQ", m, (100 + i) * PAGE) == (GPA + (10 + i) * PAGE, SEED)
        assert struct.unpack_from("<QQ", m, 0) == (0, 0)
    finally:
        m.close()


def test_fixed_service_time_is_applied(target):
    fd, size = target
    n, us = 200, 30
    with WorkerProcess(fd, size, GPA, SEED, threads=1, batch=1, service=fixed(us)) as wp:
        t0 = time.monotonic()
        for i in range(n):
            assert lib.fb_ring_copy(wp.ring, i * PAGE, i * PAGE, PAGE, ffi.NULL) == 0
        elapsed = time.monotonic() - t0
    stats = wp.stats()   # after stop: kept from the ring
    assert elapsed >= n * us * 1e-6
    assert stats["requests"] == n
    assert stats["service_mean_ns"] >= us * 1000
    assert stats["service_ns"] >= n * us * 1000
    assert stats["model_ns"] == n * us * 1000


@pytest.mark.parametrize("service", [
    {"model": "uniform", "min_us": 10, "max_us": 40},
    {"model": "lognormal", "median_us": 20, "sigma": 0.5},
])
def test_random_service_models(target, service):
    fd, size = target
    n = 100
    with WorkerProcess(fd, size, GPA, SEED, threads=2, batch=1, service=service) as wp:
        assert set(copy_all(wp, n * PAGE, 2)) == {0}
        stats = wp.stats()
    assert check_content(fd, size, range(0, n * PAGE, PAGE)) == []
    assert stats["requests"] == n
    model_mean_us = stats["model_ns"] / n / 1000
    if service["model"] == "uniform":
        assert 10 <= model_mean_us <= 40
        assert stats["service_mean_ns"] >= 10_000
    else:
        # mean of a lognormal is median * exp(sigma^2 / 2) = 22.7 us
        assert 15 <= model_mean_us <= 35
    assert stats["service_ns"] >= stats["model_ns"]


def blocked_copy(ring, stop=ffi.NULL):
    """Run one copy in a thread; returns (thread, result dict with rc and return time)."""
    out = {}

    def run():
        out["rc"] = lib.fb_ring_copy(ring, 0, 0, PAGE, stop)
        out["t"] = time.monotonic()

    t = threading.Thread(target=run)
    t.start()
    return t, out


def test_killed_worker_releases_blocked_requester(target):
    fd, size = target
    with WorkerProcess(fd, size, GPA, SEED, threads=1, batch=1, service=fixed(2_000_000)) as wp:
        t, out = blocked_copy(wp.ring)
        time.sleep(0.2)
        assert t.is_alive(), "requester should be blocked on the 2 s service time"
        killed = time.monotonic()
        os.kill(wp.pid, signal.SIGKILL)
        t.join(5)
        assert not t.is_alive()
        assert out["rc"] == lib.FB_RING_DEAD
        assert out["t"] - killed < 2.0
        line = wp.poll()
        assert line is not None and "SIGKILL" in line and "signal 9" in line
        assert str(wp.pid) in line and "\n" not in line


def test_killed_worker_detected_by_heartbeat_without_pidfd(target):
    """A second mapping with no pidfd (as C code that maps ring_fd itself) sees
    the death through the stale heartbeat, within about a second."""
    fd, size = target
    with WorkerProcess(fd, size, GPA, SEED, threads=1, batch=1, service=fixed(2_000_000)) as wp:
        ring2 = lib.fb_ring_map(wp.ring_fd)
        assert ring2 != ffi.NULL
        try:
            t, out = blocked_copy(ring2)
            time.sleep(0.2)
            killed = time.monotonic()
            os.kill(wp.pid, signal.SIGKILL)
            t.join(5)
            assert out["rc"] == lib.FB_RING_DEAD
            assert out["t"] - killed < 2.0
            assert lib.fb_ring_worker_alive(ring2) == 0
        finally:
            lib.fb_ring_unmap(ring2)


def test_stop_flag_releases_blocked_requester(target):
    fd, size = target
    with WorkerProcess(fd, size, GPA, SEED, threads=1, batch=1, service=fixed(2_000_000)) as wp:
        stop = ffi.new("int *")
        t, out = blocked_copy(wp.ring, stop)
        time.sleep(0.1)
        raised = time.monotonic()
        stop[0] = 1
        t.join(5)
        assert out["rc"] == lib.FB_RING_STOPPED
        assert out["t"] - raised < 0.5
        assert wp.poll() is None


def test_shutdown_releases_blocked_requester(target):
    fd, size = target
    wp = WorkerProcess(fd, size, GPA, SEED, threads=1, batch=1, service=fixed(2_000_000)).start()
    try:
        t, out = blocked_copy(wp.ring)
        time.sleep(0.1)
        wp.request_shutdown()
        t.join(5)
        assert out["rc"] in (lib.FB_RING_DEAD, lib.FB_RING_OK)
    finally:
        wp.stop()


def test_stop_leaves_no_process_and_no_fds(target):
    fd, size = target
    before = len(os.listdir("/proc/self/fd"))
    wp = WorkerProcess(fd, size, GPA, SEED, threads=3, batch=2, service=fixed(5))
    wp.start()
    pid = wp.pid
    assert not pid_gone(pid)
    assert set(copy_all(wp, 64 * PAGE, 3)) == {0}
    wp.stop()
    wp.stop()   # idempotent
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert pid_gone(pid)
    assert len(os.listdir("/proc/self/fd")) == before
    assert wp.ring == ffi.NULL and wp.ring_fd == -1
    assert wp.poll() == f"network worker (pid {pid}) exited with status 0"
    assert wp.stats()["requests"] == 64


def test_worker_dies_with_its_parent(target):
    """PR_SET_PDEATHSIG: a harness killed outright takes its worker with it."""
    fd, size = target
    code = textwrap.dedent(f"""
        import os, sys, time
        from bench.worker import WorkerProcess
        fd = os.memfd_create("t")
        os.ftruncate(fd, {size})
        wp = WorkerProcess(fd, {size}, {GPA}, 1, threads=1, batch=1,
                           service={{"model": "fixed", "us": 0}}).start()
        print(wp.pid, flush=True)
        time.sleep(60)
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env, text=True)
    try:
        worker_pid = int(parent.stdout.readline())
        assert not pid_gone(worker_pid)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 5
        while not pid_gone(worker_pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pid_gone(worker_pid)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdout.close()


@pytest.mark.parametrize("service", [
    None,
    {"us": 3},
    {"model": "gaussian", "us": 3},
    {"model": "fixed"},
    {"model": "fixed", "us": -1},
    {"model": "fixed", "us": float("nan")},
    {"model": "fixed", "us": float("inf")},
    {"model": "fixed", "us": "3"},
    {"model": "fixed", "us": True},
    {"model": "fixed", "us": 3, "sigma": 1},
    {"model": "uniform", "min_us": 5, "max_us": 1},
    {"model": "uniform", "min_us": 5},
    {"model": "lognormal", "median_us": 0, "sigma": 1},
    {"model": "lognormal", "median_us": 10, "sigma": -1},
    {"model": "fixed", "us": 1e9},
])
def test_bad_service_params(target, service):
    fd, size = target
    with pytest.raises(ValueError) as e:
        WorkerProcess(fd, size, GPA, SEED, threads=1, batch=1, service=service)
    assert "\n" not in str(e.value)


def test_service_params_values():
    assert service_params({"model": "fixed", "us": 30}) == (lib.FB_SVC_FIXED, 30.0, 0.0)
    assert service_params({"model": "uniform", "min_us": 1, "max_us": 2.5}) == (lib.FB_SVC_UNIFORM, 1.0, 2.5)
    assert service_params({"model": "lognormal", "median_us": 20, "sigma": 0.3}) == \
        (lib.FB_SVC_LOGNORMAL, 20.0, 0.3)


@pytest.mark.parametrize("kwargs", [
    {"threads": 0}, {"threads": 65}, {"batch": 0}, {"batch": 2048}, {"nslots": 0},
])
def test_bad_worker_params(target, kwargs):
    fd, size = target
    args = dict(threads=1, batch=1, service=fixed(0))
    args.update(kwargs)
    with pytest.raises(ValueError):
        WorkerProcess(fd, size, GPA, SEED, **args)


def test_target_smaller_than_size_is_refused(target):
    fd, size = target
    with pytest.raises(ValueError):
        WorkerProcess(fd, size * 2, GPA, SEED, threads=1, batch=1, service=fixed(0))


def test_batches_with_four_threads(target):
    fd, size = target
    n = 1024
    # 1 ms per request and 32 requesters against 4 threads: the queue stays
    # long, so threads take several requests at a time
    with WorkerProcess(fd, size, GPA, SEED, threads=4, batch=8, service=fixed(1000)) as wp:
        assert set(copy_all(wp, n * PAGE, 32)) == {0}
        stats = wp.stats()
    assert check_content(fd, size, range(0, n * PAGE, PAGE)) == []
    assert stats["requests"] == n
    assert len(stats["threads"]) == 4
    assert sum(t["requests"] for t in stats["threads"]) == n
    assert all(t["requests"] > 0 for t in stats["threads"])
    assert stats["batches"] < n
    assert stats["mean_batch"] > 1


def test_small_ring_many_requesters(target):
    """More requesters than slots: they wait for a free slot instead of failing."""
    fd, size = target
    n = 512
    with WorkerProcess(fd, size, GPA, SEED, threads=2, batch=4, service=fixed(20), nslots=4) as wp:
        assert set(copy_all(wp, n * PAGE, 16)) == {0}
    assert check_content(fd, size, range(0, n * PAGE, PAGE)) == []


def test_worker_failure_is_one_line(target):
    fd, size = target
    wp = WorkerProcess(fd, size, GPA, SEED, threads=1, batch=1, service=fixed(0))
    # the worker cannot map a target opened read-only: it must say so and exit
    ro = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY)
    try:
        wp.target_memfd = ro
        with pytest.raises(WorkerError) as e:
            wp.start()
        assert "exited with status 1" in str(e.value)
        assert "\n" not in str(e.value)
        assert wp.ring_fd == -1
    finally:
        os.close(ro)


@pytest.mark.slow
def test_ring_full_gives_up_after_5_s(target):
    fd, size = target
    with WorkerProcess(fd, size, GPA, SEED, threads=1, batch=1, service=fixed(8_000_000), nslots=1) as wp:
        t, out = blocked_copy(wp.ring)   # holds the only slot for 8 s
        time.sleep(0.1)
        t0 = time.monotonic()
        rc = lib.fb_ring_copy(wp.ring, PAGE, PAGE, PAGE, ffi.NULL)
        waited = time.monotonic() - t0
        assert rc == lib.FB_RING_FULL
        assert 5.0 <= waited < 6.0
        wp.request_shutdown()
        t.join(5)
        assert not t.is_alive()
