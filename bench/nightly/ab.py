"""`run_bench.py ab "CONFIG_A" "CONFIG_B"`: two configurations, interleaved, one verdict.

Each CONFIG is the benchmark's own arguments for one point, quoted (for
example "--mech exits --vcpus 1"). The two run in alternating blocks of
--block repetitions, in the order A B B A A B ... (two pairs at least), so a
drift of the host during the comparison falls on both alike; every block is a normal invocation
(with its own host fingerprint and result record). While the verdict is
UNKNOWN another pair of blocks is run, up to --max-repeat repetitions a side.
Exit as `compare`: 0 SAME, 1 B DIFFERENT and worse, 2 UNKNOWN at the cap,
host changed, or bad input; 3 a run failed.
"""
import os
import shlex
import sys
import tempfile

from bench.cmdline import OneLineParser, UsageError
from bench.commands import run_benchmark
from bench.options import parse_point

from .cells import load_records
from .verdict import MIN_REPETITIONS, compare_records, render_markdown, render_text

FORBIDDEN = ("--out", "--results-dir", "--repeat", "--quiet")


def _point_argv(text: str, what: str) -> list[str]:
    argv = shlex.split(text)
    for word in argv:
        if word.split("=")[0] in FORBIDDEN:
            raise UsageError(f"{what}: {word.split('=')[0]} is set by ab itself")
    # parse here so a bad configuration is refused before anything runs
    try:
        args = parse_point(argv)
    except (UsageError, ValueError) as exc:
        raise UsageError(f"{what}: {exc}") from None
    if len(args.vcpus) * len(args.mech) != 1:
        raise UsageError(f"{what}: one point only (one --mech, one --vcpus)")
    return argv


def _run_block(argv: list[str], repeat: int, out: str) -> int:
    status, _printed = run_benchmark(argv + ["--repeat", str(repeat), "--quiet", "--out", out])
    return status


def main(argv=None) -> int:
    p = OneLineParser(prog="run_bench.py ab", description=__doc__.splitlines()[0])
    p.add_argument("config_a", help='baseline point, e.g. "--mech exits --vcpus 1"')
    p.add_argument("config_b", help="the point compared with it")
    p.add_argument("--block", type=int, default=MIN_REPETITIONS,
                   help=f"repetitions per block (default {MIN_REPETITIONS})")
    p.add_argument("--max-repeat", type=int, default=30,
                   help="cap on repetitions a side while the verdict is UNKNOWN (default 30)")
    p.add_argument("--out-dir", help="keep the records and summary here (default: a temporary directory)")
    a = p.parse_args(argv)
    try:
        if not 1 <= a.block <= a.max_repeat <= 1000:
            raise UsageError("need 1 <= --block <= --max-repeat <= 1000")
        sides = {"a": _point_argv(a.config_a, "CONFIG_A"), "b": _point_argv(a.config_b, "CONFIG_B")}
    except UsageError as exc:
        print(f"run_bench.py ab: error: {exc}", file=sys.stderr)
        return 2
    keep = a.out_dir is not None
    out_dir = a.out_dir or tempfile.mkdtemp(prefix="faultbench-ab-")
    os.makedirs(out_dir, exist_ok=True)
    files = {"a": [], "b": []}
    done = {"a": 0, "b": 0}
    block = 0
    try:
        while True:
            order = "ab" if block % 2 == 0 else "ba"   # A B, B A, A B, ...: counterbalanced
            for side in order:
                path = os.path.join(out_dir, f"{side}-{block:03d}.json")
                status = _run_block(sides[side], a.block, path)
                if status != 0:
                    print(f"run_bench.py ab: error: block {block} of CONFIG_{side.upper()} failed "
                          f"(exit {status})", file=sys.stderr)
                    return 3
                files[side].append(path)
                done[side] += a.block
            block += 1
            base = [r for _p, r in load_records(files["a"])]
            new = [r for _p, r in load_records(files["b"])]
            cmp = compare_records(base, new, pair_single=True)
            # a burst of load on one side's blocks (host changed) is also undecided:
            # more interleaved blocks spread it over both sides
            undecided = any(j.verdict == "UNKNOWN" for j in cmp.judgements) or cmp.host_changes
            # two block pairs at least (A B B A): a burst of load on one block alone
            # cannot make the verdict
            if (block >= 2 and not undecided) or done["a"] + a.block > a.max_repeat:
                break
        sys.stdout.write(render_text(cmp))
        print(f"{done['a']} repetitions a side in {block} block pair(s)"
              + (f"; records in {out_dir}" if keep else ""))
        if keep:
            with open(os.path.join(out_dir, "summary.md"), "w") as f:
                f.write(render_markdown(cmp, "faultbench A/B"))
        return cmp.exit_status()
    finally:
        if not keep:
            for side in files.values():
                for path in side:
                    os.unlink(path)
            os.rmdir(out_dir)
