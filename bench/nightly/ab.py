"""`run_bench.py ab "CONFIG_A" "CONFIG_B"`: two configurations, interleaved, one verdict.

Each CONFIG is the benchmark's own arguments for one point, quoted (for
example "--mech exits --vcpus 1"). The two run in alternating blocks of
--block repetitions, in the order A B B A A B ..., so a drift of the host
during the comparison falls on both alike; every block is a normal invocation
(with its own host fingerprint and result record).

The looks are fixed before anything runs: after block pair 2, 3, ..., K, where
K is the number of whole block pairs within --max-repeat repetitions a side
(one look after pair 1 when only one pair fits). Each look that has at least
MIN_REPETITIONS a side tests at ALPHA / (number of such looks), the metrics of
a look corrected together by Benjamini-Hochberg at that level (verdict.py; when
no metric changed, it holds the chance of any DIFFERENT in the look to that
level for independent or positively dependent metrics), so over all looks the
chance of a false DIFFERENT is at most ALPHA (the union bound). ab stops at the first look that finds B DIFFERENT and worse, or has no
UNKNOWN verdict that admits a regression (verdict.py: an UNKNOWN whose worse end
is inside the minimum effect does not), on an unchanged host; otherwise at the
last look. Stopping earlier only removes looks, so the bound above holds.
Exit as `compare`: 0 SAME (or no regression plausible), 1 B DIFFERENT and worse,
2 an UNKNOWN that admits a regression at the cap,
host changed, or bad input; 3 a run failed.
"""
from __future__ import annotations

import os
import shlex
import sys
import tempfile
from dataclasses import dataclass
from typing import Callable

from bench.cmdline import OneLineParser, UsageError
from bench.invoke import run_benchmark
from bench.options import parse_point

from .cells import BadInput, load_records
from .verdict import ALPHA, MIN_REPETITIONS, Comparison, compare_records, render_markdown, render_text

FORBIDDEN = ("--out", "--results-dir", "--repeat", "--quiet")
DEFAULT_BLOCK = MIN_REPETITIONS
DEFAULT_MAX_REPEAT = 30


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


def look_alphas(block: int, max_repeat: int, alpha: float = ALPHA) -> dict[int, float]:
    """{block pairs done: level tested at} for every look, fixed before any run.

    The looks' levels sum to alpha, so the chance that any look finds a false
    DIFFERENT is at most alpha whatever the data do between them. A look with
    fewer than MIN_REPETITIONS a side cannot find DIFFERENT (verdict.judge makes
    every metric UNKNOWN), so it is given no share of alpha.
    """
    pairs = max(1, max_repeat // block)        # the last pair that stays within the cap
    # two pairs at least (A B B A) before a verdict, so that a burst of load on
    # one block alone cannot make it; only when one pair is all the cap allows
    # is it looked at alone
    looks = range(min(2, pairs), pairs + 1)
    testing = [k for k in looks if k * block >= MIN_REPETITIONS]
    return {k: (alpha / len(testing) if k in testing else 0.0) for k in looks}


@dataclass
class Look:
    pairs: int              # block pairs done when looked
    repetitions: int        # a side
    alpha: float            # the level this look tested at
    comparison: Comparison

    @property
    def stops(self) -> bool:
        """Whether ab can stop here, before its last look."""
        cmp = self.comparison
        if cmp.host_changes:
            # a burst of load on one side's blocks: more interleaved blocks
            # spread it over both sides
            return False
        # B DIFFERENT and worse: exit 1 whatever more blocks would make of the
        # other metrics; not inconclusive: no metric admits a regression
        return cmp.regression or not cmp.inconclusive


def decide(run_block: Callable[[str, int], dict], block: int = DEFAULT_BLOCK,
           max_repeat: int = DEFAULT_MAX_REPEAT, alpha: float = ALPHA) -> list[Look]:
    """Run block pairs and look as look_alphas says; the looks made, the last one decides.

    run_block(side, pair) runs one block of `block` repetitions of side "a" or
    "b" (pair: 0, 1, ...) and returns its record; it raises to stop everything.
    """
    schedule = look_alphas(block, max_repeat, alpha)
    records = {"a": [], "b": []}
    looks: list[Look] = []
    for pair in range(max(schedule)):
        for side in ("ab" if pair % 2 == 0 else "ba"):   # A B, B A, A B, ...: counterbalanced
            records[side].append(run_block(side, pair))
        done = pair + 1
        if done not in schedule:
            continue
        cmp = compare_records(records["a"], records["b"], pair_single=True, alpha=schedule[done])
        looks.append(Look(done, done * block, schedule[done], cmp))
        if looks[-1].stops:
            break
    return looks


class BlockFailed(Exception):
    def __init__(self, side: str, pair: int, status: int):
        super().__init__(f"block {pair} of CONFIG_{side.upper()} failed (exit {status})")


def main(argv=None) -> int:
    default = look_alphas(DEFAULT_BLOCK, DEFAULT_MAX_REPEAT)
    p = OneLineParser(
        prog="run_bench.py ab", description=__doc__.splitlines()[0],
        epilog=("The looks are fixed in advance: after block pair 2, 3, ... up to the last pair "
                "within --max-repeat (by default at "
                f"{', '.join(str(k * DEFAULT_BLOCK) for k in default)} repetitions a side). Each "
                f"look with at least {MIN_REPETITIONS} a side tests at {ALPHA:g} divided by the "
                f"number of such looks ({max(default.values()):.3g} by default), so the chance of "
                f"a false DIFFERENT over all looks is at most {ALPHA:.0%}. ab stops at the first "
                "look with B DIFFERENT and worse, or with no UNKNOWN that admits a regression of "
                "its minimum effect, on an unchanged host (that early stop is not error-bounded: "
                "the power figures in docs/nightly.md are its measure). Exit 0 SAME or no "
                "regression plausible, 1 B DIFFERENT and worse, 2 an UNKNOWN that admits a "
                "regression at the cap, host changed or busy, or bad input, 3 a run failed."))
    p.add_argument("config_a", help='baseline point, e.g. "--mech exits --vcpus 1"')
    p.add_argument("config_b", help="the point compared with it")
    p.add_argument("--block", type=int, default=DEFAULT_BLOCK,
                   help=f"repetitions per block (default {DEFAULT_BLOCK})")
    p.add_argument("--max-repeat", type=int, default=DEFAULT_MAX_REPEAT,
                   help=f"cap on repetitions a side; it fixes the looks (default {DEFAULT_MAX_REPEAT})")
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
    written: list[str] = []

    def run_block(side: str, pair: int) -> dict:
        path = os.path.join(out_dir, f"{side}-{pair:03d}.json")
        written.append(path)   # before the run: a failed run may leave its file behind
        status, _printed = run_benchmark(sides[side] + ["--repeat", str(a.block), "--quiet", "--out", path])
        if status != 0:
            raise BlockFailed(side, pair, status)
        (_path, record), = load_records([path])
        return record

    try:
        try:
            looks = decide(run_block, a.block, a.max_repeat)
        except (BlockFailed, BadInput) as exc:   # a run failed, or wrote what is not a record
            print(f"run_bench.py ab: error: {exc}", file=sys.stderr)
            return 3
        last = looks[-1]
        sys.stdout.write(render_text(last.comparison))
        print(f"{last.repetitions} repetitions a side in {last.pairs} block pair(s); look "
              f"{len(looks)} of {len(look_alphas(a.block, a.max_repeat))}, tested at alpha "
              f"{last.alpha:.3g}" + (f"; records in {out_dir}" if keep else ""))
        if keep:
            with open(os.path.join(out_dir, "summary.md"), "w") as f:
                f.write(render_markdown(last.comparison, "faultbench A/B"))
        return last.comparison.exit_status()
    finally:
        if not keep:
            for path in written:
                if os.path.exists(path):
                    os.unlink(path)
            os.rmdir(out_dir)
