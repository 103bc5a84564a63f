"""One measured run: plan -> C core -> metrics.

Python builds the touch tables and the guest code, hands them to the C core,
waits (so Ctrl-C and timeouts are handled here), then turns the core's counters
and per-vCPU histograms into metrics. No timing happens in Python.
"""
import math
import os
import time

import numpy as np

from . import breakdown as bd
from . import bpflocks, hostnoise, kerneltrace, placement, schedtrace, stats
from .guest import touch_loop
from .locktrace import LockTracer
from .native import ffi, lib
from .plan import Plan, RunError
from .schedtrace import SchedTracer
from .tracefs import TraceUnavailable
from .watchdog import Watchdog
from .worker import WorkerError, WorkerProcess


def _c_names(prefix: str, skip: tuple = ()) -> list[str]:
    """The lower-case names of a C enum of #defines (FB_PART_FETCH -> "fetch"), in value order."""
    names = {n: getattr(lib, n) for n in dir(lib) if n.startswith(prefix) and n not in skip}
    return [n[len(prefix):].lower() for n, _ in sorted(names.items(), key=lambda kv: kv[1])]


# thread roles, cost parts and breakdown segments come from the C header, never restated
ROLES = dict(enumerate(_c_names("FB_ROLE_")))
PARTS = _c_names("FB_PART_")
SEGMENTS = _c_names("FB_BD_", skip=("FB_BD_SEGMENTS",))
# how an exit's address was learned (FB_EXITINFO_*), as results name it
EXIT_PATHS = {lib.FB_EXITINFO_NONE: None, lib.FB_EXITINFO_KVM: "kvm_memory_fault",
              lib.FB_EXITINFO_GUEST_REG: "sigbus_guest_register"}
ERRLEN = 256


def _cfg(plan: Plan):
    rng = np.random.default_rng(plan.seed)
    table = plan.workload.touches(plan.vcpus, plan.pages_per_vcpu, rng)
    if plan.touch_share < 1.0:   # the same walk, stopped early (memory stays mapped whole)
        table = table[:, :touches_walked(table.shape[1], plan.touch_share)]
    table = np.ascontiguousarray(table, dtype=np.uint64)
    code = touch_loop(plan.record_latency, verify_full=plan.verify == "full")
    cfg = ffi.new("struct fb_config *")
    cfg.vcpus = plan.vcpus
    cfg.mem_per_vcpu = plan.mem_per_vcpu_mib << 20
    cfg.demand_bytes = plan.memory_pages * 4096
    for k, v in plan.mechanism.c_fields().items():
        setattr(cfg, k, v)
    cfg.delay_mode = {"spin": lib.FB_DELAY_SPIN, "sleep": lib.FB_DELAY_SLEEP}[plan.fetch_delay_mode]
    cfg.fetch_delay_ns = int(round(plan.fetch_delay_us * 1000))
    cfg.record_latency = int(plan.record_latency)
    cfg.seed = plan.seed & 0xFFFFFFFFFFFFFFFF
    cfg.corrupt_every = plan.corrupt_every
    cfg.fault_around = plan.fault_around
    cfg.fail_spawn_at = plan.fail_spawn_at
    cfg.verify = {"header": lib.FB_VERIFY_HEADER, "full": lib.FB_VERIFY_FULL}[plan.verify]
    cfg.corrupt_tail_every = plan.corrupt_tail_every
    cfg.misstamp_fetched_ns = plan.misstamp_fetched_ns
    cfg.tsc_khz_error_ppm = plan.tsc_khz_error_ppm
    keep = []
    vcpu_cpu, reader_cpu = plan.cpu_map()
    if plan.placement != "free":
        vbuf = ffi.new("int32_t[]", vcpu_cpu)
        rbuf = ffi.new("int32_t[]", reader_cpu or [0])
        keep += [vbuf, rbuf]
        cfg.vcpu_cpu = vbuf
        cfg.reader_cpu = rbuf
        cfg.nreader_cpu = len(reader_cpu)
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


def touches_walked(per_vcpu: int, share: float) -> int:
    """How many of a vCPU's table entries a run with this touch share walks."""
    return max(1, min(per_vcpu, math.ceil(per_vcpu * share)))


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
    stracer = None
    if plan.trace_sched:
        ncpu = max(1, len(os.sched_getaffinity(0)))
        # about 4 events a fault at most (uffd: vCPU sleeps and wakes, reader too), 64 B each
        kb = max(8192, plan.memory_pages * 4 * 64 * 2 // ncpu // 1024)
        stracer = SchedTracer(pids=[os.getpid()], buffer_kb=kb)
        t0 = time.monotonic()
        try:
            stracer.start()
        except TraceUnavailable as exc:
            if tracer:
                tracer.cleanup()
            raise RunError(f"scheduler tracing unavailable ({exc}); use --no-trace-locks") from None
        _lap(phases, "trace", t0)
    bpf = None
    if plan.trace_bpf:
        nthreads = plan.vcpus + plan.mechanism.readers_total() + 8
        bpf = kerneltrace.BpfTracer(kerneltrace.log_capacity(plan.memory_pages, nthreads),
                                    stacks=plan.lock_stacks)
        t0 = time.monotonic()
        try:
            bpf.start()   # loaded and attached; it records from bpf.begin() on
        except kerneltrace.BpfUnavailable as exc:
            for tr in (stracer, tracer):
                if tr:
                    tr.cleanup()
            raise RunError(f"in-kernel tracer unavailable ({exc}); use --tracer tracefs "
                           "or --no-trace-locks") from None
        _lap(phases, "trace", t0)
    try:
        return _execute(plan, cfg, table, stale, tracer, stracer, phases, bpf)
    finally:
        if bpf:
            bpf.close()
        if stracer:
            stracer.cleanup()
        if tracer:
            tracer.cleanup()
        del keep


def _start_worker(plan: Plan, run, err):
    """--fetch worker: the separate process that serves CopyFromRemote."""
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


def _execute(plan: Plan, cfg, table, stale, tracer, stracer=None, phases=None,
             bpf=None) -> tuple[dict, dict]:
    err = ffi.new("char[]", ERRLEN)
    t0 = time.monotonic()
    run = lib.fb_run_create(cfg, err, ERRLEN)
    if run == ffi.NULL:
        raise RunError(ffi.string(err).decode())
    worker, pidfd = None, -1
    try:
        if plan.fetch == "worker":
            worker, pidfd = _start_worker(plan, run, err)
        watchdog = Watchdog(plan, run)   # before the start: it arms the stall test knob
        if bpf:
            # every harness thread is made by fb_run_start: the log sees each from its birth
            bpf.begin(worker.pid if worker else 0)
        t0 = _lap(phases, "setup", t0)
        steal0 = hostnoise.steal_ticks()   # around the whole window: cpu_time_vs_latency
        if lib.fb_run_start(run, err, ERRLEN):   # opens the vCPUs' start gate
            raise RunError(ffi.string(err).decode())
        waited = 0.0
        while True:
            rc = lib.fb_run_wait(run, 100, err, ERRLEN)   # short waits: Ctrl-C gets through
            dead = worker.poll() if worker else None
            if dead:
                raise RunError(dead)
            if worker and _stopped_for(worker.pid, 2.0):
                os.kill(worker.pid, 9)   # a stopped process cannot shut down: no 5 s wait for it
                raise RunError(f"network worker (pid {worker.pid}) is stopped (SIGSTOP or a "
                               "debugger) and serves nothing")
            if rc < 0:
                raise RunError(ffi.string(err).decode())
            if rc == 1:
                break
            watchdog.check(worker)
            waited += 0.1
            if waited >= plan.timeout_s:
                raise RunError(f"timeout: vCPUs still running after {plan.timeout_s:g} s "
                               f"(mechanism {plan.mechanism.name})")
        lib.fb_run_stop(run)
        steal1 = hostnoise.steal_ticks()
        t0 = _lap(phases, "vcpu_run", t0)   # split into guest and start/stop below
        worker_stats = worker_cpu = None
        own_tids = _tids(run)   # the harness's threads, joined by now
        tids = list(own_tids)
        if worker:
            worker_stats = worker.stats()
            worker_tids = [t["tid"] for t in worker_stats["threads"] if t["tid"]]
            worker_cpu = _task_cpu(worker.pid)
            tids += worker_tids
        kernel_locks = _without_tracer({**tracer.stop(tids), "tracer": "tracefs"}) if tracer else None
        sched_trace = stracer.stop() if stracer else None
        # after the join, and after each thread's last switch off its CPU (which can follow
        # the join by a little)
        bpf_data = bpf.stop(own_tids) if bpf else None
        if bpf_data is not None:
            kernel_locks = _without_tracer(bpflocks.kernel_locks(bpf_data, top=TOP_LOCKS * 2))
        t0 = _lap(phases, "trace", t0)
        steal = (None if steal0 is None or steal1 is None else
                 {"ticks": steal1 - steal0, "tick_ns": 1e9 / os.sysconf("SC_CLK_TCK")})
        metrics, raw = _collect(plan, run, table, stale, sched_trace, bpf_data, steal)
        if bpf and bpf.prog_stats and bpf.prog_stats["run_count"]:
            raw["bpf_programs"] = bpf.prog_stats   # only while BPF run-time stats are on
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
    after that KVM_RUN? Only then can guest and host stamps be subtracted. The same
    dict is raw.clock_check and the check `guest_tsc_within_host_bracket`."""
    if not record_latency:
        return None
    inside = [vres[i].tsc_host_before <= vres[i].tsc_guest <= vres[i].tsc_host_after
              for i in range(vcpus)]
    widths = [vres[i].tsc_host_after - vres[i].tsc_host_before for i in range(vcpus)]
    return {"guest_tsc_within_host_bracket": all(inside), "ok": all(inside), "vcpus_checked": vcpus,
            "vcpus_outside": inside.count(False), "max_bracket_cycles": max(widths)}


# what a failed clock bracket makes unusable: every figure from the guest's stamps
GUEST_TIMED_METRICS = ("fault_latency_ns", "first_touch_latency_ns", "retouch_latency_ns",
                       "latency_dist_log2_us", "blocktime_ns")
GUEST_TIMED_RAW = ("fault_latency_hist", "retouch_latency_hist", "blocktime_per_vcpu_ns")
UNUSABLE_REASON = ("the guest's start-up rdtsc fell outside the host's rdtsc bracket "
                   "(check guest_tsc_within_host_bracket): guest and host TSCs differ")


def _set_aside_guest_timed(metrics: dict, raw: dict) -> None:
    """A failed clock bracket: the guest-timed figures leave metrics (null there, so
    no summary, table or report reads them as measured) for raw.unusable_metrics;
    metrics.unusable names them and says why. The breakdown is already omitted."""
    aside = {k: metrics[k] for k in GUEST_TIMED_METRICS if metrics.get(k) is not None}
    aside.update({f"raw.{k}": raw[k] for k in GUEST_TIMED_RAW if raw.get(k) is not None})
    ct = metrics["checks"].pop("cpu_time_vs_latency", None)   # its latency side is guest-timed
    if ct is not None:
        aside["checks.cpu_time_vs_latency"] = ct
    for k in GUEST_TIMED_METRICS:
        metrics[k] = None
    for k in GUEST_TIMED_RAW:
        raw[k] = None
    metrics["unusable"] = {"reason": UNUSABLE_REASON,
                           "metrics": [*GUEST_TIMED_METRICS, "fault_breakdown_ns"]}
    raw["unusable_metrics"] = aside


def _totals(run) -> dict:
    """Every field of struct fb_run_totals, by name (a new C counter needs no code here)."""
    t = ffi.new("struct fb_run_totals *")
    lib.fb_run_totals(run, t)
    return {name: int(getattr(t, name)) for name, _ in ffi.typeof("struct fb_run_totals").fields}


def _fault_rows(run, n: int) -> dict:
    rows = ffi.new("struct fb_fault_row[]", max(1, n))
    got = lib.fb_run_fault_rows(run, rows, n)
    return bd.rows_array(ffi.buffer(rows, got * ffi.sizeof("struct fb_fault_row")))


def _sched_split(plan: Plan, cols: dict, seg: dict, names: dict, threads: list[dict],
                 sched_trace, to_ns) -> dict:
    """The traced run's per-segment split: CPU wait, on CPU, and vCPUs on a CPU at once."""
    lines, lost = sched_trace
    events = schedtrace.parse(lines)
    tids = {t["tid"] for t in threads if t["tid"]}
    waiting, running = schedtrace.intervals(events, tids)
    vcpu_tids = [t["tid"] for t in threads if t["role"] == "vcpu"]
    return {"tracer": "tracefs", "events": len(events), "events_lost": lost,
            "vcpus_on_cpu_at_once_max": schedtrace.max_running_at_once(running, vcpu_tids),
            "parts": schedtrace.segment_split(cols, seg, names, waiting, running,
                                              plan.mechanism.handles_faults_on_vcpu, to_ns),
            "note": "each segment charged to the thread that must run for it to end; "
                    "total = cpu_wait (runnable, not on a CPU) + on_cpu + the rest (asleep)"}


def _bpf_thread_counts(data, threads: list[dict]) -> dict:
    """The tracer's per-thread scheduler counters, summed by role: migrations, switches
    onto a CPU, switches off it still runnable (preempted or yielded), wake-ups."""
    role_of = {t["tid"]: t["role"] for t in threads if t["tid"]}
    out: dict = {}
    for th in data.threads:
        role = role_of.get(int(th["tid"]))
        if role is None:
            continue   # the Python threads of the process
        r = out.setdefault(role, {"threads": 0, "migrations": 0, "switches_in": 0, "preempted": 0,
                                  "wakeups": 0})
        r["threads"] += 1
        for k in ("migrations", "switches_in", "preempted", "wakeups"):
            r[k] += int(th[k])
    return out


def _bpf_split(plan: Plan, cols: dict, seg: dict, names: dict, threads: list[dict], totals: dict,
               data, logs: dict) -> dict:
    """The exact split of every segment from the in-kernel tracer's state log, withheld
    (with the reason) unless every thread's totals from the log agree with its own
    clocks (kerneltrace.cross_check_threads) and the log kept every change of state."""
    check = kerneltrace.cross_check_threads(threads, logs)
    missed = int(data.totals.get("slots_missed", 0))
    out = {"tracer": "bpf", "cross_check": {k: v for k, v in check.items() if k != "threads"},
           "log_entries": int(data.log.size), "log_capacity": data.log_cap,
           "log_dropped": int(data.totals["log_dropped"]),
           "events_missed": missed,
           "threads_dropped": int(data.totals["threads_dropped"]),
           # joined threads whose last switch off a CPU had not come 0.2 s after the join
           "threads_not_switched_out": int(getattr(data, "unfinished_exits", 0)),
           "threads_by_role": _bpf_thread_counts(data, threads)}
    to_mono = kerneltrace.tsc_to_mono(totals)
    why = None
    if data.totals["log_dropped"] or data.totals["threads_dropped"] or missed:
        why = (f"the tracer's log dropped {data.totals['log_dropped']} changes of state and "
               f"{data.totals['threads_dropped']} threads (capacity {data.log_cap} entries), and "
               f"lost {missed} events whose thread's task storage it could not get")
    elif not check["ok"]:
        why = (f"{check['threads_failed']} of {check['threads_checked']} threads' totals from the log "
               f"disagree with their own clocks by more than {check['limit']:.0%} "
               f"(worst CPU {check['worst_cpu_rel_error'] or 0:.1%}, "
               f"worst run delay {check['worst_wait_rel_error'] or 0:.1%})")
    elif to_mono is None:
        why = "the run has no (TSC, monotonic) pairs to place the stamps on the tracer's clock"
    vcpu_tids = [t["tid"] for t in threads if t["role"] == "vcpu"]
    out["vcpus_on_cpu_at_once_max"] = kerneltrace.on_cpu_at_once_max(data, vcpu_tids)
    if why:
        out["withheld"] = why
        return out
    out["parts"] = kerneltrace.segment_split(cols, seg, names, logs,
                                             plan.mechanism.handles_faults_on_vcpu, to_mono)
    out["note"] = ("each segment charged to the thread that must run for it to end, from that "
                   "thread's in-kernel counters at the segment's ends (a resolver's segment cut at "
                   "g1 passes to the vCPU at its wake-up). The scheduler's accounting: "
                   "on_cpu (sum_exec_runtime, as the thread's CPU clock counts it), cpu_wait "
                   "(run_delay, schedstat's). The log's wall clock: on_cpu_wall + cpu_wait_wall + "
                   "asleep = total. steal: on a CPU (wall) beyond CPU time")
    return out


def _breakdown(run, plan: Plan, clock: dict | None, threads: list[dict], vres, totals: dict,
               sched_trace=None, bpf_data=None, logs=None) -> tuple:
    """(breakdown, checks, vCPUs inside KVM_RUN at once) from the per-fault rows."""
    names = plan.mechanism.segment_names
    checks = {"tsc_rate_vs_monotonic": bd.check_tsc_rate(totals)}
    if not plan.record_latency:
        return None, checks, None
    khz = totals["tsc_khz"]

    def to_ns(cycles):
        return cycles * 1e6 / khz
    # guest cycles against the host's clock: valid whatever the guest TSC's offset
    checks["guest_window_vs_host_clock"] = bd.check_guest_window(vres, plan.vcpus, to_ns)
    checks["guest_tsc_within_host_bracket"] = clock
    if not clock or not clock["ok"]:
        return ({"omitted": UNUSABLE_REASON + ": guest and host stamps cannot be subtracted"},
                checks, None)
    cols = _fault_rows(run, totals["fault_rows"])
    seg = bd.segments(cols)
    inside = bd.inside_kvm_run_max(cols, vres, plan.vcpus,
                                   plan.mechanism.handles_faults_on_vcpu)
    if not names:
        return None, checks, inside
    summary = bd.summarize(seg, names, to_ns)
    if summary and sched_trace is not None:
        summary["sched_split"] = _sched_split(plan, cols, seg, names, threads, sched_trace, to_ns)
    if summary and bpf_data is not None:
        summary["sched_split"] = _bpf_split(plan, cols, seg, names, threads, totals, bpf_data, logs)
    return summary, checks, inside


def _sched(threads: list[dict], faults: int) -> dict | None:
    """Run-queue wait and on-CPU time per role over the run (schedstat), per fault."""
    if not threads or not all(t["sched_ok"] for t in threads):
        return None
    out = {}
    for role in sorted({t["role"] for t in threads}):
        ts = [t for t in threads if t["role"] == role]
        run_ns = sum(t["sched_run_ns"] for t in ts)
        wait_ns = sum(t["sched_wait_ns"] for t in ts)
        out[role] = {"on_cpu_ns": run_ns, "run_queue_wait_ns": wait_ns,
                     "timeslices": sum(t["sched_timeslices"] for t in ts),
                     "on_cpu_ns_per_fault": run_ns / faults if faults else None,
                     "run_queue_wait_ns_per_fault": wait_ns / faults if faults else None}
    return out


def _threads(run) -> list[dict]:
    """Every harness thread's counters (vCPUs first, then readers/resolvers)."""
    nth = lib.fb_run_nthreads(run)
    tstats = ffi.new("struct fb_thread_stats[]", nth)
    lib.fb_run_thread_stats(run, tstats)
    threads = []
    for t in tstats:
        threads.append({
            "role": ROLES[t.role], "index": t.index, "uffd": t.uffd_index, "tid": t.tid,
            "faults": t.faults, "pages_installed": t.pages_installed, "eexist": t.eexist,
            "wakes": t.wakes,
            "parts_ns": {p: t.part_ns[j] for j, p in enumerate(PARTS) if t.part_count[j]},
            "parts_count": {p: t.part_count[j] for j, p in enumerate(PARTS) if t.part_count[j]},
            "utime_ns": t.utime_ns, "stime_ns": t.stime_ns,
            "voluntary_ctxt_switches": t.nvcsw, "involuntary_ctxt_switches": t.nivcsw,
            "sleeps_in_window": t.sleeps_in_window,
            "sched_ok": bool(t.sched_ok), "sched_run_ns": t.sched_run_ns,
            "sched_wait_ns": t.sched_wait_ns, "sched_timeslices": t.sched_timeslices,
            "migrations": None if t.migrations == 0xFFFFFFFFFFFFFFFF else t.migrations,
            "cpus_seen": [c for c in range(64) if t.cpus_seen >> c & 1],
            "pinned_cpu": t.pinned_cpu,
            "mono_fetch_ns": t.mono_fetch_ns, "mono_install_ns": t.mono_install_ns,
            "mono_count": t.mono_count,
            "mono_mark_ns": t.mono_mark_ns, "mono_end_ns": t.mono_end_ns,
        })
    return threads


def reached_pages(plan: Plan, table) -> np.ndarray | None:
    """The page numbers a part of the walk touched (None for the whole walk)."""
    if plan.touch_share >= 1.0:
        return None
    return np.unique(table >> np.uint64(12)).astype(np.int64)


def _rates(plan: Plan, vres, table, reached: np.ndarray | None = None) -> dict:
    """Pages, guest time and the paging rates (the selftest's definitions, and ours);
    `reached`: the pages a part of the walk touched (reached_pages)."""
    vcpus = plan.vcpus
    starts = np.array([vres[i].start_ns for i in range(vcpus)], dtype=np.float64)
    ends = np.array([vres[i].end_ns for i in range(vcpus)], dtype=np.float64)
    per_vcpu_s = (ends - starts) / 1e9
    guest_seconds = float((ends.max() - starts.min()) / 1e9)
    pages_per_vcpu_touched = ((table & np.uint64(lib.FB_TOUCH_FIRST)) != 0).sum(axis=1)
    if plan.workload.partitioned:
        pages = int(pages_per_vcpu_touched.sum())
    elif reached is not None:   # shared pages, a part of the walk: the pages it reached
        pages = int(reached.size)
    else:
        pages = int(plan.memory_pages)
    return {
        "pages": pages,
        "guest_seconds": guest_seconds,
        "pages_per_s": pages / guest_seconds if guest_seconds > 0 else 0.0,
        # the selftest's definition: a vCPU's pages over the whole run's time
        "pages_per_s_per_vcpu": (float(pages_per_vcpu_touched.mean() / guest_seconds)
                                 if guest_seconds > 0 else 0.0),
        # each vCPU's pages over its own start-to-end window, averaged
        "pages_per_s_per_vcpu_own_window": float(np.mean(pages_per_vcpu_touched / per_vcpu_s)),
        "vcpu_start_spread_s": float((starts.max() - starts.min()) / 1e9),
    }


def _latencies(plan: Plan, run) -> tuple[dict, dict]:
    """(metrics, raw) of the latency histograms: faults delivered to userspace (the
    baselines deliver none: their first touches are the kernel's own fault path),
    first touches, re-touches."""
    vcpus = plan.vcpus
    if not plan.record_latency:
        return ({"fault_latency_ns": None, "first_touch_latency_ns": None,
                 "retouch_latency_ns": None, "latency_dist_log2_us": None},
                {"fault_latency_hist": None, "retouch_latency_hist": None})
    delivers = plan.mechanism.delivers_faults()
    first_hist, first_log2 = _hist(run, vcpus, lib.FB_TOUCH_FAULTED) if delivers else (None, None)
    touch1_hist, _ = _hist(run, vcpus, lib.FB_TOUCH_FIRST)
    re_hist, _ = _hist(run, vcpus, 0)
    return ({"fault_latency_ns": _latency(first_hist),
             "first_touch_latency_ns": _latency(touch1_hist),
             "retouch_latency_ns": _latency(re_hist),
             "latency_dist_log2_us": first_log2.tolist() if first_log2 is not None else None},
            {"fault_latency_hist": (stats.sparse_hist(first_hist.tolist())
                                    if first_hist is not None else None),
             "retouch_latency_hist": (stats.sparse_hist(re_hist.tolist())
                                      if re_hist is not None and re_hist.any() else None)})


def _windows_overlapping(vres, vcpus: int) -> int:
    """Most vCPU start-to-end windows that overlap (schema 1's "running at once";
    the real concurrency is vcpus_inside_kvm_run_max and the traced run's on-CPU count)."""
    return bd.max_at_once([vres[i].start_ns for i in range(vcpus)] + [vres[i].end_ns for i in range(vcpus)],
                          [1] * vcpus + [-1] * vcpus)


# cpu_time_vs_latency stands aside where the steal it must allow for is over this
# share of the vCPU threads' awake time (only ever /proc/stat's coarse figure)
STEAL_ALLOWANCE_MAX = 0.05


def _vcpu_steal(threads: list[dict], logs: dict | None, host: dict | None) -> dict | None:
    """CPU time the hypervisor took from the vCPU threads over their measured window:
    with the in-kernel tracer's complete log (`logs`, None unless the split passed its
    cross-check), per thread (its wall time on a CPU beyond its sum_exec_runtime);
    otherwise the steal of all CPUs over the run as /proc/stat counts it (a CPU's steal
    falls on at most one thread at a time), plus one clock tick for the rounding of the
    two readings: close to an upper bound (the kernel books steal at its ticks, a few ms
    late). None where neither is known."""
    vcpus = [t for t in threads if t["role"] == "vcpu"]
    if logs is not None and all(t["tid"] in logs for t in vcpus):
        ns = 0.0
        for t in vcpus:
            sp = kerneltrace.split(logs[t["tid"]], t["mono_mark_ns"], t["mono_end_ns"])
            ns += float(sp["steal_ns"])
        if np.isfinite(ns):   # NaN: a window begun before the thread's first entry
            return {"ns": ns, "source": "in-kernel tracer, per vCPU thread", "exact": True}
    if host is None:
        return None
    return {"ns": (host["ticks"] + 1) * host["tick_ns"],
            "source": "/proc/stat steal over the run, all CPUs, + 1 tick of rounding", "exact": False}


def _cpu_time_check(plan: Plan, sched: dict, vres, threads: list[dict], steal: dict | None = None) -> dict:
    """The kernel's accounting of the vCPU threads against the guest-timed fault
    latency they lived through: latency cannot exceed on-CPU + run-queue + sleeping
    time, and where the vCPU thread never sleeps (faults handled on it, no sleeping
    fetch delay, and no block in the kernel seen: no voluntary switch in the window)
    it is all on-CPU + wait + steal.

    Steal: on this guest the hypervisor takes CPUs away while a thread is on them;
    guest time runs on, the thread's sum_exec_runtime does not (_vcpu_steal says how
    much is allowed for it, and from where). Where it is not known, none is allowed."""
    v = sched["vcpu"]
    sleeps = sum(t["sleeps_in_window"] for t in threads if t["role"] == "vcpu")
    lat_total = float(sum(vres[i].blocked_ns for i in range(plan.vcpus)))   # exact, not binned
    awake = v["on_cpu_ns"] + v["run_queue_wait_ns"]
    steal_ns = None if steal is None else steal["ns"]
    applies = bool(plan.mechanism.handles_faults_on_vcpu
                   and not (plan.fetch_delay_us and plan.fetch_delay_mode == "sleep")
                   and plan.fetch == "inline" and sleeps == 0)
    # steal known only to /proc/stat's 10 ms ticks can be most of a short run: a bound
    # that loose cannot fail, so the check stands aside rather than pass
    coarse = bool(steal and not steal.get("exact") and awake
                  and steal_ns > STEAL_ALLOWANCE_MAX * awake)
    applies = applies and not coarse
    bound = awake + (steal_ns or 0.0)
    ratio = lat_total / bound if bound else None
    return {"fault_latency_total_ns": lat_total, "vcpu_on_cpu_plus_wait_ns": awake,
            "steal_allowed_ns": steal_ns, "steal_source": steal["source"] if steal else None,
            "ratio": ratio, "ratio_without_steal": lat_total / awake if awake else None,
            "applies": applies, "vcpu_sleeps": sleeps, "steal_too_coarse": coarse,
            "ok": (ratio is not None and ratio <= 1.0 + bd.CPU_TIME_SLACK) if applies else None}


def _roles(threads: list[dict]) -> tuple[int, dict]:
    """(faults delivered, per-role metrics). A fault is counted where it is delivered:
    at the vCPU for exit-based mechanisms, at the readers for blocking userfaultfd
    (async's resolvers count pops, not faults)."""
    by_role: dict[str, list] = {}
    for t in threads:
        by_role.setdefault(t["role"], []).append(t)
    faults = (sum(t["faults"] for t in by_role.get("vcpu", []))
              or sum(t["faults"] for t in by_role.get("reader", [])))
    return faults, {
        "resolved_by_role": {r: sum(t["faults"] for t in ts) for r, ts in by_role.items()},
        "cpu_by_role": {r: {"threads": len(ts),
                            "user_ns": sum(t["utime_ns"] for t in ts),
                            "system_ns": sum(t["stime_ns"] for t in ts),
                            "voluntary_ctxt_switches": sum(t["voluntary_ctxt_switches"] for t in ts),
                            "involuntary_ctxt_switches": sum(t["involuntary_ctxt_switches"] for t in ts)}
                        for r, ts in by_role.items()},
    }


def _vcpu_raw(vres, vcpus: int) -> list[dict]:
    return [{"id": i, "start_ns": vres[i].start_ns, "end_ns": vres[i].end_ns,
             "touches": vres[i].touches, "content_errors": vres[i].content_errors,
             "kvm_runs": vres[i].kvm_runs, "fault_exits": vres[i].fault_exits,
             "exitinfo_kvm": vres[i].exitinfo_kvm,
             "exitinfo_guest_reg": vres[i].exitinfo_guest_reg,
             "blocked_ns": vres[i].blocked_ns, "host_loop_ns": vres[i].host_loop_ns,
             "guest_loop_cycles": vres[i].guest_loop_cycles} for i in range(vcpus)]


def _collect(plan: Plan, run, table, stale, sched_trace=None, bpf_data=None,
             steal: dict | None = None) -> tuple[dict, dict]:
    """The run's metrics (summarized across runs) and raw data (kept to recompute them)."""
    vcpus = plan.vcpus
    vres = ffi.new("struct fb_vcpu_result[]", vcpus)
    lib.fb_run_vcpu_results(run, vres)
    threads = _threads(run)
    totals = _totals(run)
    reached = reached_pages(plan, table)
    rates = _rates(plan, vres, table, reached)
    faults, roles = _roles(threads)
    lat, lat_raw = _latencies(plan, run)
    clock = _clock_check(vres, vcpus, plan.record_latency)
    installs = np.zeros(lib.fb_run_npages(run), dtype=np.uint32)
    lib.fb_run_page_installs(run, ffi.cast("uint32_t *", ffi.from_buffer(installs)), installs.size)
    # a part of the walk (a traced run) leaves the pages it never reached uninstalled: only
    # the pages it touched count as never installed
    installs_reached = installs if reached is None else installs[reached]
    blocked = [vres[i].blocked_ns for i in range(vcpus)]
    logs = bpf_data.logs_by_tid() if bpf_data is not None else None
    breakdown, checks, inside_kvm_run = _breakdown(run, plan, clock, threads, vres, totals, sched_trace,
                                                   bpf_data, logs)
    sched = _sched(threads, faults)
    if sched and "vcpu" in sched and lat["fault_latency_ns"]:
        # the log's steal only where the split stood its checks (a complete log)
        split = (breakdown or {}).get("sched_split") or {}
        whole = logs if split.get("tracer") == "bpf" and not split.get("withheld") else None
        checks["cpu_time_vs_latency"] = _cpu_time_check(plan, sched, vres, threads,
                                                        _vcpu_steal(threads, whole, steal))
    exits_by_path = {name: int(sum(vres[i].exits_by_path[k] for i in range(vcpus)))
                     for k, name in EXIT_PATHS.items() if name}
    metrics = {
        "pages": rates["pages"],
        "touches": int(sum(vres[i].touches for i in range(vcpus))),
        "faults": faults,
        "pages_installed": totals["pages_installed"],
        "pages_copied": totals["pages_copied"],
        **{k: rates[k] for k in ("guest_seconds", "pages_per_s", "pages_per_s_per_vcpu",
                                 "pages_per_s_per_vcpu_own_window")},
        "content_errors": int(sum(vres[i].content_errors for i in range(vcpus))),
        "fault_latency_ns": lat["fault_latency_ns"],
        "first_touch_latency_ns": lat["first_touch_latency_ns"],
        "faults_attributed_to_vcpus": int(sum(vres[i].faults_logged for i in range(vcpus))),
        "vcpu_windows_overlapping_max": _windows_overlapping(vres, vcpus),
        "vcpus_inside_kvm_run_max": inside_kvm_run,
        "vcpu_start_spread_s": rates["vcpu_start_spread_s"],
        "faults_unattributed": totals["faults_unattributed"],
        "fault_records_dropped": int(sum(vres[i].faults_unlogged for i in range(vcpus))),
        "retouch_latency_ns": lat["retouch_latency_ns"],
        "pages_installed_more_than_once": int((installs > 1).sum()),
        "pages_never_installed": int((installs_reached == 0).sum()),
        "blocktime_ns": ({"all_vcpus": totals["blocktime_all_ns"],
                          "per_vcpu_mean": float(np.mean(blocked)),
                          "per_vcpu_max": int(max(blocked)),
                          "per_vcpu_total": int(sum(blocked))} if plan.record_latency else None),
        "fault_breakdown_ns": breakdown,
        "checks": checks,
        "sched": sched,
        "exits_by_path": exits_by_path if any(exits_by_path.values()) else None,
        **roles,
        "latency_dist_log2_us": lat["latency_dist_log2_us"],
    }
    if plan.mechanism.uses_uffd and stale is not None:
        arrived = totals["bitmap_arrived_ns"]
        first_start = min(vres[i].start_ns for i in range(vcpus))
        metrics["precopy"] = {
            "stale_pages": int(stale.sum()),
            "pages_declared_clean": totals["pages_declared_clean"],
            "bitmap_arrived_after_s": (arrived - first_start) / 1e9 if arrived else None,
        }
    if plan.mechanism.harness_locks:
        lock = ffi.new("struct fb_lock_stats *")
        lib.fb_run_lock_stats(run, lock)
        name = next(iter(plan.mechanism.harness_locks))   # the core keeps one per mechanism
        metrics["harness_locks"] = {name: {
            "acquisitions": lock.acquisitions, "contended": lock.contended,
            "spin_ns": lock.spin_ns, "max_spin_ns": lock.max_spin_ns}}
    raw = {
        "exit_path": EXIT_PATHS[totals["exit_path"]],
        "clock_check": clock,
        "fault_latency_selects": ("touches whose fault was delivered to userspace"
                                  if plan.mechanism.delivers_faults() else
                                  "nothing: this baseline delivers no fault to userspace; see "
                                  "first_touch_latency_ns"),
        "tsc_khz": totals["tsc_khz"],
        "vcpus": _vcpu_raw(vres, vcpus),
        "placement": {"policy": plan.placement, "by_role": placement.describe(threads)},
        "threads": threads,
        "fault_latency_hist": lat_raw["fault_latency_hist"],
        "blocktime_per_vcpu_ns": blocked if plan.record_latency else None,
        "retouch_latency_hist": lat_raw["retouch_latency_hist"],
    }
    if clock and not clock["ok"]:
        _set_aside_guest_timed(metrics, raw)
    return metrics, raw
