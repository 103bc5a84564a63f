"""`run_bench.py report RECORDS... [--out DIR]`: one report from one results table.

Writes into DIR (default report/):
  report.html      self-contained page (figures embedded as data: URLs, no network)
  report.md        Markdown, figures linked from figures/
  report.txt       fixed-width tables, 80 columns, one per question (for mailing lists)
  figures/NAME.png and NAME.svg, sized for a 16:9 slide
  manifest.json    what was written: figures, tables, series, vCPU counts
"""
from __future__ import annotations

import base64
import html
import json
import os
import signal
import sys

from .. import table as tablemod
from ..cmdline import OneLineParser
from .data import ReportData
from .summary import mail_block, summary
from .tables import TEXT_WIDTH, all_tables, warnings_rows, warnings_text, who_wins

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "report")

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       max-width: 1400px; margin: 1.5em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; }
.meta { color: #444; margin: 0.2em 0; }
.emulated { background: #fff3f0; border-left: 4px solid #d62728; padding: 0.4em 0.8em; }
.summary { background: #f4f7fb; border: 1px solid #b8c7dc; border-radius: 4px; padding: 0.6em 1.2em;
           margin: 1em 0; }
.summary h2 { margin-top: 0.2em; font-size: 1.25em; }
.summary li { margin-bottom: 0.3em; }
pre.mail { background: #fafafa; border: 1px solid #ddd; padding: 0.6em; font-size: 0.9em; overflow-x: auto; }
figure { margin: 1.5em 0; }
figure img { width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #444; }
div.wide { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 0.5em 0 0.2em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
ul.notes { font-size: 0.88em; color: #444; margin-top: 0.2em; }
.warnings li { margin-bottom: 0.3em; }
nav a { margin-right: 1em; }
"""


class ReportError(Exception):
    """Bad input for a report: one line, exit 2."""


def generate(paths: list[str], out_dir: str, reference: str | None = None,
             cdf_vcpus: list[int] | int | None = None, title: str | None = None,
             model: dict | None = None) -> dict:
    """Load RECORDS, write every output into out_dir; returns the manifest."""
    records = tablemod.load_records(paths)   # read once: the table and the report's view share them
    d = ReportData(tablemod.build(records), dict(records))
    if d.runs.empty:
        raise ReportError("the records hold no measured runs")
    mechs = d.mechanisms() or d.series
    if reference is None:
        reference = next((s for s in mechs if d.mech_of[s] == "exits"), mechs[0])
        # several hosts: the reference is named as on every host; ratios stay within a host
        reference = d.base_of[reference] if d.multi_host() else reference
    if not d.knows_reference(reference):
        raise ReportError(f"--relative-to {reference}: not among the series "
                          f"({', '.join(d.series)})")
    if isinstance(cdf_vcpus, int):
        cdf_vcpus = [cdf_vcpus]
    for v in cdf_vcpus or []:
        if v not in d.vcpus:
            raise ReportError(f"--cdf-vcpus {v}: no cell at that count "
                              f"(have {', '.join(map(str, d.vcpus))})")
    # deferred: the figures module imports matplotlib, which only drawing needs
    from .figures import cdf_counts
    cdf_vcpus = cdf_counts(d, cdf_vcpus)

    title = title or "faultbench: fault delivery to userspace vs vCPUs"
    fig_dir = os.path.join(out_dir, "figures")
    os.makedirs(fig_dir, exist_ok=True)
    figures, written = _draw_figures(d, cdf_vcpus, model, fig_dir)
    tables = all_tables(d, reference)
    ids = d.warning_ids()
    sources = sorted({os.path.basename(p) for p in d.df["source"].unique()})
    head = {"title": title, "hosts": d.hosts_text(),
            "summary": summary(d, who_wins(d, reference), (model or {}).get("summary")),
            "mail": mail_block(d), "reference": reference, "model": model,
            "cdf_vcpus": cdf_vcpus, "records": len(sources)}

    with open(os.path.join(out_dir, "report.txt"), "w") as fh:
        fh.write(_text(head, tables, d, ids))
    with open(os.path.join(out_dir, "report.md"), "w") as fh:
        fh.write(_markdown(head, figures, tables, d, ids))
    with open(os.path.join(out_dir, "report.html"), "w") as fh:
        fh.write(_html(head, figures, tables, d, ids, fig_dir))
    manifest = {
        "kind": "faultbench-report", "title": title,
        "outputs": ["report.html", "report.md", "report.txt"]
                   + sorted(os.path.relpath(p, out_dir) for p in written),
        "figures": [{"name": f.name, "title": f.title} for f in figures],
        "tables": [{"title": t.title, "columns": len(t.header), "rows": len(t.rows)} for t in tables],
        "series": d.series, "emulated": sorted(d.emulated), "vcpus": d.vcpus,
        "cpus": d.cpus(), "oversubscribed_vcpus": d.oversubscribed(),
        "summary": head["summary"],
        "model_answers": (model or {}).get("answers", []),
        "reference": reference, "cdf_vcpus": cdf_vcpus,
        "warnings": {wid: f"{d.legend(s)} at {v} vCPUs" for (s, v), wid in ids.items()},
        "records": sources,
        "hosts": d.hosts,
    }
    with open(os.path.join(out_dir, "manifest.json"), "w") as fh:
        json.dump(manifest, fh, indent=1)
        fh.write("\n")
    return manifest


def _draw_share(job: tuple, k: int, n: int) -> list[tuple]:
    """Draw and save every n-th figure of `job` (d, cdf_vcpus, model, fig_dir), from the
    k-th: (index, Figure without its matplotlib object, paths written) for each one drawn."""
    import matplotlib.pyplot as plt   # here: matplotlib loads only when figures are drawn
    # deferred: the figures module imports matplotlib, which only drawing needs
    from .figures import Figure, figure_makers
    d, cdf_vcpus, model, fig_dir = job
    done = []
    for i, make in enumerate(figure_makers(d, cdf_vcpus, model)):
        if i % n != k:
            continue
        f = make()
        if f is None:
            continue
        paths = []
        for ext in ("png", "svg"):
            path = os.path.join(fig_dir, f"{f.name}.{ext}")
            # fixed metadata: regenerating from the same records gives the same files
            meta = {"Date": None} if ext == "svg" else {"Software": "faultbench"}
            f.fig.savefig(path, dpi=120, metadata=meta, bbox_inches=None)
            paths.append(path)
        plt.close(f.fig)
        done.append((i, Figure(f.name, f.title, f.caption, None), paths))
    return done


def _draw_figures(d, cdf_vcpus, model, fig_dir, processes: int | None = None) -> tuple[list, list[str]]:
    """Every figure, drawn in up to one process a usable CPU (at most 4; drawing is
    about two thirds of a report's time: 9 s of 14.6 s for report/example on this
    2-CPU host, one process). The figures and files are the same whichever process
    draws them."""
    n = processes or min(len(os.sched_getaffinity(0)), 4)
    job = (d, cdf_vcpus, model, fig_dir)
    shares = _draw_forked(job, n) if n > 1 else [_draw_share(job, 0, 1)]
    drawn = sorted((x for share in shares for x in share), key=lambda x: x[0])
    return [f for _i, f, _p in drawn], [p for _i, _f, paths in drawn for p in paths]


def _draw_child(job: tuple, k: int, n: int, conn) -> None:
    # Ctrl-C reaches the whole process group: the parent alone handles it, and stops us
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        conn.send(("ok", _draw_share(job, k, n)))
    except BaseException as exc:   # noqa: BLE001 - any failure goes back as one line
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _draw_forked(job: tuple, n: int) -> list[list[tuple]]:
    """n forked children, each drawing its share of `job` (a forked child inherits it:
    a Process's arguments are not pickled under fork). A child that
    fails or dies is a one-line ReportError; on that, on Ctrl-C or on any other
    error every child still running is terminated and reaped before this returns."""
    import multiprocessing
    import multiprocessing.connection
    ctx = multiprocessing.get_context("fork")
    procs, pending = [], {}
    try:
        for k in range(n):
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_draw_child, args=(job, k, n, send), name=f"faultbench-draw-{k}")
            proc.start()
            send.close()
            procs.append(proc)
            pending[recv] = k
        shares = [[] for _ in range(n)]
        while pending:
            for conn in multiprocessing.connection.wait(list(pending)):
                k = pending.pop(conn)
                try:
                    status, value = conn.recv()
                except EOFError:
                    procs[k].join()
                    raise ReportError(f"figure drawing process {k} of {n} ended without its figures "
                                      f"(exit code {procs[k].exitcode})") from None
                finally:
                    conn.close()
                if status != "ok":
                    raise ReportError(f"drawing the figures: {value}")
                shares[k] = value
        return shares
    finally:
        for conn in pending:
            conn.close()
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
            proc.join()


def _text(head, tables, d, ids) -> str:
    """Mail first (at most 72 columns, the selftest's terms), then the title, the
    summary and every table; 80 columns throughout."""
    import textwrap
    w = TEXT_WIDTH
    # the block a mail reply pastes comes first, then the report's own title
    out = [head["mail"].rstrip(), "", head["title"], "", "Summary", "=" * 7]
    for para in head["summary"]:
        out += textwrap.wrap(para, w, initial_indent="- ", subsequent_indent="  ")
    if head["hosts"]:
        out += textwrap.wrap(head["hosts"], w)
    out.append("")
    if head.get("model"):
        out += ["What the scaling model predicts (MODEL, not measured)",
                "=" * 53]
        out += textwrap.wrap(head["model"]["provenance"], w)
        for a in head["model"]["answers"]:
            out += textwrap.wrap(a, w, initial_indent="- ", subsequent_indent="  ")
        out.append("")
    for t in tables:
        out.append(t.to_text(w))
    out.append(warnings_text(d, ids, w))
    return "\n".join(out)


def _markdown(head, figures, tables, d, ids) -> str:
    out = [f"# {head['title']}", "", "## Summary", ""]
    out += [f"> - {para}" for para in head["summary"]]
    if head["hosts"]:
        out += [">", f"> {head['hosts']}"]
    out += ["", "## For the mailing list", "", "```", head["mail"].rstrip(), "```", ""]
    if head.get("model"):
        out += ["## What the scaling model predicts (MODEL, not measured)", "",
                head["model"]["provenance"], ""] + [f"- {a}" for a in head["model"]["answers"]] + [""]
    out.append("## Figures")
    for f in figures:
        out += ["", f"### {f.title}", "", f"![{f.title}](figures/{f.name}.png)", "",
                f"*{f.caption}* ([SVG](figures/{f.name}.svg))"]
    out += ["", "## Tables", ""]
    out += [t.to_markdown() for t in tables]
    out += ["## Warnings carried by the records", ""]
    rows = warnings_rows(d, ids)
    if not rows:
        out.append("None.")
    for wid, where, warns in rows:
        out.append(f"- **{wid}** {where}:")
        out += [f"  - {w}" for w in warns]
    return "\n".join(out) + "\n"


def _html(head, figures, tables, d, ids, fig_dir) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
             # nothing may be fetched: the page must work from a mail attachment
             "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
             "img-src data:; style-src 'unsafe-inline'\">",
             "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
             f"<title>{e(head['title'])}</title><style>{CSS}</style></head><body>",
             f"<h1>{e(head['title'])}</h1>",
             "<section class=\"summary\" id=\"summary\"><h2>Summary</h2><ul>"]
    for para in head["summary"]:
        cls = " class=\"emulated\"" if para.startswith("EMULATED") else ""
        parts.append(f"<li{cls}>{e(para)}</li>")
    parts.append("</ul>" + (f"<p class=\"meta\"><b>{e(head['hosts'])}</b></p>" if head["hosts"] else "")
                 + "</section>")
    parts.append("<nav>" + "".join(f"<a href=\"#{f.name}\">{e(f.title)}</a>" for f in figures)
                 + "<a href=\"#tables\">Tables</a><a href=\"#mail\">For the mailing list</a>"
                 "<a href=\"#warnings\">Warnings</a></nav>")
    if head.get("model"):
        parts.append("<h2 id=\"model\">What the scaling model predicts (MODEL, not measured)</h2>")
        parts.append(f"<p class=\"meta\">{e(head['model']['provenance'])}</p><ul>"
                     + "".join(f"<li>{e(a)}</li>" for a in head["model"]["answers"]) + "</ul>")
    parts.append("<h2>Figures</h2>")
    for f in figures:
        with open(os.path.join(fig_dir, f"{f.name}.png"), "rb") as fh:
            data = base64.b64encode(fh.read()).decode()
        parts.append(f"<figure id=\"{f.name}\"><img alt=\"{e(f.title)}\" "
                     f"src=\"data:image/png;base64,{data}\">"
                     f"<figcaption><b>{e(f.title)}.</b> {e(f.caption)}</figcaption></figure>")
    parts.append("<h2 id=\"tables\">Tables</h2>")
    parts += [t.to_html() for t in tables]
    parts.append("<h2 id=\"mail\">For the mailing list</h2>")
    parts.append(f"<pre class=\"mail\">{e(head['mail'])}</pre>")
    parts.append("<h2 id=\"warnings\">Warnings carried by the records</h2>")
    rows = warnings_rows(d, ids)
    if not rows:
        parts.append("<p>None.</p>")
    else:
        parts.append("<ul class=\"warnings\">")
        for wid, where, warns in rows:
            parts.append(f"<li><b>{e(wid)}</b> {e(where)}:<ul>"
                         + "".join(f"<li>{e(w)}</li>" for w in warns) + "</ul></li>")
        parts.append("</ul>")
    parts.append(f"<p class=\"meta\">Generated by faultbench from {head['records']} result "
                 "records.</p></body></html>")
    return "\n".join(parts) + "\n"


def load_model(paths: list[str], calibration: str | None) -> dict:
    """Predicted rows from `run_bench.py model --out` files, their provenance, and
    the model's own answers to the seed thread's claims per (P, MMU)."""
    # deferred: the model (SimPy) loads only when a report draws it
    from ..model import report as modelreport
    rows = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                got = json.load(f)
        except (OSError, ValueError) as exc:
            raise ReportError(f"--model {path}: {exc}") from None
        got = got.get("rows", got) if isinstance(got, dict) else got
        if not isinstance(got, list) or not all(isinstance(r, dict) and {"mech", "vcpus", "pcpus",
                                                                           "pages_per_s"} <= set(r)
                                                   for r in got):
            raise ReportError(f"--model {path}: not the model's predictions (run_bench.py model --out)")
        rows += got
    if not calibration:
        raise ReportError("--model needs --calibration CAL.json: a prediction without its "
                          "calibration's provenance is not shown")
    try:
        provenance = modelreport.provenance(calibration)
    except (OSError, ValueError, KeyError) as exc:
        raise ReportError(f"--calibration {calibration}: {exc}") from None
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["pcpus"], r.get("mmu")), []).append(r)
    claims = [modelreport.claims(g) for _key, g in sorted(groups.items(), key=lambda kv: str(kv[0]))]
    answers = []
    for c in claims:
        where = f"MODEL at P = {c['pcpus']}, {c['mmu']} MMU"
        for key, what in (("one_uffd", "one userfaultfd"), ("many_uffds", "several userfaultfds"),
                          ("async_vs_exits", "a KVM-side queue (async) against exits")):
            if key in c:
                decided = ", ".join(c[key].get("decided_by") or [])
                answers.append(f"{where}, {what}: {c[key]['answer']} (decided by: {decided}).")
    note = ("The MODEL section and figure give the scaling model's predictions for bigger hosts: "
            "predictions, not measurements (docs/MODEL.md).")
    return {"rows": rows, "provenance": provenance, "claims": claims, "answers": answers,
            "summary": note}


def main(argv=None) -> int:
    p = OneLineParser(prog="run_bench.py report",
                                description="Figures (PNG, SVG), tables (HTML, Markdown, "
                                            "80-column text) from result records.")
    p.add_argument("records", nargs="+", help="result files or directories (searched for *.json)")
    p.add_argument("--out", default=DEFAULT_OUT, help="output directory (default report/)")
    p.add_argument("--relative-to", metavar="MECH",
                   help="reference mechanism of the who-wins table (default exits)")
    p.add_argument("--cdf-vcpus", metavar="N[,N...]",
                   type=lambda t: [int(x) for x in t.split(",") if x],
                   help="vCPU counts of the latency CDFs (default: the largest count that fits the "
                        "CPUs, and the largest)")
    p.add_argument("--title", help="report title")
    p.add_argument("--model", nargs="+", metavar="PREDICTIONS.json",
                   help="the scaling model's predictions (`run_bench.py model --out`) to draw beside "
                        "the measured rates, marked MODEL; with --calibration for their provenance")
    p.add_argument("--calibration", metavar="CAL.json",
                   help="the calibration the --model predictions came from (`run_bench.py calibrate`)")
    a = p.parse_args(argv)
    try:
        model = load_model(a.model, a.calibration) if a.model else None
        manifest = generate(a.records, a.out, a.relative_to, a.cdf_vcpus, a.title, model)
    except (tablemod.TableError, ReportError, ValueError) as exc:
        print(f"run_bench.py report: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"run_bench.py report: error: {exc}", file=sys.stderr)
        return 2
    for name in manifest["outputs"][:3]:
        print(os.path.join(a.out, name))
    print(f"{len(manifest['figures'])} figures (PNG + SVG) in {os.path.join(a.out, 'figures')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
