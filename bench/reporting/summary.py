"""What a report says before any figure: the summary box (host, the configuration
that decides the numbers, one sentence per mechanism, what the numbers are and are
not) and the mail block (the selftest's terms, at most 72 columns)."""
from __future__ import annotations

import glob
import json
import os
import shlex
import statistics
import textwrap

from .. import schema
from .data import ReportData, cpu_count, fmt_num, fmt_si
from .tables import verdict_words

MAIL_WIDTH = 72


def _values(d: ReportData, col: str) -> list:
    rows = d.runs if not d.runs.empty else d.df
    if col not in rows.columns:
        return []
    return sorted({v for v in rows[col].dropna().tolist()}, key=str)


def _list(vals) -> str:
    return ", ".join(str(v) for v in vals) if vals else "not recorded"


def order_text(d: ReportData) -> str:
    orders = sorted({(rec.get("sweep") or {}).get("order", "blocked")
                     for rec in d.view.by_source.values()})
    if orders == ["interleaved"]:
        return "cells interleaved run by run (round-robin)"
    if orders == ["blocked"]:
        return "cells run one after another (blocked: drift is confounded with the cell order)"
    return "some cells interleaved, some blocked"


def config_lines(d: ReportData) -> list[str]:
    delay = [v for v in _values(d, "fetch_delay_us") if v]
    modes = _values(d, "fetch_delay_mode")
    reps = d.runs.groupby(["series", "vcpus"]).size() if not d.runs.empty else None
    runs = (f"{reps.min()}" + (f"-{reps.max()}" if reps.max() != reps.min() else "")) if reps is not None else "0"
    readers = {}
    for s in d.mechanisms():
        rows = d.runs[d.runs["series"] == s]
        for col in ("readers_per_uffd", "resolvers"):
            if col in rows.columns and rows[col].notna().any():
                readers[s] = int(rows[col].dropna().iloc[0])
                break
    reader_text = ("; ".join(f"{s}: {n}" for s, n in readers.items())) if readers else "not recorded"
    mem = _values(d, "mem_per_vcpu_mib")
    return [
        f"Fetch delay: {_list([f'{v:g} us' for v in delay]) + ' (' + _list(modes) + ')' if delay else '0 (pages are local: no network time)'}; "
        f"fetch by {_list(_values(d, 'fetch'))}.",
        f"Readers or resolvers per userfaultfd or queue: {reader_text}.",
        f"Placement: {_list(_values(d, 'placement'))}; memory per vCPU: {_list([f'{v:g} MiB' for v in mem])}; "
        f"workload: {_list(_values(d, 'workload'))}.",
        f"Runs: {runs} a cell, {order_text(d)}"
        + (" (cells with fewer than 5 runs get no verdict)." if reps is not None and reps.min() < 5 else "."),
    ]


def scope_line(d: ReportData, model_note: str | None = None) -> str:
    cpus, over = d.cpus(), d.oversubscribed()
    if not over:
        text = (f"No cell runs more vCPUs than the host's {cpus} CPUs: each vCPU has a CPU, so these "
                "numbers are the mechanisms' own costs.")
    else:
        text = (f"This host has {cpus} CPUs, so the cells at {_list(over)} vCPUs are "
                f"oversubscribed (shaded in every vCPU figure): there vCPUs and handler threads "
                "wait for a CPU, and the numbers measure CPU cost per fault and its queueing, not "
                "how a mechanism scales on a host with a CPU per vCPU.")
    return text + " " + (model_note or "This report draws no prediction for bigger hosts "
                                       "(report --model: the scaling model's).")


def mechanism_sentences(d: ReportData, wins: list[dict]) -> list[str]:
    """One sentence per series, in the report's own numbers."""
    cpus = d.cpus() or 1
    out = []
    by = {(w["series"], w["vcpus"]): w for w in wins}
    for s in d.series:
        vs = [v for v in d.vcpus if d.value("pages_per_s", s, v) is not None]
        if not vs:
            continue
        first, last = vs[0], vs[-1]
        plural = "s" if first > 1 else ""
        text = f"{d.legend(s)}: at {first} vCPU{plural} {fmt_si(d.value('pages_per_s', s, first))} pages/s"
        col = "first_touch_latency_ns.p50" if d.is_baseline(s) else "fault_latency_ns.p50"
        p50 = d.value(col, s, first)
        if p50:
            text += f", p50 {'first-touch' if d.is_baseline(s) else 'fault'} latency {fmt_num(p50 / 1000)} us"
        cost = [d.value(f"sched.{r}.on_cpu_ns_per_fault", s, first) for r in ("vcpu", "reader", "resolver")]
        if any(cost) and not d.is_baseline(s):
            text += f", {fmt_num(sum(c or 0 for c in cost) / 1000)} us of CPU per fault (its threads together)"
        if last != first:
            text += f"; {fmt_si(d.value('pages_per_s', s, last))} pages/s at {last}"
        fits = [v for v in vs if v <= cpus]
        at = fits[-1] if fits else first
        w = by.get((s, at))
        if w:
            iv = f" [{w['interval'][0]:.2f}-{w['interval'][1]:.2f}]" if w["interval"] else ""
            text += (f"; x{w['ratio']:.2f}{iv} the rate of {w['reference']} at {at} "
                     f"vCPU{'s' if at > 1 else ''} ({verdict_words(w['judgement'])})")
        out.append(text + ".")
    return out


def _stated(value) -> str:
    """A machine field as text; "not stated" where an imported record leaves it out."""
    return "not stated" if value is None or value != value else str(value)


def host_line(d: ReportData) -> str:
    m = d.df.drop_duplicates("host")
    parts = []
    for _, r in m.iterrows():
        parts.append(f"{r['host']}: {cpu_count(r['machine.online_cpus'])} CPUs "
                     f"({_stated(r['machine.cpu_model'])}), kernel {_stated(r['machine.kernel_release'])}")
    return "Host: " + "; ".join(parts) + f"; {d.kvm_text()}."


def imported_lines(d: ReportData) -> list[str]:
    """What each imported demand_paging_test record is: its command, and that its
    machine is as stated by whoever ran it."""
    out = []
    for src, rec in d.view.by_source.items():
        if not schema.is_imported(rec):
            continue
        m = rec.get("machine") or {}
        out.append(f"Imported, not measured by faultbench: {rec['source'].get('args')} "
                   f"({len(rec['source'].get('files') or [])} output file(s), sha256 "
                   f"{str(rec['source'].get('sha256'))[:12]}); its machine as stated by "
                   f"{m.get('stated_by', 'whoever ran it')}. No ratio or verdict pairs it with "
                   "the harness's own series.")
    return out


def summary(d: ReportData, wins: list[dict], model_note: str | None = None) -> list[str]:
    """The summary box's paragraphs, each said once in the whole report."""
    lines = [host_line(d), *config_lines(d), scope_line(d, model_note)]
    lines += mechanism_sentences(d, wins)
    lines += imported_lines(d)
    for s, reason in d.emulated.items():
        lines.append(f"EMULATED {s} (dashed in every figure): {reason}")
    return lines


# -- the mail block

def sweep_command(d: ReportData) -> str:
    """The command behind the records: a sweep index beside them, else the first
    record's own command with the report's vCPU counts and mechanisms."""
    dirs = sorted({os.path.dirname(os.path.abspath(src)) for src in d.view.by_source})
    for directory in dirs:
        for path in glob.glob(os.path.join(directory, "index.json")):
            try:
                with open(path, encoding="utf-8") as f:
                    rerun = json.load(f).get("rerun")
                if rerun:
                    return rerun
            except (OSError, ValueError):
                continue
    recs = [r for r in d.view.by_source.values() if not schema.is_imported(r)]
    if not recs:
        return "none of the harness (imported records only)"
    command = recs[0].get("command") or {}
    words = list(command.get("argv") or []) if isinstance(command, dict) else list(command)
    if words and not words[0].endswith("run_bench.py"):
        words = ["run_bench.py", *words]
    # a cell's own words: its vCPUs and mechanism, and the traced run's share that
    # --trace-share auto pinned in its rerun line (the sweep asked auto)
    own = ("--vcpus", "--mech") + (
        ("--trace-share",) if (recs[0].get("config") or {}).get("trace_share") == "auto" else ())
    out, skip = [], False
    for w in words:
        if skip:
            skip = False
            continue
        if w in own:
            skip = True
            continue
        out.append(w)
    mechs = sorted({r["config"]["mech"] for r in recs})
    vcpus = sorted({int(r["config"]["vcpus"]) for r in recs})
    return "python " + " ".join(shlex.quote(w) for w in out + [
        "--vcpus", ",".join(map(str, vcpus)), "--mech", ",".join(mechs)])


def commit_text(d: ReportData) -> str:
    """The harness that measured the records (an importer's commit measured nothing)."""
    own = d.df[d.df["origin"] == "faultbench"] if "origin" in d.df.columns else d.df
    if own.empty:
        return "none: imported records only"
    commits = sorted({(str(c)[:12] if c else "unknown") + (" (dirty)" if dirty is True else "")
                      for c, dirty in zip(own["git_commit"], own["git_dirty"])})
    versions = sorted({str(v) for v in own["harness_version"].dropna()})
    return f"faultbench {_list(versions)}, commit {_list(commits)}"


def _rate_cell(d: ReportData, col: str, s: str, v: int) -> str:
    vals = d.cell_column(col, s, v).dropna().tolist() if col in d.runs.columns else []
    if not vals:
        return "-"
    return f"{fmt_si(statistics.median(vals))} [{fmt_si(min(vals))}-{fmt_si(max(vals))}]"


def selftest_columns(d: ReportData, s: str) -> tuple[str, str]:
    """The columns holding the selftest's own two rates for a series (an imported
    demand_paging_test record keeps them under its own names)."""
    rows = d.runs[d.runs["series"] == s]
    for per, overall in (("selftest.per_vcpu_demand_paging_rate",
                          "selftest.overall_demand_paging_rate"),):
        if per in rows.columns and rows[per].notna().any():
            return per, overall
    return "pages_per_s_per_vcpu", "pages_per_s"


def mail_block(d: ReportData, width: int = MAIL_WIDTH) -> str:
    """What a reply on the list holds: host, command, commit, then the per-vCPU and
    the overall demand paging rate by vCPU count, median [min-max], per series."""
    def wrap(label, text):
        return textwrap.wrap(text, width, initial_indent=f"{label:<9}", subsequent_indent=" " * 9,
                             break_on_hyphens=False, break_long_words=True)
    hosts = d.df.drop_duplicates("host")
    host_text = "; ".join(f"{_stated(m['host'])}, {cpu_count(m['machine.online_cpus'])} CPUs, "
                          f"{_stated(m['machine.cpu_model'])}, kernel "
                          f"{_stated(m['machine.kernel_release'])}" for _, m in hosts.iterrows())
    out = [*wrap("Host:", f"{host_text}; {d.kvm_text()}"),
           *wrap("Command:", sweep_command(d)),
           *wrap("Commit:", commit_text(d)),
           *wrap("Values:", "pages/s, median [min-max] over the runs of each cell; "
                            f"{order_text(d)}")]
    head = f"  {'vCPUs':>5}  {'Per-vcpu demand paging rate':<28} {'Overall demand paging rate':<27}"
    for s in d.series:
        per, overall = selftest_columns(d, s)
        out += ["", d.legend(s)[:width], head.rstrip()]
        for v in d.vcpus:
            a, b = _rate_cell(d, per, s, v), _rate_cell(d, overall, s, v)
            if a == "-" and b == "-":
                continue
            out.append(f"  {v:>5}  {a:<28} {b}".rstrip())
        if per != "pages_per_s_per_vcpu":
            out += textwrap.wrap("(the selftest's own definitions; distinct pages/s under "
                                 "pages_per_s in the tables)", width, initial_indent="  ",
                                 subsequent_indent="  ")
    return "\n".join(line[:width] for line in out) + "\n"
