"""`run_bench.py plan SWEEP-FLAGS... [--format jsonl|github-matrix|slurm] [--group-by G]`:
a sweep as jobs for a scheduler that already spreads work over hosts.

A benchmark owns its whole host while it runs (bench/hostlock.py), so a big sweep
spreads over hosts, not threads. Each job is one cell of the sweep (or a group of
cells one host should measure side by side), written as the complete benchmark
command that measures it, with a stable id. `run_bench.py run-job PLAN ID`
(bench/jobs/run_job.py) runs one job of any of the three formats:

  jsonl          one JSON object per line: id, command, cells, records
  github-matrix  {"include": [{"id", "command", "cells"}, ...]} on one line, for
                 `strategy.matrix: ${{ fromJSON(...) }}`
  slurm          a batch script for a job array, one whole node per task, that
                 calls run-job on itself: its #FAULTBENCH-JOB lines are the plan

The sweep flags are the benchmark's own, checked as the benchmark checks them;
where a job writes is run-job's to say, so --out, --results-dir, --resume and
--report are refused here.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import sys

from bench.cmdline import UsageError
from bench.nightly.cells import canonical
from bench.options import REPO_DIR, build_parser, parse_point, rerun_argv, validate_args
from bench.result import write_text_atomic
from bench.sweep import cell_file

FORMATS = ("jsonl", "github-matrix", "slurm")
# --group-by: which cells one job measures together (a product of mechanisms and vCPU counts)
GROUPS = {"cell": "one job per cell (default)",
          "vcpus": "one job per vCPU count, every mechanism measured side by side on one host",
          "mech": "one job per mechanism, every vCPU count",
          "sweep": "the whole sweep as one job"}
JOB_KIND = "faultbench-job"
JOB_VERSION = 1
SLURM_MARK = "#FAULTBENCH-JOB "
GITHUB_MATRIX_MAX = 256          # GitHub refuses a matrix of more jobs
# a job id names a directory under run-job's --out-dir: no path of its own
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]*")
DEFAULT_OUT_DIR = os.path.join(REPO_DIR, "results", "jobs")
OWN_FLAGS = ("--format", "--group-by", "--out-dir", "--plan-out")
ENTRY = ["python3", "run_bench.py"]   # how a job's command starts (run-job also takes python -m bench)


class BadPlan(Exception):
    """A plan file, job or id that cannot be used: one line, exit 2."""


def build_plan_parser() -> argparse.ArgumentParser:
    p = build_parser()
    p.prog = "run_bench.py plan"
    p.description = ("Expand a sweep (the benchmark's own flags) into jobs for a scheduler: one "
                     "complete benchmark command per cell or group of cells, each with a stable "
                     "id; run one with `run_bench.py run-job PLAN ID`.")
    p.epilog = ("Exit status: 0 the plan is on stdout; 2 bad flags (one line on stderr). "
                "--out, --results-dir, --resume and --report are run-job's to decide.")
    # the sweep flags are repeated in every job's command: no abbreviation may stand for one
    p.allow_abbrev = False
    g = p.add_argument_group("plan")
    g.add_argument("--format", choices=FORMATS, default="jsonl",
                   help="jsonl: a job per line; github-matrix: a strategy matrix (one line of "
                        "JSON); slurm: a job-array batch script that calls run-job (default jsonl)")
    g.add_argument("--group-by", choices=list(GROUPS), default="cell",
                   help="; ".join(f"{k}: {v}" for k, v in GROUPS.items()))
    g.add_argument("--out-dir", default=DEFAULT_OUT_DIR, metavar="DIR",
                   help="slurm: where the tasks' run-job writes (one directory per job under it, "
                        "and logs/ID.out, the task's output named by its job id) (default results/jobs)")
    g.add_argument("--plan-out", metavar="FILE",
                   help="write the plan to FILE, whole or not at all, instead of stdout")
    return p


def sweep_words(argv: list[str]) -> list[str]:
    """argv without plan's own flags: the benchmark words every job shares."""
    out, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word in OWN_FLAGS:
            skip = True
        elif not word.startswith(tuple(f"{f}=" for f in OWN_FLAGS)):
            out.append(word)
    return out


def refuse_output_flags(args, where: str | None = None) -> None:
    """A job's records go where run-job puts them: a job's own output flag is refused."""
    given = [flag for flag, value in (("--out", args.out), ("--resume", args.resume),
                                      ("--report", args.report)) if value]
    if args.results_dir != build_parser().get_default("results_dir"):
        given.append("--results-dir")
    if given:
        raise UsageError(f"{where + ': ' if where else ''}{', '.join(given)} cannot be given: run-job decides where a "
                         "job's records go (run-job --out-dir DIR)")


def _deep_check(words: list[str]) -> None:
    """The mechanisms' and workloads' own checks of every cell, as the benchmark
    makes them before it runs; skipped, saying so, where the C core is not built
    (a login node may plan without it: each job checks again where it runs)."""
    try:
        # deferred: bench.point loads the C core, which only these checks need
        from bench.point import prepare
    except ImportError as exc:
        print(f"run_bench.py plan: note: per-mechanism checks left to each job ({exc})",
              file=sys.stderr)
        return
    try:
        prepare(parse_point(words))
    except (UsageError, ValueError) as exc:
        raise UsageError(str(exc)) from None


def _job_id(group: str, mechs: list[str], vcpus: list[int], workload: str) -> str:
    if group == "cell":
        return cell_file(mechs[0], workload, vcpus[0])[:-len(".json")]
    if group == "vcpus":
        return f"{workload}-v{vcpus[0]}"
    if group == "mech":
        return f"{mechs[0]}-{workload}"
    return f"{workload}-sweep"


def expand(args: argparse.Namespace, argv: list[str]) -> list[dict]:
    """The jobs of plan's command line `argv` (parsed: `args`); UsageError on bad input."""
    validate_args(args)
    refuse_output_flags(args)
    words = sweep_words(argv)
    _deep_check(words)
    plan_id = hashlib.sha256(canonical([words, args.group_by]).encode()).hexdigest()[:12]
    # the benchmark's own order: mechanism by mechanism, each at every vCPU count
    cells = [(m, v) for m in args.mech for v in args.vcpus]
    keyed: dict[tuple, list[tuple[str, int]]] = {}
    for m, v in cells:
        key = {"cell": (m, v), "vcpus": (v,), "mech": (m,), "sweep": ()}[args.group_by]
        keyed.setdefault(key, []).append((m, v))
    jobs = []
    for group in keyed.values():
        mechs = list(dict.fromkeys(m for m, _v in group))
        vcpus = list(dict.fromkeys(v for _m, v in group))
        job_argv = rerun_argv(words, ",".join(mechs), ",".join(map(str, vcpus)))
        parse_point(job_argv)   # every job's command stands on its own
        jobs.append({"kind": JOB_KIND, "version": JOB_VERSION, "plan": plan_id,
                     "id": _job_id(args.group_by, mechs, vcpus, args.workload),
                     "command": shlex.join(ENTRY + job_argv),
                     "cells": [f"{m}/{args.workload}/v{v}" for m, v in group],
                     "records": [cell_file(m, args.workload, v) for m, v in group]})
    return jobs


def render(args, jobs: list[dict], argv: list[str]) -> str:
    if args.format == "jsonl":
        return "".join(json.dumps(job, separators=(",", ":")) + "\n" for job in jobs)
    if args.format == "github-matrix":
        if len(jobs) > GITHUB_MATRIX_MAX:
            raise UsageError(f"{len(jobs)} jobs: a GitHub matrix holds at most {GITHUB_MATRIX_MAX}; "
                             "use --group-by vcpus (or mech) for fewer, larger jobs")
        include = [{"id": j["id"], "command": j["command"], "cells": " ".join(j["cells"])}
                   for j in jobs]
        return json.dumps({"include": include}, separators=(",", ":")) + "\n"
    return slurm_script(args, jobs, argv)


def slurm_script(args, jobs: list[dict], argv: list[str]) -> str:
    out_dir = os.path.abspath(args.out_dir)
    q = shlex.quote
    lines = [
        "#!/bin/bash",
        f"# faultbench plan {jobs[0]['plan']}: {len(jobs)} job(s), one per array task, from",
        # JSON-escaped: a newline in a flag must not end this comment line, nor come
        # before the #SBATCH lines (sbatch stops reading them at the first other line)
        f"#   run_bench.py plan {json.dumps(argv)}",
        "# Submit with: sbatch --chdir=DIR THIS-FILE (Slurm's own output goes to DIR).",
        "# Each task runs one job through run_bench.py run-job, which reads the jobs from",
        "# the #FAULTBENCH-JOB lines of this very file; --exclusive gives it the whole node,",
        "# as the host lock demands.",
        "#SBATCH --job-name=faultbench",
        f"#SBATCH --array=0-{len(jobs) - 1}",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks=1",
        "#SBATCH --exclusive",
        "#SBATCH --output=faultbench-%A_%a.out",
        *[SLURM_MARK + json.dumps(job, separators=(",", ":")) for job in jobs],
        "set -eu",
        f"ids=({' '.join(q(j['id']) for j in jobs)})",
        'id=${ids[${SLURM_ARRAY_TASK_ID:?submit this script with sbatch}]}',
        'plan=$(readlink -f "$0")',
        f"out={q(out_dir)}",
        'mkdir -p "$out/logs"',
        'echo "array task $SLURM_ARRAY_TASK_ID: job $id on $(hostname); output in $out/logs/$id.out"',
        "# run-job exits 0 done, 1 a cell failed, 2 bad plan or id, 75 host busy (retry later)",
        # the interpreter that planned (a virtual environment's, on a shared file system)
        f'exec {q(sys.executable)} {q(os.path.join(REPO_DIR, "run_bench.py"))} run-job "$plan" "$id" '
        '--out-dir "$out" >"$out/logs/$id.out" 2>&1',
    ]
    return "\n".join(lines) + "\n"


# -- reading a plan back (run-job) ------------------------------------------------

def read_plan(path: str) -> list[dict]:
    """The jobs of a plan file in any of the three formats; BadPlan (one line) for
    anything else: a file that cannot be read, a job without an id or command, an
    id twice."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadPlan(f"{path}: cannot read the plan: {getattr(exc, 'strerror', None) or exc}") from None
    entries: list[tuple[str, object]] = []
    if text.startswith("#!") or SLURM_MARK in text:
        for n, line in enumerate(text.splitlines(), 1):
            if line.startswith(SLURM_MARK):
                entries.append((f"line {n}", _json(path, f"line {n}", line[len(SLURM_MARK):])))
    else:
        try:
            whole = json.loads(text)
        except (ValueError, RecursionError):
            whole = None
        if isinstance(whole, dict) and "include" in whole:   # a GitHub matrix
            include = whole["include"]
            if not isinstance(include, list):
                raise BadPlan(f"{path}: 'include' is not a list of jobs")
            entries = [(f"include[{i}]", e) for i, e in enumerate(include)]
        else:
            entries = [(f"line {n}", _json(path, f"line {n}", line))
                       for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not entries:
        raise BadPlan(f"{path}: no job in this file (a plan from `run_bench.py plan`)")
    jobs, seen = [], set()
    for where, job in entries:
        if not (isinstance(job, dict) and isinstance(job.get("id"), str) and job["id"]
                and isinstance(job.get("command"), str)):
            raise BadPlan(f"{path}: {where}: not a job (needs an 'id' and a 'command')")
        if not JOB_ID.fullmatch(job["id"]):
            raise BadPlan(f"{path}: {where}: job id {job['id']!r} is not a plain name (letters, digits, "
                          "._+=-)")
        if job["id"] in seen:
            raise BadPlan(f"{path}: {where}: job id {job['id']!r} appears twice")
        seen.add(job["id"])
        jobs.append(job)
    return jobs


def _json(path: str, where: str, text: str):
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BadPlan(f"{path}: {where}: not JSON ({str(exc)[:80]})") from None


def job_argv(job: dict) -> list[str]:
    """The benchmark words of a job's command (`python3 run_bench.py ...` or
    `python3 -m bench ...`), checked as the benchmark checks them; BadPlan otherwise."""
    try:
        words = shlex.split(job["command"])
    except ValueError as exc:
        raise BadPlan(f"job {job['id']}: its command does not parse: {exc}") from None
    start = next((i + 1 for i, w in enumerate(words[:2]) if os.path.basename(w) == "run_bench.py"), None)
    if start is None and words[1:3] == ["-m", "bench"]:
        start = 3
    if start is None:
        raise BadPlan(f"job {job['id']}: its command is not a run_bench.py command")
    argv = words[start:]
    try:
        args = parse_point(argv)
        refuse_output_flags(args, f"job {job['id']}")
    except (UsageError, ValueError) as exc:
        raise BadPlan(f"job {job['id']}: {exc}") from None
    return argv


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_plan_parser().parse_args(argv)
    try:
        jobs = expand(args, argv)
        text = render(args, jobs, argv)
        if args.plan_out:
            write_text_atomic(text, args.plan_out)
    except (UsageError, ValueError) as exc:
        print(f"run_bench.py plan: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"run_bench.py plan: error: --plan-out {args.plan_out}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2
    if not args.plan_out:
        sys.stdout.write(text)
    return 0
