"""`run_bench.py nightly`: the nightly job's whole contract in one command.

1. run a small configured sweep (every point a normal invocation: records with
   the host fingerprint), 2. ingest it into the history database, 3. compare
   each cell with the last comparable night (the latest earlier record of the
   same cell), 4. look for change points in the history, 5. write a Markdown
   summary (fit for a pull-request comment) and a JSON verdict, and exit:

   0  no regression
   1  confirmed regression: a cell DIFFERENT and worse than the last night, on an
      unchanged host
   2  inconclusive (an UNKNOWN that admits a regression of its minimum effect, or
      no earlier night to compare with), the
      host changed (a hardware part of the fingerprint, beyond its noise) or the
      host was busy outside the harness
   3  harness error (a run failed, bad sweep file, database unusable, a stored
      record the verdict cannot read)

The history's change points are informational: a change point needs
changepoint.MIN_SEGMENT nights on each side, so a step that begins tonight is
confirmed only nights later; tonight's exit comes from tonight against the last
comparable night, which sees the same step at once.
"""
from __future__ import annotations

import datetime
import json
import os
import shlex
import sys

from bench import result as resultmod
from bench.cmdline import OneLineParser, UsageError
from bench.invoke import run_benchmark
from bench.options import parse_point

from . import changepoint
from . import history as historymod
from .cells import BadInput, cell_key, content_hash, load_records, record_hosts
from .ingest import add_db_argument
from .store import Store, StoreError
from .verdict import compare_records, render_markdown

EXIT_OK, EXIT_REGRESSION, EXIT_INCONCLUSIVE, EXIT_HARNESS = 0, 1, 2, 3

# exits and uffd, the two designs the benchmark exists to compare, at 1 vCPU: a
# few seconds a night on 2 CPUs. Packed placement puts uffd's reader on its vCPU's
# CPU (free placement makes uffd at 1 vCPU bimodal: 63 or 92 us a fault by where
# the scheduler puts the reader); 8 MiB makes each run 80-200 ms, above the tool's
# own minimum; 20 repetitions a side leave enough after the runs the CPU-state
# probe leaves out (about a third here, bench/cpustate.py) for the verdict's
# interval to fit the minimum effects.
DEFAULT_SWEEP = {
    "repeat": 20,
    "points": ["--mech exits,uffd --vcpus 1 --mem-per-vcpu 8 --placement packed --no-trace-locks"],
}


class HarnessError(Exception):
    pass


def load_sweep(path: str | None) -> dict:
    if path is None:
        return DEFAULT_SWEEP
    try:
        with open(path) as f:
            sweep = json.load(f)
    except (OSError, ValueError) as exc:
        raise HarnessError(f"sweep file {path}: {exc}") from None
    if (not isinstance(sweep, dict) or not isinstance(sweep.get("points"), list) or not sweep["points"]
            or not all(isinstance(p, str) for p in sweep["points"])
            or not isinstance(sweep.get("repeat", 10), int) or not 1 <= sweep.get("repeat", 10) <= 1000):
        raise HarnessError(f"sweep file {path}: needs {{\"points\": [\"ARGS\", ...], \"repeat\": N}} "
                           "with at least one point and 1 <= repeat <= 1000")
    return sweep


def check_points(sweep: dict) -> None:
    """Refuse a bad point before anything runs (the benchmark's own checks)."""
    for i, point in enumerate(sweep["points"]):
        try:
            parse_point(shlex.split(point))
        except (UsageError, ValueError) as exc:
            raise HarnessError(f"sweep point {i + 1} ({point}): {exc}") from None


def run_sweep(sweep: dict, records_dir: str) -> list[str]:
    check_points(sweep)
    paths = []
    for i, point in enumerate(sweep["points"]):
        argv = shlex.split(point) + ["--repeat", str(sweep.get("repeat", 10)), "--quiet",
                                     "--results-dir", os.path.join(records_dir, f"point{i}")]
        status, printed = run_benchmark(argv)
        if status != 0:
            raise HarnessError(f"sweep point {i + 1} ({point}) exited {status}")
        paths += [line for line in printed.splitlines() if line.endswith(".json")]
    return paths


def previous_night(store_rows: list[dict], tonight: list[dict], ignore: frozenset = frozenset()) -> list[dict]:
    """Per cell of tonight, the latest earlier stored record of that cell (its
    configuration without the `ignore` keys) from the same host: a team's store
    holds many hosts' nights, and a night of another host is no baseline."""
    tonight_hashes = {content_hash(r) for r in tonight}
    first_created = min(r["created"] for r in tonight)
    earlier = [row for row in store_rows
               if row["content_hash"] not in tonight_hashes and row["created"] <= first_created]
    hosts = record_hosts([row["record"] for row in earlier] + tonight)
    candidates = [((host, cell_key(row["record"]["config"], ignore)), row)
                  for row, host in zip(earlier, hosts)]
    out = []
    for key in sorted({(host, cell_key(r["config"], ignore))
                       for r, host in zip(tonight, hosts[len(earlier):])}):
        earlier = [row for k, row in candidates if k == key]
        if earlier:
            out.append(earlier[-1]["record"])   # rows are oldest first
    return out


def main(argv=None) -> int:
    p = OneLineParser(prog="run_bench.py nightly", description=__doc__.splitlines()[0])
    add_db_argument(p)
    p.add_argument("--sweep", help='JSON file {"points": ["--mech exits --vcpus 1", ...], "repeat": 10} '
                                   "(default: exits and uffd at 1 vCPU, 8 MiB, packed, 20 repetitions)")
    p.add_argument("--records", nargs="+", metavar="PATH",
                   help="use these result files or directories as tonight's instead of running the sweep")
    p.add_argument("--ignore-config", default="", metavar="KEY,...",
                   help="config keys left out when finding last night's cell (as compare's): e.g. "
                        "fetch_delay_us,fetch_delay_mode to judge a modelled slowdown against the plain cell")
    p.add_argument("--out-dir", default="nightly-out",
                   help="records, summary.md and verdict.json go here (default nightly-out)")
    a = p.parse_args(argv)
    os.makedirs(a.out_dir, exist_ok=True)
    summary_path = os.path.join(a.out_dir, "summary.md")
    verdict_path = os.path.join(a.out_dir, "verdict.json")
    verdict = {"exit_status": None, "status": None,
               "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    ignore = frozenset(k for k in a.ignore_config.split(",") if k)
    try:
        if a.records:
            paths = a.records
        else:
            paths = run_sweep(load_sweep(a.sweep), os.path.join(a.out_dir, "records"))
        tonight = [r for _p, r in load_records(paths)]
        store = Store(a.db)
        try:
            ingested = store.ingest(tonight)
            # with keys ignored, last night's cell may have another full key: read them all
            rows = store.rows(None if ignore else sorted({cell_key(r["config"]) for r in tonight}))
        finally:
            store.close()
    except (HarnessError, BadInput, StoreError) as exc:
        verdict.update(exit_status=EXIT_HARNESS, status="harness error", error=str(exc))
        resultmod.write_atomic(verdict, verdict_path)
        print(f"run_bench.py nightly: error: {exc}", file=sys.stderr)
        return EXIT_HARNESS

    try:
        return _judge(ignore, rows, tonight, paths, ingested, verdict, summary_path, verdict_path)
    except Exception as exc:   # anything past loading is the harness's fault: never exit 1
        verdict.update(exit_status=EXIT_HARNESS, status="harness error",
                       error=f"{type(exc).__name__}: {exc}")
        resultmod.write_atomic(verdict, verdict_path)
        print(f"run_bench.py nightly: error: harness error while judging: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return EXIT_HARNESS


def _judge(ignore, rows, tonight, paths, ingested, verdict, summary_path, verdict_path) -> int:
    previous = previous_night(rows, tonight, ignore)
    tonight_cells = {cell_key(t["config"]) for t in tonight}
    # tonight's cells on tonight's hosts: another host's change points are not this night's
    labels = record_hosts([r["record"] for r in rows] + tonight)
    tonight_hosts = set(labels[len(rows):])
    changes, notes = historymod.analyse([r for r, host in zip(rows, labels)
                                         if r["cell_key"] in tonight_cells and host in tonight_hosts])
    tonight_hashes = {content_hash(r) for r in tonight}
    tonight_created = {row["created"] for row in rows if row["content_hash"] in tonight_hashes}
    changes_tonight = [c for c in changes if c.created in tonight_created]
    md = [f"## faultbench nightly {verdict['started'][:10]}", ""]
    if previous:
        cmp = compare_records(previous, tonight, ignore)
        status = cmp.exit_status()
        state = cmp.as_dict()["status"]
        md.append(render_markdown(cmp, "Tonight against the last comparable night"))
        verdict["comparison"] = cmp.as_dict()
        if status == 0 and cmp.unmatched:
            # a cell with no earlier night is not known to be fine
            status, state = EXIT_INCONCLUSIVE, "inconclusive"
    else:
        status, state = EXIT_INCONCLUSIVE, "inconclusive"
        md.append("No earlier night of these cells in the history: tonight is stored as the first "
                  "point; no verdict.\n")
    md += ["### History (E-divisive means; informational)", "",
           f"A change point needs {changepoint.MIN_SEGMENT} nights on each side, so a step that "
           "begins tonight shows here only nights later; tonight's exit status comes from the "
           "comparison above.", "", historymod.render_markdown(changes, notes)]
    verdict.update(exit_status=status, status=state,
                   records=[os.path.abspath(p) for p in paths],
                   ingested=len(ingested.added), already_present=len(ingested.present),
                   history_changes=[c.__dict__ for c in changes],
                   history_changes_tonight=[c.__dict__ for c in changes_tonight],
                   history_notes=notes)
    md.insert(1, f"**{state}** (exit {status}); {len(tonight)} record(s), "
                 f"{len(ingested.added)} newly stored\n")
    with open(summary_path + ".tmp", "w") as f:
        f.write("\n".join(md))
    os.replace(summary_path + ".tmp", summary_path)
    resultmod.write_atomic(verdict, verdict_path)
    print(f"nightly: {state} (exit {status}); summary {summary_path}, verdict {verdict_path}")
    return status
