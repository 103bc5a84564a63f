"""`run_bench.py history [--db URL] [--cell CELL ...]`: change points in each cell's nights.

Each cell's series is one value per stored record, oldest first: the median
over the record's runs of each judged metric. Change points come from
E-divisive means (bench/nightly/changepoint.py); a change smaller than the
metric's minimum effect is not reported. Each change is then explained:
  host  - the host fingerprints of the nights before and after differ beyond
          their noise, the CPU model / count changed, or the runs' waiting for
          a CPU moved by over 10 points (load during the runs): not the code;
  code  - same host, and the harness commit or the kernel changed at that night;
  unexplained - neither moved: a change to look at by hand.
"""
from __future__ import annotations

import math
import statistics
import sys
from dataclasses import dataclass


from bench import result as resultmod
from bench.cmdline import OneLineParser

from . import changepoint
from . import fingerprint as fpmod
from .cells import HOST_KEYS, record_hosts
from .ingest import add_db_argument
from .store import Store, StoreError
from .verdict import BUSY_SHARE, METRICS, busy_words, metrics_of, outside_share

FINGERPRINT_WINDOW = 5   # nights each side of a change whose fingerprints are pooled


@dataclass
class Change:
    cell: str
    metric: str
    night: str
    created: str
    index: int
    before: float
    after: float
    ratio: float
    confidence: float
    worse: bool
    cause: str                 # host | code | unexplained
    explanation: str
    commit_before: str | None
    commit_after: str | None
    kernel_before: str | None
    kernel_after: str | None

    def describe(self) -> str:
        unit = resultmod.metric_unit(self.metric) or ""
        return (f"{self.cell} {self.metric}: {self.night} ({self.created}) "
                f"{self.before:.4g} -> {self.after:.4g} {unit} (x{self.ratio:.3f}, "
                f"{'worse' if self.worse else 'better'}), confidence {self.confidence:.3f}; "
                f"{self.cause}: {self.explanation}")


def _explain(rows: list[dict], at: int) -> tuple[str, str]:
    before = rows[max(0, at - FINGERPRINT_WINDOW):at]
    after = rows[at:at + FINGERPRINT_WINDOW]
    host = []
    for key in HOST_KEYS:
        b = {str(r["record"]["machine"].get(key)) for r in before}
        a = {str(r["record"]["machine"].get(key)) for r in after}
        if b != a:
            host.append(f"{key} {', '.join(sorted(b))} -> {', '.join(sorted(a))}")
    bfp = fpmod.pooled_records([r["record"] for r in before])
    nfp = fpmod.pooled_records([r["record"] for r in after])
    moved = fpmod.changes(bfp, nfp)
    short = fpmod.uncompared(bfp, nfp)
    # as in verdict.py: only the hardware parts and outside load blame the host; the
    # kernel-path parts move with a kernel or harness regression and are said beside it
    host += [c.describe() for c in moved or [] if not c.kernel_path]
    kernel = [c.describe() for c in moved or [] if c.kernel_path]
    busy = [r["night"] for r in after[:1] if (outside_share(r["record"]) or 0.0) > BUSY_SHARE]
    if busy:
        host.append(f"the host was busy outside the harness on {busy[0]}: "
                    f"{busy_words(after[0]['record'])}")
    also = (f"; the kernel's own fault path moved too ({'; '.join(kernel)})" if kernel else "")
    if host:
        return "host", "host changed: " + "; ".join(host) + also
    prev, this = rows[at - 1], rows[at]
    code = []
    if prev["harness_commit"] != this["harness_commit"]:
        code.append(f"harness commit {str(prev['harness_commit'])[:12]} -> {str(this['harness_commit'])[:12]}")
    if prev["kernel_release"] != this["kernel_release"]:
        code.append(f"kernel {prev['kernel_release']} -> {this['kernel_release']}")
    if code:
        return "code", "; ".join(code) + (" (no host fingerprint to rule out the host)" if moved is None
                                          else f" (host fingerprint: {', '.join(short)} not compared, too few "
                                          "rounds on an unslowed CPU)" if short
                                          else " (host hardware unchanged)") + also
    return "unexplained", ("same commit and kernel; no host fingerprint recorded" if moved is None else
                           f"same commit and kernel; host fingerprint: {', '.join(short)} not compared, "
                           "too few rounds on an unslowed CPU" if short else
                           "same commit, kernel and host hardware") + also


def analyse(rows: list[dict], *, alpha: float = changepoint.ALPHA,
            permutations: int = changepoint.PERMUTATIONS) -> tuple[list[Change], list[str]]:
    """(changes, notes) over every cell in `rows` (store rows, oldest first). A
    series is one cell on one host (named @host when the rows hold several): two
    hosts' nights in one series would make every switch between them a change."""
    hosts = record_hosts([r["record"] for r in rows])
    cells: dict[tuple, list[dict]] = {}
    for r, host in zip(rows, hosts):
        cells.setdefault((host, r["cell_key"]), []).append(r)
    several = len(set(hosts)) > 1
    changes, notes = [], []
    for (host, _key), crow in cells.items():
        name = crow[0]["cell_name"] + (f" @{host}" if several else "")
        if len(crow) < 2 * changepoint.MIN_SEGMENT:
            notes.append(f"{name}: {len(crow)} nights; change points need at least "
                         f"{2 * changepoint.MIN_SEGMENT}")
            continue
        judged = [m for m in METRICS if all(m in metrics_of(r["record"]) for r in crow)]
        for m in judged:
            series = [statistics.median(resultmod.metric_values(r["record"], m.path)) for r in crow]
            for cp in changepoint.find(series, alpha=alpha, permutations=permutations):
                ratio = cp.ratio
                if not ratio > 0 or abs(math.log(ratio)) < math.log1p(m.min_effect):
                    continue   # real perhaps, but smaller than this metric's minimum effect
                cause, why = _explain(crow, cp.index)
                row, prev = crow[cp.index], crow[cp.index - 1]
                changes.append(Change(
                    name, m.path, row["night"], row["created"], cp.index, cp.before_median,
                    cp.after_median, ratio, 1 - cp.p,
                    ratio > 1 if m.better == "lower" else ratio < 1, cause, why,
                    prev["harness_commit"], row["harness_commit"],
                    prev["kernel_release"], row["kernel_release"]))
    return changes, notes


def render_markdown(changes: list[Change], notes: list[str]) -> str:
    if not changes:
        out = ["No change point in the history."]
    else:
        out = ["| cell | metric | night | before | after | ratio | confidence | cause |",
               "|---|---|---|---|---|---|---|---|"]
        for c in changes:
            out.append(f"| {c.cell} | {c.metric} | {c.night} | {c.before:.4g} | {c.after:.4g} | "
                       f"x{c.ratio:.3f} ({'worse' if c.worse else 'better'}) | {c.confidence:.3f} | "
                       f"{c.cause}: {c.explanation} |")
    return "\n".join(out + [f"- {n}" for n in notes]) + "\n"


def main(argv=None) -> int:
    p = OneLineParser(prog="run_bench.py history", description=__doc__.splitlines()[0])
    add_db_argument(p)
    p.add_argument("--cell", action="append", help="cell name or key (repeatable; default: all)")
    p.add_argument("--host", help="only records from this hostname")
    p.add_argument("--alpha", type=float, default=changepoint.ALPHA,
                   help=f"significance of a change point (default {changepoint.ALPHA})")
    p.add_argument("--permutations", type=int, default=changepoint.PERMUTATIONS,
                   help=f"permutations per significance test (default {changepoint.PERMUTATIONS})")
    p.add_argument("--json", metavar="FILE", help="also write the changes as JSON")
    a = p.parse_args(argv)
    if not 0 < a.alpha < 1 or a.permutations < 19:
        print("run_bench.py history: error: --alpha must be in (0, 1) and --permutations at least 19",
              file=sys.stderr)
        return 2
    try:
        store = Store(a.db, create=False)   # reading: a mistyped path is an error, not a new file
        rows = store.rows(a.cell, a.host)
        store.close()
    except StoreError as exc:
        print(f"run_bench.py history: error: {exc}", file=sys.stderr)
        return 2
    if not rows:
        print("run_bench.py history: error: no stored record matches", file=sys.stderr)
        return 2
    changes, notes = analyse(rows, alpha=a.alpha, permutations=a.permutations)
    for c in changes:
        print(c.describe())
    if not changes:
        print(f"no change point in {len({r['cell_key'] for r in rows})} cell(s), {len(rows)} record(s)")
    for n in notes:
        print(f"note: {n}")
    if a.json:
        resultmod.write_atomic({"changes": [c.__dict__ for c in changes], "notes": notes}, a.json)
    return 0
