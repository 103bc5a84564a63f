"""Issue 15: a host lock that cannot be turned against its host. The lock path
lies in a world-writable sticky directory: whatever another user plants there
(a symbolic link, a hard link, a FIFO, a directory, a file of their own) is
refused with one line naming the path, and what it points at is left as it
was. A path with nothing there is created world-writable; an existing lock
file is reused as it is."""
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading

import pytest

from bench import hostlock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOBODY = 65534


@pytest.fixture
def victim(tmp_path):
    """A root-owned (the test's user's) 0600 file that an attacker would aim at."""
    path = tmp_path / "victim"
    path.write_text("secret contents\n")
    os.chmod(path, 0o600)
    return path


def untouched(path) -> bool:
    st = os.stat(path)
    return (path.read_text() == "secret contents\n" and stat.S_IMODE(st.st_mode) == 0o600
            and st.st_uid == os.geteuid())


def refused(path: str, match: str) -> hostlock.UnsafeLockFile:
    with pytest.raises(hostlock.UnsafeLockFile, match=match) as info:
        hostlock.HostLock(path, command=["test"]).acquire(wait=False)
    exc = info.value
    # an OSError: bench/cli.py words those as "host lock PATH: <strerror>; ..." (exit 2)
    assert isinstance(exc, OSError) and exc.filename == path and exc.strerror.startswith("refused: ")
    assert path in str(exc) and "\n" not in str(exc)
    return exc


def test_planted_symlink_is_refused_and_its_target_untouched(tmp_path, victim):
    lock = str(tmp_path / "faultbench.lock")
    os.symlink(victim, lock)
    refused(lock, "symbolic link")
    assert untouched(victim) and os.path.islink(lock)


def test_symlink_to_a_missing_file_creates_nothing(tmp_path):
    target = tmp_path / "would-be-created"
    lock = str(tmp_path / "faultbench.lock")
    os.symlink(target, lock)
    refused(lock, "symbolic link")
    assert not target.exists()


def test_hard_link_to_another_file_is_refused(tmp_path, victim):
    lock = str(tmp_path / "faultbench.lock")
    os.link(victim, lock)
    refused(lock, "hard links")
    assert untouched(victim)


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_fifo_or_directory_at_the_path_is_refused(tmp_path, kind):
    lock = str(tmp_path / "faultbench.lock")
    (os.mkfifo if kind == "fifo" else os.mkdir)(lock)
    words = "a FIFO" if kind == "fifo" else "a directory"
    done = []
    # a FIFO must not block the open: run it where a hang fails the test instead
    t = threading.Thread(target=lambda: done.append(refused(lock, words)), daemon=True)
    t.start()
    t.join(10)
    assert done, f"acquire on a {kind} did not return"
    assert stat.S_ISFIFO(os.lstat(lock).st_mode) if kind == "fifo" else os.path.isdir(lock)


def test_another_users_file_is_refused_untouched(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file to another user")
    lock = tmp_path / "faultbench.lock"
    lock.write_text("12345\nsomeone else's\n")
    os.chmod(lock, 0o644)
    os.chown(lock, NOBODY, NOBODY)
    refused(str(lock), f"owned by uid {NOBODY}")
    st = os.stat(lock)
    assert lock.read_text() == "12345\nsomeone else's\n" and stat.S_IMODE(st.st_mode) == 0o644


def test_first_run_creates_the_file_and_a_second_reuses_it(tmp_path):
    lock = str(tmp_path / "faultbench.lock")
    old_umask = os.umask(0o022)
    try:
        first = hostlock.HostLock(lock, command=["first", "run"])
        assert first.acquire(wait=False) is None
    finally:
        os.umask(old_umask)
    st = os.stat(lock)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o666   # not the umask's 0644
    assert hostlock.read_holder(lock) == (os.getpid(), "first run")
    first.release()
    assert open(lock).read() == ""
    os.chmod(lock, 0o644)   # its owner's choice: a later run must not widen it
    second = hostlock.HostLock(lock, command=["second"])
    assert second.acquire(wait=False) is None
    try:
        again = os.stat(lock)
        assert again.st_ino == st.st_ino and stat.S_IMODE(again.st_mode) == 0o644
        assert hostlock.read_holder(lock) == (os.getpid(), "second")
    finally:
        second.release()


def test_held_lock_still_names_its_holder_and_a_stale_one_is_taken_over(tmp_path):
    lock = str(tmp_path / "faultbench.lock")
    holder = hostlock.HostLock(lock, command=["run_bench.py", "--vcpus", "8"])
    holder.acquire(wait=False)
    try:
        with pytest.raises(hostlock.LockBusy, match=rf"pid {os.getpid()} \(run_bench.py --vcpus 8\)"):
            hostlock.HostLock(lock, command=["second"]).acquire(wait=False)
    finally:
        holder.release()
    dead = subprocess.Popen(["true"])
    dead.wait()
    with open(lock, "w") as f:
        f.write(f"{dead.pid}\nrun_bench.py --vcpus 2\n")
    taker = hostlock.HostLock(lock, command=["taker"])
    note = taker.acquire(wait=False)
    taker.release()
    assert note and f"from pid {dead.pid} (run_bench.py --vcpus 2), which is gone" in note


def test_a_non_root_user_creates_and_reuses_its_own_lock_file_but_root_refuses_it():
    if os.geteuid() != 0:
        pytest.skip("needs root to run a child as another user")
    shared = tempfile.mkdtemp(prefix="fb-hostlock-")   # like /run/lock: world-writable, sticky
    try:
        os.chmod(shared, 0o1777)
        lock = os.path.join(shared, "faultbench.lock")
        private = os.path.join(shared, "private.lock")   # root's, not shared: mode 0600
        os.close(os.open(private, os.O_CREAT | os.O_WRONLY, 0o600))
        pid = os.fork()
        if pid == 0:   # the child: user nobody takes the lock twice (creates, then reuses)
            status = 1
            try:
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                for _ in range(2):
                    h = hostlock.HostLock(lock, command=["nobody"])
                    h.acquire(wait=False)
                    h.release()
                try:   # root's file it may not open: the plain error the CLI words as before
                    hostlock.HostLock(private, command=["nobody"]).acquire(wait=False)
                except hostlock.UnsafeLockFile:
                    status = 3
                except PermissionError:
                    status = 0
                else:
                    status = 2
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        st = os.stat(lock)
        assert st.st_uid == NOBODY and stat.S_IMODE(st.st_mode) == 0o666
        refused(lock, f"owned by uid {NOBODY}")   # root does not write another user's file
    finally:
        shutil.rmtree(shared)


@pytest.mark.usefixtures("kvm")
def test_run_bench_exits_2_naming_the_planted_path(tmp_path, victim):
    lock = str(tmp_path / "faultbench.lock")
    os.symlink(victim, lock)
    p = subprocess.run([sys.executable, "run_bench.py", "--vcpus", "1", "--mem-per-vcpu", "2",
                        "--repeat", "1", "--no-trace-locks", "--no-wait",
                        "--results-dir", str(tmp_path / "r")], cwd=REPO,
                       env={**os.environ, hostlock.ENV_PATH: lock},
                       capture_output=True, text=True, timeout=120)
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert lines[0].startswith(f"run_bench.py: error: host lock {lock}: refused: a symbolic link")
    assert untouched(victim) and not (tmp_path / "r").exists()
