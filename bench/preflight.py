"""Everything checked before the first measurement, so a sweep never fails
half-way on something knowable at the start.

Each check raises PreflightError with one line naming what is wrong and what
to do; `run_bench.py` prints it and exits 2 with nothing written. The checks
size themselves on the largest point of the sweep.
"""
from __future__ import annotations

import errno
import os
import resource
import tempfile

from . import kerneltrace, locktrace, tracefs
from .probes import UFFD_FEATURES


class PreflightError(Exception):
    """A pre-flight check failed (one-line message, exit status 2)."""


# ---------------------------------------------------------------- output directories

def nearest_existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def check_writable(target: str, what: str) -> None:
    """Really create (and drop) a file where results will go: as root, mode
    bits say nothing, and a read-only mount or a file in the way only shows
    on a real attempt. Nothing stays behind: O_TMPFILE has no name at all."""
    existing = nearest_existing(target)
    if not os.path.isdir(existing):
        raise PreflightError(f"{what} {target} cannot be created: {existing} is not a directory")
    try:
        fd = os.open(existing, os.O_TMPFILE | os.O_WRONLY, 0o600)
        os.close(fd)
        return
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise PreflightError(f"{what} {target} cannot be written ({existing}: {exc.strerror})") from None
    try:   # file systems without O_TMPFILE: a named file, removed at once
        fd, name = tempfile.mkstemp(dir=existing, prefix=".faultbench-probe-")
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise PreflightError(f"{what} {target} cannot be written ({existing}: {exc.strerror})") from None


# ---------------------------------------------------------------- kernel interfaces

def uffd_features_needed(mechs) -> dict[str, list[str]]:
    """{feature: [mechanisms needing it]} for the userfaultfd features the sweep uses."""
    need: dict[str, list[str]] = {}
    for mech in mechs:
        if not mech.uses_uffd:
            continue
        feats = ["SIGBUS"] if mech.name in ("exits", "async") else ["THREAD_ID"]
        if mech.resolve() == "continue":
            feats.append("MINOR_SHMEM")
        for f in feats:
            need.setdefault(f, []).append(mech.name)
    return need


def check_userfaultfd(mechs, probes: dict) -> None:
    need = uffd_features_needed(mechs)
    if not need:
        return
    uffd = probes.get("userfaultfd") or {}
    if "error_errno" in uffd:
        users = sorted({m for ms in need.values() for m in ms})
        raise PreflightError(
            f"userfaultfd(2) is not permitted here ({os.strerror(uffd['error_errno'])}), and "
            f"{', '.join(users)} need it: run as root, give CAP_SYS_PTRACE, or set "
            "vm.unprivileged_userfaultfd=1")
    have = set(uffd.get("features", ()))
    for feat, users in need.items():
        if feat in UFFD_FEATURES and feat not in have:
            raise PreflightError(f"this kernel's userfaultfd lacks UFFD_FEATURE_{feat}, which "
                                 f"{', '.join(sorted(set(users)))} need")


def check_kvm_vcpus(vcpus: int, probes: dict) -> None:
    limit = (probes.get("kvm_caps") or {}).get("KVM_CAP_MAX_VCPUS")
    if isinstance(limit, int) and limit > 0 and vcpus > limit:
        raise PreflightError(f"--vcpus {vcpus} is above this kernel's KVM limit of {limit} vCPUs "
                             "per VM (KVM_CAP_MAX_VCPUS)")


def tracefs_problem() -> str | None:
    """Why lock tracing cannot work here, or None. Mounts tracefs only for the
    look (and unmounts it) when it is not mounted."""
    try:
        with tracefs._TracefsView() as root:
            for ev in locktrace.LOCK_EVENTS:
                if not os.path.isdir(os.path.join(root, "events", "lock", ev)):
                    return f"this kernel has no lock:{ev} tracepoint"
            instances = os.path.join(root, "instances")
            if not os.access(instances, os.W_OK):
                return f"{instances} is not writable (lock tracing needs root)"
    except OSError as exc:
        return f"tracefs cannot be mounted at {tracefs.TRACEFS} ({exc.strerror}; needs root)"
    return None


def choose_tracer(args) -> None:
    """Resolve --tracer into args.tracer_used ("bpf", "tracefs" or None) and
    args.tracer_why (why not bpf, when auto fell back). An explicit bpf that cannot
    run is an error, never a silent fallback."""
    args.tracer_used, args.tracer_why = None, None
    if not args.trace_locks:
        return
    why = kerneltrace.load_problem() if args.tracer in ("auto", "bpf") else "--tracer tracefs"
    if why is None:
        args.tracer_used = "bpf"
        return
    if args.tracer == "bpf":
        raise PreflightError(f"--tracer bpf: {why}; use --tracer tracefs or --no-trace-locks")
    if getattr(args, "trace_every_run", False):   # never a silent change of what is traced
        raise PreflightError(f"--trace-every-run needs the in-kernel tracer: {why}")
    args.tracer_used, args.tracer_why = "tracefs", why
    check_tracefs(True)


def check_tracefs(trace_locks: bool) -> None:
    if not trace_locks:
        return
    problem = tracefs_problem()
    if problem:
        raise PreflightError(f"lock tracing: {problem}; use --no-trace-locks to run without it")


# ---------------------------------------------------------------- process limits

def fds_needed(mech, vcpus: int, fetch_worker: bool, trace_locks: bool) -> int:
    """File descriptors one run opens at once (bench/csrc/core.c, mech_*.c)."""
    fixed = 6          # /dev/kvm, the VM, guest memfd, done/stop/list eventfds
    per_vcpu = 1       # its vCPU fd (kvm_run is mapped, not kept open)
    uffds = mech.uffds() if mech.uses_uffd else 0
    epolls = mech.readers_total() if mech.uses_uffd and mech.wait() == "epoll" else 0
    worker = 4 if fetch_worker else 0    # ring, pidfd, the worker's stderr file, its pipe
    tracing = 8 if trace_locks else 0    # tracefs files open while tracing
    return fixed + per_vcpu * vcpus + uffds + epolls + worker + tracing


def threads_needed(mech, vcpus: int, precopy: bool) -> int:
    return vcpus + mech.readers_total() + (1 if precopy else 0)


def _cgroup_pids_limit() -> tuple[int, int] | None:
    """(pids.max, pids.current) of this process's cgroup, where one is set."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        if hid == "0" and controllers == "":
            base = os.path.join("/sys/fs/cgroup", path.lstrip("/"))
        elif "pids" in controllers.split(","):
            base = os.path.join("/sys/fs/cgroup/pids", path.lstrip("/"))
        else:
            continue
        try:
            with open(os.path.join(base, "pids.max")) as f:
                limit = f.read().strip()
            with open(os.path.join(base, "pids.current")) as f:
                current = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit != "max":
            return int(limit), current
    return None


def _system_tasks() -> int | None:
    try:
        with open("/proc/loadavg") as f:
            return int(f.read().split()[3].split("/")[1])
    except (OSError, ValueError, IndexError):
        return None


def check_limits(points, args, precopy: bool) -> None:
    """Open files and threads for the largest point of the sweep."""
    open_now = len(os.listdir("/proc/self/fd"))
    soft_fds, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    worker = getattr(args, "fetch", "inline") == "worker"
    trace = bool(getattr(args, "trace_locks", False))
    fd_need, fd_point = max(((fds_needed(m, v, worker, trace), (m.name, v)) for m, v in points),
                            key=lambda x: x[0])
    if soft_fds != resource.RLIM_INFINITY and open_now + fd_need > soft_fds:
        raise PreflightError(
            f"{fd_point[0]} at {fd_point[1]} vCPUs needs about {open_now + fd_need} open files; "
            f"the limit is {soft_fds}: raise it (ulimit -n {open_now + fd_need}) or use fewer "
            "vCPUs or userfaultfds")
    th_need, th_point = max(((threads_needed(m, v, precopy), (m.name, v)) for m, v in points),
                            key=lambda x: x[0])
    if worker:
        th_need += 1 + getattr(args, "worker_threads", 1)   # the worker process and its threads
    where = f"{th_point[0]} at {th_point[1]} vCPUs needs {th_need} more threads"
    soft_nproc, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    # RLIMIT_NPROC counts all of the user's tasks, and root is exempt from it
    if os.geteuid() != 0 and soft_nproc != resource.RLIM_INFINITY:
        mine = len(os.listdir("/proc/self/task"))
        if mine + th_need > soft_nproc:
            raise PreflightError(f"{where}; the process limit is {soft_nproc} (ulimit -u)")
    tasks = _system_tasks()
    try:
        with open("/proc/sys/kernel/threads-max") as f:
            threads_max = int(f.read())
    except (OSError, ValueError):
        threads_max = None
    if tasks is not None and threads_max is not None and tasks + th_need > threads_max:
        raise PreflightError(f"{where}; the system has {tasks} of kernel.threads-max {threads_max}")
    cg = _cgroup_pids_limit()
    if cg and cg[1] + th_need > cg[0]:
        raise PreflightError(f"{where}; this cgroup has {cg[1]} of its pids.max {cg[0]}")


def check_all(args, points, probes: dict, precopy: bool) -> None:
    """The checks that do not depend on what other runs hold or do (memory and
    tracefs are checked by the caller once the host lock is held)."""
    targets = [(args.out, "--out")] if args.out else [(args.results_dir, "--results-dir")]
    for target, what in targets:
        check_writable(os.path.dirname(os.path.abspath(target)) if what == "--out" else target, what)
    mechs = [m for m, _ in points]
    check_userfaultfd(mechs, probes)
    check_kvm_vcpus(max(v for _, v in points), probes)
    check_limits(points, args, precopy)
