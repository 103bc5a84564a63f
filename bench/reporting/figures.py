"""The report's figures, sized for a 16:9 slide with text of at least 14 pt there.

Captions live in the HTML and Markdown, never in the image (a slide has its own).
One palette per meaning: mechanisms (data.MECH_COLORS), breakdown segments, lock
call sites, thread roles; dashed lines mean EMULATED and nothing else; hatching
means system time (CPU by role) and nothing else. Every vCPU axis shades the
counts above the host's CPUs; cells with a failed self-check are ringed and
single-run outliers drawn as crosses.
"""
from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator  # noqa: E402

from .. import stats  # noqa: E402
from .data import ReportData, lock_divisor, tracer_phrase, walk_phrase  # noqa: E402
from .tables import per_fault_divisor  # noqa: E402

SLIDE_INCHES = (13.33, 7.5)      # 16:9, a full slide at 100% zoom
PNG_DPI = 120
MIN_PT = 14                      # the smallest text at slide size
plt.rcParams.update({"font.size": MIN_PT, "axes.titlesize": 16, "axes.labelsize": MIN_PT,
                     "legend.fontsize": MIN_PT, "xtick.labelsize": MIN_PT,
                     "ytick.labelsize": MIN_PT, "svg.fonttype": "none", "figure.dpi": 100})
# palettes by meaning, none sharing a colour with the mechanisms' (tab10's first six)
SEGMENT_COLORS = ["#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#5254a3", "#8ca252",
                  "#bd9e39", "#ad494a", "#a55194", "#6b6ecf", "#b5cf6b", "#e7ba52", "#d6616b",
                  "#ce6dbd", "#9c9ede"]
SITE_COLORS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d",
               "#666666"]
ROLE_COLORS = {"vcpu": "#542788", "reader": "#a6611a", "resolver": "#018571", "worker": "#dfc27d"}
OVERSUB_SHADE = "#f6efd9"   # light sand: not a grey any series uses
FAILED_RING = "#d00000"


@dataclass
class Figure:
    name: str          # file stem
    title: str
    caption: str
    fig: object        # matplotlib Figure


def _finish(fig, title: str, legend: tuple | None = None, side: str = "bottom") -> None:
    """Title on top, the shared legend (handles, labels, ncol) below the panels (or
    at their right), outside every axis, so it never covers data."""
    fig.suptitle(title, fontsize=18, fontweight="bold")
    bottom = 0.01
    if legend and legend[1] and side == "right":
        handles, labels, _ncol = legend
        leg = fig.legend(handles, labels, loc="center right", ncol=1, frameon=False,
                         bbox_to_anchor=(1.0, 0.5), handlelength=2.2)
        fig.canvas.draw()
        width = leg.get_window_extent().width / fig.bbox.width
        fig.tight_layout(rect=(0, 0.01, 1 - width - 0.01, 0.94))
        return
    if legend and legend[1]:
        handles, labels, ncol = legend
        rows = (len(labels) + ncol - 1) // ncol
        fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False,
                   bbox_to_anchor=(0.5, 0.0), handlelength=2.6)
        bottom = 0.05 * rows + 0.015
    fig.tight_layout(rect=(0, bottom, 1, 0.94))


def _shade_oversubscribed(ax, d: ReportData, positions: list[float] | None = None,
                          vcpus: list[int] | None = None) -> None:
    """Grey behind vCPU counts above the CPU count. `positions`: bar positions of
    `vcpus` on a categorical axis; else a log2 vCPU axis."""
    cpus = d.cpus()
    vcpus = vcpus if vcpus is not None else d.vcpus
    over = [v for v in vcpus if cpus and v > cpus]
    if not over:
        return
    if positions is None:
        # halfway (geometrically) between the last count that fits and the first that does not
        lo = ((max(v for v in vcpus if v not in over) * over[0]) ** 0.5 if len(over) < len(vcpus)
              else vcpus[0] / 1.4)
        hi = vcpus[-1] * 1.4
    else:
        first = vcpus.index(over[0])
        lo, hi = positions[first] - 0.5, positions[-1] + 0.5
    ax.axvspan(lo, hi, color=OVERSUB_SHADE, zorder=0, linewidth=0)


def _plain(value, _pos=None) -> str:
    """Tick labels as numbers people read (300, 2k, 1.5M), not 3x10^2."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:g}{suffix}"
    return f"{value:g}"


def log_y(ax) -> None:
    """A log y axis labelled in plain numbers: 1-2-5 steps over up to 3 decades,
    decades beyond (more labels would not fit at 14 pt)."""
    import math
    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    decades = math.log10(hi / lo) if lo > 0 and hi > lo else 1
    subs = (1.0, 2.0, 5.0) if decades <= 3.2 else (1.0,) if decades <= 8 else (1.0,)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs, numticks=30))
    ax.yaxis.set_major_formatter(FuncFormatter(_plain))
    ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(3.0, 4.0, 6.0, 7.0, 8.0, 9.0)))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, p: ""))


def log_x(ax) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(_plain))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, p: ""))


def _vcpu_axis(ax, d: ReportData, vcpus: list[int] | None = None) -> None:
    """A log2 vCPU axis over every count of the report (or `vcpus`), the
    oversubscribed counts shaded."""
    vcpus = vcpus or d.vcpus
    ax.set_xscale("log", base=2)
    ax.set_xlim(vcpus[0] / 1.4, vcpus[-1] * 1.4)   # every panel spans every vCPU count
    ax.xaxis.set_major_locator(FixedLocator(vcpus))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(v) for v in vcpus])
    ax.set_xlabel("vCPUs")
    ax.grid(True, which="major", alpha=0.3)
    _shade_oversubscribed(ax, d, vcpus=vcpus)


def _oversub_handle(d: ReportData) -> tuple[list, list]:
    if not d.oversubscribed():
        return [], []
    from matplotlib.patches import Patch
    return [Patch(color=OVERSUB_SHADE)], [f"vCPUs > {d.cpus()} CPUs"]


def _style(d: ReportData, s: str) -> dict:
    return {"color": d.colors[s], "linestyle": "--" if s in d.emulated else "-",
            "marker": "s" if d.is_baseline(s) else "o", "linewidth": 2.4 if not d.is_baseline(s) else 1.8,
            "markersize": 7, "label": d.legend(s)}


def _marks(ax, d: ReportData, col: str, scale: float, s: str, xs: list, ys: list,
           outliers: bool = True) -> set:
    """Ring cells with a failed self-check; a cross at each single-run outlier
    (not for tail percentiles: one run's p99.9 is a handful of faults, and the
    crosses would hide the lines). Returns which kinds were drawn."""
    kinds = set()
    for x, y in zip(xs, ys):
        if d.view.failed_checks(s, x):
            ax.plot([x], [y], marker="o", markersize=17, markerfacecolor="none",
                    markeredgecolor=FAILED_RING, markeredgewidth=2.2, linestyle="none", zorder=5)
            kinds.add("failed")
        for value in (d.view.outliers(s, x, col) if outliers else []):
            if value and value > 0:
                ax.plot([x], [value * scale], marker="x", markersize=11, color=d.colors[s],
                        markeredgewidth=2.5, linestyle="none", zorder=5)
                kinds.add("outlier")
    return kinds


def _mark_handles(kinds: set) -> tuple[list, list]:
    handles, labels = [], []
    if "failed" in kinds:
        handles.append(Line2D([], [], marker="o", markersize=15, markerfacecolor="none",
                              markeredgecolor=FAILED_RING, markeredgewidth=2.2, linestyle="none"))
        labels.append("failed self-check (see warnings)")
    if "outlier" in kinds:
        handles.append(Line2D([], [], marker="x", markersize=11, color="#333333",
                              markeredgewidth=2.5, linestyle="none"))
        labels.append("single-run outlier")
    return handles, labels


def _series_lines(ax, d: ReportData, col: str, scale: float, series: list[str],
                  marks: set | None = None, col_of=None, outliers: bool = True) -> list[str]:
    """One line per series (median, bars min..max); returns the series drawn. All-zero
    series (a baseline's blocktime) are left out: a log axis cannot show them.
    `col_of(series)`: the column per series where it differs (baselines' first touch)."""
    drawn = []
    for s in series:
        c = col_of(s) if col_of else col
        st = d.column(c)
        if s not in st.index.get_level_values(0):
            continue
        sub = st.loc[s].sort_index()
        if not (sub["median"] > 0).any():
            continue
        x = sub.index.tolist()
        y = (sub["median"] * scale).tolist()
        lo = ((sub["median"] - sub["min"]) * scale).tolist()
        hi = ((sub["max"] - sub["median"]) * scale).tolist()
        ax.errorbar(x, y, yerr=[lo, hi], capsize=4, **_style(d, s))
        if marks is not None:
            marks |= _marks(ax, d, c, scale, s, x, y, outliers)
        drawn.append(s)
    return drawn


def _series_legend(d: ReportData, series: list[str], marks: set = frozenset(),
                   ncol: int | None = None) -> tuple:
    """Legend entries drawn as the lines are (dashed for emulated), one per series,
    then the marks and the shading."""
    handles = []
    for s in series:
        st = _style(d, s)
        st.pop("label")
        handles.append(Line2D([], [], **st))
    labels = [d.legend(s) for s in series]
    mh, ml = _mark_handles(set(marks))
    oh, ol = _oversub_handle(d)
    labels = labels + ml + ol
    return handles + mh + oh, labels, ncol or max(1, min(len(labels), 4))


def rate_vs_vcpus(d: ReportData) -> Figure | None:
    fig, ax = plt.subplots(figsize=SLIDE_INCHES)
    marks: set = set()
    if not _series_lines(ax, d, "pages_per_s", 1.0, d.series, marks):
        plt.close(fig)
        return None
    _vcpu_axis(ax, d)
    log_y(ax)   # baselines and mechanisms differ by orders of magnitude
    ax.set_ylabel("pages/s, all vCPUs (log)")
    title = "Demand-paging rate vs vCPUs"
    meaning = {"none": "none: no userfaultfd, the kernel zero-fills",
               "prefault": "prefault: memory written before the guest starts"}
    present = [meaning[d.mech_of[s]] for s in d.series if d.is_baseline(s)]
    cap = d.caption("Pages faulted in per second of guest time, all vCPUs together; median over "
                    "runs, bars min..max"
                    + (f"; squares: baselines ({'; '.join(present)})." if present else "."))
    _finish(fig, title, _series_legend(d, d.series, marks))
    return Figure("rate", title, cap, fig)


def fairness(d: ReportData) -> Figure | None:
    """Per-vCPU rate and finish time: min, median and max over a cell's vCPUs. (The
    mean per-vCPU rate is the overall rate over N, which the rate figure shows.)"""
    fig, (ax_rate, ax_fin) = plt.subplots(1, 2, figsize=SLIDE_INCHES)
    drawn = []
    for s in d.series:
        rows = [(v, d.view.fairness(s, v)) for v in d.vcpus]
        rows = [(v, f) for v, f in rows if f]
        if not rows:
            continue
        xs = [v for v, _ in rows]
        st = _style(d, s)
        for ax, key in ((ax_rate, "rate"), (ax_fin, "finish_s")):
            ax.fill_between(xs, [f[f"{key}_min"] for _, f in rows], [f[f"{key}_max"] for _, f in rows],
                            color=st["color"], alpha=0.15, linewidth=0)
            ax.plot(xs, [f[f"{key}_median"] for _, f in rows], **st)
            for stat, ls in (("min", ":"), ("max", ":")):
                ax.plot(xs, [f[f"{key}_{stat}"] for _, f in rows], color=st["color"],
                        linestyle=ls, linewidth=1.2)
        drawn.append(s)
    if not drawn:
        plt.close(fig)
        return None
    for ax in (ax_rate, ax_fin):
        _vcpu_axis(ax, d)
        log_y(ax)
    ax_rate.set_title("each vCPU's own paging rate")
    ax_rate.set_ylabel("pages/s per vCPU (log)")
    ax_fin.set_title("when each vCPU finished")
    ax_fin.set_ylabel("s after the first vCPU started (log)")
    handles, labels, _ = _series_legend(d, drawn)
    handles.append(Line2D([], [], color="#333333", linestyle=":", linewidth=1.2))
    labels.append("slowest and fastest vCPU (band between)")
    title = "Fairness: per-vCPU rate and finish time vs vCPUs"
    cap = d.caption("Per cell: the median vCPU (line), the slowest and the fastest (dotted, band "
                    "between), each the median over runs. A vCPU's rate is its pages over its own "
                    "window in the guest; its finish time counts from the first vCPU's start. "
                    "A wide band: some vCPUs are served far sooner than others.", drawn)
    _finish(fig, title, (handles, labels, 4))
    return Figure("fairness", title, cap, fig)


def latency_vs_vcpus(d: ReportData) -> Figure | None:
    panels = [("p50", "p50"), ("p99", "p99"), ("p99_9", "p99.9")]
    fig, axes = plt.subplots(1, 3, figsize=SLIDE_INCHES, sharey=True)
    drawn, marks = [], set()

    def col_of(s):   # a baseline delivers no fault: its first touch is the kernel's own path
        return "first_touch_latency_ns" if d.is_baseline(s) else "fault_latency_ns"

    hz = d.tick_hz()
    for ax, (key, name) in zip(axes, panels):
        drawn += _series_lines(ax, d, "", 1e-3, d.series, marks,
                               col_of=lambda s, key=key: f"{col_of(s)}.{key}",
                               outliers=key == "p50")
        _vcpu_axis(ax, d)
        log_y(ax)
        ax.set_title(f"{name}")
    if not drawn:
        plt.close(fig)
        return None
    ticks_drawn = False
    if hz:
        lo, hi = axes[0].get_ylim()
        tick_us = 1e6 / hz
        for k in (1, 2, 3):
            if lo < k * tick_us < hi:
                for ax in axes:
                    ax.axhline(k * tick_us, color="#555555", linestyle=(0, (1, 3)), linewidth=1.4)
                ticks_drawn = True
    axes[0].set_ylabel("fault latency, us (log)")
    drawn_u = list(dict.fromkeys(drawn))
    handles, labels, ncol = _series_legend(d, drawn_u, marks)
    if ticks_drawn:
        handles.append(Line2D([], [], color="#555555", linestyle=(0, (1, 3)), linewidth=1.4))
        labels.append(f"1, 2, 3 scheduler ticks (HZ={hz})")
    title = "Fault latency percentiles vs vCPUs"
    cap = d.caption("Each fault's latency as its vCPU saw it (guest rdtsc around the touch); "
                    "median over runs of each run's percentile, bars min..max. Baselines (squares) "
                    "deliver no fault to userspace: theirs is the first touch of a page, the "
                    "kernel's own fault path, so a tail the baselines share is the host's, not a "
                    "mechanism's. Crosses (single-run outliers) on p50 only."
                    + (f" Dotted: whole scheduler ticks ({1e3 / hz:g} ms at HZ={hz}); tails on them "
                       "are vCPUs waiting a tick for a CPU." if ticks_drawn else ""), drawn_u)
    _finish(fig, title, (handles, labels, ncol))
    return Figure("latency", title, cap, fig)


def latency_cdf(d: ReportData, at_vcpus: int) -> Figure | None:
    fig, (ax, tail) = plt.subplots(1, 2, figsize=SLIDE_INCHES, gridspec_kw={"width_ratios": [3, 2]})
    drawn, labels = [], []
    for s in d.series:
        hist = d.merged_hist(s, at_vcpus)
        if not hist:
            continue
        total = sum(hist.values())
        xs, ys, seen = [], [], 0
        for index, count in hist.items():
            lower, upper = stats.loglin_bucket_bounds(index)
            seen += count
            xs.append(upper / 1000)
            ys.append(seen / total)
        st = _style(d, s)
        st.pop("marker")
        label = st.pop("label")
        ax.step(xs, ys, where="post", **st)
        above = [(x, 1 - y) for x, y in zip(xs, ys) if 1 - y > 0]
        if above:
            tail.step([a for a, _ in above], [b for _, b in above], where="post", **st)
        drawn.append(s)
        labels.append(f"{label} ({total:,} faults)")
    if not drawn:
        plt.close(fig)
        return None
    for a in (ax, tail):
        log_x(a)
        a.set_xlabel("fault latency, us (log)")
        a.grid(True, which="major", alpha=0.3)
    ax.set_ylabel("fraction of faults at or below")
    ax.set_ylim(0, 1.02)
    ax.axhline(0.5, color="#999999", linewidth=0.8, linestyle=":")
    ax.set_title("distribution")
    log_y(tail)
    tail.set_ylabel("fraction slower (log)")
    tail.set_title("tail")
    for q in (1e-2, 1e-3):
        tail.axhline(q, color="#999999", linewidth=0.8, linestyle=":")
    hz = d.tick_hz()
    if hz:
        for k in (1, 2, 3):
            tail.axvline(k * 1e6 / hz, color="#555555", linestyle=(0, (1, 3)), linewidth=1.2)
    handles = []
    for s in drawn:
        st = _style(d, s)
        st.pop("label")
        st.pop("marker")
        handles.append(Line2D([], [], **st))
    cpus = d.cpus()
    over = cpus and at_vcpus > cpus
    title = (f"Fault latency distribution at {at_vcpus} vCPU{'s' if at_vcpus > 1 else ''}"
             + (f" ({at_vcpus / cpus:g}x the CPUs)" if over else ""))
    cap = d.caption(f"Every delivered fault's latency at {at_vcpus} vCPUs, all measured runs of a "
                    "cell pooled (log-linear histogram, buckets within 0.8%); right: the fraction of "
                    "faults slower than x (dotted: p99 and p99.9"
                    + (f"; vertical: 1-3 scheduler ticks at HZ={hz}" if hz else "") + ")."
                    + (f" {at_vcpus} vCPUs share {cpus} CPUs here, so this is mostly waiting for a "
                       "CPU." if over else " No vCPU waits for another's CPU here: the mechanism's "
                       "own distribution."), drawn, vcpu_axis=False)
    _finish(fig, title, (handles, labels, min(3, len(labels))))
    return Figure(f"latency_cdf_{at_vcpus}", title, cap, fig)


def _panel_grid(n: int, sharey: bool = False):
    cols = min(n, 3) if n != 4 else 2
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=SLIDE_INCHES, squeeze=False,
                             sharey=sharey, sharex=False)
    flat = axes.ravel().tolist()
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def breakdown_lines(d: ReportData) -> Figure | None:
    """Each segment's absolute mean time per fault vs vCPUs, one panel per mechanism
    on one shared log scale: growth by 100x stays visible (shares would hide it)."""
    mechs = [s for s in d.mechanisms()
             if d.has("fault_breakdown_ns.mean_fault_latency", d.runs[d.runs["series"] == s])]
    if not mechs:
        return None
    segments = d.segments()
    colors = {g: SEGMENT_COLORS[i % len(SEGMENT_COLORS)] for i, g in enumerate(segments)}
    fig, axes = _panel_grid(len(mechs), sharey=True)
    used = []
    for ax, s in zip(axes, mechs):
        vs = [v for v in d.vcpus if d.value("fault_breakdown_ns.mean_fault_latency", s, v)]
        ls = "--" if s in d.emulated else "-"
        totals = [d.value("fault_breakdown_ns.mean_fault_latency", s, v, "mean") / 1000 for v in vs]
        ax.plot(vs, totals, color="#000000", linestyle=ls, linewidth=2.6, marker="o")
        for g in segments:
            pts = [(v, d.value(f"fault_breakdown_ns.parts.{g}", s, v, "mean")) for v in vs]
            pts = [(v, val / 1000) for v, val in pts if val]
            if not pts:
                continue
            ax.plot([v for v, _ in pts], [y for _, y in pts], color=colors[g], linestyle=ls,
                    linewidth=1.8, marker=".", markersize=9)
            if g not in used:
                used.append(g)
        _vcpu_axis(ax, d)
        log_y(ax)
        ax.set_title(d.legend(s), color=d.colors[s])
        ax.set_ylabel("us per fault (log)")
    handles = [Line2D([], [], color="#000000", linewidth=2.6, marker="o")]
    labels = ["total (mean fault latency)"]
    handles += [Line2D([], [], color=colors[g], linewidth=1.8, marker=".", markersize=9) for g in used]
    labels += [g.replace("_", " ") for g in used]
    oh, ol = _oversub_handle(d)
    handles, labels = handles + oh, labels + ol
    title = "Where a fault's time goes: mean us per fault by segment"
    cap = d.caption("Mean time per fault in each segment, from per-fault timestamps, means over runs "
                    "(the parts add up to the total, drawn black); one log scale shared by every "
                    "panel. Segments a mechanism does not have are not drawn.")
    _finish(fig, title, (handles, labels, 1), side="right")
    return Figure("breakdown", title, cap, fig)


def lock_contention(d: ReportData, top_sites: int = 6) -> Figure | None:
    if d.traced.empty or not d.lock_sites():
        return None
    sites = d.lock_sites()[:top_sites]
    series = [s for s in d.series if any(not d.cell_rows(s, v, d.traced).empty for v in d.vcpus)]
    colors = {site: SITE_COLORS[i % len(SITE_COLORS)] for i, site in enumerate(sites)}
    fig, axes = plt.subplots(2, len(series), figsize=SLIDE_INCHES, squeeze=False, sharey="row")
    concentrated = False
    for j, s in enumerate(series):
        rows = d.traced[d.traced["series"] == s].sort_values("vcpus")
        # per fault: a traced run may walk only part of each vCPU's touches
        for i, (suffix, scale, ylabel) in enumerate(((".wait_ns", 1e-3, "wait, us per fault"),
                                                     (".count", 1e3, "contentions per 1k faults"))):
            ax = axes[i][j]
            for site in sites:
                col = f"lock_site.{site}{suffix}"
                if col not in rows.columns:
                    continue
                grouped = (rows[col] / lock_divisor(rows)).groupby(rows["vcpus"]).median().dropna()
                grouped = grouped[grouped > 0]
                if grouped.empty:
                    continue
                ax.plot(grouped.index, grouped.values * scale, marker="o", color=colors[site],
                        linestyle="--" if s in d.emulated else "-", linewidth=1.8)
            if i == 0:
                for v in d.vcpus:
                    if d.view.concentrated_locks(s, v):
                        ax.axvline(v, color=FAILED_RING, linewidth=1.6, linestyle="-.")
                        concentrated = True
            _vcpu_axis(ax, d)
            log_y(ax)
            ax.tick_params(axis="x", labelrotation=90)
            if j == 0:
                ax.set_ylabel(ylabel)
            if i == 0:
                ax.set_title(d.legend(s).replace(" (", "\n("), color=d.colors[s])
                ax.set_xlabel("")
    proxies = [Line2D([], [], color=colors[site], marker="o", linewidth=1.8) for site in sites]
    labels = list(sites)
    if concentrated:
        proxies.append(Line2D([], [], color=FAILED_RING, linewidth=1.6, linestyle="-."))
        labels.append("a few contentions make most of the wait (one event: see the lock table)")
    oh, ol = _oversub_handle(d)
    proxies, labels = proxies + oh, labels + ol
    title = "Kernel lock contention by call site vs vCPUs, per fault"
    src = d.lock_sources(series)
    how = (f"lock:contention_begin/end with the kernel call chain, per fault of the run that "
           "recorded it (per page for a mechanism that delivers no fault); the "
           f"{len(sites)} call sites with the most wait a fault over the whole report")
    if src["runs"]:
        how += ("; recorded by " + " and ".join(tracer_phrase(t) for t in src["runs"])
                + " in every measured run (summed over all runs), each point the median over "
                "the cell's measured runs that list the call site among their top locks")
    if src["traced"]:
        how += ("; " + ("cells with a traced run: " if src["runs"] else "")
                + "one traced run per cell, recorded by "
                + " and ".join(tracer_phrase(t) for t in src["traced"])
                + " (an extra run" + walk_phrase(src["least_share"])
                + ": headline numbers come from untraced runs)")
    how += "."
    cap = d.caption(how, series)
    _finish(fig, title, (proxies, labels, 2))
    return Figure("locks", title, cap, fig)


def blocktime(d: ReportData) -> Figure | None:
    if not d.has("blocktime_ns.all_vcpus"):
        return None
    fig, axes = plt.subplots(1, 2, figsize=SLIDE_INCHES, sharey=True)
    marks: set = set()
    drawn = set(_series_lines(axes[0], d, "blocktime_ns.all_vcpus", 1e-6, d.series, marks))
    drawn |= set(_series_lines(axes[1], d, "blocktime_ns.per_vcpu_mean", 1e-6, d.series, marks))
    for ax, t in zip(axes, ("all vCPUs blocked at once", "each vCPU blocked (mean over vCPUs)")):
        _vcpu_axis(ax, d)
        log_y(ax)
        ax.set_title(t)
    axes[0].set_ylabel("ms (log)")
    legend = _series_legend(d, [s for s in d.series if s in drawn], marks)
    title = "Blocktime vs vCPUs"
    cap = d.caption("As QEMU's postcopy-blocktime: time during which every vCPU waited on a fault "
                    "at once, and each vCPU's own waiting time; median over runs, bars min..max. "
                    "Baselines deliver no fault, so they have no blocktime.")
    _finish(fig, title, legend)
    return Figure("blocktime", title, cap, fig)


def cpu_by_role(d: ReportData) -> Figure | None:
    roles = d.roles()
    if not roles:
        return None
    role_colors = {r: ROLE_COLORS.get(r, SEGMENT_COLORS[i]) for i, r in enumerate(roles)}
    fig, axes = _panel_grid(len(d.series), sharey=True)
    for ax, s in zip(axes, d.series):
        vs = [v for v in d.vcpus if per_fault_divisor(d, s, v)]
        x = list(range(len(vs)))
        _shade_oversubscribed(ax, d, x, vs)
        bottom = [0.0] * len(vs)
        for r in roles:
            for part, hatch in (("user_ns", None), ("system_ns", "xx")):
                vals = [(d.value(f"cpu_by_role.{r}.{part}", s, v) or 0) / per_fault_divisor(d, s, v) / 1000
                        for v in vs]
                if not any(vals):
                    continue
                ax.bar(x, vals, bottom=bottom, color=role_colors[r], hatch=hatch,
                       edgecolor="white", linewidth=0.4)
                bottom = [b + val for b, val in zip(bottom, vals)]
        ax.set_xticks(x, [str(v) for v in vs])
        ax.tick_params(axis="x", labelrotation=90)
        ax.set_title(d.legend(s), color=d.colors[s])
        ax.set_ylabel("CPU us per fault")
    from matplotlib.patches import Patch
    handles = [Patch(facecolor=role_colors[r]) for r in roles]
    labels = [f"{r}" for r in roles]
    handles.append(Patch(facecolor="#bbbbbb", hatch="xx", edgecolor="white"))
    labels.append("hatched: system time (plain: user)")
    oh, ol = _oversub_handle(d)
    title = "CPU time per fault by thread role"
    cap = d.caption("User and system CPU time of each thread role over a run, divided by the faults "
                    "delivered (baselines: by the pages the kernel faulted in); medians over runs; one "
                    "y scale for every panel. On an oversubscribed host this includes time spent "
                    "spinning or waiting on CPU. The vCPUs' time includes the guest's own loop.")
    _finish(fig, title, (handles + oh, labels + ol, 3))
    return Figure("cpu_by_role", title, cap, fig)


def model_vs_measured(d: ReportData, model: dict | None) -> Figure | None:
    """The scaling model's predicted paging rate ("MODEL", dotted with diamonds)
    beside the measured one (solid), one panel per predicted host shape (P CPUs,
    MMU); `model`: build.load_model's, or None when no prediction was given."""
    if not model or not model.get("rows"):
        return None
    groups: dict = {}
    for row in model["rows"]:
        groups.setdefault((row["pcpus"], row.get("mmu")), []).append(row)
    keys = sorted(groups, key=lambda k: (k[0], str(k[1])))
    fig, axes = plt.subplots(1, len(keys), figsize=SLIDE_INCHES, sharey=True, squeeze=False)
    axes = axes[0].tolist()
    vs = sorted(set(d.vcpus) | {r["vcpus"] for r in model["rows"]})
    drawn_mechs = []
    for ax, key in zip(axes, keys):
        drawn = _series_lines(ax, d, "pages_per_s", 1.0, d.mechanisms())
        drawn_mechs += [s for s in drawn if s not in drawn_mechs]
        by_mech: dict = {}
        for row in groups[key]:
            by_mech.setdefault(row["mech"], []).append(row)
        for mech, rows in by_mech.items():
            rows.sort(key=lambda r: r["vcpus"])
            color = next((d.colors[s] for s in d.series if d.mech_of[s] == mech), "#555555")
            ax.plot([r["vcpus"] for r in rows], [r["pages_per_s"] for r in rows], color=color,
                    linestyle=(0, (1, 1.5)), linewidth=2.6, marker="D", markersize=7)
        _vcpu_axis(ax, d, vs)
        log_y(ax)
        ax.set_title(f"MODEL: P = {key[0]} CPUs" + (f", {key[1]} MMU" if key[1] else ""))
    axes[0].set_ylabel("pages/s, all vCPUs (log)")
    handles, labels, _ = _series_legend(d, drawn_mechs)
    handles.append(Line2D([], [], color="#333333", linestyle=(0, (1, 1.5)), linewidth=2.6, marker="D"))
    labels.append("MODEL prediction (same colour: same mechanism)")
    title = "Measured paging rate and the MODEL's prediction for bigger hosts"
    cap = d.caption("Solid: measured on this host (median, bars min..max). Dotted with diamonds: "
                    "the scaling model's prediction for a host of P CPUs, never a measurement. "
                    + model.get("provenance", ""))
    _finish(fig, title, (handles, labels, 3))
    return Figure("model", title, cap, fig)


def cdf_counts(d: ReportData, asked: list[int] | None) -> list[int]:
    """Where to draw the latency CDF: as asked, else the largest count that fits the
    CPUs (the mechanism's own distribution) and the largest of all (queueing)."""
    if asked:
        return asked
    cpus = d.cpus() or 1
    fits = [v for v in d.vcpus if v <= cpus]
    return sorted(set(([fits[-1]] if fits else []) + [d.vcpus[-1]]))


def figure_makers(d: ReportData, cdf_vcpus: list[int], model: dict | None = None) -> list:
    """One callable a figure, in the report's order; a callable returns None where its
    figure has nothing to show."""
    makers = [lambda: rate_vs_vcpus(d), lambda: model_vs_measured(d, model),
              lambda: fairness(d), lambda: latency_vs_vcpus(d)]
    makers += [lambda v=v: latency_cdf(d, v) for v in cdf_vcpus]
    makers += [lambda: breakdown_lines(d), lambda: lock_contention(d), lambda: blocktime(d),
               lambda: cpu_by_role(d)]
    return makers
