"""A private tracefs instance, and the tracefs mount it needs, undone without fail.

The lock tracer (locktrace.py) and the scheduler tracer (schedtrace.py) each record
into their own ``instances/<prefix>-<pid>-<n>`` so the global trace buffer and other
tracers are not disturbed. ``TracefsInstance`` is what they share: it mounts tracefs
if nobody has (and unmounts it when the last instance of this process that relied on
that mount is gone), creates the instance, writes its settings, enables events with
their filters and triggers, reads the buffer, and undoes every change it made, last
first: on ``cleanup()``, on garbage collection and at interpreter exit.

Also here, for the checks that tracing left nothing behind: ``leftover_instances``,
``enabled_events_in`` and ``tracefs_mount_count``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import errno
import itertools
import os
import re
import threading
import time
import weakref

TRACEFS = "/sys/kernel/tracing"

_counter = itertools.count()       # one sequence for every prefix: names never repeat
_live = weakref.WeakSet()          # instances to clean up at interpreter exit
_mount_lock = threading.RLock()    # re-entrant: cleanup may run from a signal handler
_mount_users = 0                   # instances in this process relying on a mount we made
_we_mounted = False

_libc = None
RMDIR_WAIT_S = 15.0   # how long an instance's removal may stay EBUSY (TracefsInstance._rmdir)


class TraceUnavailable(Exception):
    """Tracing cannot be set up; the message names what is missing."""


# ----------------------------------------------------------------------------- mounts

def _libc_handle():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc


def _unescape_mount(s: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def tracefs_mount_count(path: str = TRACEFS) -> int:
    """Number of tracefs mounts stacked on ``path`` (0 = not mounted)."""
    n = 0
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                parts = left.split()
                if len(parts) >= 5 and _unescape_mount(parts[4]) == path and right.split()[:1] == ["tracefs"]:
                    n += 1
    except OSError:
        pass
    return n


def _mount_tracefs(path: str = TRACEFS) -> None:
    libc = _libc_handle()
    if libc.mount(b"nodev", path.encode(), b"tracefs", 0, None) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def _umount_tracefs(path: str = TRACEFS) -> None:
    libc = _libc_handle()
    for _ in range(20):
        if libc.umount2(path.encode(), 0) == 0:
            return
        e = ctypes.get_errno()
        if e != errno.EBUSY:
            raise OSError(e, os.strerror(e))
        time.sleep(0.05)
    # Someone holds a file open: detach so the mount table is as we found it.
    if libc.umount2(path.encode(), 2) != 0:  # MNT_DETACH
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


class _TracefsView:
    """Temporarily make tracefs visible (mount if needed, unmount afterwards)."""

    def __enter__(self):
        self.mounted = False
        if tracefs_mount_count() == 0:
            _mount_tracefs()
            self.mounted = True
        return TRACEFS

    def __exit__(self, *exc):
        if self.mounted:
            _umount_tracefs()
        return False


# ----------------------------------------------------------------------------- inspection

def leftover_instances(prefix: str = "faultbench") -> list[str]:
    """Names of tracefs instances starting with ``prefix-`` (instances outlive umount,
    so tracefs is mounted temporarily to look)."""
    try:
        with _TracefsView() as root:
            d = os.path.join(root, "instances")
            return sorted(n for n in os.listdir(d) if n.startswith(prefix + "-"))
    except OSError:
        return []


def enabled_events_in(instance_path: str) -> list[str]:
    """``system:event`` names enabled in an instance (or the top level tracefs dir)."""
    try:
        with open(os.path.join(instance_path, "set_event")) as f:
            return sorted(l.strip() for l in f if l.strip() and not l.startswith("#"))
    except OSError:
        pass
    out = []
    ev = os.path.join(instance_path, "events")
    for system in sorted(os.listdir(ev)) if os.path.isdir(ev) else ():
        sdir = os.path.join(ev, system)
        if not os.path.isdir(sdir):
            continue
        for name in sorted(os.listdir(sdir)):
            try:
                with open(os.path.join(sdir, name, "enable")) as f:
                    if f.read().strip().startswith("1"):
                        out.append(f"{system}:{name}")
            except OSError:
                continue
    return out


def has_event(system: str, event: str, root: str = TRACEFS) -> bool:
    """Whether tracefs at ``root`` (the top level, or an instance) has this event."""
    return os.path.isdir(os.path.join(root, "events", system, event))


# ----------------------------------------------------------------------------- instance

class TracefsInstance:
    """One private tracefs instance. Every change is recorded as an undo action;
    ``cleanup()`` runs them last first, each at most once."""

    def __init__(self, name_prefix: str = "faultbench"):
        self.name_prefix = name_prefix
        self.name = None            # instances/<name>, chosen by create()
        self.path = None            # its directory while it exists
        self.cleanup_errors = []
        self._undo = []
        self._holds_mount = False
        self._mount_checked = False

    # -- set-up
    def add_undo(self, action) -> None:
        """Register a teardown action (idempotent: a ^C may make cleanup retry it)."""
        self._undo.append(action)
        _live.add(self)             # from the first change on, exit must undo it

    def mount(self) -> None:
        """Make tracefs visible at TRACEFS until cleanup; mount it if nobody has."""
        global _mount_users, _we_mounted
        with _mount_lock:
            if self._mount_checked:
                return
            if tracefs_mount_count() == 0:
                try:
                    _mount_tracefs()
                except OSError as e:
                    raise TraceUnavailable(f"tracefs: cannot mount at {TRACEFS}: {e.strerror}") from None
                _we_mounted = True
            # a mount this process made (now or for a live instance) is shared and
            # counted; one somebody else made is theirs to keep
            if _we_mounted:
                _mount_users += 1
                self._holds_mount = True
                self.add_undo(self._release_mount)
            self._mount_checked = True

    def create(self) -> str:
        """Create the instance, tracing off (mounting first if needed); its path."""
        if self.path is not None:
            raise RuntimeError(f"tracefs instance {self.name} already exists")
        self.mount()
        self.name = f"{self.name_prefix}-{os.getpid()}-{next(_counter)}"
        path = os.path.join(TRACEFS, "instances", self.name)
        try:
            os.mkdir(path)
        except OSError as e:
            raise TraceUnavailable(f"tracefs instance: cannot create {path}: {e.strerror}") from None
        self.path = path
        self.add_undo(self._rmdir)
        # a new instance records at once: off until its events are set up
        self.write("tracing_on", "0")
        self.add_undo(lambda: self.write("tracing_on", "0"))
        return path

    @contextlib.contextmanager
    def setting_up(self):
        """Around a set-up: any failure undoes what was done; an OSError becomes a
        TraceUnavailable naming the file."""
        try:
            yield self
        except TraceUnavailable:
            self.cleanup()
            raise
        except OSError as e:
            self.cleanup()
            raise TraceUnavailable(f"tracefs setup failed: {e.filename}: {e.strerror}") from None
        except BaseException:
            self.cleanup()
            raise

    # -- files of the instance
    def write(self, rel: str, value: str) -> None:
        if self.path is None:
            raise RuntimeError("tracefs instance not created")
        with open(os.path.join(self.path, rel), "w") as f:
            f.write(value)

    def read(self, rel: str) -> str:
        if self.path is None:
            raise RuntimeError("tracefs instance not created")
        with open(os.path.join(self.path, rel)) as f:
            return f.read()

    def has_event(self, system: str, event: str) -> bool:
        if self.path is None:
            raise RuntimeError("tracefs instance not created")
        return has_event(system, event, self.path)

    # -- settings
    def set_buffer_kb(self, kb: int) -> None:
        """Ring buffer size per CPU (not undone: it goes with the instance)."""
        self.write("buffer_size_kb", str(int(kb)))

    def set_clock(self, clock: str, required: bool = True) -> bool:
        """Select the trace clock (not undone: it goes with the instance); False, or
        TraceUnavailable if ``required``, when this kernel has no such clock."""
        try:
            self.write("trace_clock", clock)
        except OSError:
            if required:
                raise TraceUnavailable(f"tracefs: trace clock {clock} not available") from None
            return False
        return True

    def set_option(self, name: str, value: str) -> bool:
        """Set an instance option; return True if it exists. Restored at teardown."""
        rel = os.path.join("options", name)
        try:
            old = self.read(rel).strip()
        except OSError:
            return False
        if old != value:
            self.write(rel, value)
            self.add_undo(lambda: self.write(rel, old))
        return True

    def follow_pids(self, pids) -> None:
        """Record only these tasks and what they fork or clone from now on."""
        self.set_option("event-fork", "1")
        self.write("set_event_pid", " ".join(str(p) for p in pids))
        self.add_undo(lambda: self.write("set_event_pid", ""))

    def enable_event(self, system: str, event: str, filter: str | None = None) -> None:
        """Enable one event, with a filter expression if given (set first, so no
        unfiltered event is recorded)."""
        base = os.path.join("events", system, event)
        if filter is not None:
            self.write(os.path.join(base, "filter"), filter)
            self.add_undo(lambda: self.write(os.path.join(base, "filter"), "0"))  # "0" clears
        self.write(os.path.join(base, "enable"), "1")
        self.add_undo(lambda: self.write(os.path.join(base, "enable"), "0"))

    def enable_events(self, system: str, events) -> None:
        for ev in events:
            self.enable_event(system, ev)

    def add_trigger(self, system: str, event: str, trigger: str) -> None:
        """Attach a trigger (``stacktrace``, ``traceoff:1 if ...``); removed at teardown
        by writing it again behind ``!``."""
        rel = os.path.join("events", system, event, "trigger")
        self.write(rel, trigger)
        self.add_undo(lambda: self.write(rel, "!" + trigger))

    def tracing(self, on: bool) -> None:
        """Start or stop recording (stopped again at teardown in any case)."""
        self.write("tracing_on", "1" if on else "0")

    # -- reading
    def trace_lines(self) -> list[str]:
        """The buffer as text (``trace``: read without consuming it)."""
        return self.read("trace").splitlines()

    def raw_trace_lines(self) -> list[str] | None:
        """The same buffer printed with the ``raw`` option (pid, cpu, ns timestamp,
        event type); None if the option cannot be set. Read after trace_lines() with
        tracing off, both reads see the same entries in the same order."""
        try:
            self.write("options/raw", "1")
            try:
                return self.read("trace").splitlines()
            finally:
                self.write("options/raw", "0")
        except OSError:
            return None

    def lost_events(self) -> int:
        """Events overwritten or dropped on any CPU, from per_cpu/cpu*/stats."""
        lost = 0
        pc = os.path.join(self.path, "per_cpu")
        for cpu in os.listdir(pc):
            try:
                with open(os.path.join(pc, cpu, "stats")) as f:
                    for line in f:
                        k, _, v = line.partition(":")
                        if k.strip() in ("overrun", "dropped events"):
                            lost += int(v.split()[0])
            except (OSError, ValueError, IndexError):
                continue
        return lost

    # -- teardown
    def cleanup(self) -> None:
        """Undo everything. Idempotent and re-entrant: each action is popped before it
        runs, so a signal arriving mid-cleanup cannot run one twice."""
        errors = []
        interrupted = None
        while self._undo:
            action = self._undo.pop()
            for _attempt in range(2):      # actions are idempotent: retry one cut by ^C
                try:
                    action()
                    break
                except OSError as e:
                    errors.append(e)
                    break
                except KeyboardInterrupt as e:
                    interrupted = e        # finish the teardown first
        _live.discard(self)
        self._mount_checked = False
        # Best effort: teardown must not mask the caller's exception; keep for diagnosis.
        self.cleanup_errors = errors
        if interrupted is not None:
            raise interrupted

    def _rmdir(self):
        path, self.path = self.path, None
        # EBUSY while the kernel still holds a reference (a reader's file, an event
        # being unregistered): under a CPU hog it outlasted 2 s here, so wait up to 15 s
        deadline = time.monotonic() + RMDIR_WAIT_S
        while True:
            try:
                os.rmdir(path)
                return
            except FileNotFoundError:
                return
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _release_mount(self):
        global _mount_users, _we_mounted
        with _mount_lock:
            if not self._holds_mount:
                return
            self._holds_mount = False
            _mount_users -= 1
            if _mount_users == 0 and _we_mounted:
                _we_mounted = False
                if tracefs_mount_count() > 0:
                    _umount_tracefs()

    def __enter__(self):
        with self.setting_up():
            self.create()
        return self

    def __exit__(self, *exc):
        self.cleanup()
        return False

    def __del__(self):
        try:
            self.cleanup()
        except Exception:
            pass


class InstanceTracer:
    """What a tracer that owns one private instance (has-a TracefsInstance) shares
    with the others: start under a lock with everything undone on failure, the
    instance's name and path, clean-up. A subclass sets `_tf` and `_lock` and
    writes `_start(tf)`."""
    _tf: TracefsInstance

    @property
    def instance(self):
        """The instance's name (kept after cleanup), or None before start()."""
        return self._tf.name

    @property
    def path(self):
        """The instance's directory while it exists."""
        return self._tf.path

    @property
    def cleanup_errors(self):
        return self._tf.cleanup_errors

    def start(self) -> None:
        with self._lock:
            if self.path is not None:
                raise RuntimeError(f"{type(self).__name__} already started")
            with self._tf.setting_up():
                self._start(self._tf)

    def _start(self, tf: TracefsInstance) -> None:
        raise NotImplementedError

    def cleanup(self) -> None:
        """Undo everything start() did (see TracefsInstance.cleanup: idempotent,
        re-entrant, finishes its teardown before re-raising a ^C)."""
        self._tf.cleanup()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.cleanup()
        return False


def require_events(system: str, events, root: str = TRACEFS) -> None:
    """TraceUnavailable naming the first of `events` this kernel lacks."""
    for ev in events:
        if not has_event(system, ev, root):
            raise TraceUnavailable(f"tracefs {system}:{ev} event not available: "
                                   f"no {root}/events/{system}/{ev}")


@atexit.register
def _cleanup_all():
    # Safety net for instances their owner forgot to clean up.
    for t in list(_live):
        try:
            t.cleanup()
        except Exception:
            pass
