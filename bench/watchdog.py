"""The stall watchdog: a run that stops making progress is stopped and explained.

While a run goes on, `Watchdog.check()` (called from the runner's wait loop every
100 ms) reads one progress number from the C core: pages installed, touches the
guests finished (when the guest records its timing) and vCPUs done, plus this
process's resident pages (the kernel's own page fills, for the baselines). When
that number has not moved for `--stall-timeout` seconds while vCPUs still run,
it raises `StallError`: a one-line reason, and `details`, one line per thread
saying which vCPU waits on which page and what every thread was last doing,
with the kernel's view of it (/proc state and wait channel).
"""
from __future__ import annotations

import os
import time

from .native import ffi, lib
from .plan import Plan, RunError

DEFAULT_STALL_TIMEOUT_S = Plan.stall_timeout_s

# FB_DOING_* -> what a person reads
DOING = {
    lib.FB_DOING_START: "starting (vCPUs: at the start gate)",
    lib.FB_DOING_GUEST: "in KVM_RUN (the guest runs, or sleeps in a fault)",
    lib.FB_DOING_FAULT_EXIT: "handling a fault exit",
    lib.FB_DOING_WAIT_EVENTS: "waiting for fault notifications",
    lib.FB_DOING_WAIT: "waiting on the final bitmap or another thread's fetch",
    lib.FB_DOING_FETCH: "fetching the page's content",
    lib.FB_DOING_FETCH_WORKER: "waiting for the network worker (CopyFromRemote)",
    lib.FB_DOING_INSTALL: "installing the page (UFFDIO_COPY/CONTINUE)",
    lib.FB_DOING_ENQUEUE: "queueing its fault on the async list",
    lib.FB_DOING_SPIN: "busy-waiting for its page (async)",
    lib.FB_DOING_EXITED: "exited",
    lib.FB_DOING_STALLED: "stopped answering (injected test fault)",
}
assert len(DOING) == lib.FB_DOING_STATES
# states in which a thread holds a page that somebody waits for
WORKING = {lib.FB_DOING_WAIT, lib.FB_DOING_FETCH, lib.FB_DOING_FETCH_WORKER,
           lib.FB_DOING_INSTALL, lib.FB_DOING_STALLED}
ROLE_NAMES = {lib.FB_ROLE_VCPU: "vCPU", lib.FB_ROLE_READER: "reader", lib.FB_ROLE_RESOLVER: "resolver"}
SHOWN_IN_SUMMARY = 4   # vCPUs and threads named in the one-line reason


class StallError(RunError):
    """No progress for the stall timeout. str(): one line; .details: the state
    of every thread, one line each."""

    def __init__(self, reason: str, details: list[str]):
        super().__init__(reason)
        self.details = details


def _resident_pages() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def kernel_view(pid: int, tid: int | None = None) -> str:
    """'S handle_userfault': the task's state letter and where it sleeps."""
    base = f"/proc/{pid}" if tid is None else f"/proc/{pid}/task/{tid}"
    try:
        with open(f"{base}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"
    try:
        with open(f"{base}/wchan") as f:
            wchan = f.read().strip()
    except OSError:
        wchan = ""
    return f"{state} {wchan}" if wchan and wchan != "0" else state


class Watchdog:
    def __init__(self, plan, run):
        self.timeout_s = float(getattr(plan, "stall_timeout_s", DEFAULT_STALL_TIMEOUT_S))
        self.plan = plan
        self.run = run
        stall_after = int(getattr(plan, "stall_after", 0) or 0)
        if stall_after:
            lib.fb_run_inject_stall(run, stall_after)
        self._last = None
        self._since = time.monotonic()

    def progress(self) -> tuple[int, int]:
        return int(lib.fb_run_progress(self.run)), _resident_pages()

    def check(self, worker=None) -> None:
        """Raise StallError once nothing moved for the stall timeout."""
        now = time.monotonic()
        seen = self.progress()
        if seen != self._last:
            self._last, self._since = seen, now
            return
        stalled_for = now - self._since
        if stalled_for < self.timeout_s or lib.fb_run_vcpus_running(self.run) == 0:
            return
        raise self.stall_error(stalled_for, worker)

    def thread_states(self) -> list:
        n = lib.fb_run_nthreads(self.run)
        buf = ffi.new("struct fb_thread_state[]", n)
        got = lib.fb_run_thread_states(self.run, buf, n)
        return [buf[i] for i in range(got)]

    def stall_error(self, stalled_for: float, worker=None) -> StallError:
        states = self.thread_states()
        pid = os.getpid()
        details, waiting, working = [], [], []
        for st in states:
            name = f"{ROLE_NAMES.get(st.role, 'thread')} {st.index}"
            doing = DOING.get(st.doing, f"state {st.doing}")
            line = f"  {name} (tid {st.tid}, kernel: {kernel_view(pid, st.tid) if st.tid else 'not started'})"
            page = waits_on(st)
            if st.role == lib.FB_ROLE_VCPU:
                where = (f", touch {st.touches_done + 1} of {st.touches_total}"
                         if st.touches_done != 2**64 - 1 and st.touches_done < st.touches_total else "")
                if page:
                    waiting.append(f"vCPU {st.index} on {page:#x}")
                    line += f": waits on page {page:#x}{where}"
                elif st.doing == lib.FB_DOING_GUEST and st.touches_done == 2**64 - 1:
                    waiting.append(f"vCPU {st.index} on a page not known (--no-latency)")
                    line += ": page unknown (--no-latency: the guest's position is not recorded)"
                elif where:
                    line += f": at{where[1:]}"
            elif st.doing in WORKING and st.gpa:
                line += f": on page {st.gpa:#x}"
            line += f"; last doing: {doing}, for {st.doing_for_ns / 1e9:.1f} s"
            details.append(line)
            if st.doing in WORKING:
                working.append(f"{name} {doing} for {st.doing_for_ns / 1e9:.1f} s")
        if worker is not None and getattr(worker, "pid", None):
            details.append(f"  network worker (pid {worker.pid}, kernel: {kernel_view(worker.pid)})")
        details.append(f"  harness main thread (pid {pid}): watching; the run is stopped now")
        vcpus = sum(1 for st in states if st.role == lib.FB_ROLE_VCPU)
        shown = ", ".join(waiting[:SHOWN_IN_SUMMARY]) + (
            f" and {len(waiting) - SHOWN_IN_SUMMARY} more" if len(waiting) > SHOWN_IN_SUMMARY else "")
        reason = (f"stalled: no page installed and no vCPU moved on for {stalled_for:.1f} s "
                  f"(--stall-timeout {self.timeout_s:g}); {len(waiting)} of {vcpus} vCPUs wait on a "
                  f"page{': ' + shown if waiting else ''}; "
                  + ("; ".join(working[:SHOWN_IN_SUMMARY]) if working
                     else "no thread is working on a page"))
        return StallError(reason, details)


def waits_on(st) -> int:
    """The page a vCPU thread waits on, 0 when it waits on none (or none is known)."""
    if st.role != lib.FB_ROLE_VCPU:
        return 0
    if st.doing == lib.FB_DOING_GUEST:
        return int(st.touch_gpa)   # a touch begun and not ended: asleep in a fault
    if st.doing in WORKING or st.doing in (lib.FB_DOING_FAULT_EXIT, lib.FB_DOING_ENQUEUE,
                                           lib.FB_DOING_SPIN):
        return int(st.gpa)
    return 0
