"""Measure one point: plan -> warm-ups, measured runs, traced runs -> one record.

The library under every command that measures (the benchmark's cell loop, the
host fingerprint, ab, nightly, the tests): `prepare` turns validated flags into
a workload and its (mechanism, vCPUs) cells, `plan_for` makes one cell's Plan,
and `measure` runs it and returns the record with its checks and warnings.
"""
import argparse
import dataclasses
import math
import os
import shlex
import statistics
import time

from . import cpustate
from . import result as resultmod
from .cmdline import UsageError
from .guest import FAULT_ADDRESS_REGISTER
from .hostnoise import NoiseSampler
from .machine import load_avg, mem_available_bytes
from .mechanisms import REGISTRY as MECHANISMS
from .options import build_parser, rerun_argv, service_of, trace_share_for, validate_args
from .placement import plan_cpus
from .plan import Plan, RunError
from .runner import execute
from .validity import CPU_STATE_START, run_warnings
from .worker import service_params
from .workloads import REGISTRY as WORKLOADS

def memory_needed(vcpus: int, args, workload) -> int:
    ppv = args.mem_per_vcpu * 256
    pages = workload.memory_pages(vcpus, ppv)
    touches = workload.touches_per_vcpu(ppv)
    # guest memory, and the network worker's second full copy (the "remote" memory)
    need = pages * 4096 * (2 if args.fetch == "worker" else 1)
    # per touch: table 8 B, guest timing 16 B, fault log 88 B (struct fb_fault), fault
    # index 8 B, and after the run its exported row (104 B) and numpy's columns of it
    # (about 300 B while the breakdown and the scheduler split are computed)
    need += vcpus * touches * 524
    # per page: stamps 56 B, state 1 B, install count 4 B
    need += pages * 61
    return need

def check_memory(vcpus: int, args, workload) -> None:
    need = memory_needed(vcpus, args, workload)
    avail = mem_available_bytes()
    if avail is not None and need > 0.8 * avail:
        raise UsageError(
            f"{vcpus} vCPUs x {args.mem_per_vcpu} MiB needs {need / 2**30:.1f} GiB; "
            f"this machine has {avail / 2**30:.1f} GiB available (limit: 80%)")

def prepare(args, probes: dict | None = None):
    """Validated args -> (workload, [(mechanism, vcpus)]); raises UsageError/ValueError."""
    workload = WORKLOADS[args.workload](args)
    workload.validate()
    args.needs_shared_memory = workload.needs_shared_memory or args.fetch == "worker"
    args.shared_memory_reason = (f"workload {workload.name}" if workload.needs_shared_memory
                                 else "--fetch worker")
    if args.fetch == "worker":
        service_params(service_of(args))   # ValueError for bad parameters
        for m in args.mech:
            if not MECHANISMS[m].uses_uffd:
                raise UsageError(f"--fetch worker does not apply to mechanism {m} (no faults to fetch for)")
    points = []
    for mech_name in args.mech:
        for v in args.vcpus:
            args.memory_pages = workload.memory_pages(v, args.mem_per_vcpu * 256)
            mech = MECHANISMS[mech_name](args, v, probes or {})
            mech.validate()
            resolvers = mech.readers_total()
            plan_cpus(args.placement, v, resolvers, [0] * resolvers)   # ValueError if impossible
            points.append((mech, v))
    return workload, points

def plan_for(args, mech, workload, vcpus: int, **overrides):
    kw = dict(vcpus=vcpus, mechanism=mech, workload=workload,
              mem_per_vcpu_mib=args.mem_per_vcpu, fetch_delay_us=args.fetch_delay_us,
              fetch_delay_mode=args.fetch_delay_mode, record_latency=not args.no_latency,
              seed=args.seed, timeout_s=args.timeout, corrupt_every=args.corrupt_every,
              lock_stacks=args.lock_stacks, trace_mmap_lock=args.trace_mmap_lock,
              # measured runs carry the in-kernel tracer only when asked (--trace-every-run)
              trace_bpf=(getattr(args, "tracer_used", None) == "bpf"
                         and getattr(args, "trace_every_run", False)),
              fault_around=args.fault_around, fetch=args.fetch,
              placement=args.placement, verify=args.verify,
              corrupt_tail_every=args.corrupt_tail_every,
              misstamp_fetched_ns=args.misstamp_fetched_ns,
              tsc_khz_error_ppm=args.tsc_khz_error_ppm,
              stall_timeout_s=args.stall_timeout, stall_after=args.stall_after,
              worker={"threads": args.worker_threads, "batch": args.worker_batch,
                      "service": service_of(args)})
    kw.update(overrides)
    return Plan(**kw)

def make_plan(argv: list[str], **overrides):
    """One runnable point from command-line words: for scripts and tests."""
    args = build_parser().parse_args(argv)
    validate_args(args)
    workload, points = prepare(args)
    if len(points) != 1:
        raise UsageError("make_plan needs exactly one mechanism and one vCPU count")
    mech, vcpus = points[0]
    return plan_for(args, mech, workload, vcpus, **overrides)

def size_memory(args, mech, workload, vcpus: int) -> dict:
    """--min-guest-ms: one sizing run at the asked size; if its guest time falls
    short, grow --mem-per-vcpu in proportion (10% headroom, even MiB)."""
    metrics, _ = execute(plan_for(args, mech, workload, vcpus))
    ms = metrics["guest_seconds"] * 1000
    asked = args.mem_per_vcpu
    sized = asked
    if ms < args.min_guest_ms:
        sized = min(65536, 2 * math.ceil(asked * args.min_guest_ms / max(ms, 1e-3) * 1.1 / 2))
    return {"asked_mib": asked, "min_guest_ms": args.min_guest_ms,
            "sizing_run_guest_ms": ms, "sized_mib": sized}

def trace_runs(plan, rec: dict, runs: int, tracer: str, buffer_mb: int, asked_share,
               phases: dict | None = None, probed: list[int] | None = None) -> None:
    """Extra runs with lock tracing on (`tracer`: "bpf" or "tracefs"), each walking the
    first share of every vCPU's touches (`asked_share`: --trace-share, a number or
    auto, sized from the measured runs' guest time): lock data and the split, and the
    traced run's rate beside the measured runs'. The measured runs stay untraced, so
    tracing never touches the headline numbers. `phases`: their wall time is added
    under traced.<phase>. `probed`: the CPUs probed around each run, as around the
    measured runs (a probe just before a run changed its rate: like with like)."""
    share = trace_share_for(asked_share, statistics.median(
        r["metrics"]["guest_seconds"] for r in rec["runs"]), plan.workload.prefix_is_representative)
    if tracer == "bpf":
        traced = dataclasses.replace(plan, trace_bpf=True, touch_share=share)
    else:
        traced = dataclasses.replace(plan, trace_locks=True, trace_sched=True,
                                     trace_buffer_kb=buffer_mb * 1024, touch_share=share)
    rec["traced_runs"] = []
    for _ in range(runs):
        traced_phases: dict = {}
        started = time.time()
        if probed is None:
            metrics, raw = execute(traced, traced_phases)
        else:
            (metrics, raw), raw_probe = cpustate.around(probed, lambda: execute(traced, traced_phases))
            raw = {**raw, "cpu_probe": raw_probe}
        if phases is not None:
            for k, v in traced_phases.items():
                phases[f"traced.{k}"] = phases.get(f"traced.{k}", 0.0) + v
        rec["traced_runs"].append({"metrics": metrics, "raw": {**raw, "started_unix_s": started}})
    traced_ms = [r["metrics"] for r in rec["traced_runs"]]
    rates = [m["pages_per_s"] for m in traced_ms]
    untraced = statistics.median(r["metrics"]["pages_per_s"] for r in rec["runs"])
    # touches a second of guest time: comparable between a part of the walk and the
    # whole, where pages are not (several vCPUs' prefixes reach most shared pages)
    touch_rates = [touch_rate(m) for m in traced_ms]
    measured_touch_rates = [touch_rate(r["metrics"]) for r in rec["runs"]]
    measured_touch_median = statistics.median(measured_touch_rates)
    lost = sum((m.get("kernel_locks") or {}).get("events_lost") or 0 for m in traced_ms)
    rec["tracing"] = {
        "tracer": tracer, "every_measured_run": False,
        "lock_tracing": True, "stacks": plan.lock_stacks,
        # mmap_lock acquisitions are always counted in BPF (one array add each):
        # --no-trace-mmap-lock applies to the tracefs path
        "mmap_lock": True if tracer == "bpf" else plan.trace_mmap_lock,
        "touch_share": share, "touch_share_asked": asked_share,
        "traced_pages": [m["pages"] for m in traced_ms],
        "traced_pages_per_s": rates, "untraced_pages_per_s_median": untraced,
        "traced_touches_per_s": touch_rates,
        "untraced_touches_per_s_median": measured_touch_median,
        "overhead_ratio": statistics.median(touch_rates) / measured_touch_median,
        "events_lost": lost,
        "note": ("overhead_ratio = traced / untraced median touches a second of guest time "
                 "(below 1: the traced run was slower). A traced run walks touch_share of each "
                 "vCPU's touches, so the ratio holds the tracer's cost, the shorter run's start "
                 "and end, and the host's state at the time together; the tracer's own cost, "
                 "side by side, is in docs/tracing.md. Lock data and the split come from "
                 "traced_runs, every other number from runs"),
    }
    rec["warnings"] += _traced_run_warnings(rec, touch_rates, measured_touch_rates, share)
    if tracer == "tracefs":
        rec["tracing"]["buffer_kb_per_cpu"] = traced.trace_buffer_kb
        if lost:
            rec["warnings"].append(
                f"lock tracing lost {lost} events (buffer {traced.trace_buffer_kb // 1024} MiB per CPU): "
                "the lock counts cover only part of the traced run; raise --trace-buffer-mb or "
                "use --no-trace-mmap-lock")
        return
    rec["tracing"].update(_bpf_logs(traced_ms))
    if lost:
        rec["warnings"].append(
            f"lock tracing lost {lost} contention keys in {runs} traced runs (the BPF lock map was "
            "full): the lock counts cover only part of the traced runs")


def touch_rate(metrics: dict) -> float:
    """Touches a second of guest time."""
    g = metrics.get("guest_seconds") or 0.0
    return metrics["touches"] / g if g > 0 else 0.0


# a traced run's touch rate this far outside the measured runs' range is warned about
TRACED_PACE_MARGIN = 0.10


def _traced_run_warnings(rec: dict, touch_rates: list[float], measured: list[float],
                         share: float = 1.0) -> list[str]:
    """Where a traced run was not taken like the measured runs: its pace outside their
    range (by more than TRACED_PACE_MARGIN; for a part of the walk only below it, as a
    shorter walk ran up to 17% faster untraced here: docs/tracing.md), or its CPU in the
    slowed state (the probe, judged against the floors of the cell's measured and
    traced runs together)."""
    out = []
    lo, hi = min(measured), max(measured)
    for i, r in enumerate(touch_rates):
        if r < lo * (1 - TRACED_PACE_MARGIN) or (share >= 1 and r > hi * (1 + TRACED_PACE_MARGIN)):
            out.append(f"traced run {i + 1} ran {r:.0f} touches/s against the measured runs' "
                       f"{lo:.0f}..{hi:.0f}: its lock data and split come from another pace than "
                       "the headline numbers (docs/tracing.md)")
    measured_probes = cpustate.run_probes(rec)
    traced_probes = [(r.get("raw") or {}).get("cpu_probe") for r in rec.get("traced_runs") or []]
    if any(traced_probes):
        slowed = [(i - len(measured_probes), x)
                  for i, x in cpustate.slowed(measured_probes + traced_probes) if i >= len(measured_probes)]
        if slowed:
            worst = max(x for _i, x in slowed)
            out.append(f"{CPU_STATE_START} around traced run(s) {','.join(str(i + 1) for i, _x in slowed)} "
                       f"(the CPU-state probe up to x{worst:.2f} its floor, over "
                       f"x{cpustate.CONTENDED_RATIO}): the lock data and split were taken in the "
                       "host's slow state")
    return out


def _bpf_logs(metrics: list[dict]) -> dict:
    """The in-kernel tracer's state logs over these runs, and which runs' splits it withheld."""
    splits = [((m.get("fault_breakdown_ns") or {}).get("sched_split") or {}) for m in metrics]
    return {"log_entries": [sp.get("log_entries") for sp in splits],
            "log_dropped": sum(sp.get("log_dropped") or 0 for sp in splits),
            "split_withheld_runs": [i + 1 for i, sp in enumerate(splits) if sp.get("withheld")]}


def bpf_tracing(rec: dict, plan) -> dict:
    """--trace-every-run: what the in-kernel tracer recorded in this cell's measured
    runs (lock contention and the split are in every measured run's metrics)."""
    runs = [r["metrics"] for r in rec["runs"]]
    lost = sum((m.get("kernel_locks") or {}).get("events_lost") or 0 for m in runs)
    if lost:
        rec["warnings"].append(
            f"lock tracing lost {lost} contention keys over {len(runs)} runs (the BPF lock map was "
            "full): the lock counts cover only part of the runs")
    return {"tracer": "bpf", "every_measured_run": True, "lock_tracing": True,
            "stacks": plan.lock_stacks, "mmap_lock": True, "events_lost": lost,
            **_bpf_logs(runs),
            "note": "--trace-every-run: lock contention (kernel_locks) and the split "
                    "(fault_breakdown_ns.sched_split) are in each measured run's metrics, recorded "
                    "by the in-kernel tracer during that run, whose cost they carry "
                    "(docs/tracing.md measures it)"}


def trace_buffer_mb(args, plan) -> int:
    """Enough per-CPU buffer for the traced run's events. Measured here at 64
    vCPUs: 262,338 mmap_lock acquisitions for 65,536 faults, i.e. 4 a fault and
    3 events each (start, acquired, released), about 48 B apiece in the buffer. The
    released event is no longer recorded (bench/locktrace.py), so this now leaves a
    third more headroom than it says."""
    if args.trace_buffer_mb:
        return args.trace_buffer_mb
    per_fault = 12 * 48 if args.trace_mmap_lock else 64
    ncpu = max(1, len(os.sched_getaffinity(0)))
    mb = plan.memory_pages * per_fault * 2 // ncpu // 2**20   # headroom x2
    avail = (mem_available_bytes() or 2**34) // 2**20
    return int(min(max(16, mb), max(16, avail // (8 * ncpu))))


def cell_config(args, mech, workload, vcpus: int, plan: Plan, sizing: dict | None) -> dict:
    """The record's config: every input that decides this cell's numbers."""
    vcpu_cpu, resolver_cpu = plan.cpu_map()
    return {**mech.config(), "workload": workload.name, "workload_params": workload.params(),
            "vcpus": vcpus, "mem_per_vcpu_mib": args.mem_per_vcpu,
            "memory_pages": plan.memory_pages,
            "fault_around": args.fault_around,
            "fetch": args.fetch,
            "worker": plan.worker if args.fetch == "worker" else None,
            "fetch_delay_us": args.fetch_delay_us, "fetch_delay_mode": args.fetch_delay_mode,
            "record_latency": not args.no_latency, "seed": args.seed,
            "repeat": args.repeat, "warmup": args.warmup,
            "fault_address_register": FAULT_ADDRESS_REGISTER,
            "trace_locks": args.trace_locks, "lock_stacks": args.lock_stacks,
            "trace_mmap_lock": args.trace_mmap_lock,
            # the measured runs carry the in-kernel tracer (its cost) only with this on
            "trace_every_run": bool(getattr(args, "trace_every_run", False)),
            "trace_share": args.trace_share,
            "placement": args.placement,
            "cpu_map": {"vcpus": vcpu_cpu, "resolvers": resolver_cpu,
                        "note": "planned CPU per thread, -1: unpinned"},
            "verify": args.verify,
            "min_guest_ms": args.min_guest_ms, "memory_sizing": sizing}


class Cell:
    """One cell measured a run at a time, so that a sweep can interleave its cells
    run by run (round-robin) and host drift is not confounded with mechanism:
    Cell(...) sizes memory and builds the plan, run_one() makes the next warm-up or
    measured run (and after the last one the traced runs), finish() adds host noise
    and warnings and validates.
    `phases` accumulates where the wall time went (bench.runner.execute)."""

    def __init__(self, args, argv: list[str], mech, workload, vcpus: int, machine: dict,
                 harness: dict, phases: dict | None = None, sweep: dict | None = None):
        args = argparse.Namespace(**vars(args))   # a cell may size its own memory: the caller's flags stay
        self.args, self.mech, self.vcpus = args, mech, vcpus
        self.phases = {} if phases is None else phases
        sizing = None
        if args.min_guest_ms:
            try:
                sizing = size_memory(args, mech, workload, vcpus)
            except RunError as exc:
                raise RunError(f"sizing run: {exc}") from None
            args.mem_per_vcpu = sizing["sized_mib"]
            try:
                check_memory(vcpus, args, workload)
            except UsageError as exc:
                raise UsageError(f"--min-guest-ms {args.min_guest_ms:g}: {exc}") from None
        args.memory_pages = workload.memory_pages(vcpus, args.mem_per_vcpu * 256)
        self.plan = plan_for(args, mech, workload, vcpus)
        config = cell_config(args, mech, workload, vcpus, self.plan, sizing)
        emulated, reason = mech.emulation()
        rerun = rerun_argv(argv, mech.name, vcpus, sizing["sized_mib"] if sizing else None)
        # the load average belongs to this point, not to the invocation (a sweep lasts minutes)
        machine = {**machine, "load_avg": load_avg()}
        self.rec = resultmod.new_record(["run_bench.py", *rerun], config, machine, harness,
                                        emulated, reason)
        if sweep:   # how this cell's runs were ordered among the sweep's (not its identity)
            self.rec["sweep"] = dict(sweep)
        # the run's CPUs are probed just before and after each measured run: the
        # verdicts leave out runs taken while the CPU itself was slowed (bench/cpustate.py)
        self.probed = cpustate.cpus_to_probe(*self.plan.cpu_map())
        self.total = args.warmup + args.repeat
        self.done = 0
        self.traced = False
        # outside load is counted only while this cell's own runs run: in an interleaved
        # sweep the other cells' runs come between them
        self.noise = NoiseSampler()
        self.noise.start()
        self.noise.pause()

    def runs_left(self) -> int:
        return self.total - self.done

    def run_one(self) -> None:
        warmup = self.done < self.args.warmup
        # when each run began: a reader can see the sweep's order and plot drift over it
        started = time.time()
        if self.done == 0:   # the load average as the cell's first run starts
            self.rec["machine"]["load_avg"] = load_avg()
        self.noise.resume()
        try:
            if warmup:
                metrics, raw = execute(self.plan, self.phases)
            else:
                (metrics, raw), raw_probe = cpustate.around(
                    self.probed, lambda: execute(self.plan, self.phases))
                raw = {**raw, "cpu_probe": raw_probe}
        finally:
            self.noise.pause()
        resultmod.add_run(self.rec, metrics, warmup=warmup, raw={**raw, "started_unix_s": started})
        self.done += 1
        if not self.runs_left():
            # right after the cell's own last run, also in an interleaved sweep: the traced
            # runs are taken as close as can be to the measured ones they stand beside
            self.trace()

    def trace(self) -> None:
        """The cell's traced runs (or, with --trace-every-run, the summary of what the
        in-kernel tracer recorded in its measured runs); once."""
        if self.traced:
            return
        self.traced = True
        rec, args = self.rec, self.args
        used = getattr(args, "tracer_used", None)
        if used is None and args.trace_locks:   # a caller that skipped choose_tracer
            used = "tracefs"
        if used == "bpf" and getattr(args, "trace_every_run", False):
            rec["tracing"] = bpf_tracing(rec, self.plan)
        elif used:
            self.noise.resume()   # the traced runs are this cell's too
            try:
                trace_runs(self.plan, rec, args.trace_runs, used,
                           trace_buffer_mb(args, self.plan) if used == "tracefs" else 0,
                           args.trace_share, self.phases, self.probed)
            finally:
                self.noise.pause()
            if used == "tracefs":
                rec["tracing"]["why_not_bpf"] = getattr(args, "tracer_why", None)
            if args.trace_share == "auto":   # the rerun walks what this traced run walked
                pin = ["--trace-share", repr(float(rec["tracing"]["touch_share"]))]
                rec["command"]["argv"] += pin
                rec["command"]["rerun"] = shlex.join(["python", *rec["command"]["argv"]])

    def finish(self) -> dict:
        """The record, not yet written. Raises RunError (a traced run or the record failed)."""
        rec = self.rec
        try:
            self.trace()   # a no-op: run_one made them after the cell's last run
            resultmod.finalize(rec)
        finally:
            rec["host_noise"], noisy = self.noise.stop()
        rec["warnings"] += noisy
        rec["warnings"] += [w for w in run_warnings(rec) if w not in rec["warnings"]]
        problems = resultmod.validate(rec)
        if problems:
            raise RunError(f"invalid result: {problems[0]}")
        return rec


def measure(args, argv: list[str], mech, workload, vcpus: int, machine: dict, harness: dict,
            phases: dict | None = None) -> dict:
    """One cell, whole: sizing (--min-guest-ms), warm-ups, measured runs, traced
    runs, host noise, warnings, validation. Returns the record, not yet written.
    Raises RunError (a run or the record failed) or UsageError (sized memory does
    not fit). `phases` accumulates where the wall time went (bench.runner.execute)."""
    cell = Cell(args, argv, mech, workload, vcpus, machine, harness, phases)
    while cell.runs_left():
        cell.run_one()
    return cell.finish()
