"""`run_bench.py run-job PLAN ID [--out-dir DIR]`: run one job of a plan, as a
scheduler's task does (a Slurm array task, a CI matrix job).

PLAN is a file `run_bench.py plan` wrote, in any of its formats (bench/jobs/plan.py).
The job's command runs as its own invocation (bench/invoke.py) into the sweep
directory DIR/ID (bench/sweep.py: records written atomically, an index, and
only the missing cells on a retry), with --no-wait: a task on a host another
benchmark holds gives the host back at once, with its own exit status, instead
of sitting on an allocation.
"""
from __future__ import annotations

import os
import signal
import sys

from bench.cmdline import OneLineParser, UsageError
from bench.hostlock import BUSY_WORDS
from bench.invoke import run_benchmark_teed
from bench.options import REPO_DIR, check_output, parse_point
from bench.sweep import SweepError, cell_file, check_directory, record_complete

from .plan import DEFAULT_OUT_DIR, BadPlan, _deep_check, job_argv, read_plan

EXIT_OK, EXIT_CELL_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_HOST_BUSY = 75   # EX_TEMPFAIL (sysexits.h): try again later, the job itself is fine
EXIT_TEXT = (f"exit status: {EXIT_OK} every cell of the job has its record; {EXIT_CELL_FAILED} a cell "
             f"failed or could not run on this host (the benchmark's own error line says why); "
             f"{EXIT_BAD_INPUT} bad plan, unknown id or unusable --out-dir (nothing run); "
             f"{EXIT_HOST_BUSY} host busy: another faultbench run holds this host (nothing run; "
             f"retry later); {EXIT_INTERRUPTED} interrupted (finished cells keep their records)")


def build_parser() -> OneLineParser:
    p = OneLineParser(prog="run_bench.py run-job", epilog=EXIT_TEXT,
                      description="Run one job of a plan from `run_bench.py plan`, as a scheduler's "
                                  "task does (a Slurm array task, a CI matrix job), into DIR/ID; "
                                  "it never waits for a busy host (exit 75)")
    p.add_argument("plan", help="a plan file from `run_bench.py plan` (jsonl, github-matrix or slurm)")
    p.add_argument("id", help="the job's id in the plan")
    p.add_argument("--out-dir", default=DEFAULT_OUT_DIR, metavar="DIR",
                   help="the job's records go to DIR/ID, a sweep directory (default results/jobs)")
    return p


def _error(text: str, status: int) -> int:
    print(f"run_bench.py run-job: error: {text}", file=sys.stderr)
    return status


def _prepare(a) -> tuple[list[str], list[str], str]:
    """(benchmark argv, record paths, job directory), everything checked before
    anything runs; BadPlan or UsageError (exit 2) otherwise."""
    jobs = {job["id"]: job for job in read_plan(a.plan)}
    if a.id not in jobs:
        known = ", ".join(list(jobs)[:6]) + (", ..." if len(jobs) > 6 else "")
        raise BadPlan(f"{a.plan}: no job {a.id!r} ({len(jobs)} job(s): {known})")
    words = job_argv(jobs[a.id])
    job_dir = os.path.abspath(os.path.join(a.out_dir, a.id))
    # the benchmark runs in the harness's directory (so `-m bench` finds it from
    # anywhere): every path it gets is absolute
    argv = words + ["--out", job_dir, "--quiet", "--no-wait"]
    args = parse_point(argv)
    _deep_check(words)   # a job the mechanisms refuse here is a bad job (2), not a failed cell
    check_output(args)
    check_directory(job_dir, argv)   # another command's sweep there is refused, not mixed
    records = [os.path.join(job_dir, cell_file(m, args.workload, v))
               for m in args.mech for v in args.vcpus]
    return argv, records, job_dir


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    try:
        bench_argv, records, job_dir = _prepare(a)
    except (BadPlan, UsageError, ValueError, SweepError) as exc:
        return _error(str(exc), EXIT_BAD_INPUT)
    status, _printed, errors = run_benchmark_teed(bench_argv, cwd=REPO_DIR)
    if status == EXIT_INTERRUPTED or status in (-signal.SIGINT, -signal.SIGTERM):
        return _error(f"job {a.id} interrupted; finished cells are in {job_dir}", EXIT_INTERRUPTED)
    last = (errors.strip().splitlines() or [""])[-1]
    if status == 2 and last.startswith(f"run_bench.py: error: {BUSY_WORDS}"):
        return _error(f"host busy: job {a.id} not run ({BUSY_WORDS} this host); retry later",
                      EXIT_HOST_BUSY)
    if status != 0:
        return _error(f"job {a.id} failed: the benchmark exited {status} (its error is above); "
                      f"records of finished cells are in {job_dir}", EXIT_CELL_FAILED)
    repeat = parse_point(bench_argv).repeat
    missing = [os.path.basename(p) for p in records if not record_complete(p, repeat)]
    if missing:
        return _error(f"job {a.id}: no complete record for {', '.join(missing)} in {job_dir}",
                      EXIT_CELL_FAILED)
    for path in records:
        print(path)
    return EXIT_OK
