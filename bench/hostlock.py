"""One benchmark at a time per host.

On a 2-CPU machine two harness runs distort each other's numbers and their
tracefs instances meet, so `run_bench.py` takes this lock before its first
measurement and holds it until it exits. The lock is an flock(2) on a file:
the kernel drops it when its holder dies, however it dies, so a stale lock
from a dead process is simply taken over (and said so). The file holds the
holder's pid and command line, for the message a second invocation prints.

The path is FAULTBENCH_LOCK_PATH when set (tests point it at a temp file),
otherwise /run/lock/faultbench.lock (tmpfs: gone after a reboot), or
/tmp/faultbench.lock where /run/lock does not exist.
"""
from __future__ import annotations

import errno
import fcntl
import os
import shlex
import sys
import time

ENV_PATH = "FAULTBENCH_LOCK_PATH"
POLL_S = 0.2


class LockBusy(Exception):
    """Another live process holds the lock (one-line message)."""


def default_path() -> str:
    if os.environ.get(ENV_PATH):
        return os.environ[ENV_PATH]
    if os.path.isdir("/run/lock"):
        return "/run/lock/faultbench.lock"
    return "/tmp/faultbench.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_holder(path: str) -> tuple[int | None, str]:
    """(pid, command) written by the process that holds or last held the lock."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read(4096)
    except OSError:
        return None, ""
    first, _, command = text.partition("\n")
    try:
        return int(first.strip()), command.strip()
    except ValueError:
        return None, command.strip()


def describe(pid: int | None, command: str) -> str:
    if pid is None:
        return "an unknown process"
    return f"pid {pid} ({command or 'command unknown'})"


class HostLock:
    """flock-based host lock. `acquire(wait)` returns a note (takeover of a
    stale holder) or None; raises LockBusy when wait is False and it is held."""

    def __init__(self, path: str | None = None, command: list[str] | None = None):
        self.path = path or default_path()
        self.command = shlex.join(command if command is not None else sys.argv)
        self.fd = -1

    def _open(self) -> int:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:   # every user's runs share the host: let them all open it (umask would not)
            os.fchmod(fd, 0o666)
        except OSError:
            pass   # created by another user, who made it shareable
        return fd

    def _try(self, fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            raise

    def acquire(self, wait: bool = True, on_wait=None) -> str | None:
        """Take the lock. While waiting, on_wait(message) is called once."""
        if self.fd >= 0:
            raise RuntimeError("host lock already held by this object")
        fd = self._open()
        try:
            told = False
            while not self._try(fd):
                pid, command = read_holder(self.path)
                holder = describe(pid, command)
                if not wait:
                    raise LockBusy(f"another faultbench run holds {self.path}: {holder}; "
                                   "wait for it or drop --no-wait")
                if not told and on_wait:
                    on_wait(f"waiting for {holder} to finish (it holds {self.path}; "
                            "--no-wait exits instead)")
                    told = True
                time.sleep(POLL_S)
            # the lock is ours; whoever wrote the file last is gone
            pid, command = read_holder(self.path)
            note = None
            if pid is not None and pid != os.getpid() and not _pid_alive(pid):
                note = f"took over the host lock {self.path} from {describe(pid, command)}, which is gone"
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n{self.command}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return note

    def release(self) -> None:
        if self.fd < 0:
            return
        try:
            os.ftruncate(self.fd, 0)   # no stale name left for the next reader
        except OSError:
            pass
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = -1

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
        return False
