"""`run_bench.py export-pyperf RECORDS... --out FILE | --out-dir DIR`: cells as pyperf JSON.

Each faultbench run becomes one pyperf run holding one value, in seconds (pyperf
compares times): a latency metric as is, the paging rate as its inverse, the
time per page. `python -m pyperf compare_to a.json b.json` then reads two
exported cells; give both the same --name when they are two configurations.
"""
import os
import sys

import pyperf

from bench import result as resultmod
from bench.cmdline import OneLineParser

from .cells import BadInput, cell_key, cell_name, load_records, record_hosts
from .verdict import METRIC_BY_PATH, metrics_of


def to_seconds(path: str, value: float) -> float:
    unit = resultmod.metric_unit(path)
    if unit == "ns":
        return value / 1e9
    if unit == "pages/s":
        if value <= 0:   # a valid record may hold it; pyperf takes only times above 0
            raise ValueError(f"metric {path} is {value}: no time per page to export")
        return 1.0 / value
    raise ValueError(f"metric {path} (unit {unit}) has no time to export")


def export(records: list[dict], metric: str | None, name: str | None) -> pyperf.Benchmark:
    keys = {cell_key(r["config"]) for r in records}
    if len(keys) != 1:
        raise BadInput(f"the records hold {len(keys)} cells; export one cell at a time")
    hosts = sorted(set(record_hosts(records)))
    if len(hosts) > 1:   # one pyperf benchmark pools its runs: never two hosts' unasked
        raise BadInput(f"the records come from {len(hosts)} hosts ({', '.join(hosts)}); "
                       "export one host's at a time")
    if metric is None:   # the latency the cell has: fault p50, or first-touch p50 for a baseline
        latencies = [m.path for m in metrics_of(records[0]) if m.unit == "ns"]
        if not latencies:
            raise BadInput("the records hold no latency metric; choose one with --metric")
        metric = latencies[0]
    if metric not in METRIC_BY_PATH:
        raise BadInput(f"--metric {metric}: choose from {', '.join(METRIC_BY_PATH)}")
    runs = []
    for rec in records:
        values = resultmod.metric_values(rec, metric)
        if not values:
            raise BadInput(f"a record of {cell_name(rec['config'])} has no {metric}")
        meta = {"name": name or cell_name(rec["config"]), "unit": "second", "loops": 1,
                "hostname": str(rec["machine"].get("hostname")),
                "cpu_model_name": str(rec["machine"].get("cpu_model")),
                "description": f"faultbench {metric}"
                               + (" as seconds per page" if metric == "pages_per_s" else "")}
        for v in values:
            runs.append(pyperf.Run([to_seconds(metric, v)], metadata=meta, collect_metadata=False))
    return pyperf.Benchmark(runs)


def main(argv=None) -> int:
    p = OneLineParser(prog="run_bench.py export-pyperf", description=__doc__.splitlines()[0])
    p.add_argument("records", nargs="+",
                   help="result files or directories (a sweep directory as it is)")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", help="pyperf JSON file to write (the records hold one cell)")
    out.add_argument("--out-dir", help="one pyperf JSON file per cell, named after the cell")
    p.add_argument("--metric", help="metric path (default: fault latency p50, or first-touch "
                                    "latency p50 for the baselines)")
    p.add_argument("--name", help="benchmark name (default: the cell's name)")
    a = p.parse_args(argv)
    try:
        records = [r for _p, r in load_records(a.records)]
        hosts = record_hosts(records)
        several = len(set(hosts)) > 1
        cells: dict[tuple, list[dict]] = {}
        for r, host in zip(records, hosts):
            cells.setdefault((host, cell_key(r["config"])), []).append(r)
        if a.out:
            targets = [(a.out, records)]
        else:   # a file per cell and host
            targets = [(os.path.join(a.out_dir, cell_name(recs[0]["config"]).replace("/", "_")
                                     + (f"@{host}" if several else "") + f"-{key}.json"), recs)
                       for (host, key), recs in cells.items()]
        benches = [(path, export(recs, a.metric, a.name)) for path, recs in targets]
    except (BadInput, ValueError) as exc:
        print(f"run_bench.py export-pyperf: error: {exc}", file=sys.stderr)
        return 2
    if a.out_dir:
        os.makedirs(a.out_dir, exist_ok=True)
    for path, bench in benches:   # every cell converted before any file is written
        tmp = path + ".tmp"
        bench.dump(tmp, compact=False, replace=True)
        os.replace(tmp, path)
        print(path)
    return 0
