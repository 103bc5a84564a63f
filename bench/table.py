"""One tidy table from any number of result records.

    run_bench.py table RECORDS... --csv F | --parquet F [--units]

A row per cell and repetition (measured runs, warm-ups and traced runs, told
apart by `kind`), the cell's parameters and the machine's identity as columns,
and every numeric metric of the run under its record path
(`fault_latency_ns.p99`), its unit from the record's own naming rules
(`bench.result.metric_unit`). Lock contention by kernel call site becomes
`lock_site.<call site>.{count,wait_ns}` columns on every row that carries lock
data (traced rows; measured rows of records made with --trace-every-run), with
`lock_tracer` naming the tracer ("tracefs" or "bpf"), `touch_share` on traced rows
(the share of each vCPU's touches the traced run walked), and `split_tracer`
likewise where a row carries
the scheduler split (fault_breakdown_ns.sched_split); the latency
histogram stays whole as JSON text (`fault_latency_hist`), so every figure of
a report can be drawn from this table alone.

Records are read by the one loader of files and directories
(bench.nightly.cells.load_records): older schema versions are migrated
(bench.result.MIGRATIONS), every record is checked against bench/schema.py, and
a newer or malformed one is refused with a one-line reason.
"""
from __future__ import annotations

import json
import math
import sys

from . import metrics
from .cmdline import OneLineParser
from . import result as resultmod
from . import schema
from .nightly import cells
# bench/sweep.py takes the sweep index's marker from here
from .nightly.cells import INDEX_KIND  # noqa: F401

MACHINE_COLUMNS = ("hostname", "machine_id", "boot_id", "kernel_release", "cpu_model", "online_cpus",
                   "arch", "mem_total_bytes", "kvm_module", "virtualization", "kvm_mmu",
                   "sched_tick_hz")
# config keys that describe how the harness measured, not what: kept, but left out of
# the cell's identity (two sweeps differing only in these measure the same cells)
VOLATILE_CONFIG = ("repeat", "warmup", "trace_locks", "lock_stacks", "trace_mmap_lock", "trace_share")
KINDS = (("runs", "run"), ("warmups", "warmup"), ("traced_runs", "traced"))

# The headline metrics, in the order reports and `--units` list them; what each
# means comes from the metrics table (bench/metrics.py)
HEADLINE = [(path, metrics.lookup(path).label) for path in (
    "pages_per_s", "pages_per_s_per_vcpu", "guest_seconds", "faults",
    "fault_latency_ns.p50", "fault_latency_ns.p99", "fault_latency_ns.p99_9",
    "first_touch_latency_ns.p50", "blocktime_ns.all_vcpus", "blocktime_ns.per_vcpu_mean",
    "fault_breakdown_ns.mean_fault_latency", "sched.vcpu.on_cpu_ns_per_fault",
    "sched.vcpu.run_queue_wait_ns_per_fault", "kernel_locks.contentions",
    "kernel_locks.wait_ns_total")]


class TableError(Exception):
    """A record that cannot join the table: printed as one line, exit 2."""


def load_records(paths: list[str]) -> list[tuple[str, dict]]:
    """(path, record) for every record in the files and directories named; a
    one-line TableError otherwise (bench.nightly.cells.load_records says what is
    skipped and what is refused)."""
    try:
        return cells.load_records(paths)
    except cells.BadInput as exc:
        raise TableError(str(exc)) from None


def mech_label(rec: dict) -> str:
    """The series name of a record: mechanism plus the options that change it. A
    record imported from the kernel selftest's output is named "demand_paging_test"
    first, then its mechanism, then its --label, so no legend or table mistakes it
    for the harness's own."""
    c = rec["config"]
    if schema.is_imported(rec):
        name = f"{schema.SELFTEST_KIND} {c.get('mechanism', '?')}"
        if c.get("resolve") == "continue":
            name += "/continue"
        if (c.get("readers_per_uffd") or 1) > 1:
            name += f"/r{c['readers_per_uffd']}"
        label = rec["source"].get("label")
        return f"{name} {label}" if label else name
    name = c["mech"]
    if c.get("resolve") == "continue" and name not in ("none", "prefault"):
        name += "/continue"
    per = c.get("readers_per_uffd", c.get("resolvers", 1)) or 1
    if per > 1:
        name += f"/r{per}"
    if c.get("fetch") == "worker":
        name += "/worker"
    return name


def _scalar(value) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _config_columns(config: dict) -> dict:
    cols = {}
    for key, value in config.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                if _scalar(v):
                    cols[f"{key}.{sub}"] = v
                else:
                    cols[f"{key}.{sub}"] = json.dumps(v, sort_keys=True)
        elif _scalar(value):
            cols[key] = value
        else:
            cols[key] = json.dumps(value, sort_keys=True)
    return cols


def _numeric_leaves(metrics: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in metrics.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_numeric_leaves(value, path + "."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value):
            out[path] = value
    return out


def _lock_site_columns(kernel_locks: dict) -> dict:
    """Contention per kernel call site (top locks of a run that carries lock data)."""
    cols = {}
    for lock in kernel_locks.get("top_locks") or []:
        site = lock.get("call_site") or f"lock {lock.get('lock')}"
        cols[f"lock_site.{site}.count"] = cols.get(f"lock_site.{site}.count", 0) + lock["count"]
        cols[f"lock_site.{site}.wait_ns"] = (cols.get(f"lock_site.{site}.wait_ns", 0)
                                            + lock["wait_ns_total"])
    return cols


def cell_key(rec: dict, host: str | None = None) -> str:
    """Identity of a cell: the host (its label among the records read together:
    bench.nightly.cells.host_labels), its boot, and the configuration, volatile keys
    left out. Cells of two hosts are never one cell."""
    m = rec["machine"]
    cfg = {k: v for k, v in rec["config"].items() if k not in VOLATILE_CONFIG}
    return json.dumps({"host": host or m.get("hostname"), "boot": m.get("boot_id"), "config": cfg},
                      sort_keys=True)


def _fingerprint_columns(machine: dict) -> dict:
    """The host fingerprint's medians, one column per component: how fast each host's
    own loops ran, beside its identity."""
    fp = machine.get("fingerprint") or {}
    return {f"fingerprint.{name}": c.get("median")
            for name, c in sorted((fp.get("components") or {}).items())}


def rows_of(path: str, rec: dict, metric_columns: set | None = None,
            host: str | None = None) -> list[dict]:
    host = host or cells.host_labels([rec["machine"]])[0]
    base = {"source": path, "created": rec["created"], "cell": cell_key(rec, host), "host": host,
            "label": mech_label(rec),
            # who measured it: the harness, or demand_paging_test (imported, machine as stated)
            "origin": schema.SELFTEST_KIND if schema.is_imported(rec) else "faultbench",
            "emulated": rec["emulated"],
            "emulation_reason": rec["emulation_reason"] or "",
            "warnings": json.dumps(rec["warnings"]),
            "harness_version": rec["harness"].get("version"),
            "git_commit": rec["harness"].get("git_commit"),
            "git_dirty": rec["harness"].get("git_dirty")}
    for key in MACHINE_COLUMNS:
        base[f"machine.{key}"] = rec["machine"].get(key)
    base.update(_fingerprint_columns(rec["machine"]))
    base.update(_config_columns(rec["config"]))
    rows = []
    for field, kind in KINDS:
        for rep, run in enumerate(rec.get(field) or []):
            metrics = run.get("metrics") or {}
            raw = run.get("raw") or {}
            row = dict(base, kind=kind, rep=rep)
            if kind == "traced":   # the share of each vCPU's touches a traced run walked
                row["touch_share"] = (rec.get("tracing") or {}).get("touch_share", 1.0)
            leaves = _numeric_leaves(metrics)
            row.update(leaves)
            if metric_columns is not None:
                metric_columns.update(leaves)
            if isinstance(metrics.get("kernel_locks"), dict):
                row.update(_lock_site_columns(metrics["kernel_locks"]))
                # tracefs records name no tracer: their lock data is a traced run's
                row["lock_tracer"] = metrics["kernel_locks"].get("tracer") or "tracefs"
            split = (metrics.get("fault_breakdown_ns") or {}).get("sched_split")
            if isinstance(split, dict):
                row["split_tracer"] = split.get("tracer") or "tracefs"
            hist = raw.get("fault_latency_hist")
            row["fault_latency_hist"] = json.dumps(hist) if hist else None
            rows.append(row)
    return rows


class Units(dict):
    """Column -> unit, read-only once made. pandas deep-copies a frame's attrs into
    every frame derived from it (each selection, each comparison): with a plain dict
    of a few hundred units that copy was a third of a report's time (the committed
    example: 25.6 of 62.6 s under cProfile). Read-only, one copy serves them all."""

    def __deepcopy__(self, memo):
        return self

    def __copy__(self):
        return self

    def __reduce__(self):   # pickled as a plain dict's items, rebuilt read-only
        return (Units, (dict(self),))

    def _read_only(self, *args, **kwargs):
        raise TypeError("a table's units are read-only")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = __ior__ = _read_only


def build(records: list[tuple[str, dict]]):
    """The tidy DataFrame; df.attrs["units"] maps each metric column to its unit."""
    import pandas as pd
    metric_columns: set = set()
    hosts = cells.record_hosts([rec for _path, rec in records])
    rows = [row for (path, rec), host in zip(records, hosts)
            for row in rows_of(path, rec, metric_columns, host)]
    df = pd.DataFrame(rows)
    units = {"vcpus": "count", "mem_per_vcpu_mib": "MiB", "fetch_delay_us": "us"}
    fp_units = {f"fingerprint.{name}": c.get("unit") for _path, rec in records
                for name, c in ((rec["machine"].get("fingerprint") or {}).get("components") or {}).items()}
    units.update({k: v for k, v in fp_units.items() if v})
    for col in df.columns:
        if col.startswith("lock_site."):
            units[col] = "ns" if col.endswith(".wait_ns") else "count"
        elif col in metric_columns:
            unit = resultmod.metric_unit(col)
            if unit:
                units[col] = unit
    df.attrs["units"] = Units({k: v for k, v in units.items() if k in df.columns})
    return df


def load_table(paths: list[str]):
    return build(load_records(paths))


def measured(df):
    """The rows that give headline numbers: measured runs, not warm-ups or traced runs
    (a BPF record's measured runs carry lock data too: they are still measured runs)."""
    return df[df["kind"] == "run"]


def write(df, csv: str | None, parquet: str | None) -> list[str]:
    written = []
    if csv:
        df.to_csv(csv, index=False)
        written.append(csv)
    if parquet:
        import pyarrow as pa
        import pyarrow.parquet as pq
        table = pa.Table.from_pandas(df, preserve_index=False)
        # units travel with the file, as field metadata
        fields = [f.with_metadata({"unit": df.attrs["units"][f.name]})
                  if f.name in df.attrs["units"] else f for f in table.schema]
        table = table.cast(pa.schema(fields, metadata=table.schema.metadata))
        pq.write_table(table, parquet)
        written.append(parquet)
    return written


def units_text(df) -> str:
    units = df.attrs["units"]
    lines = [f"{'column':<44} {'unit':<8} meaning"]
    for path, meaning in HEADLINE:
        if path in df.columns:
            lines.append(f"{path:<44} {units.get(path, '-'):<8} {meaning}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = OneLineParser(prog="run_bench.py table",
                                description="Export result records as one tidy table "
                                            "(a row per cell and repetition).")
    p.add_argument("records", nargs="+", help="result files or directories (searched for *.json)")
    p.add_argument("--csv", help="write the table as CSV")
    p.add_argument("--parquet", help="write the table as Parquet (units as field metadata)")
    p.add_argument("--units", action="store_true", help="print the headline columns and their units")
    a = p.parse_args(argv)
    if not (a.csv or a.parquet or a.units):
        p.error("say where: --csv F and/or --parquet F (or --units)")
    try:
        df = load_table(a.records)
        for path in write(df, a.csv, a.parquet):
            print(f"{path}: {len(df)} rows x {len(df.columns)} columns")
    except TableError as exc:
        print(f"run_bench.py table: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"run_bench.py table: error: writing: {exc}", file=sys.stderr)
        return 2
    if a.units:
        print(units_text(df), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
