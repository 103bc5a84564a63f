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
from .placement import POLICIES as PLACEMENTS
from .workloads import REGISTRY as WORKLOADS

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_VCPUS = 1024
# a run shorter than this in guest time is dominated by start-up and timer effects
MIN_GUEST_MS_WARN = 200.0
STALL_TIMEOUT_S = 60.0   # a healthy run installs a page every few ms even at 1024 vCPUs here


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
    mech_help = "; ".join(f"{n}: {m.summary}" for n, m in MECHANISMS.items() if not m.hidden)
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
    r.add_argument("--placement", choices=PLACEMENTS, default="free",
                   help="thread placement: free (the scheduler decides), spread (vCPU threads on one half "
                        "of the CPUs, resolver threads on the other), packed (each resolver on its vCPU's "
                        "CPU); every run records the CPUs each thread was seen on and its migrations. "
                        "On 2 CPUs, spread puts every vCPU on one CPU and every resolver on the other "
                        "(default free)")
    r.add_argument("--verify", choices=["header", "full"], default="header",
                   help="content the guest checks on every touch: header (the page's first 16 bytes: its "
                        "address and the seed) or full (every 8-byte word but offset 64, which the guest "
                        "writes: a torn copy shows; the check costs about 1 us of guest time per page, outside "
                        "the timed touch, and filling the 4 KiB pattern counts in the fetch segment) "
                        "(default header)")
    r.add_argument("--min-guest-ms", type=float, default=0.0, metavar="MS",
                   help="size --mem-per-vcpu up (from one sizing run) until a run lasts at least MS of "
                        "guest time; the size used is recorded and in the rerun line (default 0: off; "
                        f"runs under {MIN_GUEST_MS_WARN:g} ms are warned about either way)")
    r.add_argument("--seed", type=int, default=1, help="seed for page content and access order (default 1)")
    r.add_argument("--timeout", type=float, default=300.0, help="seconds before a run is declared hung (default 300)")
    r.add_argument("--stall-timeout", type=float, default=STALL_TIMEOUT_S, metavar="S",
                   help="stop a run when no page was installed and no vCPU moved on for S seconds, "
                        "and say which vCPUs wait on which pages and what every thread was doing "
                        f"(default {STALL_TIMEOUT_S:g})")
    r.add_argument("--no-wait", action="store_true",
                   help="exit (status 2) instead of waiting when another faultbench run holds this "
                        "host (one run at a time per host; FAULTBENCH_LOCK_PATH names the lock file)")
    r.add_argument("--stall-after", type=int, default=0, help=argparse.SUPPRESS)  # tests the watchdog
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
    # test knobs: each proves a check can fail
    o.add_argument("--corrupt-every", type=int, default=0, help=argparse.SUPPRESS)       # content check
    o.add_argument("--corrupt-tail-every", type=int, default=0, help=argparse.SUPPRESS)  # torn copies
    o.add_argument("--misstamp-fetched-ns", type=int, default=0, help=argparse.SUPPRESS)
    o.add_argument("--tsc-khz-error-ppm", type=int, default=0, help=argparse.SUPPRESS)
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
    ("--trace-buffer-mb", 0, 4096), ("--seed", 0, 2**64 - 1), ("--min-guest-ms", 0, 600_000),
    ("--tsc-khz-error-ppm", -500_000, 500_000),
    ("--stall-timeout", 0.5, 86400), ("--stall-after", 0, 2**63 - 1),
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
        if args.corrupt_every or args.corrupt_tail_every:
            raise UsageError("--corrupt-every only applies to --fetch inline")
        if args.verify == "full":
            raise UsageError("--verify full is not built for --fetch worker (the worker's source "
                             "pages carry the header only); use --verify header")
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
    longest, source = longest_modelled_wait_s(args)
    if args.stall_timeout <= longest:
        raise UsageError(f"--stall-timeout {args.stall_timeout:g} s must exceed the longest modelled "
                         f"wait for one page ({longest:g} s from {source})")


def longest_modelled_wait_s(args) -> tuple[float, str]:
    """The longest time one page may legitimately take: the watchdog must wait longer."""
    waits = [(args.fetch_delay_us / 1e6, "--fetch-delay-us"),
             (getattr(args, "bitmap_delay_ms", 0.0) / 1e3 if args.workload == "precopy-stale" else 0.0,
              "--bitmap-delay-ms")]
    if args.fetch == "worker":
        if args.service == "fixed":
            waits.append((args.service_us / 1e6, "--service-us"))
        elif args.service == "uniform":
            waits.append((args.service_max_us / 1e6, "--service-max-us"))
        else:   # lognormal: 6 sigma above the median (the C side clamps at 60 s)
            import math
            waits.append((min(60.0, args.service_median_us * math.exp(6 * args.service_sigma) / 1e6),
                          "--service-median-us and --service-sigma (6 sigma)"))
    return max(waits)


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


def rerun_argv(argv: list[str], mech: str, vcpus: int, mem_per_vcpu: int | None = None) -> list[str]:
    """The command that reruns exactly this point of a sweep (with the memory size
    --min-guest-ms chose, if it chose one: the rerun does not size again)."""
    dropped = ["--vcpus", "--mech", "--out", "--results-dir"]
    if mem_per_vcpu is not None:
        dropped += ["--mem-per-vcpu", "--min-guest-ms"]
    out, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a in dropped:
            skip = True
            continue
        if a.startswith(tuple(f"{d}=" for d in dropped)):
            continue
        out.append(a)
    tail = ["--mem-per-vcpu", str(mem_per_vcpu)] if mem_per_vcpu is not None else []
    return out + tail + ["--vcpus", str(vcpus), "--mech", mech]


def size_memory(args, mech, workload, vcpus: int) -> dict:
    """--min-guest-ms: one sizing run at the asked size; if its guest time falls
    short, grow --mem-per-vcpu in proportion (10% headroom, even MiB)."""
    import math
    from .runner import execute
    metrics, _ = execute(plan_for(args, mech, workload, vcpus))
    ms = metrics["guest_seconds"] * 1000
    asked = args.mem_per_vcpu
    sized = asked
    if ms < args.min_guest_ms:
        sized = min(65536, 2 * math.ceil(asked * args.min_guest_ms / max(ms, 1e-3) * 1.1 / 2))
    return {"asked_mib": asked, "min_guest_ms": args.min_guest_ms,
            "sizing_run_guest_ms": ms, "sized_mib": sized}


def trace_runs(plan, rec: dict, runs: int, buffer_mb: int, phases: dict | None = None) -> None:
    """Extra runs with lock tracing on: lock data, and what tracing costs. The
    measured runs stay untraced, so tracing never touches the headline numbers.
    `phases`: their wall time is added under traced.<phase>."""
    import dataclasses
    import statistics
    from .runner import execute
    traced = dataclasses.replace(plan, trace_locks=True, trace_sched=True,
                                 trace_buffer_kb=buffer_mb * 1024)
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


def _check_warnings(where: str, checks: dict) -> list[str]:
    out = []
    gw = checks.get("guest_window_vs_host_clock")
    if gw and not gw["ok"]:
        out.append(f"{where}: check failed: the guest's clock covers {gw['fill']:.3f} of the host's "
                   f"monotonic window over its touch loop (worst vCPU {gw['max_vcpu_ratio']:.4f}; "
                   f"limits >= {gw['limits']['fill_min']}, <= {gw['limits']['vcpu_ratio_max']}): "
                   "guest timings or the TSC frequency are wrong")
    sm = checks.get("segments_vs_monotonic")
    if sm and sm.get("comparable") and not sm["ok"]:
        bad = [f"{p}: {sm[p]['faults_disagreeing']} of {sm['faults_timed']} faults (mean "
               f"{sm[p]['segment_ns_mean'] / 1000:.1f} us stamped vs {sm[p]['monotonic_ns_mean'] / 1000:.1f} us "
               "monotonic)" for p in ("fetch", "install") if not sm[p]["ok"]]
        out.append(f"{where}: check failed: breakdown segments disagree with an independent clock: "
                   + "; ".join(bad))
    elif sm and not sm.get("comparable"):
        out.append(f"{where}: the segment clock check could not run: {sm['reason']}")
    ct = checks.get("cpu_time_vs_latency")
    if ct and ct.get("applies") and ct["ok"] is False:
        out.append(f"{where}: check failed: the vCPU threads' guest-timed fault latency is "
                   f"{ct['ratio']:.3f} x their on-CPU plus run-queue time (the scheduler's "
                   "accounting): latency cannot exceed the time the threads were awake")
    return out


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
            overlap = m.get("vcpu_windows_overlapping_max")
            if overlap is not None and overlap < vcpus:
                out.append(f"{where}: only {overlap} of {vcpus} vCPUs' start-to-end windows overlapped "
                           f"(starts spread over {m['vcpu_start_spread_s']:.3f} s): not a "
                           f"{vcpus}-vCPU measurement")
            inside = m.get("vcpus_inside_kvm_run_max")
            if inside is not None and inside < vcpus / 2:
                out.append(f"{where}: at most {inside} of {vcpus} vCPUs were inside KVM_RUN at once: "
                           "most were handling faults in userspace or not yet started")
            if m.get("fault_records_dropped"):
                out.append(f"{where}: {m['fault_records_dropped']} fault records did not fit the "
                           "per-vCPU log and are missing from latency and breakdown")
            if m.get("faults_unattributed"):
                out.append(f"{where}: {m['faults_unattributed']} userfaultfd messages came from no "
                           "vCPU thread and are not in the per-vCPU figures")
            pinned = {c for d in ((r.get("raw") or {}).get("placement") or {}).get("by_role", {}).values()
                      for c in d["pinned"]}
            if -2 in pinned:
                out.append(f"{where}: a thread's CPU affinity was refused: it ran unpinned, not as "
                           f"--placement {rec['config'].get('placement')} planned")
            bd = m.get("fault_breakdown_ns") or {}
            if bd.get("faults_total") and bd["faults_used"] < 0.9 * bd["faults_total"]:
                out.append(f"{where}: the cost breakdown covers {bd['faults_used']} of "
                           f"{bd['faults_total']} faults")
            out += _check_warnings(where, m.get("checks") or {})
    runs = [r["metrics"] for r in rec["runs"]]
    ms = sorted(r["guest_seconds"] * 1000 for r in runs)
    if ms and ms[len(ms) // 2] < MIN_GUEST_MS_WARN:
        out.append(f"runs last {ms[len(ms) // 2]:.0f} ms of guest time (median), under "
                   f"{MIN_GUEST_MS_WARN:g} ms: start-up and timer effects weigh in; raise "
                   f"--mem-per-vcpu or use --min-guest-ms {MIN_GUEST_MS_WARN:g}")
    from .placement import bimodal_groups
    rates = [r["pages_per_s"] for r in runs]
    groups = bimodal_groups(rates)
    if groups:
        desc = " vs ".join(
            "runs " + ",".join(str(i + 1) for i in g) + f" at about {sorted(rates[i] for i in g)[len(g) // 2]:,.0f} pages/s"
            for g in groups)
        policy = rec["config"].get("placement", "free")
        why = ("thread placement may decide which; compare --placement packed and spread"
               if policy == "free" else
               f"placement is fixed (--placement {policy}): something else decides, such as other "
               "processes on the host")
        out.append(f"bimodal: the repetitions fall into two groups ({desc}); {why}")
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


def _print_cost_and_wait(rec: dict, med) -> None:
    """Mechanism cost (CPU time per fault) and CPU wait (run-queue time per fault)
    apart, from the scheduler's accounting of every harness thread (schedstat)."""
    s = rec["summary"]
    roles = sorted({k.split(".")[1] for k in s if k.startswith("sched.") and k.endswith(".on_cpu_ns_per_fault")})
    if not roles:
        return
    cost = sum(med(f"sched.{r}.on_cpu_ns_per_fault") or 0 for r in roles)
    wait = {r: med(f"sched.{r}.run_queue_wait_ns_per_fault") or 0 for r in roles}
    by_role = ", ".join(f"{r} {med(f'sched.{r}.on_cpu_ns_per_fault') / 1000:.1f}" for r in roles)
    waits = ", ".join(f"{r} {wait[r] / 1000:.1f}" for r in roles)
    print(f"Mechanism cost per fault (on-CPU time of the harness threads per fault, guest loop "
          f"included; us; thread CPU clock): {cost / 1000:.1f} ({by_role})")
    print(f"CPU wait per fault (runnable, waiting for a CPU, us; schedstat run delay): "
          f"{sum(wait.values()) / 1000:.1f} ({waits})")
    mean = med("fault_latency_ns.mean")
    if mean:
        print(f"   fault latency mean {mean / 1000:.1f} us, p50 {med('fault_latency_ns.p50') / 1000:.1f} us; "
              f"breakdown medians: " + ", ".join(
                  f"{k.rsplit('.', 1)[1]} {med(k) / 1000:.1f}" for k in sorted(s)
                  if k.startswith("fault_breakdown_ns.parts_median.") and med(k)))
    for r in rec.get("traced_runs", [])[:1]:
        split = (r["metrics"].get("fault_breakdown_ns") or {}).get("sched_split")
        if not split:
            continue
        parts = split["parts"]
        total = sum(p["total_ns"] for p in parts.values())
        wait = sum(p["cpu_wait_ns"] for p in parts.values())
        on = sum(p["on_cpu_ns"] for p in parts.values())
        print(f"Traced run, per fault (us): latency {total / 1000:.1f} = on CPU {on / 1000:.1f} + CPU wait "
              f"{wait / 1000:.1f} + asleep/blocked {(total - on - wait) / 1000:.1f}; "
              f"vCPUs on a CPU at once: at most {split['vcpus_on_cpu_at_once_max']}")
        print("   by segment (total/wait): " + ", ".join(
            f"{name} {p['total_ns'] / 1000:.1f}/{p['cpu_wait_ns'] / 1000:.1f}" for name, p in parts.items()
            if p["total_ns"] >= 50))
    pl = rec["runs"][0]["raw"].get("placement") if rec["runs"] else None
    if pl:
        seen = "; ".join(f"{role}: CPUs {','.join(map(str, d['cpus_seen']))}, "
                         f"{d['migrations'] if d['migrations'] is not None else '?'} migrations"
                         for role, d in pl["by_role"].items())
        print(f"Placement {pl['policy']} (run 1): {seen}")


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
    # the selftest's lines, under its names and with its definitions
    print(f"Total guest execution time: {med('guest_seconds'):.6f}s")
    print(f"Per-vcpu demand paging rate: {med('pages_per_s_per_vcpu'):f} pgs/sec/vcpu")
    print(f"Overall demand paging rate: {med('pages_per_s'):f} pgs/sec"
          + (f"  (min {s['pages_per_s']['min']:.0f}, max {s['pages_per_s']['max']:.0f})" if len(runs) > 1 else ""))
    print(f"Per-vCPU rate over each vCPU's own window (harness measure, mean): "
          f"{med('pages_per_s_per_vcpu_own_window'):.0f} pages/s")
    print(f"Pages: {runs[0]['pages']}  faults delivered: {runs[0]['faults']}  "
          f"installed: {runs[0]['pages_installed']}  content errors: {sum(r['content_errors'] for r in runs)} "
          f"(verify {cfg.get('verify', 'header')})  fault records dropped: "
          f"{sum(r.get('fault_records_dropped', 0) for r in runs)}  unattributed: "
          f"{sum(r.get('faults_unattributed', 0) for r in runs)}")
    keys = ["p50", "p90", "p99", "p99_9", "max"]
    if runs[0].get("fault_latency_ns"):
        parts = "  ".join(f"{k.replace('_', '.')} {med('fault_latency_ns.' + k) / 1000:.1f}" for k in keys)
        print(f"Fault latency (us, each fault as its vCPU saw it): {parts}")
    elif runs[0].get("first_touch_latency_ns"):
        parts = "  ".join(f"{k.replace('_', '.')} {med('first_touch_latency_ns.' + k) / 1000:.2f}"
                          for k in keys)
        print(f"First-touch latency (us; no fault reaches userspace here): {parts}")
    _print_cost_and_wait(rec, med)
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
    from .placement import plan_cpus
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
            resolvers = mech.readers_total()
            plan_cpus(args.placement, v, resolvers, [0] * resolvers)   # ValueError if impossible
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from .hostlock import HostLock
    host_lock = HostLock(command=["run_bench.py", *argv])
    try:
        return _main(argv, host_lock)
    finally:
        host_lock.release()   # also at exit by the kernel, however the process ends


def _take_host(args, host_lock) -> None:
    """One run at a time per host: wait (or, --no-wait, refuse) while another holds it."""
    from .hostlock import LockBusy
    try:
        note = host_lock.acquire(wait=not args.no_wait,
                                 on_wait=lambda msg: print(f"run_bench.py: {msg}", file=sys.stderr))
    except LockBusy as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"host lock {host_lock.path}: {exc.strerror}; set FAULTBENCH_LOCK_PATH "
                         "to a writable file") from None
    if note:
        print(f"run_bench.py: note: {note}", file=sys.stderr)


def _main(argv: list[str], host_lock) -> int:
    from .commands import dispatch
    status = dispatch(argv)
    if status is not None:
        return status
    parser = build_parser()
    args = parser.parse_args(argv)
    from .preflight import PreflightError, check_all, check_tracefs
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
        check_all(args, points, probes, precopy=args.workload == "precopy-stale")
        _take_host(args, host_lock)
        # with the host ours: the memory another run held is free, and a look into
        # tracefs (mounted for the look if need be) cannot disturb another run's tracing
        for v in args.vcpus:
            check_memory(v, args, workload)
        check_tracefs(args.trace_locks)
    except (UsageError, ValueError, PreflightError, DeviceMissing) as exc:
        print(f"run_bench.py: error: {exc}", file=sys.stderr)
        return 2
    except sweepmod.SweepError as exc:
        print(f"run_bench.py: error: {exc}", file=sys.stderr)
        return 2

    machine = collect_machine({"probes": probes})
    from .nightly.fingerprint import CalibrationError, measure as measure_fingerprint
    try:   # the host's own costs, so a comparison can tell a slower host from slower code
        machine["fingerprint"] = measure_fingerprint()
    except CalibrationError as exc:
        print(f"run_bench.py: error: host calibration: {exc}", file=sys.stderr)
        return 1
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
    from .hostnoise import NoiseSampler
    from .runner import RunError, execute
    status = 0
    asked_mem = args.mem_per_vcpu
    for mech, vcpus in points:
        if sweep.is_done(mech.name, vcpus):
            continue
        sweep.begin(mech.name, vcpus)
        phases: dict = {}
        sizing = None
        args.mem_per_vcpu = asked_mem
        if args.min_guest_ms:
            try:
                sizing = size_memory(args, mech, workload, vcpus)
                args.mem_per_vcpu = sizing["sized_mib"]
                check_memory(vcpus, args, workload)
            except RunError as exc:
                sweep.end(mech.name, vcpus, "failed", _sweep_accounts(phases), str(exc))
                print(f"run_bench.py: error: {mech.name} at {vcpus} vCPUs: sizing run: {exc}", file=sys.stderr)
                return 1
            except UsageError as exc:
                sweep.end(mech.name, vcpus, "failed", _sweep_accounts(phases), str(exc))
                print(f"run_bench.py: error: --min-guest-ms {args.min_guest_ms:g}: {exc}", file=sys.stderr)
                return 2
        args.memory_pages = workload.memory_pages(vcpus, args.mem_per_vcpu * 256)
        plan = plan_for(args, mech, workload, vcpus)
        vcpu_cpu, resolver_cpu = plan.cpu_map()
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
                  "trace_mmap_lock": args.trace_mmap_lock,
                  "placement": args.placement,
                  "cpu_map": {"vcpus": vcpu_cpu, "resolvers": resolver_cpu,
                              "note": "planned CPU per thread, -1: unpinned"},
                  "verify": args.verify,
                  "min_guest_ms": args.min_guest_ms, "memory_sizing": sizing}
        rerun = rerun_argv(argv, mech.name, vcpus, sizing["sized_mib"] if sizing else None)
        rec = resultmod.new_record(["run_bench.py", *rerun], config, machine, harness, emulated, reason)
        noise = NoiseSampler()
        noise.start()
        try:
            for i in range(args.warmup + args.repeat):
                metrics, raw = execute(plan, phases)
                resultmod.add_run(rec, metrics, warmup=i < args.warmup, raw=raw)
            resultmod.finalize(rec)
            if args.trace_locks:
                trace_runs(plan, rec, args.trace_runs, trace_buffer_mb(args, plan), phases)
        except RunError as exc:
            for line in getattr(exc, "details", ()):   # the watchdog's state of every thread
                print(line, file=sys.stderr)
            sweep.end(mech.name, vcpus, "failed", _sweep_accounts(phases), str(exc))
            print(f"run_bench.py: error: {mech.name} at {vcpus} vCPUs: {exc}", file=sys.stderr)
            return 1
        rec["host_noise"], noisy = noise.stop()
        rec["warnings"] += noisy
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
