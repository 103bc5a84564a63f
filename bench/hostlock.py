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

Both defaults are in world-writable sticky directories, where any local user
can plant something at the path before a root run opens it. So the file is
opened without following a symbolic link, and used only when it is a regular
file with one name, owned by root or by the caller; anything else is refused
(UnsafeLockFile). Only a file this process created is made world-writable.
"""
from __future__ import annotations

import errno
import fcntl
import os
import shlex
import stat
import sys
import time

ENV_PATH = "FAULTBENCH_LOCK_PATH"
POLL_S = 0.2


# How a refusal begins (the benchmark prints it after "run_bench.py: error: ", exit
# 2); run-job (bench/jobs/run_job.py) tells "host busy" from other exits 2 by it
BUSY_WORDS = "another faultbench run holds"


class LockBusy(Exception):
    """Another live process holds the lock (one-line message, BUSY_WORDS first)."""


class UnsafeLockFile(OSError):
    """What is at the lock path is not safe to write: a symbolic link, not a
    regular file, a file with other names (hard links), or another user's file.
    An OSError, so that callers that report a lock path they cannot open
    (bench/cli.py) report this too; `strerror` is the reason."""

    def __init__(self, path: str, why: str):
        super().__init__(errno.EPERM, why, path)

    def __str__(self) -> str:
        return f"host lock {self.filename}: {self.strerror}"


# O_NONBLOCK: a FIFO planted at the path must not block the open (no effect on
# a regular file); O_NOCTTY: nor may a terminal become this process's own.
_OPEN_FLAGS = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
_KINDS = ((stat.S_ISLNK, "a symbolic link, which could aim this run's writes at another file"),
          (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _refusal(mode: int) -> str:
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    return f"refused: {kind}" + ("" if stat.S_ISLNK(mode) else ", not a regular file")


def _check(fd: int, path: str) -> None:
    """Refuse what an open without O_CREAT found at the path, unless it is a
    regular file with one name, owned by root or by this process's user."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeLockFile(path, _refusal(st.st_mode))
    if st.st_uid not in (0, os.geteuid()):
        raise UnsafeLockFile(path, f"refused: owned by uid {st.st_uid}, neither root nor this user "
                                   f"(uid {os.geteuid()}); remove it if no run holds it")
    if st.st_nlink != 1:   # a hard link to another file: truncating it would truncate that one
        raise UnsafeLockFile(path, f"refused: the file has {st.st_nlink} names (hard links), "
                                   "so writing it would write another file too")


def open_lock_file(path: str) -> int:
    """A read-write descriptor on the lock file at `path`: created (mode 0666)
    when nothing is there, else the existing file if _check accepts it."""
    for _ in range(3):   # another run may remove or create it between our two opens
        try:   # O_EXCL: created by this call, never an existing file nor a link's target
            fd = os.open(path, _OPEN_FLAGS | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            pass
        else:
            try:   # every user's runs share the host: let them all open it (umask would not)
                os.fchmod(fd, 0o666)
            except OSError:
                pass   # still usable by this user
            return fd
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except FileNotFoundError:
            continue
        except OSError as exc:   # a link (ELOOP), a directory (EISDIR), a socket (ENXIO)...
            try:
                mode = os.lstat(path).st_mode
            except OSError:
                raise exc from None
            if stat.S_ISREG(mode):
                raise   # a plain file this user may not open: the caller's usual error
            raise UnsafeLockFile(path, _refusal(mode)) from None
        try:
            _check(fd, path)
        except BaseException:
            os.close(fd)
            raise
        return fd
    raise OSError(errno.ENOENT, "removed and created again while being opened; try again", path)


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


def _holder(fd: int) -> tuple[int | None, str]:
    """(pid, command) in the lock file open at `fd`: read through the descriptor
    that was checked, not by a name that may have been replaced since."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", errors="replace")
    except OSError:
        return None, ""
    first, _, command = text.partition("\n")
    try:
        return int(first.strip()), command.strip()
    except ValueError:
        return None, command.strip()


def read_holder(path: str) -> tuple[int | None, str]:
    """(pid, command) written by the process that holds or last held the lock;
    (None, "") unless `path` is a regular file (a link there is not followed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return None, ""
    try:
        return _holder(fd) if stat.S_ISREG(os.fstat(fd).st_mode) else (None, "")
    finally:
        os.close(fd)


def describe(pid: int | None, command: str) -> str:
    if pid is None:
        return "an unknown process"
    return f"pid {pid} ({command or 'command unknown'})"


class HostLock:
    """flock-based host lock. `acquire(wait)` returns a note (takeover of a
    stale holder) or None; raises LockBusy when wait is False and it is held,
    UnsafeLockFile when what is at the path is not safe to write."""

    def __init__(self, path: str | None = None, command: list[str] | None = None):
        self.path = path or default_path()
        self.command = shlex.join(command if command is not None else sys.argv)
        self.fd = -1

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
        fd = open_lock_file(self.path)
        try:
            told = False
            while not self._try(fd):
                pid, command = _holder(fd)
                holder = describe(pid, command)
                if not wait:
                    raise LockBusy(f"{BUSY_WORDS} {self.path}: {holder}; "
                                   "wait for it or drop --no-wait")
                if not told and on_wait:
                    on_wait(f"waiting for {holder} to finish (it holds {self.path}; "
                            "--no-wait exits instead)")
                    told = True
                time.sleep(POLL_S)
            # the lock is ours; whoever wrote the file last is gone
            pid, command = _holder(fd)
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
