"""`python run_bench.py`: parse and check the flags, loop over the cells, print.

Measuring a cell is the point library's (bench/point.py); the flags are
bench/options.py's; this module only decides what runs, in which order, and
what the terminal shows.
"""
import sys
import time

from . import __version__
from . import result as resultmod
from . import sweep as sweepmod
from .cmdline import UsageError
from .console import print_point
from .hostlock import HostLock, LockBusy
from .machine import collect_harness, collect_machine
from .nightly.fingerprint_run import CalibrationError, measure as measure_fingerprint
from .options import REPO_DIR, TRACE_MIN_SHARE, build_parser, check_output, validate_args
from .plan import RunError
from .point import Cell, check_memory, measure, prepare
from .preflight import PreflightError, check_all, choose_tracer
from .probes import DeviceMissing, probe, require_devices
from .report import table


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    host_lock = HostLock(command=["run_bench.py", *argv])
    try:
        return _main(argv, host_lock)
    finally:
        host_lock.release()   # also at exit by the kernel, however the process ends


def _take_host(args, host_lock) -> None:
    """One run at a time per host: wait (or, --no-wait, refuse) while another holds it."""
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


def _checked(argv: list[str], host_lock):
    """Flags, devices, memory and tracefs checked, the host taken: (args, argv,
    probes, workload, points). Raises the one-line errors of bad input."""
    parser = build_parser()
    args = parser.parse_args(argv)
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
    # the sweep's wall time starts here, with the host ours (a wait for the host lock is
    # not this sweep's time): its "startup" account holds what follows before the first
    # cell, the tracer's trial load and the host fingerprint among it
    started = time.monotonic()
    # with the host ours: the memory another run held is free, and a look into
    # tracefs (mounted for the look if need be) cannot disturb another run's tracing
    for v in args.vcpus:
        check_memory(v, args, workload)
    choose_tracer(args)
    return args, argv, probes, workload, points, started


def _main(argv: list[str], host_lock) -> int:
    try:
        args, argv, probes, workload, points, started = _checked(argv, host_lock)
    except (UsageError, ValueError, PreflightError, DeviceMissing, sweepmod.SweepError) as exc:
        print(f"run_bench.py: error: {exc}", file=sys.stderr)
        return 2
    machine = collect_machine({"probes": probes})
    try:   # the host's own costs, so a comparison can tell a slower host from slower code
        if not args.no_fingerprint:
            machine["fingerprint"] = measure_fingerprint()
    except CalibrationError as exc:
        print(f"run_bench.py: error: host calibration: {exc}", file=sys.stderr)
        return 1
    harness = collect_harness(REPO_DIR, __version__)
    done: list[dict] = []
    sweep_dir = args.out if args.out and not args.out.endswith(".json") else None
    # --trace-runs extra runs a cell, each walking --trace-share of the touches (auto: at
    # least a quarter, so the estimate is low for short cells, which walk it all; none
    # with --trace-every-run, which traces the measured runs themselves)
    traced = args.tracer_used is not None and not args.trace_every_run
    share = TRACE_MIN_SHARE if args.trace_share == "auto" else args.trace_share
    runs_per_cell = args.repeat + args.warmup + args.trace_runs * share * traced
    interleaved = args.order == "interleaved" and len(points) > 1
    sweep = sweepmod.Sweep([(m.name, v) for m, v in points], workload.name, args.repeat, sweep_dir,
                           argv, cost={(m.name, v): workload.memory_pages(v, args.mem_per_vcpu * 256)
                                       * runs_per_cell for m, v in points},
                           order="interleaved" if interleaved else "blocked", started=started)
    try:
        run = _run_interleaved if interleaved else _run_cells
        status = run(args, argv, points, workload, machine, harness, sweep, done)
    except KeyboardInterrupt:
        sweep.interrupt()
        where = ((f"; an interleaved sweep writes its records after the last round (any written "
                  f"are in {sweep_dir}): go on with --resume {sweep_dir}, which starts the "
                  "unfinished cells again") if interleaved
                 else f"; finished cells are in {sweep_dir}, go on with --resume {sweep_dir}"
                 ) if sweep_dir else ""
        print(f"run_bench.py: interrupted{where}", file=sys.stderr)
        return 130
    sweep.finish()
    if sweep_dir and not args.quiet:
        print(sweepmod.time_text(sweep.summary()))
    if args.report and status == 0:
        # deferred: the report's stack (pandas, scipy, matplotlib) cost every run a second of start-up
        from .reporting.build import main as report_main
        status = report_main([sweep_dir, "--out", args.report])
    if len(done) > 1 and not args.quiet:
        print("\n" + table(done), end="")
    return status


def _write(args, rec, mech, vcpus, sweep, phases, done) -> int:
    """Write a finished cell's record and print it: 0, or 1 (a write failed or the
    run found content errors)."""
    t0 = time.monotonic()
    path = (sweep.record_path(mech.name, vcpus) if sweep.directory
            else args.out or resultmod.default_path(args.results_dir, rec["config"]))
    try:
        resultmod.write_atomic(rec, path)
    except (OSError, ValueError) as exc:
        sweep.end(mech.name, vcpus, "failed", phases, str(exc))
        print(f"run_bench.py: error: writing {path}: {exc}", file=sys.stderr)
        return 1
    phases["record"] = time.monotonic() - t0
    sweep.end(mech.name, vcpus, "done", phases)
    done.append(rec)
    if args.quiet:
        print(path)
        if rec["emulated"]:
            print(f"note: {mech.name} is EMULATED: {rec['emulation_reason']}", file=sys.stderr)
    else:
        print_point(rec, path)
    if any(r["metrics"]["content_errors"]
           for kind in ("runs", "warmups", "traced_runs") for r in rec.get(kind, [])):
        print(f"run_bench.py: error: {mech.name} at {vcpus} vCPUs: content errors", file=sys.stderr)
        return 1
    return 0


def _failed(exc, mech, vcpus, sweep, phases) -> int:
    for line in getattr(exc, "details", ()):   # the watchdog's state of every thread
        print(line, file=sys.stderr)
    sweep.end(mech.name, vcpus, "failed", phases, str(exc))
    print(f"run_bench.py: error: {mech.name} at {vcpus} vCPUs: {exc}", file=sys.stderr)
    return 2 if isinstance(exc, UsageError) else 1


def _run_interleaved(args, argv, points, workload, machine, harness, sweep, done) -> int:
    """Round-robin over the cells: run 1 of every cell, then run 2 of every cell, ...
    (warm-ups first, as each cell's own first rounds); a cell's traced runs right after
    its own last run, in the last round; records after the last round. A failed run
    stops the sweep; no cell's record is written then (none is complete), and
    --resume starts the unfinished cells again."""
    todo = [(m, v) for m, v in points if not sweep.is_done(m.name, v)]
    cells, phases = {}, {}
    for position, (mech, vcpus) in enumerate(todo):
        phases[(mech.name, vcpus)] = {}
        sweep.begin(mech.name, vcpus, phases[(mech.name, vcpus)])
        try:
            with sweep.timing(mech.name, vcpus):
                cells[(mech.name, vcpus)] = Cell(
                    args, argv, mech, workload, vcpus, machine, harness, phases[(mech.name, vcpus)],
                    sweep={"order": "interleaved", "cells": len(todo), "position": position})
        except (RunError, UsageError) as exc:
            return _failed(exc, mech, vcpus, sweep, phases[(mech.name, vcpus)])
    rounds = max(c.runs_left() for c in cells.values()) if cells else 0
    for r in range(rounds):
        for mech, vcpus in todo:
            cell = cells[(mech.name, vcpus)]
            if not cell.runs_left():
                continue
            sweep.show_round(mech.name, vcpus, r + 1, rounds)
            try:
                with sweep.timing(mech.name, vcpus):
                    cell.run_one()
            except (RunError, UsageError) as exc:
                return _failed(exc, mech, vcpus, sweep, phases[(mech.name, vcpus)])
            sweep.runs_done(mech.name, vcpus, cell.done, cell.total)
    status = 0
    for mech, vcpus in todo:
        key = (mech.name, vcpus)
        try:
            with sweep.timing(*key):
                rec = cells[key].finish()
        except (RunError, UsageError) as exc:
            return _failed(exc, mech, vcpus, sweep, phases[key])
        with sweep.timing(*key):
            status = max(status, _write(args, rec, mech, vcpus, sweep, phases[key], done))
            if status and not sweep.is_done(*key):
                return status
    return status


def _run_cells(args, argv, points, workload, machine, harness, sweep, done) -> int:
    status = 0
    for mech, vcpus in points:
        if sweep.is_done(mech.name, vcpus):
            continue
        phases: dict = {}
        sweep.begin(mech.name, vcpus, phases)
        try:
            rec = measure(args, argv, mech, workload, vcpus, machine, harness, phases)
        except (RunError, UsageError) as exc:
            return _failed(exc, mech, vcpus, sweep, phases)
        written = _write(args, rec, mech, vcpus, sweep, phases, done)
        if written and not sweep.is_done(mech.name, vcpus):
            return written   # the record could not be written
        status = max(status, written)
    return status

