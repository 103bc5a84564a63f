"""The report's view of the tidy table: series, cells, statistics, captions.

Everything a figure or a table shows comes from here, so every output names
series, colours and emulation the same way.
"""
from __future__ import annotations

import json
import math
import statistics

import pandas as pd

from .. import result as resultmod

# fixed colours: one mechanism looks the same in every figure of every report
MECH_COLORS = {"uffd": "#1f77b4", "uffd-many": "#ff7f0e", "exits": "#2ca02c",
               "async": "#d62728", "none": "#7f7f7f", "prefault": "#111111"}
EXTRA_COLORS = ["#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78"]
MECH_ORDER = ["uffd", "uffd-many", "exits", "async"]
BASELINES = ("none", "prefault")

# breakdown segments in the order a fault passes through them (bench/runner.py names)
SEGMENT_ORDER = ["exit_to_userspace", "fault_to_message_read", "list_lock_and_push", "list_to_pop",
                 "address_lookup", "message_to_resolver", "pop_to_resolver",
                 "wait_bitmap_or_other_fetch", "fetch", "install_ioctl",
                 "bit_clear_to_vcpu_sees_it", "wake_to_vcpu_running", "reentry_to_guest_touch"]
ROLE_ORDER = ["vcpu", "reader", "resolver", "worker"]


def _mech_rank(mech: str) -> tuple:
    if mech in MECH_ORDER:
        return (0, MECH_ORDER.index(mech))
    if mech in BASELINES:
        return (2, BASELINES.index(mech))
    return (1, mech)


# keys that follow from others (memory_pages from vCPUs and memory per vCPU)
DERIVED_CONFIG = {"memory_pages", "vcpus"}


def _distinguishing(df: pd.DataFrame) -> dict:
    """cell -> " key=value,..." for the config keys that tell apart records of one series
    name at one vCPU count; "" where nothing does."""
    cells = df.drop_duplicates("cell")[["series", "vcpus", "cell"]]
    configs = {c: json.loads(c)["config"] for c in cells["cell"]}
    varying: dict[str, set] = {}
    for (series, _v), group in cells.groupby(["series", "vcpus"]):
        cfgs = [configs[c] for c in group["cell"]]
        keys = set().union(*cfgs) - DERIVED_CONFIG
        varying.setdefault(series, set()).update(
            k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in cfgs}) > 1)
    out = {}
    for series, cell in zip(cells["series"], cells["cell"]):
        keys = sorted(varying.get(series, ()))
        out[cell] = (" " + ",".join(f"{k}={_short(configs[cell].get(k))}" for k in keys)) if keys else ""
    return out


def _short(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= 24 else text[:21] + "..."


def lock_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows that carry lock data: traced rows, and the measured rows that carry
    kernel_locks of every cell (bench.table.cell_key) that has no traced row."""
    traced = df["kind"] == "traced"
    if "kernel_locks.contentions" not in df.columns or "cell" not in df.columns:
        return df[traced]
    in_runs = ((df["kind"] == "run") & df["kernel_locks.contentions"].notna()
               & ~df["cell"].isin(set(df.loc[traced, "cell"])))
    return df[traced | in_runs]


def _row_tracers(rows: pd.DataFrame) -> list[str]:
    """Each lock row's tracer, as its kernel_locks names it; a row of a table built
    before `lock_tracer` existed: tracefs for a traced row, bpf for a measured one
    (then the only tracer that put lock data in measured runs)."""
    named = rows["lock_tracer"] if "lock_tracer" in rows.columns else pd.Series(None, index=rows.index)
    return [(t if isinstance(t, str) and t else ("tracefs" if kind == "traced" else "bpf"))
            for kind, t in zip(rows["kind"], named)]


def tracer_phrase(tracer: str) -> str:
    return "the in-kernel (BPF) tracer" if tracer == "bpf" else f"the {tracer} tracer"


def lock_divisor(rows: pd.DataFrame):
    """What a lock row's counts are divided by: its faults, or its pages where no fault
    reached userspace (the baselines), as per_fault_divisor does; NaN where neither."""
    if "faults" not in rows.columns:
        return float("nan")
    div = rows["faults"].where(rows["faults"] > 0)
    if "pages" in rows.columns:
        div = div.fillna(rows["pages"].where(rows["pages"] > 0))
    return div


def walk_phrase(least_share: float) -> str:
    """How much of the guest's walk the traced runs made, where it was not all of it."""
    return (f", walking as little as {least_share * 100:.0f}% of each vCPU's touches"
            if least_share < 1 else "")


class ReportData:
    """Measured rows grouped into series (one line per mechanism variant) and cells
    (series x vCPU count)."""

    def __init__(self, df: pd.DataFrame, records: dict | None = None):
        """`records`: source path -> record, as the table was built from (read
        again from the sources when not given)."""
        self._records = records
        if df.empty:
            raise ValueError("no rows to report")
        df = df.copy()
        if "host" not in df.columns:   # a table built before hosts had labels
            df["host"] = df["machine.hostname"].fillna("unknown-host")
        # Several hosts in one report: every series is one host's, named @host, so
        # no cell, line or ratio ever pools runs of two hosts
        self.hosts = sorted(df["host"].unique())
        host_part = df["host"].map(lambda h: f" @{h}") if len(self.hosts) > 1 else ""
        boot_part = ""
        # a boot tag only where one host has records of several boots (two hosts
        # always differ in boot id: their series are told apart by @host already)
        # (an imported record states no boot: it never counts as another boot)
        own = df[df["origin"] == "faultbench"] if "origin" in df.columns else df
        if "machine.boot_id" in df.columns and (
                own.groupby("host")["machine.boot_id"].nunique(dropna=False) > 1).any():
            boot_part = " " + df["machine.boot_id"].map(
                lambda v: f"boot {v:.8}" if isinstance(v, str) and v else "")
            boot_part = boot_part.where(boot_part != " ", "")
        df["series"] = df["label"] + host_part + boot_part
        # records of one mechanism whose configurations differ at the same vCPU count
        # (another workload, memory size, placement...): the differing keys join the name
        distinguishing = df["cell"].map(_distinguishing(df))
        df["series"] = df["series"] + distinguishing
        # the series' name on its own host: what --relative-to names on every host
        df["base_series"] = df["label"] + boot_part + distinguishing
        self.df = df
        self.runs = df[df["kind"] == "run"]
        # the runs that carry lock data: a cell's traced runs where it has them, else
        # its measured runs that carry kernel_locks (--trace-every-run)
        self.traced = lock_rows(df)
        if "origin" not in df.columns:   # who measured a row: the harness or an imported tool
            df["origin"] = "faultbench"
        df["origin"] = df["origin"].fillna("faultbench")
        first = df.drop_duplicates("series")
        self.origin_of = dict(zip(first["series"], first["origin"]))
        self.mech_of = dict(zip(first["series"], first["mech"]))
        self.host_of = dict(zip(first["series"], first["host"]))
        self.base_of = dict(zip(first["series"], first["base_series"]))
        self.series = sorted(self.mech_of, key=lambda s: (_mech_rank(self.mech_of[s]), s))
        self.emulated = {s: r for s, e, r in zip(first["series"], first["emulated"],
                                                 first["emulation_reason"]) if e}
        self.vcpus = sorted(int(v) for v in df["vcpus"].unique())
        self.colors = {}
        spare = iter(EXTRA_COLORS)
        for s in self.series:
            mech = self.mech_of[s]
            if mech in MECH_COLORS and mech not in self.colors.values() \
                    and MECH_COLORS[mech] not in self.colors.values():
                self.colors[s] = MECH_COLORS[mech]
            else:
                self.colors[s] = next(spare, "#555555")
        self.warnings = self._warnings()

    # -- the host's shape: what decides how the numbers read
    @property
    def view(self) -> "RecordView":
        if not hasattr(self, "_view"):
            self._view = RecordView(self)
        return self._view

    def cpus(self) -> int | None:
        """The fewest online CPUs among the report's hosts (vCPUs past it wait for a CPU)."""
        vals = self.df["machine.online_cpus"].dropna()
        return int(vals.min()) if len(vals) else None

    def oversubscribed(self) -> list[int]:
        """vCPU counts above the CPU count: every vCPU there waits for a CPU."""
        cpus = self.cpus()
        return [v for v in self.vcpus if cpus and v > cpus]

    def tick_hz(self) -> int | None:
        col = "machine.sched_tick_hz"
        vals = self.df[col].dropna().unique() if col in self.df.columns else []
        return int(vals[0]) if len(vals) == 1 else None

    def kvm_text(self) -> str:
        """'PVM (pagetable-based virtualization), shadow MMU' or what is known of it."""
        def one(col):
            vals = sorted({str(v) for v in self.df[col].dropna()}) if col in self.df.columns else []
            return ", ".join(vals) if vals else None
        virt, mmu = one("machine.virtualization"), one("machine.kvm_mmu")
        if virt is None and mmu is None:
            return "KVM kind and MMU not recorded (records older than the harness that names them)"
        what = {"shadow": "shadow MMU (an install takes mmu_lock for write)",
                "tdp": "TDP MMU (installs share mmu_lock for read)",
                "tdp-legacy": "legacy TDP MMU (mmu_lock for write)"}
        return f"{virt or 'KVM'}, {what.get(mmu, mmu or 'MMU unknown')}"

    # -- naming
    def legend(self, series: str) -> str:
        return f"{series} (EMULATED)" if series in self.emulated else series

    def header(self, series: str) -> str:
        """Two-line column header for fixed-width tables."""
        return f"{series}\nEMULATED" if series in self.emulated else series

    def is_baseline(self, series: str) -> bool:
        return self.mech_of[series] in BASELINES

    def mechanisms(self) -> list[str]:
        return [s for s in self.series if not self.is_baseline(s)]

    def multi_host(self) -> bool:
        return len(self.hosts) > 1

    def reference_for(self, reference: str, series: str) -> str | None:
        """The reference series on `series`' own host: `reference` names a series, or
        (with several hosts) a series' name on every host; None where that host has none."""
        base = self.base_of.get(reference, reference)
        # never a ratio across hosts, nor between the harness and an imported tool's
        # numbers (not measured side by side)
        return next((r for r in self.series if self.base_of[r] == base
                     and self.host_of[r] == self.host_of[series]
                     and self.origin_of[r] == self.origin_of[series]), None)

    def knows_reference(self, reference: str) -> bool:
        return reference in self.series or reference in self.base_of.values()

    def hosts_of(self, series: list[str] | None = None) -> list[str]:
        return sorted({self.host_of[s] for s in (self.series if series is None else series)})

    # -- statistics
    def column(self, col: str, rows: pd.DataFrame | None = None) -> pd.DataFrame:
        """median/min/max/mean/cv/n of `col` per (series, vcpus) over repetitions."""
        rows = self.runs if rows is None else rows
        if col not in rows.columns:
            return pd.DataFrame(columns=["median", "min", "max", "mean", "cv", "n"])
        sub = rows[["series", "vcpus", col]].dropna()
        g = sub.groupby(["series", "vcpus"])[col]
        out = pd.DataFrame({"median": g.median(), "min": g.min(), "max": g.max(),
                            "mean": g.mean(), "std": g.std(ddof=1), "n": g.count()})
        out["cv"] = out["std"] / out["mean"]
        return out

    def value(self, col: str, series: str, vcpus: int, stat: str = "median",
              rows: pd.DataFrame | None = None):
        rows = self.runs if rows is None else rows
        if col not in rows.columns:
            return None
        sel = self.cell_column(col, series, vcpus, rows).dropna()
        if sel.empty:
            return None
        return float(getattr(sel, stat)())

    def has(self, col: str, rows: pd.DataFrame | None = None) -> bool:
        rows = self.runs if rows is None else rows
        return col in rows.columns and rows[col].notna().any()

    @staticmethod
    def _cell_mask(rows: pd.DataFrame, series: str, vcpus: int) -> pd.Series:
        return (rows["series"] == series) & (rows["vcpus"] == vcpus)

    def cell_rows(self, series: str, vcpus: int, rows: pd.DataFrame | None = None):
        rows = self.runs if rows is None else rows
        return rows[self._cell_mask(rows, series, vcpus)]

    def cell_column(self, col: str, series: str, vcpus: int, rows: pd.DataFrame | None = None) -> pd.Series:
        """One column of a cell's runs, the column taken first: a mask over the whole
        frame would copy every column."""
        rows = self.runs if rows is None else rows
        return rows[col][self._cell_mask(rows, series, vcpus)]

    def ratio_to(self, reference: str, series: str, vcpus: int, col: str = "pages_per_s"):
        """Rate ratio to the reference at one vCPU count: median, min and max over every
        pair of repetitions (a run of `series` over a run of `reference`)."""
        a = self.cell_column(col, series, vcpus).dropna().tolist()
        b = self.cell_column(col, reference, vcpus).dropna().tolist()
        if not a or not b or min(b) <= 0:
            return None
        if series == reference:
            pairs = [x / y for i, x in enumerate(a) for j, y in enumerate(b) if i != j] or [1.0]
        else:
            pairs = [x / y for x in a for y in b]
        return {"median": statistics.median(pairs), "min": min(pairs), "max": max(pairs),
                "ratio_of_medians": statistics.median(a) / statistics.median(b),
                "n": (len(a), len(b))}

    def merged_hist(self, series: str, vcpus: int) -> dict:
        """The latency histograms of a cell's measured runs, summed."""
        merged: dict[int, int] = {}
        for text in self.cell_column("fault_latency_hist", series, vcpus).dropna() \
                if "fault_latency_hist" in self.runs.columns else []:
            for k, c in json.loads(text).items():
                merged[int(k)] = merged.get(int(k), 0) + int(c)
        return dict(sorted(merged.items()))

    def segments(self) -> list[str]:
        cols = [c[len("fault_breakdown_ns.parts."):] for c in self.runs.columns
                if c.startswith("fault_breakdown_ns.parts.") and self.runs[c].notna().any()]
        return sorted(cols, key=lambda s: (SEGMENT_ORDER.index(s) if s in SEGMENT_ORDER
                                           else len(SEGMENT_ORDER), s))

    def roles(self) -> list[str]:
        found = {c.split(".")[1] for c in self.runs.columns
                 if c.startswith("cpu_by_role.") and c.endswith(".user_ns")}
        return sorted(found, key=lambda r: (ROLE_ORDER.index(r) if r in ROLE_ORDER else 9, r))

    def lock_sources(self, series: list[str] | None = None) -> dict:
        """Where the lock data of `series` (all when None) comes from: {"traced": the
        tracers of cells' extra traced runs, "runs": the tracers of measured runs that
        carry it (--trace-every-run), each sorted; "least_share": the smallest share of
        each vCPU's touches a traced run walked}."""
        rows = self.traced if series is None else self.traced[self.traced["series"].isin(series)]
        kinds = list(rows["kind"])
        named = _row_tracers(rows)
        shares = (rows.loc[rows["kind"] == "traced", "touch_share"].dropna()
                  if "touch_share" in rows.columns else pd.Series(dtype=float))
        return {"traced": sorted({t for k, t in zip(kinds, named) if k == "traced"}),
                "runs": sorted({t for k, t in zip(kinds, named) if k != "traced"}),
                # the smallest share of the touches a traced run walked (1: all of them)
                "least_share": float(shares.min()) if len(shares) else 1.0}

    def split_tracers(self) -> list[str]:
        """The tracers named by measured runs that carry the scheduler split (empty
        when none does: the split, if any, is in traced runs)."""
        if "split_tracer" not in self.runs.columns:
            return []
        return sorted(set(self.runs["split_tracer"].dropna()))

    def lock_sites(self) -> list[str]:
        """Call sites seen in the runs that carry lock data, most wait first (summed
        per fault over the runs: a traced run may walk only part of the touches)."""
        cols = [c for c in self.traced.columns if c.startswith("lock_site.") and c.endswith(".wait_ns")]
        faults = lock_divisor(self.traced)
        totals = {c[len("lock_site."):-len(".wait_ns")]: float((self.traced[c] / faults).fillna(0).sum())
                  for c in cols}
        return [s for s, _ in sorted(totals.items(), key=lambda kv: -kv[1])]

    # -- warnings: each cell's record warnings, numbered for tables and footnotes
    def _warnings(self) -> dict:
        out = {}
        seen = self.df.drop_duplicates(["series", "vcpus", "source"])
        for s, v, text in zip(seen["series"], seen["vcpus"], seen["warnings"]):
            for w in json.loads(text):
                lst = out.setdefault((s, int(v)), [])
                if w not in lst:
                    lst.append(w)
        return out

    def warning_ids(self) -> dict:
        """(series, vcpus) -> "W<n>", in table order."""
        ids = {}
        for s in self.series:
            for v in self.vcpus:
                if (s, v) in self.warnings:
                    ids[(s, v)] = f"W{len(ids) + 1}"
        return ids

    # -- captions
    def hosts_text(self, series: list[str] | None = None) -> str:
        """Which hosts a figure or table mixes; "" for one host."""
        if not self.multi_host():
            return ""
        hosts = self.hosts_of(series)
        if len(hosts) == 1:
            return f"Host: {hosts[0]} only (of {len(self.hosts)} in this report)."
        return (f"Hosts: mixes {len(hosts)} hosts ({', '.join(hosts)}); each series is one host's "
                "(@host), never pooled across hosts.")

    def caption(self, what: str, series: list[str] | None = None, vcpu_axis: bool = True) -> str:
        """A figure's caption (HTML and Markdown, never in the image). The machine
        and the config are in the report's summary box, said once; here only what
        this figure adds. `series`: those the figure draws (it names their hosts)."""
        text = what
        over = self.oversubscribed()
        if over and vcpu_axis:
            text += (f" Shaded: more vCPUs than the host's {self.cpus()} CPUs "
                     f"({', '.join(map(str, over))} vCPUs), where every vCPU also waits for a CPU.")
        if self.multi_host():
            text += " " + self.hosts_text(series)
        if self.emulated:
            text += " Dashed: EMULATED (see the summary)."
        return text


def cpu_count(value) -> str:
    """A record's CPU count as text; an imported record may not state it."""
    try:
        return str(int(value))
    except (TypeError, ValueError):
        return "(not stated)"


def fmt_si(value, digits: int = 3) -> str:
    """27934 -> '27.9k': fixed-width friendly."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.{digits}g}{suffix}"
    return f"{value:.{digits}g}"


def fmt_num(value, decimals: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.{decimals}f}"


# -- what the records hold beyond the tidy table: per-vCPU fairness, self-checks,
# outlier runs, the scheduler tick

# Iglewicz and Hoaglin's modified z-score: a run over 3.5 scaled median absolute
# deviations from its cell's median...
OUTLIER_MADS = 3.5
OUTLIER_MIN_SHIFT = 0.10  # ...and at least 10% from it is marked as a single-run outlier
TICK_TOLERANCE = 0.05     # a tail within 5% of a tick of a whole number of ticks "sits on the tick"
MAX_TICKS = 10            # past 10 ticks a fifth of all values would pass: not a sign
CONCENTRATED_WAIT = 0.5   # a call site with half a (traced or measured) run's lock wait...
CONCENTRATED_COUNT = 0.05  # ...from at most 5% of its contentions: a few long waits


def outlier_runs(values: list[float]) -> list[int]:
    """Indices of runs far from their cell's median: a modified z-score over
    OUTLIER_MADS (Iglewicz and Hoaglin) and OUTLIER_MIN_SHIFT of the median. Needs 4 runs;
    with all but one run equal, any run off by the minimum shift is an outlier."""
    vals = [v for v in values if v == v]
    if len(vals) < 4:
        return []
    med = statistics.median(vals)
    mad = 1.4826 * statistics.median(abs(v - med) for v in vals)
    out = []
    for i, v in enumerate(values):
        if v != v or med == 0:
            continue
        shift = abs(v - med)
        if shift >= OUTLIER_MIN_SHIFT * abs(med) and (mad == 0 or shift > OUTLIER_MADS * mad):
            out.append(i)
    return out


def tick_multiple(ns: float, hz: int | None) -> int | None:
    """k where ns is within TICK_TOLERANCE of k scheduler ticks (k >= 1), else None."""
    if not hz or not ns or ns != ns:
        return None
    tick = 1e9 / hz
    k = round(ns / tick)
    return k if 1 <= k <= MAX_TICKS and abs(ns - k * tick) <= TICK_TOLERANCE * tick else None


def _per_vcpu(run: dict) -> list[dict]:
    """Each vCPU's own rate (pages over its own window) and finish time (from the
    first vCPU's start), from the run's raw per-vCPU counters."""
    vcpus = (run.get("raw") or {}).get("vcpus") or []
    if not vcpus or not all("start_ns" in v and "end_ns" in v for v in vcpus):
        return []
    t0 = min(v["start_ns"] for v in vcpus)
    out = []
    for v in vcpus:
        window = (v["end_ns"] - v["start_ns"]) / 1e9
        if window > 0:
            out.append({"rate": v.get("touches", 0) / window, "finish_s": (v["end_ns"] - t0) / 1e9})
    return out


class RecordView:
    """The records behind a ReportData, read once: what the tidy table leaves out."""

    def __init__(self, d: "ReportData"):
        self.d = d
        self.by_source = {}
        for src in d.df["source"].unique():
            if d._records is not None and src in d._records:
                self.by_source[src] = d._records[src]
                continue
            try:
                self.by_source[src] = resultmod.load(src)
            except (OSError, ValueError):
                continue
        # (series, vcpus) -> the record(s) of that cell
        self.cells: dict = {}
        seen = d.df.drop_duplicates(["series", "vcpus", "source"])
        for s, v, src in zip(seen["series"], seen["vcpus"], seen["source"]):
            if src in self.by_source:
                self.cells.setdefault((s, int(v)), []).append(self.by_source[src])

    def runs(self, s: str, v: int) -> list[dict]:
        return [run for rec in self.cells.get((s, v), []) for run in rec.get("runs") or []]

    def fairness(self, s: str, v: int) -> dict | None:
        """min/median/max over a cell's vCPUs of the per-vCPU rate and finish time,
        each the median over the cell's runs; None without per-vCPU data."""
        per_run = [p for p in (_per_vcpu(run) for run in self.runs(s, v)) if p]
        if not per_run:
            return None
        out = {"runs": len(per_run)}
        for key in ("rate", "finish_s"):
            for stat, fn in (("min", min), ("median", statistics.median), ("max", max)):
                out[f"{key}_{stat}"] = statistics.median(fn(x[key] for x in p) for p in per_run)
        out["rate_spread"] = out["rate_max"] / out["rate_min"] if out["rate_min"] > 0 else None
        return out

    def failed_checks(self, s: str, v: int) -> list[str]:
        """Names of self-checks that failed in any measured run of the cell."""
        names = []
        for run in self.runs(s, v):
            for name, c in ((run.get("metrics") or {}).get("checks") or {}).items():
                if isinstance(c, dict) and c.get("ok") is False and name not in names:
                    names.append(name)
        return names

    def outliers(self, s: str, v: int, col: str) -> list[float]:
        """The values of a cell's single-run outliers of `col` (a tidy-table column)."""
        rows = self.d.cell_rows(s, v)
        if col not in rows.columns:
            return []
        vals = rows[col].tolist()
        return [vals[i] for i in outlier_runs(vals)]

    def concentrated_locks(self, s: str, v: int) -> list[str]:
        """Call sites of a cell's runs that carry lock data (its traced run(s), else
        its measured runs with kernel_locks) where a few contentions make most of the
        wait: one event, not a steady cost, so the report marks it."""
        out = []
        for rec in self.cells.get((s, v), []):
            if rec.get("traced_runs"):
                lock_runs = [("the traced run", run) for run in rec["traced_runs"]]
            else:
                lock_runs = [(f"measured run {i + 1}", run) for i, run in enumerate(rec.get("runs") or [])
                             if isinstance((run.get("metrics") or {}).get("kernel_locks"), dict)]
            for which, run in lock_runs:
                kl = (run.get("metrics") or {}).get("kernel_locks") or {}
                total_wait, total_count = kl.get("wait_ns_total") or 0, kl.get("contentions") or 0
                if not total_wait or not total_count:
                    continue
                for lock in kl.get("top_locks") or []:
                    share = lock.get("wait_ns_total", 0) / total_wait
                    if share >= CONCENTRATED_WAIT and lock.get("count", 0) <= CONCENTRATED_COUNT * total_count:
                        out.append(f"{lock.get('count')} contentions at "
                                   f"{lock.get('call_site') or 'lock ' + str(lock.get('lock'))} make "
                                   f"{share:.0%} of {which}'s lock wait "
                                   f"({lock.get('wait_ns_total', 0) / 1e6:.1f} ms)")
        return out
