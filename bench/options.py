"""The benchmark's flags: the parser, their ranges and the checks between them.

Shared by the command line (bench/cli.py) and by the tools that check a
benchmark command before running it (ab, nightly, the docs test).
"""
import argparse
import math
import os

from .cmdline import OneLineParser, UsageError, int_list, name_list
from .subcommands import SUBCOMMANDS
from .mechanisms import REGISTRY as MECHANISMS
from .placement import POLICIES as PLACEMENTS
from .validity import MIN_GUEST_MS_WARN
from .workloads import REGISTRY as WORKLOADS

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MAX_VCPUS = 1024

STALL_TIMEOUT_S = 60.0   # a healthy run installs a page every few ms even at 1024 vCPUs here


def _subcommand_help() -> str:
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
    p.add_argument("--vcpus", type=int_list, default=[1],
                   help=f"vCPU count(s), 1..{MAX_VCPUS}, e.g. 1,8,64 (default 1)")
    p.add_argument("--mech", type=name_list(list(MECHANISMS)), default=["uffd"],
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
    # 5: the fewest with which the verdicts (bench/nightly/verdict.py) can decide a cell
    r.add_argument("--repeat", type=int, default=5, help="measured runs per point (default 5)")
    r.add_argument("--order", choices=["interleaved", "blocked"], default="interleaved",
                   help="interleaved: a sweep makes run 1 of every cell, then run 2 of every cell, "
                        "..., so host drift is spread over every cell rather than confounded with "
                        "one mechanism; records are written when the last round ends. blocked: "
                        "every run of a cell, then the next cell, each record written as its cell "
                        "ends (default interleaved)")
    r.add_argument("--warmup", type=int, default=0, help="warm-up runs, recorded but kept out of statistics")
    r.add_argument("--no-latency", action="store_true",
                   help="turn per-fault timing off (the guest executes no rdtsc)")
    r.add_argument("--trace-locks", action=argparse.BooleanOptionalAction, default=True,
                   help="record kernel lock contention (lock:contention_*, mmap_lock:*) and each fault "
                        "segment's split into CPU, run-queue wait and sleep (default on; --tracer says how)")
    r.add_argument("--tracer", choices=("auto", "bpf", "tracefs"), default="auto",
                   help="bpf: the in-kernel tracer (bench/csrc/bpf) aggregates in BPF maps; tracefs: the "
                        "text path; auto: bpf where it can load, else tracefs, and the record says why. "
                        "Either records in --trace-runs extra runs, never the measured ones (default auto)")
    r.add_argument("--lock-stacks", action=argparse.BooleanOptionalAction, default=True,
                   help="name contended locks by kernel call chain (stacktrace trigger; costs about "
                        "3 us per contention, which inflates short spin waits) (default on)")
    r.add_argument("--trace-runs", type=int, default=1,
                   help="extra runs per point made with lock tracing on; the --repeat runs that give "
                        "the headline numbers are never traced (default 1)")
    r.add_argument("--trace-share", type=share_arg, default="auto", metavar="F|auto",
                   help="a traced run walks the first F of each vCPU's touches, 0 < F <= 1; auto: "
                        f"enough for {TRACE_MIN_GUEST_S:g} s of guest time at the measured runs' "
                        f"median rate, at least {TRACE_MIN_SHARE:g} (default auto)")
    r.add_argument("--trace-every-run", action="store_true",
                   help="--tracer bpf: record in every measured run instead, no extra runs (for a "
                        "host where the tracer's cost was shown to be small: docs/tracing.md)")
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
    r.add_argument("--no-fingerprint", action="store_true",
                   help="skip the host fingerprint (1.5-2 s of calibration at start-up, "
                        "bench/nightly/fingerprint.py): the records then carry none, and a nightly "
                        "comparison with them says that a host change cannot be told from a code change")
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

# --trace-share auto: a traced run walks enough of each vCPU's table for this much guest
# time, and at least this share. A judgment, not a measured threshold: short quarter
# walks (0.2 s, 16 vCPUs) looked costlier in 4 pairs, which longer runs did not show
# clearly (docs/tracing.md)
TRACE_MIN_GUEST_S = 1.0
TRACE_MIN_SHARE = 0.25


def share_arg(text: str):
    """--trace-share: "auto" or a number (its range is checked with the others)."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor auto") from None


def trace_share_for(asked, measured_guest_s: float, prefix_ok: bool = True) -> float:
    """The share of each vCPU's touches a traced run walks: `asked`, or for auto enough
    for TRACE_MIN_GUEST_S of guest time at the measured runs' rate (their median guest
    time for the whole walk), at least TRACE_MIN_SHARE, at most all; all of it for a
    workload whose prefix is not the same kind of work (`prefix_ok` False)."""
    if asked != "auto":
        return float(asked)
    if measured_guest_s <= 0 or not prefix_ok:
        return 1.0
    return min(1.0, max(TRACE_MIN_SHARE, TRACE_MIN_GUEST_S / measured_guest_s))


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
    if args.trace_share != "auto" and not 0 < args.trace_share <= 1:
        raise UsageError(f"--trace-share {args.trace_share:g} is out of range (0, 1]")
    if (args.trace_share != "auto" and args.trace_share < 1
            and not WORKLOADS[args.workload].prefix_is_representative):
        raise UsageError(f"--trace-share {args.trace_share:g}: a part of the {args.workload} "
                         "workload's walk is not the workload (its phases); it is traced whole")
    if args.trace_every_run and (not args.trace_locks or args.tracer == "tracefs"):
        raise UsageError("--trace-every-run needs the in-kernel tracer (--tracer bpf or auto, "
                         "with --trace-locks)")
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

def rerun_argv(argv: list[str], mech: str, vcpus: int | str, mem_per_vcpu: int | None = None) -> list[str]:
    """The command that reruns exactly this point of a sweep (with the memory size
    --min-guest-ms chose, if it chose one: the rerun does not size again). `mech`
    and `vcpus` may be comma lists: the command of several cells (run-job's jobs)."""
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


def parse_point(argv: list[str]) -> argparse.Namespace:
    """Parse and validate benchmark words without running anything; UsageError
    (or ValueError from a workload's own check) on bad input."""
    args = build_parser().parse_or_raise(argv)
    validate_args(args)
    return args
