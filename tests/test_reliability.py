"""Reliability (issue 10): one run per host, checks before the first measurement,
the stall watchdog and injected faults. After each fault: exit status non-zero,
the reason in one line, no child process, thread or fd left, tracefs as found,
nothing half-written in the results directory."""
import json
import os
import resource
import signal
import subprocess
import sys
import time
import uuid

import pytest

from bench import hostlock, preflight
from bench.plan import RunError
from bench import result as resultmod
from conftest import process_resources
from helpers import make_plan

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# --no-fingerprint: these tests are about the run itself; the fingerprint costs 1.4-6 s each here
SMALL = ["--mem-per-vcpu", "2", "--repeat", "1", "--no-trace-locks", "--no-fingerprint"]


@pytest.fixture
def lock_path(tmp_path, monkeypatch):
    """Each test its own host lock: never waits on another agent's or CI job's run."""
    path = str(tmp_path / "host.lock")
    monkeypatch.setenv(hostlock.ENV_PATH, path)
    return path


class Harness:
    """run_bench.py as a child process, tagged through its environment so that
    any process it leaves behind (e.g. a network worker) can be found."""

    def __init__(self, args, results, env=None, preexec_fn=None):
        self.tag = uuid.uuid4().hex
        self.results = results
        self.tracefs_before = tracefs_state()
        full_env = {**os.environ, "FB10_TEST_TAG": self.tag, **(env or {})}
        self.proc = subprocess.Popen([sys.executable, "run_bench.py", *args,
                                      "--results-dir", str(results)],
                                     cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=full_env, preexec_fn=preexec_fn)

    def wait(self, timeout=120):
        try:
            out, err = self.proc.communicate(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode, out, err

    def wait_for_threads(self, n, timeout=60):
        """Until the process has n threads (its vCPU and reader threads run)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.communicate()
            try:
                if len(os.listdir(f"/proc/{self.proc.pid}/task")) >= n:
                    return
            except FileNotFoundError:
                pass
            time.sleep(0.02)
        raise AssertionError(f"run_bench.py never reached {n} threads")

    def left_behind(self):
        """Processes still carrying this run's tag (the harness itself has exited)."""
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if f"FB10_TEST_TAG={self.tag}".encode() in f.read():
                        found.append(int(pid))
            except OSError:
                continue
        return found

    def assert_clean_failure(self, status, err, reason):
        """Non-zero exit, the reason as the last line, nothing left anywhere."""
        assert status not in (0, None), err
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines and reason in lines[-1], err
        assert all(line.startswith("  ") for line in lines[:-1]), err   # only the watchdog's report
        assert self.left_behind() == [], "a child process outlived the harness"
        assert tracefs_state(self.proc.pid) == self.tracefs_before
        stray = [p.name for p in self.results.iterdir() if not p.name.endswith(".json")] \
            if self.results.exists() else []
        assert stray == [], f"half-written files: {stray}"


def tracefs_state(pid=None):
    """tracefs as a harness leaves it: its own instances (named after its pid) and
    the events enabled at the top level. The mount count is left out: other
    harnesses and test suites on this shared host mount and unmount tracefs at
    any moment; a process's own mount is checked in-process (bench.tracefs's counters)."""
    from bench.tracefs import _TracefsView, enabled_events_in, leftover_instances
    mine = [i for i in leftover_instances("faultbench") if pid and i.startswith(f"faultbench-{pid}-")]
    try:
        with _TracefsView() as root:
            events = enabled_events_in(root)
    except OSError:
        events = None
    return mine, events


def one_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


# ------------------------------------------------------------------ 1. the host lock

def test_no_wait_names_the_holder_and_exits_2(kvm, lock_path, tmp_path):
    holder = hostlock.HostLock(command=["run_bench.py", "--vcpus", "64", "--mech", "exits"])
    assert holder.acquire(wait=False) is None
    try:
        h = Harness(["--vcpus", "1", "--no-wait", *SMALL], tmp_path / "r")
        status, _, err = h.wait()
    finally:
        holder.release()
    assert status == 2
    line = one_line(err)
    assert f"pid {os.getpid()}" in line and "--vcpus 64 --mech exits" in line, line
    assert not (tmp_path / "r").exists()


def test_second_run_waits_with_a_message_then_runs(kvm, lock_path, tmp_path):
    holder = hostlock.HostLock(command=["first-run"])
    holder.acquire(wait=False)
    h = Harness(["--vcpus", "1", "--quiet", *SMALL], tmp_path / "r")
    try:
        line = h.proc.stderr.readline()   # it says so before it waits
        assert "waiting for" in line and f"pid {os.getpid()} (first-run)" in line, line
        time.sleep(0.5)
        assert h.proc.poll() is None, "it ran while the host was held"
        assert not (tmp_path / "r").exists()
    finally:
        holder.release()
    status, out, err = h.wait()
    assert status == 0, err
    assert len(list((tmp_path / "r").glob("*.json"))) == 1


def test_stale_lock_of_a_dead_process_is_taken_over(kvm, lock_path, tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    with open(lock_path, "w") as f:
        f.write(f"{dead.pid}\nrun_bench.py --vcpus 8\n")   # written, its flock died with it
    h = Harness(["--vcpus", "1", "--quiet", "--no-wait", *SMALL], tmp_path / "r")
    status, _, err = h.wait()
    assert status == 0, err
    assert f"took over the host lock {lock_path} from pid {dead.pid}" in err
    with open(lock_path) as f:
        assert f.read() == "", "the lock file names no holder once released"


def test_the_real_default_lock_path(kvm, tmp_path, monkeypatch):
    """The lock every invocation uses unless told otherwise: held here, a second
    harness with no FAULTBENCH_LOCK_PATH refuses with --no-wait."""
    monkeypatch.delenv(hostlock.ENV_PATH, raising=False)
    lock = hostlock.HostLock(command=["test_the_real_default_lock_path"])
    assert lock.path == ("/run/lock/faultbench.lock" if os.path.isdir("/run/lock")
                         else "/tmp/faultbench.lock")
    try:
        lock.acquire(wait=False)
    except hostlock.LockBusy as exc:
        pytest.skip(f"a real benchmark holds this host: {exc}")
    try:
        env = {k: v for k, v in os.environ.items() if k != hostlock.ENV_PATH}
        p = subprocess.run([sys.executable, "run_bench.py", "--vcpus", "1", "--no-wait", *SMALL,
                            "--results-dir", str(tmp_path / "r")], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=60)
    finally:
        lock.release()
    assert p.returncode == 2
    assert f"pid {os.getpid()} (test_the_real_default_lock_path)" in one_line(p.stderr)


def test_busy_processes_are_recorded_and_warned_about(kvm, lock_path, tmp_path):
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        h = Harness(["--vcpus", "2", "--mech", "uffd", "--mem-per-vcpu", "8", "--repeat", "2",
                     "--no-trace-locks", "--no-fingerprint", "--quiet"], tmp_path / "r")
        status, out, err = h.wait()
    finally:
        busy.kill()
        busy.wait()
    assert status == 0, err
    rec = resultmod.load(out.split()[0])
    noise = rec["host_noise"]
    # a busy loop alone is a good share of a CPU; other processes of this shared host add more
    assert noise["other_cpu_share"] > 0.05 and noise["top_processes"], noise
    assert any("other processes used" in w for w in rec["warnings"]), rec["warnings"]


def test_noise_sampler_counts_outsiders_only():
    """The same busy process, seen from three harness roots: itself (excluded),
    its parent (excluded: a descendant of the harness) and an unrelated process."""
    from bench.hostnoise import NoiseSampler
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        samplers = {name: NoiseSampler(root) for name, root in
                    (("itself", busy.pid), ("parent", os.getpid()), ("unrelated", bystander.pid))}
        for s in samplers.values():
            s.start()
        time.sleep(1.0)
        seen = {name: {pid: cpu for cpu, pid, _ in s.busy} for name, s in
                ((name, s) for name, s in samplers.items() if s.stop())}
    finally:
        for p in (busy, bystander):
            p.kill()
            p.wait()
    assert busy.pid not in seen["itself"] and busy.pid not in seen["parent"]
    assert seen["unrelated"].get(busy.pid, 0) >= 0.1, seen["unrelated"]   # 0.1 s of 1 s, at least


# ------------------------------------------------------------------ 2. pre-flight

def _low_nofile():
    resource.setrlimit(resource.RLIMIT_NOFILE, (48, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


@pytest.mark.parametrize("case,args,preexec,reason", [
    # as root, access(2) says /sys/kernel is writable; only a real attempt shows it is not
    ("unwritable", ["--vcpus", "1", "--results-dir", "/sys/kernel/faultbench-results"], None,
     "cannot be written"),
    ("memory", ["--vcpus", "1024", "--mem-per-vcpu", "65536"], None, "GiB available"),
    ("open_files", ["--vcpus", "64", "--mech", "uffd-many"], _low_nofile, "open files"),
    ("stall_timeout", ["--vcpus", "1", "--fetch-delay-us", "900000", "--stall-timeout", "0.8"], None,
     "longest modelled wait"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_preflight_failures_exit_2_with_nothing_written(kvm, lock_path, tmp_path, case, args,
                                                        preexec, reason):
    results = tmp_path / "r"
    argv = args if "--results-dir" in args else [*args, "--results-dir", str(results)]
    p = subprocess.run([sys.executable, "run_bench.py", *argv], cwd=REPO, capture_output=True,
                       text=True, timeout=60, preexec_fn=preexec)
    assert p.returncode == 2, p.stderr
    assert reason in one_line(p.stderr)
    assert not results.exists()
    assert not os.path.exists("/sys/kernel/faultbench-results")


def test_missing_kvm_device_exits_2(kvm, lock_path, tmp_path):
    """/dev/kvm hidden in a private mount namespace (an empty /dev)."""
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -m is not permitted here")
    p = subprocess.run(["unshare", "-m", "sh", "-c",
                        f"mount -t tmpfs none /dev && exec {sys.executable} run_bench.py --vcpus 1 "
                        f"--results-dir {tmp_path / 'r'}"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert "/dev/kvm is missing" in one_line(p.stderr)
    assert not (tmp_path / "r").exists()


def test_write_probe_leaves_nothing(tmp_path):
    preflight.check_writable(str(tmp_path / "a" / "b"), "--results-dir")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(preflight.PreflightError, match="not a directory"):
        preflight.check_writable(str(tmp_path / "file" / "results"), "--results-dir")


def _points(argv):
    from bench.options import build_parser, validate_args
    from bench.point import prepare
    args = build_parser().parse_args(argv)
    validate_args(args)
    _, points = prepare(args)
    return args, points


def test_userfaultfd_and_kvm_limits_are_checked():
    args, points = _points(["--vcpus", "8", "--mech", "uffd,exits,none"])
    with pytest.raises(preflight.PreflightError, match="userfaultfd.*exits, uffd.*root"):
        preflight.check_userfaultfd([m for m, _ in points], {"userfaultfd": {"error_errno": 1}})
    with pytest.raises(preflight.PreflightError, match="UFFD_FEATURE_SIGBUS.*exits"):
        preflight.check_userfaultfd([m for m, _ in points], {"userfaultfd": {"features": ["THREAD_ID"]}})
    none_only = [m for m, _ in points if not m.uses_uffd]
    preflight.check_userfaultfd(none_only, {"userfaultfd": {"error_errno": 1}})   # not needed
    with pytest.raises(preflight.PreflightError, match="KVM limit of 4"):
        preflight.check_kvm_vcpus(8, {"kvm_caps": {"KVM_CAP_MAX_VCPUS": 4}})
    preflight.check_kvm_vcpus(8, {"kvm_caps": {"KVM_CAP_MAX_VCPUS": 1024}})


def test_thread_limit_of_the_cgroup_is_checked(monkeypatch):
    args, points = _points(["--vcpus", "256", "--mech", "uffd", "--readers", "4"])
    monkeypatch.setattr(preflight, "_cgroup_pids_limit", lambda: (300, 100))
    with pytest.raises(preflight.PreflightError, match="260 more threads.*pids.max 300"):
        preflight.check_limits(points, args, precopy=False)
    monkeypatch.setattr(preflight, "_cgroup_pids_limit", lambda: (1000, 100))
    preflight.check_limits(points, args, precopy=False)


def test_missing_tracepoint_is_a_preflight_failure(monkeypatch):
    from bench import locktrace
    if os.geteuid() != 0:
        pytest.skip("tracefs needs root")
    assert preflight.tracefs_problem() is None
    monkeypatch.setattr(locktrace, "LOCK_EVENTS", ("contention_begin", "no_such_event"))
    with pytest.raises(preflight.PreflightError, match="lock:no_such_event.*--no-trace-locks"):
        preflight.check_tracefs(True)
    preflight.check_tracefs(False)


# ------------------------------------------------------------------ 3. watchdog and injected faults

@pytest.mark.parametrize("mech,extra,blamed", [
    ("uffd", [], "reader 0 stopped answering"),
    ("exits", [], "stopped answering"),
    ("async", [], "resolver 0 stopped answering"),
    ("uffd", ["--fetch", "worker"], "reader 0 stopped answering"),
])
def test_stalled_resolver_is_named_and_nothing_leaks(kvm, mech, extra, blamed):
    from bench.runner import execute
    from bench.watchdog import StallError
    before = process_resources()
    t0 = time.monotonic()
    with pytest.raises(StallError) as info:
        execute(make_plan(mech, 2, mib=2, extra=extra, stall_after=200, stall_timeout_s=1.0,
                          trace_locks=mech == "uffd" and not extra))
    assert time.monotonic() - t0 < 10
    reason, details = str(info.value), info.value.details
    assert "\n" not in reason and blamed in reason, reason
    assert "no page installed" in reason and "--stall-timeout 1" in reason
    vcpu_lines = [d for d in details if d.startswith("  vCPU")]
    assert len(vcpu_lines) == 2
    # the vCPUs that wait name their page, and the page is one of guest memory
    waiting = [d for d in vcpu_lines if "waits on page 0x" in d]
    assert waiting and all(int(d.split("waits on page ")[1].split(",")[0], 16) >= 1 << 30 for d in waiting)
    assert any("last doing: stopped answering" in d for d in details)
    if extra:
        assert any(d.startswith("  network worker (pid") for d in details)
    assert process_resources() == before, "threads or fds left behind"
    assert _children() == []
    from bench import tracefs
    assert tracefs_state(os.getpid())[0] == []
    assert tracefs._mount_users == 0 and not tracefs._we_mounted, "tracefs left mounted"


def test_hung_network_worker_is_named_by_the_watchdog(kvm):
    """A worker that hangs without dying or stopping (here: a 20 s service time
    against a 1 s stall timeout; run_bench.py itself refuses such a pair)."""
    from bench.runner import execute
    from bench.watchdog import StallError
    before = process_resources()
    with pytest.raises(StallError) as info:
        execute(make_plan("exits", 1, mib=2, extra=["--fetch", "worker", "--service-us", "20000000"],
                          stall_timeout_s=1.0))
    assert "vCPU 0 waiting for the network worker (CopyFromRemote)" in str(info.value), str(info.value)
    assert any(d.startswith("  network worker (pid") for d in info.value.details)
    assert process_resources() == before
    assert _children() == []


def test_oversubscribed_healthy_run_is_not_a_stall(kvm):
    """64 vCPUs on this 2-CPU host with a 2 s stall timeout: still progress."""
    from bench.runner import execute
    metrics, _ = execute(make_plan("uffd", 64, mib=2, stall_timeout_s=2.0))
    assert metrics["pages_installed"] == 64 * 512


def _children():
    try:
        with open(f"/proc/{os.getpid()}/task/{os.getpid()}/children") as f:
            return f.read().split()
    except OSError:
        return []


def test_stall_through_the_cli(kvm, lock_path, tmp_path):
    h = Harness(["--vcpus", "2", "--mech", "uffd", "--stall-after", "300", "--stall-timeout", "1",
                 "--mem-per-vcpu", "2", "--repeat", "1", "--no-fingerprint"], tmp_path / "r")
    status, _, err = h.wait()
    h.assert_clean_failure(status, err, "stalled: no page installed")
    assert status == 1
    assert "vCPU 0 (tid" in err and "reader 0 (tid" in err
    assert not (tmp_path / "r").exists()


def test_healthy_runs_never_hit_the_default_stall_timeout():
    from bench.options import STALL_TIMEOUT_S, build_parser
    from bench.plan import Plan
    assert build_parser().parse_args([]).stall_timeout == STALL_TIMEOUT_S == Plan.stall_timeout_s
    # every other test in the suite runs with this default and none stalls


def _worker_pid(parent):
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) != parent:
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"bench.worker" in f.read():
                    return int(pid)
        except OSError:
            continue
    return None


@pytest.mark.parametrize("sig,reason", [(signal.SIGSTOP, "is stopped"), (signal.SIGKILL, "died")])
def test_network_worker_hangs_or_dies(kvm, lock_path, tmp_path, sig, reason):
    h = Harness(["--vcpus", "2", "--mech", "exits", "--fetch", "worker", "--service-us", "300",
                 "--mem-per-vcpu", "32", "--repeat", "1", "--no-fingerprint"], tmp_path / "r")
    deadline = time.monotonic() + 60
    pid = None
    while pid is None and time.monotonic() < deadline:
        assert h.proc.poll() is None, h.proc.communicate()
        pid = _worker_pid(h.proc.pid)
        time.sleep(0.02)
    assert pid, "worker never started"
    h.wait_for_threads(3)   # main + 2 vCPUs: the run is under way
    time.sleep(0.3)
    os.kill(pid, sig)
    status, _, err = h.wait(timeout=60)
    h.assert_clean_failure(status, err, reason)
    assert len([line for line in err.splitlines() if line.strip()]) == 1, err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_run(kvm, lock_path, tmp_path, sig):
    # the run is held mid-way deterministically: its reader stops after 300 pages
    h = Harness(["--vcpus", "2", "--mech", "uffd", "--stall-after", "300", *SMALL], tmp_path / "r")
    h.wait_for_threads(4)   # main + 2 vCPUs + reader
    time.sleep(0.5)
    h.proc.send_signal(sig)
    status, _, err = h.wait(timeout=60)
    h.assert_clean_failure(status, err, "interrupted")
    assert status == 130
    assert not (tmp_path / "r").exists()


def test_sigterm_mid_traced_run_leaves_tracefs_as_found(kvm, lock_path, tmp_path):
    """SIGINT mid traced run: tests/test_measurement.py; here SIGTERM, in a smaller run."""
    from bench.tracefs import leftover_instances
    h = Harness(["--vcpus", "2", "--mech", "uffd", "--mem-per-vcpu", "32", "--repeat", "1",
                 "--tracer", "tracefs", "--no-fingerprint"], tmp_path / "r")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not [
            i for i in leftover_instances("faultbench") if i.startswith(f"faultbench-{h.proc.pid}-")]:
        assert h.proc.poll() is None, h.proc.communicate()
        time.sleep(0.02)
    time.sleep(0.2)   # inside the traced run
    h.proc.send_signal(signal.SIGTERM)
    status, _, err = h.wait(timeout=60)
    h.assert_clean_failure(status, err, "interrupted")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_sweep_keeps_only_finished_points(kvm, lock_path, tmp_path, sig):
    # point 1 (1 vCPU, 512 pages) finishes; point 2 (2 vCPUs) stops after 600 pages; blocked
    # order, so point 1's record is written before point 2 starts (an interleaved sweep
    # writes none until its last round: tests/test_sweep.py)
    results = tmp_path / "r"
    h = Harness(["--vcpus", "1,2", "--mech", "exits", "--stall-after", "600", "--order", "blocked",
                 *SMALL], results)
    deadline = time.monotonic() + 60
    while not list(results.glob("*.json")) and time.monotonic() < deadline:
        assert h.proc.poll() is None, h.proc.communicate()
        time.sleep(0.02)
    h.wait_for_threads(3)   # main + the second point's 2 vCPUs
    time.sleep(0.5)
    h.proc.send_signal(sig)
    status, _, err = h.wait(timeout=60)
    h.assert_clean_failure(status, err, "interrupted")
    done = list(results.iterdir())
    assert len(done) == 1 and "-v1-" in done[0].name, done
    assert resultmod.load(str(done[0]))["config"]["vcpus"] == 1


def _guest_with_bad_instruction(record_latency, original, **kw):
    """The generated guest with its final `out 0x10` (E6 10) replaced by `ud2`
    (0F 0B, same length): a guest that dies instead of saying it is done. With
    no IDT the #UD becomes a triple fault: KVM_EXIT_SHUTDOWN."""
    code = original(record_latency, **kw)
    assert code.count(b"\xe6\x10") == 1
    return code.replace(b"\xe6\x10", b"\x0f\x0b")


@pytest.mark.parametrize("mech", ["uffd", "exits", "async"])
def test_guest_exiting_unexpectedly(kvm, monkeypatch, mech):
    from bench import runner
    original = runner.touch_loop
    monkeypatch.setattr(runner, "touch_loop", lambda rl, **kw: _guest_with_bad_instruction(rl, original, **kw))
    before = process_resources()
    with pytest.raises(RunError) as info:
        # vCPU 0's 512 pages end first: it dies while vCPU 1 still faults
        runner.execute(make_plan(mech, 2, mib=2, workload="sequential"))
    assert "guest shut down (triple fault)" in str(info.value) and "\n" not in str(info.value)
    assert process_resources() == before
    assert _children() == []


def test_guest_exiting_unexpectedly_through_the_cli(kvm, lock_path, tmp_path):
    code = ("import sys; from bench import runner; orig = runner.touch_loop; "
            "runner.touch_loop = lambda rl, **kw: orig(rl, **kw).replace(bytes([0xe6, 0x10]), bytes([0x0f, 0x0b])); "
            "from bench.entry import entry; sys.argv[0] = 'run_bench.py'; entry()")
    before = tracefs_state()
    # --no-fingerprint: the fingerprint's own runs use touch_loop too, and would meet the
    # triple fault first (as "host calibration: ...")
    p = subprocess.Popen([sys.executable, "-c", code, "--vcpus", "2", "--mech", "uffd",
                          "--mem-per-vcpu", "2", "--repeat", "1", "--no-fingerprint",
                          "--results-dir", str(tmp_path / "r")],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": REPO})
    _, err = p.communicate(timeout=60)
    assert p.returncode == 1
    assert "guest shut down (triple fault)" in one_line(err) and "calibration" not in err, err
    assert not (tmp_path / "r").exists()
    assert tracefs_state(p.pid) == before


def test_kernel_threads_are_counted_apart_not_warned_on(monkeypatch):
    """kworkers also work for the harness (VM teardown, freeing, tracing): a busy kworker
    alone must not make the run look disturbed, a busy user process must."""
    from bench import hostnoise
    me = 10_000
    tick = hostnoise._clock_tick()
    before = {1: (0, "init", 0), 2: (0, "kthreadd", 0), 50: (2, "kworker/0:1", 0),
              700: (1, "bystander", 0), me: (1, "python3", 0)}
    after_kworker = {**before, 50: (2, "kworker/0:1", 10 * tick)}
    after_user = {**before, 700: (1, "bystander", 10 * tick)}
    for after, warned in ((after_kworker, False), (after_user, True)):
        states = iter([before, after])
        monkeypatch.setattr(hostnoise, "read_processes", lambda: next(states))
        s = hostnoise.NoiseSampler(root_pid=me)
        s.start()
        block, warnings = s.stop()
        assert bool(warnings) == warned, (block, warnings)
        assert block["kernel_threads_cpu_s"] == (10.0 if not warned else 0.0)
