"""`run_bench.py compare BASE NEW`: SAME / DIFFERENT / UNKNOWN per cell and metric.

BASE and NEW are result files or directories of them (a sweep directory as it is:
bench.nightly.cells.load_records); several records of one cell on a side pool their
runs. Exit 0: every judged metric SAME, better, or UNKNOWN with no regression of its
minimum effect plausible; 1: a metric DIFFERENT and worse; 2: an UNKNOWN that admits a
regression, the host changed or was busy, records of different hosts (refused unless
--allow-cross-host), or bad input. See bench/nightly/verdict.py for the statistics.
"""
from __future__ import annotations

import argparse
import os
import sys

from bench import result as resultmod
from bench import schema
from bench.cmdline import OneLineParser

from .cells import BadInput, load_records
from .verdict import ALPHA, compare_records, hosts_of_sides, render_markdown, render_text


def build_parser(prog: str = "run_bench.py compare") -> argparse.ArgumentParser:
    p = OneLineParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("base", help="baseline result file or directory")
    p.add_argument("new", help="new result file or directory")
    p.add_argument("--ignore-config", default="", metavar="KEY,...",
                   help="config keys left out of the cell identity (e.g. fetch_delay_us to "
                        "compare a run with a modelled slowdown against its baseline)")
    p.add_argument("--alpha", type=float, default=ALPHA,
                   help=f"false-discovery rate across all cells and metrics (default {ALPHA})")
    p.add_argument("--allow-cross-host", action="store_true",
                   help="compare records of different hosts (refused otherwise, exit 2): each cell "
                        "then pools its records of every host")
    p.add_argument("--markdown", metavar="FILE", help="also write a Markdown summary")
    p.add_argument("--json", metavar="FILE", help="also write the verdicts as JSON")
    return p


def main(argv=None, prog: str = "run_bench.py compare", error_prefix: str | None = None) -> int:
    """error_prefix: how error lines start (bench.report keeps its own)."""
    error_prefix = error_prefix or prog
    a = build_parser(prog).parse_args(argv)
    if not 0 < a.alpha < 1:
        print(f"{error_prefix}: error: --alpha {a.alpha} is not in (0, 1)", file=sys.stderr)
        return 2
    try:
        base = [r for _p, r in load_records([a.base])]
        new = [r for _p, r in load_records([a.new])]
    except BadInput as exc:
        print(f"{error_prefix}: error: {exc}", file=sys.stderr)
        return 2
    imported = [any(schema.is_imported(r) for r in side) for side in (base, new)]
    if any(imported) and not all(schema.is_imported(r) for r in base + new):
        # a selftest import has no host fingerprint and another guest: it compares with
        # imported records of its own cell only, never with the harness's
        which = " and ".join(f"{side} ({path})" for side, path, imp in
                             (("base", a.base, imported[0]), ("new", a.new, imported[1])) if imp)
        print(f"{error_prefix}: error: {which} hold records imported from {schema.SELFTEST_KIND} "
              "output: they compare only with imported records of the same cell, not with the "
              "harness's own (give imported records on both sides)", file=sys.stderr)
        return 2
    ignore = frozenset(k for k in a.ignore_config.split(",") if k)
    bhosts, nhosts = (set(h) for h in hosts_of_sides(base, new))
    if bhosts != nhosts and not a.allow_cross_host:
        # a verdict between two hosts measures the hosts: never drawn unasked
        print(f"{error_prefix}: error: {a.base} and {a.new} come from different hosts (base: "
              f"{', '.join(sorted(bhosts))}; new: {', '.join(sorted(nhosts))}); give records of the "
              "same host(s), or --allow-cross-host to compare them anyway", file=sys.stderr)
        return 2
    cmp = compare_records(base, new, ignore, alpha=a.alpha, cross_host=a.allow_cross_host)
    if not cmp.judgements:
        print(f"{error_prefix}: error: no cell in common between {a.base} and {a.new} "
              f"({'; '.join(cmp.unmatched)})", file=sys.stderr)
        return 2
    sys.stdout.write(render_text(cmp))
    if a.markdown:
        with open(a.markdown + ".tmp", "w") as f:
            f.write(render_markdown(cmp))
        os.replace(a.markdown + ".tmp", a.markdown)
    if a.json:
        resultmod.write_atomic(cmp.as_dict(), a.json)
    status = cmp.exit_status()
    if status == 2:   # every exit 2 says why in one line on stderr, as bad input does
        unknown = sum(j.verdict == "UNKNOWN" and not j.rules_out_regression for j in cmp.judgements)
        why = ("host changed: " + cmp.host_changes[0] if cmp.host_changes else
               cmp.host_busy[0] if cmp.host_busy else
               f"{unknown} of {len(cmp.judgements)} verdicts UNKNOWN and admitting a regression")
        print(f"{error_prefix}: error: no verdict ({why})", file=sys.stderr)
    return status
