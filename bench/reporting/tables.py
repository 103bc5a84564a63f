"""The report's tables: one per question, each rendered three ways (fixed-width
text for mail to the kernel lists, Markdown, HTML) from one definition."""
from __future__ import annotations

import html
import textwrap
from dataclasses import dataclass, field

import statistics

from ..nightly import verdict as verdictmod
from .data import ReportData, cpu_count, fmt_num, fmt_si, lock_divisor, tick_multiple, tracer_phrase, walk_phrase

TEXT_WIDTH = 80


@dataclass
class Table:
    title: str                  # the question the table answers
    header: list[str]           # "\n" splits a header over two lines in text
    rows: list[list[str]]
    key_columns: int = 1        # repeated when a wide table is split to fit the width
    notes: list[str] = field(default_factory=list)

    # -- plain text
    def to_text(self, width: int = TEXT_WIDTH) -> str:
        cols = len(self.header)
        cells = [[str(c) for c in row] for row in self.rows]
        heads = [h.split("\n") for h in self.header]
        widths = []
        for i in range(cols):
            w = max([len(x) for x in heads[i]] + [len(r[i]) for r in cells])
            widths.append(min(w, width - 2))
        blocks, keys = [], list(range(self.key_columns))
        key_w = sum(widths[i] + 2 for i in keys)
        current, used = [], key_w
        for i in range(self.key_columns, cols):
            if current and used + widths[i] + 2 > width:
                blocks.append(current)
                current, used = [], key_w
            current.append(i)
            used += widths[i] + 2
        blocks.append(current)
        out = [self.title, "=" * min(width, len(self.title))]
        for b, block in enumerate(blocks):
            idx = keys + block
            head_lines = max(len(heads[i]) for i in idx)
            for line in range(head_lines):
                parts = []
                for i in idx:
                    pad = head_lines - len(heads[i])   # bottom-align two-line headers
                    text = heads[i][line - pad] if line >= pad else ""
                    parts.append(text.ljust(widths[i]) if i < self.key_columns
                                 else text.rjust(widths[i]))
                out.append("  ".join(parts).rstrip())
            out.append("  ".join("-" * widths[i] for i in idx))
            for row in cells:
                parts = [(row[i][:widths[i]].ljust(widths[i]) if i < self.key_columns
                          else row[i][:widths[i]].rjust(widths[i])) for i in idx]
                out.append("  ".join(parts).rstrip())
            if b < len(blocks) - 1:
                out.append("")
        for note in self.notes:
            out += textwrap.wrap(note, width, subsequent_indent="  ")
        return "\n".join(out) + "\n"

    # -- Markdown
    def to_markdown(self) -> str:
        def esc(s):
            return str(s).replace("|", "\\|").replace("\n", " ")
        out = [f"### {self.title}", "",
               "| " + " | ".join(esc(h) for h in self.header) + " |",
               "|" + "|".join("---" if i < self.key_columns else "---:"
                              for i in range(len(self.header))) + "|"]
        out += ["| " + " | ".join(esc(c) for c in row) + " |" for row in self.rows]
        if self.notes:
            out.append("")
            out += [f"- {esc(n)}" for n in self.notes]
        return "\n".join(out) + "\n"

    # -- HTML
    def to_html(self) -> str:
        e = html.escape
        # a wide table scrolls in its own box: the page never gets wider than the window
        out = [f"<h3>{e(self.title)}</h3>", "<div class=\"wide\"><table>", "<thead><tr>"]
        out += [f"<th>{e(h).replace(chr(10), '<br>')}</th>" for h in self.header]
        out.append("</tr></thead><tbody>")
        for row in self.rows:
            tds = [f"<td class=\"{'key' if i < self.key_columns else 'num'}\">{e(str(c))}</td>"
                   for i, c in enumerate(row)]
            out.append("<tr>" + "".join(tds) + "</tr>")
        out.append("</tbody></table></div>")
        if self.notes:
            out.append("<ul class=\"notes\">" + "".join(f"<li>{e(n)}</li>" for n in self.notes)
                       + "</ul>")
        return "\n".join(out) + "\n"


def _emulation_notes(d: ReportData, series: list[str]) -> list[str]:
    # the EMULATED explanation is in the summary box, once; every table names the
    # series "... (EMULATED)"
    return []


def _flags(d: ReportData, ids: dict, s: str, v: int, col: str | None = None) -> str:
    """A cell's marks, apart from its numbers: Wn (its warnings), X (a failed
    self-check), O (a single-run outlier in `col`)."""
    marks = [ids[(s, v)]] if (s, v) in ids else []
    if d.view.failed_checks(s, v):
        marks.append("X")
    if col and d.view.outliers(s, v, col):
        marks.append("O")
    return " ".join(marks)


FLAG_NOTE = ("flags: Wn the cell's warnings (listed at the end), X a self-check failed in a run, "
             "O a single-run outlier (a modified z-score over 3.5, and 10% from the cell's median)")


def rate_table(d: ReportData, ids: dict) -> Table:
    st = d.column("pages_per_s")
    rows = []
    for s in d.series:
        for v in d.vcpus:
            if (s, v) not in st.index:
                continue
            r = st.loc[(s, v)]
            cv = f"{r['cv'] * 100:.0f}" if r["n"] > 1 and r["cv"] == r["cv"] else "-"
            rows.append([d.legend(s), str(v), fmt_si(r["median"]), fmt_si(r["min"]),
                         fmt_si(r["max"]), cv, str(int(r["n"])), _flags(d, ids, s, v, "pages_per_s")])
    few = [n for n in st["n"].tolist() if n < MIN_RUNS]
    return Table("How fast does each mechanism page memory in? Paging rate, pages/s",
                 ["mechanism", "vCPUs", "median", "min", "max", "cv %", "runs", "flags"], rows,
                 key_columns=2,
                 notes=["over the cell's measured runs; cv: stdev/mean", FLAG_NOTE]
                 + ([f"{len(few)} cells have fewer than {MIN_RUNS} runs: too few for a verdict"]
                    if few else []))


MIN_RUNS = 5   # verdict.MIN_REPETITIONS: below it no verdict is given


def ratio_of_medians_interval(base: list[float], new: list[float], seed: int = 0,
                              resamples: int = 2000) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of median(new) / median(base), each side
    resampled on its own (the runs of two cells are independent)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    b, n = np.asarray(base, dtype=float), np.asarray(new, dtype=float)
    mb = np.median(b[rng.integers(0, b.size, (resamples, b.size))], axis=1)
    mn = np.median(n[rng.integers(0, n.size, (resamples, n.size))], axis=1)
    lo, hi = np.percentile(mn / mb, [2.5, 97.5])
    return float(lo), float(hi)


def who_wins(d: ReportData, reference: str) -> list[dict]:
    """Per series and vCPU count against the reference on the same host: the ratio
    of medians with its bootstrap 95% interval, and the nightly's verdict (Mann-
    Whitney, Benjamini-Hochberg over every ratio here, Hodges-Lehmann interval
    against the paging rate's minimum effect: bench/nightly/verdict.py)."""
    metric = verdictmod.METRIC_BY_PATH["pages_per_s"]
    out, judgements = [], []
    for s in d.series:
        ref = d.reference_for(reference, s)
        if not ref or ref == s:
            continue
        for v in d.vcpus:
            a = d.cell_column("pages_per_s", s, v).dropna().tolist()
            b = d.cell_column("pages_per_s", ref, v).dropna().tolist()
            if not a or not b or min(b) <= 0:
                continue
            j = verdictmod.Judgement(cell=f"{s} at {v}", metric=metric, base=b, new=a)
            judgements.append(j)
            out.append({"series": s, "reference": ref, "vcpus": v, "judgement": j,
                        "ratio": statistics.median(a) / statistics.median(b),
                        "interval": ratio_of_medians_interval(b, a) if len(a) > 1 and len(b) > 1
                        else None})
    verdictmod.judge(judgements)
    return out


def verdict_words(j) -> str:
    if j.verdict == "DIFFERENT":
        return "faster" if not j.worse else "slower"
    if j.verdict == "SAME":
        return "same (within 10%)" if abs(j.metric.min_effect - 0.10) < 1e-9 else "same"
    if j.repetitions_needed == MIN_RUNS and min(len(j.base), len(j.new)) < MIN_RUNS:
        return "too few runs"
    return "not significant"


def who_wins_table(d: ReportData, reference: str, ids: dict) -> Table:
    rows = []
    for w in who_wins(d, reference):
        lo_hi = f"{w['interval'][0]:.2f}-{w['interval'][1]:.2f}" if w["interval"] else "-"
        j = w["judgement"]
        rows.append([d.legend(w["series"]), str(w["vcpus"]), f"{w['ratio']:.2f}", lo_hi,
                     j.verdict, verdict_words(j)])
    eff = verdictmod.METRIC_BY_PATH["pages_per_s"].min_effect
    where = " on the same host" if d.multi_host() else ""
    return Table(f"Who wins? Paging rate relative to {reference}" + (" on each host" if where else ""),
                 ["mechanism", "vCPUs", "ratio", "95% interval", "verdict", "reading"], rows,
                 key_columns=2,
                 notes=[f"ratio: median pages/s of the mechanism over the median of {reference} at "
                        f"the same vCPU count{where}; interval: percentile bootstrap of that ratio "
                        "(each side resampled); above 1: faster",
                        "verdict: the nightly's (bench/nightly/verdict.py): Mann-Whitney U, "
                        "Benjamini-Hochberg over every ratio of this table, Hodges-Lehmann ratio "
                        f"and its interval against a {eff:.0%} minimum effect; UNKNOWN is "
                        f"'not significant', or 'too few runs' below {MIN_RUNS} a side",
                        "on an oversubscribed host a ratio compares CPU cost per fault and its "
                        "queueing, not scalability"]
                 + ([d.hosts_text()] if where else []))


def fairness_table(d: ReportData, ids: dict) -> Table | None:
    rows = []
    for s in d.series:
        for v in d.vcpus:
            f = d.view.fairness(s, v)
            if not f or v == 1:
                continue
            rows.append([d.legend(s), str(v), fmt_si(f["rate_min"]), fmt_si(f["rate_median"]),
                         fmt_si(f["rate_max"]),
                         f"{f['rate_spread']:.1f}" if f["rate_spread"] else "-",
                         fmt_num(f["finish_s_min"], 2), fmt_num(f["finish_s_median"], 2),
                         fmt_num(f["finish_s_max"], 2)])
    if not rows:
        return None
    return Table("Are vCPUs served fairly? Per-vCPU rate (pages/s) and finish time (s)",
                 ["mechanism", "vCPUs", "rate\nmin", "rate\nmedian", "rate\nmax", "max/\nmin",
                  "finish\nfirst s", "finish\nmedian s", "finish\nlast s"], rows, key_columns=2,
                 notes=["over a cell's vCPUs, each the median over its runs; a vCPU's rate is its "
                        "pages over its own window in the guest; finish: seconds from the first "
                        "vCPU's start; cells of 1 vCPU left out"])


def hosts_table(d: ReportData) -> Table | None:
    """With records of several hosts: who each host is, and its fingerprint (the
    speed of its own loops), so a reader sees what the @host series stand for."""
    if not d.multi_host():
        return None
    fp = {"cpu_loop_ns": ("CPU loop\nms", 1e-6), "memcpy_bytes_per_s": ("memcpy\nGB/s", 1e-9),
          "kvm_exit_fault_ns": ("KVM exit\nus", 1e-3), "uffd_round_trip_ns": ("uffd trip\nus", 1e-3)}
    rows = []
    for host in d.hosts:
        h = d.df[d.df["host"] == host]
        first = h.iloc[0]
        mid = first.get("machine.machine_id")
        row = [host, str(first["machine.hostname"]), str(mid)[:8] if isinstance(mid, str) else "-",
               str(first["machine.cpu_model"]), cpu_count(first["machine.online_cpus"]),
               ", ".join(sorted(h["machine.kernel_release"].dropna().astype(str).unique())),
               str(h["source"].nunique())]
        for name, (_head, scale) in fp.items():
            col = f"fingerprint.{name}"
            vals = h.drop_duplicates("source")[col].dropna() if col in h.columns else []
            row.append(fmt_num(float(vals.median()) * scale, 2) if len(vals) else "-")
        rows.append(row)
    return Table("Which hosts do these records come from? Identity and host fingerprint",
                 ["host", "hostname", "machine id", "CPU model", "CPUs", "kernel", "records"]
                 + [head for head, _scale in fp.values()], rows,
                 notes=["a host is its hostname and machine id (machine-id(5)); every series is one "
                        "host's (@host), and no cell pools runs of two hosts; fingerprint: medians of "
                        "the calibration each invocation runs first (docs/reliability.md)"])


def latency_table(d: ReportData, ids: dict) -> Table:
    keys = [("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p99_9", "p99.9"), ("max", "max")]
    hz = d.tick_hz()
    rows, on_tick = [], 0
    for s in d.series:
        col = "fault_latency_ns" if not d.is_baseline(s) else "first_touch_latency_ns"
        for v in d.vcpus:
            vals = [d.value(f"{col}.{k}", s, v) for k, _ in keys]
            if all(x is None for x in vals):
                continue
            name = d.legend(s) + (" (first touch)" if d.is_baseline(s) else "")
            # the tail percentiles that sit on whole scheduler ticks
            ticks = [f"{lbl}={k}" for (key, lbl), x in zip(keys[2:], vals[2:])
                     if x and x >= 0.9e9 / (hz or 1e18) and (k := tick_multiple(x, hz))]
            on_tick += bool(ticks)
            rows.append([name, str(v)] + [fmt_num(x / 1000 if x is not None else None) for x in vals]
                        + [" ".join(ticks) or "-", _flags(d, ids, s, v, f"{col}.p50")])
    return Table("How long does a vCPU wait for a page? Fault latency, us",
                 ["mechanism", "vCPUs"] + [f"{lbl} us" for _, lbl in keys] + ["on tick", "flags"],
                 rows, key_columns=2,
                 notes=["each percentile is the median over runs of the run's own percentile "
                        "(from a histogram within 0.4%); baselines deliver no fault to userspace, "
                        "so their row is the first touch of a page (the kernel's own fault path)",
                        (f"on tick: p99, p99.9 or max within 5% of a tick of k scheduler ticks, k up to 10 ({1e3 / hz:g} ms, "
                         f"HZ={hz}; {on_tick} rows): a vCPU that waited whole ticks for its CPU, the "
                         "scheduler's tail, not the mechanism's" if hz else
                         "on tick: the records do not say the scheduler tick (CONFIG_HZ)"),
                        "flags: as in the paging-rate table (O: of the p50)"])


def breakdown_tables(d: ReportData) -> list[Table]:
    out = []
    segments = d.segments()
    for s in d.mechanisms():
        present = [g for g in segments if d.has(f"fault_breakdown_ns.parts.{g}",
                                                 d.runs[d.runs["series"] == s])]
        if not present:
            continue
        vs = [v for v in d.vcpus if d.value(f"fault_breakdown_ns.parts.{present[0]}", s, v) is not None]
        rows = []
        for g in present + ["mean_fault_latency"]:
            col = (f"fault_breakdown_ns.parts.{g}" if g != "mean_fault_latency"
                   else "fault_breakdown_ns.mean_fault_latency")
            rows.append([g.replace("_", " ") if g != "mean_fault_latency" else "total (mean per fault)"]
                        + [fmt_num((d.value(col, s, v, "mean") or 0) / 1000) for v in vs])
        out.append(Table(f"{d.legend(s)}: where does a fault's time go? Mean us per fault",
                         ["segment, us \\ vCPUs"] + [str(v) for v in vs], rows,
                         notes=["mean over runs of each run's mean per fault (so the parts add "
                                "up to the total)"]
                         + _emulation_notes(d, [s])))
    return out


def lock_table(d: ReportData, ids: dict) -> Table | None:
    if d.traced.empty or "kernel_locks.contentions" not in d.traced.columns:
        return None
    rows, concentrated = [], []
    sites = [c for c in d.traced.columns if c.startswith("lock_site.") and c.endswith(".wait_ns")]
    for s in d.series:
        for v in d.vcpus:
            t = d.cell_rows(s, v, d.traced)
            if t.empty or t["kernel_locks.contentions"].isna().all():
                continue
            t = t.assign(wait_per_fault=t["kernel_locks.wait_ns_total"] / lock_divisor(t))
            if (t["kind"] == "traced").any():
                row = t[t["kind"] == "traced"].iloc[0]   # the cell's (first) traced run
            else:
                # lock data in every measured run: each column's median over the runs
                t = t[t["kernel_locks.contentions"].notna()]
                row = t[["kernel_locks.contentions", "kernel_locks.wait_ns_total", "faults",
                         "wait_per_fault"] + sites].median()
            total = row["kernel_locks.wait_ns_total"]
            best = max(((row[c], c) for c in sites if row[c] == row[c] and row[c] > 0), default=None)
            site = best[1][len("lock_site."):-len(".wait_ns")] if best else "-"
            share = f"{best[0] / total * 100:.0f}%" if best and total else ""
            few = d.view.concentrated_locks(s, v)
            # a traced run may walk only part of the touches: per fault compares across cells
            rows.append([d.legend(s), str(v), f"{int(row['kernel_locks.contentions']):,}",
                         f"{total / 1e6:.2f}", f"{int(row['faults']):,}",
                         (f"{row['wait_per_fault'] / 1e3:.3f}" if row["wait_per_fault"] == row["wait_per_fault"]
                          else "-"), site, share, "O" if few else ""])
            concentrated += [f"{d.legend(s)} at {v} vCPUs: {x}" for x in few]
    src = d.lock_sources()
    traced_by = " and ".join(tracer_phrase(t) for t in src["traced"])
    if not src["runs"]:
        title = "Which kernel locks are contended? One traced run per cell"
        notes = [f"lock:contention_begin/end with the kernel call chain, recorded by {traced_by}; "
                 f"traced runs are extra runs{walk_phrase(src['least_share'])}, the headline "
                 "numbers come from untraced ones; share: the top call site's part of the "
                 "cell's total wait",
                 "O: one event, not a steady cost: a call site with at least half the "
                 "traced run's wait from at most 5% of its contentions"]
    else:
        by = " and ".join(tracer_phrase(t) for t in src["runs"])
        title = ("Which kernel locks are contended? Medians over each cell's measured runs"
                 if not src["traced"] else
                 "Which kernel locks are contended? Measured runs' medians or one traced run per cell")
        notes = [f"lock:contention_begin/end with the kernel call chain, recorded by {by} in "
                 "every measured run: contentions and wait are medians over the cell's runs, each "
                 "call site's wait the median over the runs that list it among their top locks; "
                 "share: the top call site's median wait over the median total wait"]
        if src["traced"]:
            notes.append(f"cells with a traced run ({traced_by}): that one traced run, an "
                         f"extra run{walk_phrase(src['least_share'])}; the headline numbers "
                         "come from untraced ones")
        notes.append("O: one event, not a steady cost: a call site with at least half of one "
                     "run's wait from at most 5% of that run's contentions (each run checked on its own)")
    notes.append("faults and wait us/fault: " + ("the traced run's, which may walk only part of "
                 "the touches: compare cells per fault" if src["traced"] else "the runs' medians")
                 + "; per page where a mechanism delivers no fault; -: neither")
    return Table(title, ["mechanism", "vCPUs", "contentions", "wait ms", "faults", "wait us/fault",
                         "top call site", "share %", "flags"],
                 rows, key_columns=2, notes=notes + concentrated)


def blocktime_table(d: ReportData, ids: dict) -> Table | None:
    if not d.has("blocktime_ns.all_vcpus"):
        return None
    rows = []
    for s in d.series:
        for v in d.vcpus:
            a = d.value("blocktime_ns.all_vcpus", s, v)
            if a is None:
                continue
            g = d.value("guest_seconds", s, v)
            rows.append([d.legend(s), str(v), fmt_num(a / 1e6, 2),
                         f"{a / 1e9 / g * 100:.0f}%" if g else "-",
                         fmt_num(d.value("blocktime_ns.per_vcpu_mean", s, v) / 1e6, 2),
                         fmt_num(d.value("blocktime_ns.per_vcpu_max", s, v) / 1e6, 2)])
    return Table("How long are vCPUs blocked on faults? Blocktime, ms",
                 ["mechanism", "vCPUs", "all blocked\nms", "of guest\n%", "per vCPU\nms",
                  "per vCPU max\nms"],
                 rows, key_columns=2,
                 notes=["as QEMU's postcopy-blocktime: time all vCPUs were blocked at once, and "
                        "each vCPU's blocked time (mean and max over vCPUs); medians over runs"]
                 + _emulation_notes(d, d.series))


def cpu_table(d: ReportData, ids: dict) -> Table | None:
    roles = d.roles()
    if not roles:
        return None
    rows = []
    for s in d.series:
        for v in d.vcpus:
            per = per_fault_divisor(d, s, v)
            if not per:
                continue
            row = [d.legend(s), str(v)]
            for r in roles:
                u = d.value(f"cpu_by_role.{r}.user_ns", s, v)
                k = d.value(f"cpu_by_role.{r}.system_ns", s, v)
                row += (["-", "-"] if u is None else [f"{u / per / 1000:.1f}", f"{k / per / 1000:.1f}"])
            rows.append(row)
    return Table("What CPU time does a fault cost, by thread role? us per fault",
                 ["mechanism", "vCPUs"] + [h for r in roles for h in (f"{r}\nuser us", f"{r}\nsys us")],
                 rows, key_columns=2,
                 notes=["thread CPU time over the run divided by the faults delivered (baselines: "
                        "by the pages faulted in by the kernel); medians over runs"])


def cost_and_wait_table(d: ReportData, ids: dict) -> Table:
    """Mechanism cost (on-CPU time per fault) and CPU wait (run-queue time per fault)
    apart: on 2 CPUs most of a fault's latency at scale is waiting for a CPU."""
    roles = [r for r in ("vcpu", "reader", "resolver")
             if d.has(f"sched.{r}.on_cpu_ns_per_fault")]
    rows = []
    for s in d.mechanisms():
        for v in d.vcpus:
            cost = [d.value(f"sched.{r}.on_cpu_ns_per_fault", s, v) for r in roles]
            wait = [d.value(f"sched.{r}.run_queue_wait_ns_per_fault", s, v) for r in roles]
            if all(c is None for c in cost):
                continue
            mean = d.value("fault_latency_ns.mean", s, v)
            rows.append([d.legend(s), str(v),
                         fmt_num(sum(c or 0 for c in cost) / 1000),
                         fmt_num(sum(w or 0 for w in wait) / 1000),
                         fmt_num(mean / 1000 if mean is not None else None),
                         ids.get((s, v), "")])
    return Table("What does a fault cost, and how long do its threads wait for a CPU? us per fault",
                 ["mechanism", "vCPUs", "on-CPU us", "CPU wait us", "latency mean us", "warn"],
                 rows, key_columns=2,
                 notes=["on-CPU: thread CPU clock of the vCPU" + (", reader and resolver" if len(roles) > 1 else "")
                        + " threads over the run per fault delivered (the mechanism's cost, the guest "
                        "loop included); CPU wait: their run-queue time per fault (schedstat); medians "
                        "over runs; " + _split_note(d)]
                 + _emulation_notes(d, d.mechanisms()))


def _split_note(d: ReportData) -> str:
    """Who splits each breakdown segment into on-CPU and waiting: the traced run, or
    the tracer in every measured run (--trace-every-run)."""
    tracers = [t for t in d.split_tracers() if t != "tracefs"]
    if not tracers:
        return "the traced run splits each breakdown segment the same way"
    note = ("each measured run's own split of each breakdown segment, recorded by "
            + " and ".join(tracer_phrase(t) for t in tracers) + " in that run")
    if (d.df["kind"] == "traced").any():
        note += "; records with a traced run: that run splits each segment the same way"
    return note


def per_fault_divisor(d: ReportData, s: str, v: int):
    faults = d.value("faults", s, v)
    return faults if faults else d.value("pages", s, v)


def warnings_text(d: ReportData, ids: dict, width: int = TEXT_WIDTH) -> str:
    if not ids:
        return "Warnings\n========\nnone: no record carries a warning\n"
    out = ["Warnings carried by the records", "=" * 31]
    for (s, v), wid in ids.items():
        out.append(f"{wid}  {d.legend(s)} at {v} vCPUs:")
        for w in d.warnings[(s, v)]:
            out += textwrap.wrap(w, width, initial_indent="    - ", subsequent_indent="      ")
    return "\n".join(out) + "\n"


def warnings_rows(d: ReportData, ids: dict) -> list[tuple[str, str, list[str]]]:
    return [(wid, f"{d.legend(s)} at {v} vCPUs", d.warnings[(s, v)]) for (s, v), wid in ids.items()]


def all_tables(d: ReportData, reference: str) -> list[Table]:
    ids = d.warning_ids()
    tables = [t for t in (hosts_table(d),) if t is not None]
    tables += [rate_table(d, ids), who_wins_table(d, reference, ids)]
    tables += [t for t in (fairness_table(d, ids),) if t is not None]
    tables += [latency_table(d, ids), cost_and_wait_table(d, ids)]
    tables += breakdown_tables(d)
    for t in (lock_table(d, ids), blocktime_table(d, ids), cpu_table(d, ids)):
        if t is not None:
            tables.append(t)
    return [t for t in tables if t.rows]   # e.g. no latency table for --no-latency records
