"""`python run_bench.py`: plan a sweep, run it, write one result per point."""
import argparse
import os
import shlex
import sys
import time

from . import __version__
from . import result as resultmod
from .machine import collect_harness, collect_machine, mem_available_bytes
from .mechanisms import REGISTRY as MECHANISMS
from .workloads import REGISTRY as WORKLOADS

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_VCPUS = 1024


class UsageError(Exception):
    """Bad input: printed as one line, exit status 2."""


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}")


def _name_list(choices):
    def parse(text: str) -> list[str]:
        names = [x for x in text.split(",") if x]
        for n in names:
            if n not in choices:
                raise argparse.ArgumentTypeError(
                    f"unknown name {n!r} (choose from {', '.join(choices)})")
        return names
    return parse


class OneLineParser(argparse.ArgumentParser):
    """Bad input gets one line (and exit 2), not the whole usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _subcommand_help() -> str:
    from .commands import SUBCOMMANDS
    if not SUBCOMMANDS:
        return ""
    return "other commands: " + "; ".join(
        f"run_bench.py {name} ...: {summary}" for name, (_m, summary) in SUBCOMMANDS.items())


def build_parser() -> argparse.ArgumentParser:
    mech_help = "; ".join(f"{n}: {m.summary}" for n, m in MECHANISMS.items())
    wl_help = "; ".join(f"{n}: {w.summary}" for n, w in WORKLOADS.items())
    p = OneLineParser(
        prog="run_bench.py",
        description="Measure how guest page faults reach userspace on real KVM vCPUs. "
                    "Comma lists sweep: every (mechanism, vCPU count) pair is one result file.",
        epilog=_subcommand_help())
    p.add_argument("--vcpus", type=_int_list, default=[1],
                   help=f"vCPU count(s), 1..{MAX_VCPUS}, e.g. 1,8,64 (default 1)")
    p.add_argument("--mech", type=_name_list(list(MECHANISMS)), default=["uffd"],
                   help=f"mechanism(s), comma-separated (default uffd). {mech_help}")
    p.add_argument("--workload", choices=list(WORKLOADS), default="sequential",
                   help=f"guest access pattern (default sequential). {wl_help}")
    p.add_argument("--mem-per-vcpu", type=int, default=4, metavar="MIB",
                   help="guest memory per vCPU partition in MiB, a multiple of 2 (default 4: "
                        "1024 faults per vCPU keeps 256-vCPU runs short on 2 pCPUs)")
    g = p.add_argument_group("mechanism options")
    g.add_argument("--readers", type=int, default=None,
                   help="uffd/uffd-many: reader threads per userfaultfd; async: resolver threads (default 1)")
    g.add_argument("--wait", choices=["poll", "epoll", "read"], default=None,
                   help="uffd readers wait with poll(2), epoll with EPOLLEXCLUSIVE, or a blocking read (default poll)")
    g.add_argument("--resolve", choices=["copy", "continue"], default=None,
                   help="copy: private memory, MISSING mode, UFFDIO_COPY; continue: memfd with a second "
                        "non-faulting mapping, page written there, MINOR mode, UFFDIO_CONTINUE (default: copy, "
                        "or continue where the workload or --fetch worker needs shared memory)")
    g.add_argument("--fault-around", type=int, default=1, metavar="N",
                   help="pages installed per resolved fault, contiguous from the faulting page within its "
                        "userfaultfd's range (1..512, default 1); faults and pages are counted apart")
    g.add_argument("--uffds", type=int, default=0,
                   help="uffd-many: number of userfaultfds (default: one per vCPU partition)")
    g.add_argument("--fetch", choices=["inline", "worker"], default="inline",
                   help="inline: the resolving thread writes the page content itself; worker: a separate "
                        "network-worker process (started, supervised and stopped by the harness) serves "
                        "CopyFromRemote(remote, local, length) from a shared-memory ring, writing straight "
                        "into guest memory through its own mapping; the resolver then maps it with "
                        "UFFDIO_CONTINUE (needs shared memory) (default inline)")
    g.add_argument("--worker-threads", type=int, default=1, help="worker: service threads (default 1)")
    g.add_argument("--worker-batch", type=int, default=1,
                   help="worker: requests a service thread takes from the ring at once (default 1)")
    g.add_argument("--service", choices=["fixed", "uniform", "lognormal"], default="fixed",
                   help="worker: service-time model per request (default fixed)")
    g.add_argument("--service-us", type=float, default=0.0, help="worker, fixed: service time (default 0)")
    g.add_argument("--service-min-us", type=float, default=10.0, help="worker, uniform: lower bound")
    g.add_argument("--service-max-us", type=float, default=50.0, help="worker, uniform: upper bound")
    g.add_argument("--service-median-us", type=float, default=30.0, help="worker, lognormal: median")
    g.add_argument("--service-sigma", type=float, default=0.5, help="worker, lognormal: sigma of ln(time)")
    g.add_argument("--fetch-delay-us", type=float, default=0.0,
                   help="--fetch inline: modelled fetch time before each resolution, same for every "
                        "mechanism (default 0); the worker has its own --service model")
    g.add_argument("--fetch-delay-mode", choices=["sleep", "spin"], default="sleep",
                   help="sleep: clock_nanosleep with 1 ns timer slack (the thread yields its CPU, as a "
                        "network wait does); spin: busy-loop on the clock (default sleep)")
    w = p.add_argument_group("workload options")
    for cls in WORKLOADS.values():
        cls.add_arguments(w)
    r = p.add_argument_group("measurement")
    r.add_argument("--repeat", type=int, default=3, help="measured runs per point (default 3)")
    r.add_argument("--warmup", type=int, default=0, help="warm-up runs, recorded but kept out of statistics")
    r.add_argument("--no-latency", action="store_true",
                   help="turn per-fault timing off (the guest executes no rdtsc)")
    r.add_argument("--trace-locks", action=argparse.BooleanOptionalAction, default=True,
                   help="record kernel lock contention (lock:contention_*, mmap_lock:*) in a private "
                        "tracefs instance during measured runs (default on)")
    r.add_argument("--lock-stacks", action=argparse.BooleanOptionalAction, default=True,
                   help="name contended locks by kernel call chain (stacktrace trigger; costs about "
                        "3 us per contention, which inflates short spin waits) (default on)")
    r.add_argument("--trace-runs", type=int, default=1,
                   help="extra runs per point made with lock tracing on; the --repeat runs that give "
                        "the headline numbers are never traced (default 1)")
    r.add_argument("--trace-buffer-mb", type=int, default=0,
                   help="tracefs buffer per CPU in MiB (default: sized from the expected faults)")
    r.add_argument("--trace-mmap-lock", action=argparse.BooleanOptionalAction, default=True,
                   help="also record mmap_lock acquire/release (several events a fault) (default on)")
    r.add_argument("--seed", type=int, default=1, help="seed for page content and access order (default 1)")
    r.add_argument("--timeout", type=float, default=300.0, help="seconds before a run is declared hung (default 300)")
    o = p.add_argument_group("output")
    o.add_argument("--out", help="FILE.json: the result of a single point; DIR (any other name): the "
                                 "sweep's directory, one record per cell and an index.json of the cells, "
                                 "their status and where the wall time went (default: results/<name>.json)")
    o.add_argument("--resume", metavar="DIR",
                   help="finish the sweep in DIR (written with --out DIR): its own command again, "
                        "running only the cells without a complete record")
    o.add_argument("--report", metavar="DIR",
                   help="when every cell is done, write the report of the sweep's records into DIR "
                        "(run_bench.py report)")
    o.add_argument("--results-dir", default=os.path.join(REPO_DIR, "results"))
    o.add_argument("--quiet", action="store_true", help="print only the result paths")
    o.add_argument("--corrupt-every", type=int, default=0, help=argparse.SUPPRESS)  # tests the content check
    return p


def service_of(args) -> dict:
    if args.service == "fixed":
        return {"model": "fixed", "us": args.service_us}
    if args.service == "uniform":
        return {"model": "uniform", "min_us": args.service_min_us, "max_us": args.service_max_us}
    return {"model": "lognormal", "median_us": args.service_median_us, "sigma": args.service_sigma}


# numeric flags and their allowed ranges (0 for --uffds: one per vCPU partition)
RANGES = [
    ("--readers", 1, 256), ("--uffds", 0, 1024), ("--fetch-delay-us", 0, 1_000_000),
    ("--repeat", 1, 1000), ("--warmup", 0, 100), ("--trace-runs", 1, 100),
    ("--trace-buffer-mb", 0, 4096), ("--seed", 0, 2**64 - 1),
]


def validate_args(args) -> None:
    for v in args.vcpus:
        if not 1 <= v <= MAX_VCPUS:
            raise UsageError(f"--vcpus {v} is out of range 1..{MAX_VCPUS}")
    if not args.vcpus:
        raise UsageError("--vcpus needs at least one count")
    if not args.mech:
        raise UsageError("--mech needs at least one mechanism")
    for name, values in (("--vcpus", args.vcpus), ("--mech", args.mech)):
        twice = sorted({str(v) for v in values if values.count(v) > 1})
        if twice:
            raise UsageError(f"{name} lists {', '.join(twice)} more than once")
    if not (2 <= args.mem_per_vcpu <= 65536 and args.mem_per_vcpu % 2 == 0):
        raise UsageError(f"--mem-per-vcpu {args.mem_per_vcpu} must be an even number of MiB in 2..65536")
    if args.fetch == "worker":
        if args.fetch_delay_us:
            raise UsageError("--fetch-delay-us models an inline fetch; the worker uses --service")
        if not 1 <= args.worker_threads <= 64:
            raise UsageError(f"--worker-threads {args.worker_threads} is out of range 1..64")
        if not 1 <= args.worker_batch <= 1024:
            raise UsageError(f"--worker-batch {args.worker_batch} is out of range 1..1024")
        if args.corrupt_every:
            raise UsageError("--corrupt-every only applies to --fetch inline")
    if not 1 <= args.fault_around <= 512:
        raise UsageError(f"--fault-around {args.fault_around} is out of range 1..512")
    for opt in ("readers", "wait"):
        if getattr(args, opt) is not None and not any(opt in MECHANISMS[m].options for m in args.mech):
            raise UsageError(f"--{opt} applies to none of the mechanisms asked for ({', '.join(args.mech)})")
    args.readers = 1 if args.readers is None else args.readers
    args.wait = "poll" if args.wait is None else args.wait
    for flag, lo, hi in RANGES:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if not lo <= value <= hi:
            raise UsageError(f"{flag} {value} is out of range {lo}..{hi}")
    if not args.timeout > 0:
        raise UsageError("--timeout must be positive")
    if args.out and args.out.endswith(".json") and len(args.vcpus) * len(args.mech) > 1:
        raise UsageError("--out FILE.json names one result; give a directory for a sweep")
    if args.report and (not args.out or args.out.endswith(".json")):
        raise UsageError("--report DIR reports on a sweep directory: give --out DIR too")
    if args.uffds and "uffd-many" not in args.mech:
        raise UsageError("--uffds applies to uffd-many only")


def check_output(args) -> None:
    """Refuse an unwritable destination before spending minutes measuring."""
    if args.out and args.out.endswith(".json") and os.path.isdir(args.out):
        raise UsageError(f"--out {args.out} is a directory")
    sweep_dir = args.out and not args.out.endswith(".json")
    target = (os.path.abspath(args.out) if sweep_dir else os.path.dirname(os.path.abspath(args.out))
              if args.out else os.path.abspath(args.results_dir))
    if args.out and not sweep_dir and not os.path.isdir(target):
        raise UsageError(f"--out {args.out}: directory {target} does not exist")
    # the results directory is made when the first result is written; here only
    # check that it can be (nothing is created for a run that never happens)
    existing = target
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{target} cannot be written ({existing} is not a writable directory)")


def memory_needed(vcpus: int, args, workload) -> int:
    ppv = args.mem_per_vcpu * 256
    pages = workload.memory_pages(vcpus, ppv)
    touches = workload.touches_per_vcpu(ppv)
    # guest memory, and the network worker's second full copy (the "remote" memory)
    need = pages * 4096 * (2 if args.fetch == "worker" else 1)
    # per touch: table 8 B, guest timing 16 B, fault log 16 B, faulted flag 1 B
    need += vcpus * touches * 41
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


def rerun_argv(argv: list[str], mech: str, vcpus: int) -> list[str]:
    """The command that reruns exactly this point of a sweep."""
    out, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a in ("--vcpus", "--mech", "--out", "--results-dir"):
            skip = True
            continue
        if a.startswith(("--vcpus=", "--mech=", "--out=", "--results-dir=")):
            continue
        out.append(a)
    return out + ["--vcpus", str(vcpus), "--mech", mech]


def trace_runs(plan, rec: dict, runs: int, buffer_mb: int, phases: dict | None = None) -> None:
    """Extra runs with lock tracing on: lock data, and what tracing costs. The
    measured runs stay untraced, so tracing never touches the headline numbers.
    `phases`: their wall time is added under traced.<phase>."""
    import dataclasses
    import statistics
    from .runner import execute
    traced = dataclasses.replace(plan, trace_locks=True, trace_buffer_kb=buffer_mb * 1024)
    rec["traced_runs"] = []
    for _ in range(runs):
        traced_phases: dict = {}
        metrics, raw = execute(traced, traced_phases)
        if phases is not None:
            for k, v in traced_phases.items():
                phases[f"traced.{k}"] = phases.get(f"traced.{k}", 0.0) + v
        rec["traced_runs"].append({"metrics": metrics, "raw": raw})
    rates = [r["metrics"]["pages_per_s"] for r in rec["traced_runs"]]
    untraced = statistics.median(r["metrics"]["pages_per_s"] for r in rec["runs"])
    lost = sum(r["metrics"]["kernel_locks"]["events_lost"] for r in rec["traced_runs"])
    rec["tracing"] = {
        "lock_tracing": True, "stacks": plan.lock_stacks, "mmap_lock": plan.trace_mmap_lock,
        "buffer_kb_per_cpu": traced.trace_buffer_kb,
        "traced_pages_per_s": rates, "untraced_pages_per_s_median": untraced,
        "overhead_ratio": statistics.median(rates) / untraced,
        "events_lost": lost,
        "note": "overhead_ratio = traced / untraced median paging rate (below 1: tracing slowed "
                "the run); lock data comes from traced_runs, every other number from runs",
    }
    if lost:
        rec["warnings"].append(
            f"lock tracing lost {lost} events (buffer {traced.trace_buffer_kb // 1024} MiB per CPU): "
            "the lock counts cover only part of the traced run; raise --trace-buffer-mb or "
            "use --no-trace-mmap-lock")


def run_warnings(rec: dict) -> list[str]:
    """Plain-words warnings about what a run's own numbers say of its validity."""
    out = []
    vcpus = rec["config"]["vcpus"]
    for kind in ("runs", "warmups", "traced_runs"):
        for i, r in enumerate(rec.get(kind, [])):
            m = r["metrics"]
            where = f"{kind[:-1]} {i + 1}"
            if m["content_errors"]:
                out.append(f"{where}: {m['content_errors']} pages had wrong content")
            if m["vcpus_running_at_once_max"] < vcpus:
                out.append(f"{where}: only {m['vcpus_running_at_once_max']} of {vcpus} vCPUs were "
                           f"running at once (starts spread over {m['vcpu_start_spread_s']:.3f} s): "
                           "not a {vcpus}-vCPU measurement".replace("{vcpus}", str(vcpus)))
            bd = m.get("fault_breakdown_ns") or {}
            if bd.get("faults_total"):
                if bd["faults_used"] < 0.9 * bd["faults_total"]:
                    out.append(f"{where}: the cost breakdown covers {bd['faults_used']} of "
                               f"{bd['faults_total']} faults")
                if bd.get("sum_vs_mean") and abs(bd["sum_vs_mean"] - 1) > 0.10:
                    out.append(f"{where}: breakdown parts sum to {bd['sum_vs_mean']:.2f} x the mean "
                               "fault latency")
                hc = bd.get("host_clock_check")
                every_touch_faulted = m["faults"] == (m.get("first_touch_latency_ns") or {}).get("count")
                if hc and every_touch_faulted and abs(hc["sum_vs_mean"] - 1) > 0.10:
                    out.append(f"{where}: host clocks account for {hc['sum_vs_mean']:.2f} x the "
                               "guest-timed fault latency")
    return out


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


def print_point(rec: dict, path: str) -> None:
    cfg, s = rec["config"], rec["summary"]
    m = rec["machine"]
    def med(key):
        return s.get(key, {}).get("median")
    runs = [r["metrics"] for r in rec["runs"]]
    print(f"== {cfg['mech']} / {cfg['workload']}: {cfg['vcpus']} vCPUs x {cfg['mem_per_vcpu_mib']} MiB, "
          f"{len(runs)} run(s), on {m.get('online_cpus')} CPUs ({m.get('cpu_model')}, {m.get('kernel_release')})")
    if rec["emulated"]:
        print(f"   EMULATED: {rec['emulation_reason']}")
    print(f"Total guest execution time: {med('guest_seconds'):.6f} s")
    print(f"Per-vcpu demand paging rate: {med('pages_per_s_per_vcpu'):.0f} pgs/sec/vcpu")
    print(f"Overall demand paging rate: {med('pages_per_s'):.0f} pgs/sec"
          + (f"  (min {s['pages_per_s']['min']:.0f}, max {s['pages_per_s']['max']:.0f})" if len(runs) > 1 else ""))
    print(f"Pages: {runs[0]['pages']}  faults delivered: {runs[0]['faults']}  "
          f"installed: {runs[0]['pages_installed']}  content errors: {sum(r['content_errors'] for r in runs)}")
    keys = ["p50", "p90", "p99", "p99_9", "max"]
    if runs[0].get("fault_latency_ns"):
        parts = "  ".join(f"{k.replace('_', '.')} {med('fault_latency_ns.' + k) / 1000:.1f}" for k in keys)
        print(f"Fault latency (us, each fault as its vCPU saw it): {parts}")
    elif runs[0].get("first_touch_latency_ns"):
        parts = "  ".join(f"{k.replace('_', '.')} {med('first_touch_latency_ns.' + k) / 1000:.2f}"
                          for k in keys)
        print(f"First-touch latency (us; no fault reaches userspace here): {parts}")
    for r in rec.get("traced_runs", [])[:1]:
        kl = r["metrics"]["kernel_locks"]
        top = ", ".join(f"{t['call_site'] or t['lock']} x{t['count']}" for t in kl["top_locks"][:3])
        print(f"Kernel lock contention (traced run): {kl['contentions']} contentions, "
              f"{kl['wait_ns_total'] / 1e6:.2f} ms waited; top: {top or '-'}")
    if rec.get("tracing"):
        print(f"Tracing cost: traced/untraced paging rate = {rec['tracing']['overhead_ratio']:.3f} "
              f"(headline numbers come from untraced runs)")
    for w in rec["warnings"]:
        print(f"   warning: {w}")
    print(f"Result: {path}")


def prepare(args, probes: dict | None = None):
    """Validated args -> (workload, [(mechanism, vcpus)]); raises UsageError/ValueError."""
    workload = WORKLOADS[args.workload](args)
    workload.validate()
    args.needs_shared_memory = workload.needs_shared_memory or args.fetch == "worker"
    args.shared_memory_reason = (f"workload {workload.name}" if workload.needs_shared_memory
                                 else "--fetch worker")
    if args.fetch == "worker":
        from .worker import service_params
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
            points.append((mech, v))
    return workload, points


def plan_for(args, mech, workload, vcpus: int, **overrides):
    from .runner import Plan
    kw = dict(vcpus=vcpus, mechanism=mech, workload=workload,
              mem_per_vcpu_mib=args.mem_per_vcpu, fetch_delay_us=args.fetch_delay_us,
              fetch_delay_mode=args.fetch_delay_mode, record_latency=not args.no_latency,
              seed=args.seed, timeout_s=args.timeout, corrupt_every=args.corrupt_every,
              lock_stacks=args.lock_stacks, trace_mmap_lock=args.trace_mmap_lock,
              fault_around=args.fault_around, fetch=args.fetch,
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from .commands import dispatch
    status = dispatch(argv)
    if status is not None:
        return status
    parser = build_parser()
    args = parser.parse_args(argv)
    from . import sweep as sweepmod
    from .probes import DeviceMissing, probe, require_devices
    try:
        if args.resume:   # the sweep's own words, again, into its own directory
            if argv not in (["--resume", args.resume], [f"--resume={args.resume}"]):
                raise UsageError("--resume DIR takes the sweep's options from DIR/index.json; "
                                 "give no other option")
            argv = sweepmod.resume_argv(args.resume)
            args = parser.parse_args(argv)
        validate_args(args)
        check_output(args)
        if args.out and not args.out.endswith(".json"):
            sweepmod.check_directory(args.out, argv)
        require_devices()
        probes = probe()
        workload, points = prepare(args, probes)
        for v in args.vcpus:
            check_memory(v, args, workload)
    except (UsageError, ValueError) as exc:
        print(f"run_bench.py: error: {exc}", file=sys.stderr)
        return 2
    except DeviceMissing as exc:
        print(f"run_bench.py: error: {exc}", file=sys.stderr)
        return 3
    except sweepmod.SweepError as exc:
        print(f"run_bench.py: error: {exc}", file=sys.stderr)
        return 2

    machine = collect_machine({"probes": probes})
    harness = collect_harness(REPO_DIR, __version__)
    status = 0
    done = []
    sweep_dir = args.out if args.out and not args.out.endswith(".json") else None
    sweep = sweepmod.Sweep([(m.name, v) for m, v in points], workload.name, args.repeat, sweep_dir,
                           argv, cost={(m.name, v): workload.memory_pages(v, args.mem_per_vcpu * 256)
                                       * (args.repeat + args.warmup + args.trace_runs * args.trace_locks)
                                       for m, v in points})
    try:
        status = _run_cells(args, argv, points, workload, machine, harness, sweep, done)
    except KeyboardInterrupt:
        sweep.interrupt()
        where = f"; finished cells are in {sweep_dir}, go on with --resume {sweep_dir}" if sweep_dir else ""
        print(f"run_bench.py: interrupted{where}", file=sys.stderr)
        return 130
    sweep.finish()
    if sweep_dir and not args.quiet:
        print(sweepmod.time_text(sweep.summary()))
    if args.report and status == 0:
        from .reporting.build import main as report_main
        status = report_main([sweep_dir, "--out", args.report])
    if len(done) > 1 and not args.quiet:
        from .report import table
        print("\n" + table(done), end="")
    return status


def _run_cells(args, argv, points, workload, machine, harness, sweep, done) -> int:
    from .runner import RunError, execute
    status = 0
    for mech, vcpus in points:
        if sweep.is_done(mech.name, vcpus):
            continue
        sweep.begin(mech.name, vcpus)
        phases: dict = {}
        plan = plan_for(args, mech, workload, vcpus)
        emulated, reason = mech.emulation()
        config = {**mech.config(), "workload": workload.name, "workload_params": workload.params(),
                  "vcpus": vcpus, "mem_per_vcpu_mib": args.mem_per_vcpu,
                  "memory_pages": plan.memory_pages,
                  "fault_around": args.fault_around,
                  "fetch": args.fetch,
                  "worker": plan.worker if args.fetch == "worker" else None,
                  "fetch_delay_us": args.fetch_delay_us, "fetch_delay_mode": args.fetch_delay_mode,
                  "record_latency": not args.no_latency, "seed": args.seed,
                  "repeat": args.repeat, "warmup": args.warmup,
                  "fault_address_register": "rbx",
                  "trace_locks": args.trace_locks, "lock_stacks": args.lock_stacks,
                  "trace_mmap_lock": args.trace_mmap_lock}
        rerun = rerun_argv(argv, mech.name, vcpus)
        rec = resultmod.new_record(["run_bench.py", *rerun], config, machine, harness, emulated, reason)
        try:
            for i in range(args.warmup + args.repeat):
                metrics, raw = execute(plan, phases)
                resultmod.add_run(rec, metrics, warmup=i < args.warmup, raw=raw)
            resultmod.finalize(rec)
            if args.trace_locks:
                trace_runs(plan, rec, args.trace_runs, trace_buffer_mb(args, plan), phases)
        except RunError as exc:
            sweep.end(mech.name, vcpus, "failed", _sweep_accounts(phases), str(exc))
            print(f"run_bench.py: error: {mech.name} at {vcpus} vCPUs: {exc}", file=sys.stderr)
            return 1
        t0 = time.monotonic()
        rec["warnings"] += [w for w in run_warnings(rec) if w not in rec["warnings"]]
        problems = resultmod.validate(rec)
        if problems:
            sweep.end(mech.name, vcpus, "failed", _sweep_accounts(phases), problems[0])
            print(f"run_bench.py: error: invalid result: {problems[0]}", file=sys.stderr)
            return 1
        path = (sweep.record_path(mech.name, vcpus) if sweep.directory
                else args.out or resultmod.default_path(args.results_dir, config))
        try:
            resultmod.write_atomic(rec, path)
        except (OSError, ValueError) as exc:
            sweep.end(mech.name, vcpus, "failed", _sweep_accounts(phases), str(exc))
            print(f"run_bench.py: error: writing {path}: {exc}", file=sys.stderr)
            return 1
        phases["record"] = time.monotonic() - t0
        sweep.end(mech.name, vcpus, "done", _sweep_accounts(phases))
        done.append(rec)
        if args.quiet:
            print(path)
            if emulated:
                print(f"note: {mech.name} is EMULATED: {reason}", file=sys.stderr)
        else:
            print_point(rec, path)
        if any(r["metrics"]["content_errors"]
               for kind in ("runs", "warmups", "traced_runs") for r in rec.get(kind, [])):
            print(f"run_bench.py: error: {mech.name} at {vcpus} vCPUs: content errors", file=sys.stderr)
            status = 1
    return status


def _sweep_accounts(phases: dict) -> dict:
    """Runner phases (bench.runner.execute) in the sweep index's accounts."""
    out = {k: phases.get(k, 0.0) for k in ("guest", "setup", "vcpu_start_stop", "collect",
                                           "teardown", "record")}
    out["guest_traced"] = phases.get("traced.guest", 0.0)
    out["tracing"] = sum(v for k, v in phases.items() if k.startswith("traced.")
                         and k != "traced.guest") + phases.get("trace", 0.0)
    return out
