"""One measured run: plan -> C core -> metrics.

Python builds the touch tables and the guest code, hands them to the C core,
waits (so Ctrl-C and timeouts are handled here), then turns the core's counters
and per-vCPU histograms into metrics. No timing happens in Python.
"""
import os
import time
from dataclasses import dataclass, field

import numpy as np

from . import stats
from .guest import touch_loop
from .native import ffi, lib

ROLES = {0: "vcpu", 1: "reader", 2: "resolver"}
PARTS = ["kvm_run", "lookup", "fetch", "install", "queue", "wake", "enqueue", "spin", "wait"]
# vCPU-thread parts that, for mechanisms handling faults on the vCPU thread, cover
# the whole fault with host clocks only: an independent check on the breakdown
HOST_SIDE_PARTS = {"exits": ("kvm_run", "lookup", "wait", "fetch", "install"),
                   "async": ("kvm_run", "lookup", "enqueue", "spin")}
SEGMENTS = ["notify", "enqueue", "queue", "dispatch", "wait", "fetch", "install", "wake", "resume"]
# what each segment is called for a mechanism (None: the mechanism has no such stamp)
SEGMENT_NAMES = {
    "uffd": {"notify": "fault_to_message_read", "dispatch": "message_to_resolver",
             "wait": "wait_bitmap_or_other_fetch", "fetch": "fetch",
             "install": "install_ioctl", "resume": "wake_to_vcpu_running"},
    "exits": {"notify": "exit_to_userspace", "dispatch": "address_lookup",
              "wait": "wait_bitmap_or_other_fetch", "fetch": "fetch",
              "install": "install_ioctl", "resume": "reentry_to_guest_touch"},
    "async": {"notify": "exit_to_userspace", "enqueue": "list_lock_and_push",
              "queue": "list_to_pop", "dispatch": "pop_to_resolver",
              "wait": "wait_bitmap_or_other_fetch", "fetch": "fetch",
              "install": "install_ioctl", "wake": "bit_clear_to_vcpu_sees_it",
              "resume": "reentry_to_guest_touch"},
}
SEGMENT_NAMES["uffd-many"] = SEGMENT_NAMES["uffd"]
EXIT_PATHS = {0: None, 1: "kvm_memory_fault", 2: "sigbus_guest_register"}
ERRLEN = 256


class RunError(RuntimeError):
    """The run failed; the message is one line."""


@dataclass
class Plan:
    vcpus: int
    mechanism: object          # bench.mechanisms.base.Mechanism
    workload: object           # bench.workloads.base.Workload
    mem_per_vcpu_mib: int
    fetch_delay_us: float = 0.0
    fetch_delay_mode: str = "sleep"
    record_latency: bool = True
    seed: int = 1
    timeout_s: float = 300.0
    corrupt_every: int = 0
    fail_spawn_at: int = 0     # test knob: the Nth thread creation fails
    fault_around: int = 1
    fetch: str = "inline"              # inline | worker
    worker: dict = field(default_factory=dict)   # threads, batch, service
    trace_locks: bool = False
    lock_stacks: bool = True
    trace_mmap_lock: bool = True
    trace_buffer_kb: int = 16384
    keep: list = field(default_factory=list)   # cffi buffers that must outlive the run

    @property
    def pages_per_vcpu(self) -> int:
        return self.mem_per_vcpu_mib * 256

    @property
    def memory_pages(self) -> int:
        return self.workload.memory_pages(self.vcpus, self.pages_per_vcpu)


def _cfg(plan: Plan):
    rng = np.random.default_rng(plan.seed)
    table = np.ascontiguousarray(plan.workload.touches(plan.vcpus, plan.pages_per_vcpu, rng),
                                 dtype=np.uint64)
    code = touch_loop(plan.record_latency)
    cfg = ffi.new("struct fb_config *")
    cfg.vcpus = plan.vcpus
    cfg.mem_per_vcpu = plan.mem_per_vcpu_mib << 20
    cfg.demand_bytes = plan.memory_pages * 4096
    for k, v in plan.mechanism.c_fields().items():
        setattr(cfg, k, v)
    cfg.delay_mode = {"spin": 0, "sleep": 1}[plan.fetch_delay_mode]
    cfg.fetch_delay_ns = int(round(plan.fetch_delay_us * 1000))
    cfg.record_latency = int(plan.record_latency)
    cfg.seed = plan.seed & 0xFFFFFFFFFFFFFFFF
    cfg.corrupt_every = plan.corrupt_every
    cfg.fault_around = plan.fault_around
    cfg.fail_spawn_at = plan.fail_spawn_at
    keep = []
    stale = plan.workload.stale_map(plan.memory_pages, np.random.default_rng([plan.seed, 1]))
    if stale is not None:
        stale_buf = ffi.from_buffer(stale)
        keep += [stale, stale_buf]
        cfg.stale_map = ffi.cast("uint8_t *", stale_buf)
        cfg.bitmap_delay_ns = plan.workload.bitmap_delay_ns()
    code_buf = ffi.from_buffer(code)
    table_buf = ffi.from_buffer(table)
    cfg.guest_code = code_buf
    cfg.guest_code_len = len(code)
    cfg.touches = ffi.cast("uint64_t *", table_buf)
    cfg.touches_per_vcpu = table.shape[1]
    return cfg, keep + [code_buf, table_buf, table], table, stale


def _lap(phases: dict | None, name: str, since: float) -> float:
    """Add the time since `since` to phases[name] (seconds); returns now."""
    now = time.monotonic()
    if phases is not None:
        phases[name] = phases.get(name, 0.0) + now - since
    return now


def execute(plan: Plan, phases: dict | None = None) -> tuple[dict, dict]:
    """Run once; returns (metrics, raw). Whatever happens (error, timeout,
    Ctrl-C), every thread is joined, every fd closed and tracing undone.
    `phases`, if given, accumulates where the wall time went, in seconds:
    setup, guest (the run's guest_seconds), vcpu_start_stop, collect, teardown,
    trace (tracefs set-up, read and parse)."""
    t0 = time.monotonic()
    cfg, keep, table, stale = _cfg(plan)
    _lap(phases, "setup", t0)
    tracer = None
    if plan.trace_locks:
        from .locktrace import LockTracer, TraceUnavailable
        # recording is limited in the kernel to this process and the threads it
        # clones from now on; the summary keeps only the harness's own threads
        tracer = LockTracer(stacks=plan.lock_stacks, pids=[os.getpid()], top=TOP_LOCKS * 2,
                            buffer_kb=plan.trace_buffer_kb, mmap_lock=plan.trace_mmap_lock)
        t0 = time.monotonic()
        try:
            tracer.start()
        except TraceUnavailable as exc:
            raise RunError(f"lock tracing unavailable ({exc}); use --no-trace-locks") from None
        _lap(phases, "trace", t0)
    try:
        return _execute(plan, cfg, table, stale, tracer, phases)
    finally:
        if tracer:
            tracer.cleanup()
        del keep


def _start_worker(plan: Plan, run, err):
    """--fetch worker: the separate process that serves CopyFromRemote."""
    from .worker import WorkerError, WorkerProcess
    worker = WorkerProcess(lib.fb_run_memfd(run), int(lib.fb_run_npages(run)) * 4096,
                           int(lib.fb_run_demand_gpa(run)), plan.seed & 0xFFFFFFFFFFFFFFFF,
                           plan.worker["threads"], plan.worker["batch"], plan.worker["service"],
                           # the worker fills its source copy first: about 0.5 s per GiB here
                           ready_timeout=10.0 + 2.0 * lib.fb_run_npages(run) * 4096 / 2**30)
    try:
        worker.start()
        pidfd = os.pidfd_open(worker.pid)
    except (WorkerError, OSError) as exc:
        worker.stop()
        raise RunError(str(exc)) from None
    if lib.fb_run_attach_ring(run, worker.ring_fd, pidfd, err, ERRLEN):
        worker.stop()
        os.close(pidfd)
        raise RunError(ffi.string(err).decode())
    return worker, pidfd


def _execute(plan: Plan, cfg, table, stale, tracer, phases=None) -> tuple[dict, dict]:
    err = ffi.new("char[]", ERRLEN)
    t0 = time.monotonic()
    run = lib.fb_run_create(cfg, err, ERRLEN)
    if run == ffi.NULL:
        raise RunError(ffi.string(err).decode())
    worker, pidfd = None, -1
    try:
        if plan.fetch == "worker":
            worker, pidfd = _start_worker(plan, run, err)
        t0 = _lap(phases, "setup", t0)
        if lib.fb_run_start(run, err, ERRLEN):   # opens the vCPUs' start gate
            raise RunError(ffi.string(err).decode())
        waited = 0.0
        while True:
            rc = lib.fb_run_wait(run, 100, err, ERRLEN)   # short waits: Ctrl-C gets through
            dead = worker.poll() if worker else None
            if dead:
                raise RunError(dead)
            if worker and _stopped_for(worker.pid, 2.0):
                raise RunError(f"network worker (pid {worker.pid}) is stopped (SIGSTOP or a "
                               "debugger) and serves nothing")
            if rc < 0:
                raise RunError(ffi.string(err).decode())
            if rc == 1:
                break
            waited += 0.1
            if waited >= plan.timeout_s:
                raise RunError(f"timeout: vCPUs still running after {plan.timeout_s:g} s "
                               f"(mechanism {plan.mechanism.name})")
        lib.fb_run_stop(run)
        t0 = _lap(phases, "vcpu_run", t0)   # split into guest and start/stop below
        worker_stats = worker_cpu = None
        tids = _tids(run)
        if worker:
            worker_stats = worker.stats()
            worker_tids = [t["tid"] for t in worker_stats["threads"] if t["tid"]]
            worker_cpu = _task_cpu(worker.pid)
            tids += worker_tids
        kernel_locks = _without_tracer(tracer.stop(tids)) if tracer else None
        t0 = _lap(phases, "trace", t0)
        metrics, raw = _collect(plan, run, table, stale)
        if kernel_locks is not None:
            metrics["kernel_locks"] = kernel_locks
        if worker:
            metrics["worker"] = {k: worker_stats[k] for k in (
                "requests", "batches", "mean_batch", "copied_bytes", "service_mean_ns",
                "requester_waits", "requester_wait_ns")}
            metrics["worker"]["model_mean_ns"] = (worker_stats["model_ns"] / worker_stats["requests"]
                                                  if worker_stats["requests"] else 0.0)
            metrics.setdefault("harness_locks", {})["worker_ring"] = worker_stats["lock"]
            metrics["cpu_by_role"]["worker"] = worker_cpu
            raw["worker"] = worker_stats
        t0 = _lap(phases, "collect", t0)
        if phases is not None:
            phases["guest"] = phases.get("guest", 0.0) + metrics["guest_seconds"]
            phases["vcpu_start_stop"] = (phases.get("vcpu_start_stop", 0.0)
                                         + phases.pop("vcpu_run") - metrics["guest_seconds"])
        return metrics, raw
    finally:
        t0 = time.monotonic()
        if worker:
            worker.request_shutdown()   # requesters blocked on the ring return at once
        lib.fb_run_destroy(run)   # stops and joins every thread, closes every fd
        if worker:
            worker.stop()
        if pidfd >= 0:
            os.close(pidfd)
        _lap(phases, "teardown", t0)


_stopped_since: dict[int, float] = {}


def _stopped_for(pid: int, seconds: float) -> bool:
    """True once the process has been in state T (stopped) for `seconds`."""
    import time
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    if state not in ("T", "t"):
        _stopped_since.pop(pid, None)
        return False
    since = _stopped_since.setdefault(pid, time.monotonic())
    return time.monotonic() - since >= seconds


TOP_LOCKS = 5
# call sites inside the tracer itself (the set_event_pid filter takes a lock on
# every event): contention the measurement causes, kept apart from the top list
TRACER_FRAMES = ("trace_pid_list", "trace_event_", "ring_buffer_", "trace_buffer_")


def _without_tracer(kl: dict) -> dict:
    own = [t for t in kl["top_locks"] if t.get("call_site") and t["call_site"].startswith(TRACER_FRAMES)]
    kl["top_locks"] = [t for t in kl["top_locks"] if t not in own][:TOP_LOCKS]
    kl["tracer_own_contentions"] = sum(t["count"] for t in own)
    kl["tracer_own_call_sites"] = [t["call_site"] for t in own]
    return kl


def _task_cpu(pid: int) -> dict:
    """CPU time and context switches of every thread of a process (the worker)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {"threads": 0, "user_ns": 0, "system_ns": 0,
           "voluntary_ctxt_switches": 0, "involuntary_ctxt_switches": 0}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue   # the thread ended meanwhile
        out["threads"] += 1
        out["user_ns"] += int(fields[11]) * 1_000_000_000 // tick
        out["system_ns"] += int(fields[12]) * 1_000_000_000 // tick
        out["voluntary_ctxt_switches"] += int(status["voluntary_ctxt_switches"])
        out["involuntary_ctxt_switches"] += int(status["nonvoluntary_ctxt_switches"])
    return out


def _tids(run) -> list[int]:
    n = lib.fb_run_nthreads(run)
    buf = ffi.new("int32_t[]", n)
    got = lib.fb_run_thread_tids(run, buf, n)
    return [buf[i] for i in range(got)]


def _hist(run, vcpus: int, which: int):
    loglin = np.zeros(lib.FB_HIST_BUCKETS, dtype=np.uint64)
    log2 = np.zeros(lib.FB_LOG2_US_BUCKETS, dtype=np.uint64)
    lo = ffi.new("uint64_t[]", lib.FB_HIST_BUCKETS)
    l2 = ffi.new("uint64_t[]", lib.FB_LOG2_US_BUCKETS)
    for v in range(vcpus):
        ffi.memmove(lo, bytes(8 * lib.FB_HIST_BUCKETS), 8 * lib.FB_HIST_BUCKETS)
        ffi.memmove(l2, bytes(8 * lib.FB_LOG2_US_BUCKETS), 8 * lib.FB_LOG2_US_BUCKETS)
        if lib.fb_run_latency_hist(run, v, which, lo, l2) < 0:
            return None, None
        loglin += np.frombuffer(ffi.buffer(lo), dtype=np.uint64)
        log2 += np.frombuffer(ffi.buffer(l2), dtype=np.uint64)
    return loglin, log2


def _latency(loglin) -> dict | None:
    if loglin is None or not loglin.any():
        return None
    sparse = stats.sparse_hist(loglin.tolist())
    pct = stats.percentiles_from_hist(sparse)
    total = int(loglin.sum())
    mids = np.array([sum(stats.loglin_bucket_bounds(i)) / 2 for i in range(len(loglin))])
    pct["mean"] = float((loglin * mids).sum() / total)
    pct["count"] = total
    return pct


def _clock_check(vres, vcpus: int, record_latency: bool) -> dict | None:
    """Did every vCPU's start-up rdtsc fall between the host's rdtsc before and
    after that KVM_RUN? Only then can guest and host stamps be subtracted."""
    if not record_latency:
        return None
    inside = [vres[i].tsc_host_before <= vres[i].tsc_guest <= vres[i].tsc_host_after
              for i in range(vcpus)]
    widths = [vres[i].tsc_host_after - vres[i].tsc_host_before for i in range(vcpus)]
    return {"guest_tsc_within_host_bracket": all(inside), "vcpus_checked": vcpus,
            "vcpus_outside": inside.count(False), "max_bracket_cycles": max(widths)}


def _breakdown(run, mech_name: str, latency: dict | None, clock: dict | None,
               threads: list[dict], faults: int) -> dict | None:
    """Mean time per fault in each named segment, from the core's stamps."""
    names = SEGMENT_NAMES.get(mech_name)
    if not names:
        return None
    if not clock or not clock["guest_tsc_within_host_bracket"]:
        return {"omitted": "the guest's TSC does not match the host's (clock check failed): "
                           "guest and host stamps cannot be subtracted"}
    seg = ffi.new("uint64_t[]", lib.FB_BD_SEGMENTS)
    info = ffi.new("uint64_t[]", 6)
    if lib.fb_run_breakdown(run, seg, info) < 0 or info[0] == 0:
        return None
    used = info[0]
    parts = {names[s]: seg[i] / used for i, s in enumerate(SEGMENTS) if s in names}
    other = [s for i, s in enumerate(SEGMENTS) if s not in names and seg[i]]
    if other:   # a stamp this mechanism should not set: report, do not hide it
        parts.update({f"unexpected_{s}": seg[SEGMENTS.index(s)] / used for s in other})
    total = sum(parts.values())
    # the reference is the histogram's mean over every fault, computed apart
    reference = latency["mean"] if latency else info[2] / used
    out = {"parts": parts, "sum_of_parts": total,
           "mean_fault_latency": reference,
           "sum_vs_mean": total / reference if reference else None,
           "faults_used": int(used), "faults_skipped": int(info[1]),
           "faults_incomplete": int(info[4]), "faults_total": int(info[5]),
           "faults_resumed_before_install_returned": int(info[3])}
    host = HOST_SIDE_PARTS.get(mech_name)
    if host and faults:
        vcpu_threads = [t for t in threads if t["role"] == "vcpu"]
        per_fault = {p: sum(t["parts_ns"].get(p, 0) for t in vcpu_threads) / faults for p in host}
        out["host_clock_check"] = {
            "parts": per_fault, "sum": sum(per_fault.values()),
            "sum_vs_mean": sum(per_fault.values()) / reference if reference else None,
            "note": "vCPU-thread time per fault from host clocks only (KVM_RUN round trips "
                    "and the handling between them), against the guest-timed mean; KVM_RUN "
                    "also holds the guest's time between faults (touches that did not fault)"}
    return out


def _collect(plan: Plan, run, table, stale) -> tuple[dict, dict]:
    vcpus = plan.vcpus
    vres = ffi.new("struct fb_vcpu_result[]", vcpus)
    lib.fb_run_vcpu_results(run, vres)
    nth = lib.fb_run_nthreads(run)
    tstats = ffi.new("struct fb_thread_stats[]", nth)
    lib.fb_run_thread_stats(run, tstats)
    lock = ffi.new("struct fb_lock_stats *")
    lib.fb_run_lock_stats(run, lock)

    starts = np.array([vres[i].start_ns for i in range(vcpus)], dtype=np.float64)
    ends = np.array([vres[i].end_ns for i in range(vcpus)], dtype=np.float64)
    per_vcpu_s = (ends - starts) / 1e9
    guest_seconds = float((ends.max() - starts.min()) / 1e9)
    first = (table & np.uint64(2)) != 0
    pages_per_vcpu_touched = first.sum(axis=1)
    pages = int(plan.memory_pages if not plan.workload.partitioned
                else pages_per_vcpu_touched.sum())
    content_errors = int(sum(vres[i].content_errors for i in range(vcpus)))
    touches = int(sum(vres[i].touches for i in range(vcpus)))

    threads = []
    for i in range(nth):
        t = tstats[i]
        threads.append({
            "role": ROLES[t.role], "index": t.index, "uffd": t.uffd_index, "tid": t.tid,
            "faults": t.faults, "pages_installed": t.pages_installed, "eexist": t.eexist,
            "wakes": t.wakes,
            "parts_ns": {p: t.part_ns[j] for j, p in enumerate(PARTS) if t.part_count[j]},
            "parts_count": {p: t.part_count[j] for j, p in enumerate(PARTS) if t.part_count[j]},
            "utime_ns": t.utime_ns, "stime_ns": t.stime_ns,
            "voluntary_ctxt_switches": t.nvcsw, "involuntary_ctxt_switches": t.nivcsw,
        })
    by_role = {}
    for t in threads:
        by_role.setdefault(t["role"], []).append(t)
    # a fault is counted where it is delivered: at the vCPU for exit-based mechanisms,
    # at the readers for blocking userfaultfd (resolvers of async count pops, not faults)
    faults = sum(t["faults"] for t in by_role.get("vcpu", [])) or \
        sum(t["faults"] for t in by_role.get("reader", []))

    # fault latency: the touches whose fault was delivered to userspace; baselines
    # deliver none, so there it is every first touch (the kernel's own fault path)
    delivers = plan.mechanism.uses_uffd
    first_hist, first_log2 = (_hist(run, vcpus, lib.FB_TOUCH_FAULTED)
                              if plan.record_latency and delivers else (None, None))
    touch1_hist, _ = _hist(run, vcpus, lib.FB_TOUCH_FIRST) if plan.record_latency else (None, None)
    re_hist, _ = _hist(run, vcpus, 0) if plan.record_latency else (None, None)
    clock = _clock_check(vres, vcpus, plan.record_latency)
    installs = np.zeros(lib.fb_run_npages(run), dtype=np.uint32)
    lib.fb_run_page_installs(run, ffi.cast("uint32_t *", ffi.from_buffer(installs)), installs.size)
    blocked = [vres[i].blocked_ns for i in range(vcpus)]
    # how many vCPUs really ran at once: on 2 pCPUs, hundreds of vCPU threads
    # must all be in the guest together for a scaling number to mean anything
    events = sorted([(vres[i].start_ns, 1) for i in range(vcpus)] +
                    [(vres[i].end_ns, -1) for i in range(vcpus)], key=lambda e: (e[0], e[1]))
    running = at_once = 0
    for _, d in events:
        running += d
        at_once = max(at_once, running)
    fault_latency = _latency(first_hist)
    breakdown = (_breakdown(run, plan.mechanism.name, fault_latency, clock, threads, faults)
                 if plan.record_latency else None)
    metrics = {
        "pages": pages,
        "touches": touches,
        "faults": faults,
        "pages_installed": int(lib.fb_run_pages_installed(run)),
        "pages_copied": int(lib.fb_run_pages_copied(run)),
        "guest_seconds": guest_seconds,
        "pages_per_s": pages / guest_seconds if guest_seconds > 0 else 0.0,
        "pages_per_s_per_vcpu": float(np.mean(pages_per_vcpu_touched / per_vcpu_s)),
        "content_errors": content_errors,
        "fault_latency_ns": fault_latency,
        "first_touch_latency_ns": _latency(touch1_hist),
        "faults_attributed_to_vcpus": int(sum(vres[i].faults_logged for i in range(vcpus))),
        "vcpus_running_at_once_max": at_once,
        "vcpu_start_spread_s": float((starts.max() - starts.min()) / 1e9),
        "faults_unattributed": int(lib.fb_run_unattributed_faults(run)),
        "retouch_latency_ns": _latency(re_hist),
        "pages_installed_more_than_once": int((installs > 1).sum()),
        "pages_never_installed": int((installs == 0).sum()),
        "blocktime_ns": ({"all_vcpus": int(lib.fb_run_blocktime_all(run)),
                          "per_vcpu_mean": float(np.mean(blocked)),
                          "per_vcpu_max": int(max(blocked)),
                          "per_vcpu_total": int(sum(blocked))} if plan.record_latency else None),
        "fault_breakdown_ns": breakdown,
        "resolved_by_role": {r: sum(t["faults"] for t in ts) for r, ts in by_role.items()},
        "cpu_by_role": {r: {"threads": len(ts),
                            "user_ns": sum(t["utime_ns"] for t in ts),
                            "system_ns": sum(t["stime_ns"] for t in ts),
                            "voluntary_ctxt_switches": sum(t["voluntary_ctxt_switches"] for t in ts),
                            "involuntary_ctxt_switches": sum(t["involuntary_ctxt_switches"] for t in ts)}
                        for r, ts in by_role.items()},
        "latency_dist_log2_us": (first_log2.tolist() if first_log2 is not None else None),
    }
    if plan.mechanism.uses_uffd and stale is not None:
        arrived = lib.fb_run_bitmap_arrived_ns(run)
        metrics["precopy"] = {
            "stale_pages": int(stale.sum()),
            "pages_declared_clean": int(lib.fb_run_pages_declared_clean(run)),
            "bitmap_arrived_after_s": (arrived - starts.min()) / 1e9 if arrived else None,
        }
    if plan.mechanism.name == "async":
        metrics["harness_locks"] = {"async_list": {
            "acquisitions": lock.acquisitions, "contended": lock.contended,
            "spin_ns": lock.spin_ns, "max_spin_ns": lock.max_spin_ns}}
    raw = {
        "exit_path": EXIT_PATHS[lib.fb_run_exit_path(run)],
        "clock_check": clock,
        "fault_latency_selects": ("touches whose fault was delivered to userspace" if delivers else
                                  "nothing: this baseline delivers no fault to userspace; see "
                                  "first_touch_latency_ns"),
        "tsc_khz": int(lib.fb_run_tsc_khz(run)),
        "vcpus": [{"id": i, "start_ns": vres[i].start_ns, "end_ns": vres[i].end_ns,
                   "touches": vres[i].touches, "content_errors": vres[i].content_errors,
                   "kvm_runs": vres[i].kvm_runs, "fault_exits": vres[i].fault_exits,
                   "exitinfo_kvm": vres[i].exitinfo_kvm,
                   "exitinfo_guest_reg": vres[i].exitinfo_guest_reg,
                   "blocked_ns": vres[i].blocked_ns} for i in range(vcpus)],
        "threads": threads,
        "fault_latency_hist": (stats.sparse_hist(first_hist.tolist())
                               if first_hist is not None else None),
        "blocktime_per_vcpu_ns": blocked if plan.record_latency else None,
        "retouch_latency_hist": (stats.sparse_hist(re_hist.tolist())
                                 if re_hist is not None and re_hist.any() else None),
    }
    return metrics, raw
