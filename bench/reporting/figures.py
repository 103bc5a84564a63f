"""The report's figures, sized for a 16:9 slide, each captioned with the machine
and the config. Emulated mechanisms are dashed and say so in every legend."""
from __future__ import annotations

import textwrap
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, NullLocator  # noqa: E402

from .. import stats  # noqa: E402
from .data import ReportData  # noqa: E402
from .tables import per_fault_divisor  # noqa: E402

SLIDE_INCHES = (13.33, 7.5)      # 16:9, a full slide at 100% zoom
PNG_DPI = 120
plt.rcParams.update({"font.size": 13, "axes.titlesize": 14, "axes.labelsize": 13,
                     "legend.fontsize": 11, "xtick.labelsize": 11, "ytick.labelsize": 11,
                     "svg.fonttype": "none", "figure.dpi": 100})
# tab20 reordered so neighbours in a stack differ strongly
SEGMENT_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                  "#7f7f7f", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896",
                  "#c5b0d5", "#c49c94"]


@dataclass
class Figure:
    name: str          # file stem
    title: str
    caption: str
    fig: object        # matplotlib Figure


def _finish(fig, title: str, caption: str, legend: tuple | None = None) -> None:
    """Title on top; at the bottom the caption (machine, config, emulation), and
    above it the figure's shared legend, if any: (handles, labels, ncol)."""
    lines = textwrap.wrap(caption, 170)
    fig.suptitle(title, fontsize=16, fontweight="bold")
    fig.text(0.01, 0.012, "\n".join(lines), fontsize=9.5, va="bottom", ha="left", color="#333333")
    caption_top = 0.018 + 0.0215 * len(lines)
    bottom = caption_top + 0.01
    if legend and legend[1]:
        handles, labels, ncol = legend
        rows = (len(labels) + ncol - 1) // ncol
        fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False,
                   bbox_to_anchor=(0.5, caption_top + 0.005))
        bottom += 0.042 * rows + 0.01
    fig.tight_layout(rect=(0, bottom, 1, 0.95))


def _vcpu_axis(ax, vcpus: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xlim(vcpus[0] / 1.4, vcpus[-1] * 1.4)   # every panel spans every vCPU count
    ax.xaxis.set_major_locator(FixedLocator(vcpus))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(v) for v in vcpus])
    ax.set_xlabel("vCPUs")
    ax.grid(True, which="major", alpha=0.3)


def _style(d: ReportData, s: str) -> dict:
    return {"color": d.colors[s], "linestyle": "--" if s in d.emulated else "-",
            "marker": "s" if d.is_baseline(s) else "o", "linewidth": 2.2 if not d.is_baseline(s) else 1.6,
            "markersize": 6, "label": d.legend(s)}


def _series_lines(ax, d: ReportData, col: str, scale: float, series: list[str]) -> list[str]:
    """One line per series (median, bars min..max); returns the series drawn. All-zero
    series (a baseline's blocktime) are left out: a log axis cannot show them."""
    st = d.column(col)
    drawn = []
    for s in series:
        if s not in st.index.get_level_values(0):
            continue
        sub = st.loc[s].sort_index()
        if not (sub["median"] > 0).any():
            continue
        x = sub.index.tolist()
        y = (sub["median"] * scale).tolist()
        lo = ((sub["median"] - sub["min"]) * scale).tolist()
        hi = ((sub["max"] - sub["median"]) * scale).tolist()
        ax.errorbar(x, y, yerr=[lo, hi], capsize=3, **_style(d, s))
        drawn.append(s)
    return drawn


def _series_legend(d: ReportData, series: list[str], ncol: int | None = None) -> tuple:
    """Legend entries drawn as the lines are (dashed for emulated), one per series."""
    from matplotlib.lines import Line2D
    handles = []
    for s in series:
        st = _style(d, s)
        label = st.pop("label")
        handles.append(Line2D([], [], **st))
    labels = [d.legend(s) for s in series]
    return handles, labels, ncol or max(1, min(len(labels), 6))


def _legend_of(axes, ncol: int | None = None) -> tuple:
    """One legend for several panels: each label once, in first-seen order."""
    handles, labels = {}, []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    ncol = ncol or max(1, min(len(labels), 6))
    return [handles[lab] for lab in labels], labels, ncol


def rate_vs_vcpus(d: ReportData, per_vcpu: bool = False) -> Figure | None:
    col = "pages_per_s_per_vcpu" if per_vcpu else "pages_per_s"
    fig, ax = plt.subplots(figsize=SLIDE_INCHES)
    if not _series_lines(ax, d, col, 1.0, d.series):
        plt.close(fig)
        return None
    _vcpu_axis(ax, d.vcpus)
    ax.set_yscale("log")   # baselines and mechanisms differ by orders of magnitude
    ax.set_ylabel("pages/s per vCPU" if per_vcpu else "pages/s (all vCPUs)")
    title = ("Per-vCPU paging rate vs vCPUs" if per_vcpu
             else "Demand-paging rate vs vCPUs, per mechanism")
    what = ("A vCPU's pages per second of the whole run's guest time (the KVM selftest's "
            "per-vcpu demand paging rate); "
            if per_vcpu else "Pages faulted in per second of guest time, all vCPUs together; ")
    meaning = {"none": "none: no userfaultfd, the kernel zero-fills",
               "prefault": "prefault: memory written before the guest starts"}
    present = [meaning[d.mech_of[s]] for s in d.series if d.is_baseline(s)]
    cap = d.caption(what + "median over runs, bars min..max"
                    + (f"; squares: baselines ({'; '.join(present)})." if present else "."))
    _finish(fig, title, cap, _series_legend(d, d.series))
    return Figure("rate_per_vcpu" if per_vcpu else "rate", title, cap, fig)


def latency_vs_vcpus(d: ReportData) -> Figure | None:
    mechs = d.mechanisms()
    panels = [("p50", "p50"), ("p99", "p99"), ("p99_9", "p99.9")]
    fig, axes = plt.subplots(1, 3, figsize=SLIDE_INCHES, sharey=True)
    drawn = []
    for ax, (key, name) in zip(axes, panels):
        drawn += _series_lines(ax, d, f"fault_latency_ns.{key}", 1e-3, mechs)
        _vcpu_axis(ax, d.vcpus)
        ax.set_yscale("log")
        ax.set_title(f"fault latency {name}")
    if not drawn:
        plt.close(fig)
        return None
    axes[0].set_ylabel("us (log scale)")
    legend = _series_legend(d, [s for s in mechs if s in drawn])
    title = "Fault latency percentiles vs vCPUs"
    cap = d.caption("Each fault's latency as its vCPU saw it (guest rdtsc around the touch); "
                    "median over runs of each run's percentile, bars min..max. Baselines deliver "
                    "no fault to userspace and are left out.", [s for s in mechs if s in drawn])
    _finish(fig, title, cap, legend)
    return Figure("latency", title, cap, fig)


def latency_cdf(d: ReportData, at_vcpus: int) -> Figure | None:
    fig, (ax, tail) = plt.subplots(1, 2, figsize=SLIDE_INCHES, gridspec_kw={"width_ratios": [3, 2]})
    drawn = []
    for s in d.mechanisms():
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
        st["label"] += f"  ({total:,} faults)"
        ax.step(xs, ys, where="post", **st)
        # the tail on a log scale: what fraction of faults took longer than x
        above = [(x, 1 - y) for x, y in zip(xs, ys) if 1 - y > 0]
        if above:
            st.pop("label")
            tail.step([a for a, _ in above], [b for _, b in above], where="post", **st)
        drawn.append(s)
    if not drawn:
        plt.close(fig)
        return None
    for a in (ax, tail):
        a.set_xscale("log")
        a.set_xlabel("fault latency, us (log scale)")
        a.grid(True, which="major", alpha=0.3)
    ax.set_ylabel("fraction of faults at or below")
    ax.set_ylim(0, 1.02)
    ax.axhline(0.5, color="#999999", linewidth=0.8, linestyle=":")
    ax.set_title("distribution")
    tail.set_yscale("log")
    tail.set_ylabel("fraction of faults slower (log scale)")
    tail.set_title("tail")
    for q in (1e-2, 1e-3):
        tail.axhline(q, color="#999999", linewidth=0.8, linestyle=":")
    ax.legend(loc="lower right", framealpha=0.9)
    title = f"Fault latency distribution at {at_vcpus} vCPUs"
    cap = d.caption(f"Every delivered fault's latency at {at_vcpus} vCPUs, all measured runs of a "
                    "cell pooled (log-linear histogram, buckets within 0.8%); right: the same as the "
                    "fraction of faults slower than x (dotted: p99 and p99.9).", drawn)
    _finish(fig, title, cap)
    return Figure(f"latency_cdf_{at_vcpus}", title, cap, fig)


def _panel_grid(n: int):
    cols = min(n, 3) if n != 4 else 2
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=SLIDE_INCHES, squeeze=False)
    flat = axes.ravel().tolist()
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def breakdown_bars(d: ReportData) -> Figure | None:
    mechs = [s for s in d.mechanisms()
             if d.has("fault_breakdown_ns.mean_fault_latency", d.runs[d.runs["series"] == s])]
    if not mechs:
        return None
    segments = d.segments()
    colors = {g: SEGMENT_COLORS[i % len(SEGMENT_COLORS)] for i, g in enumerate(segments)}
    fig, axes = _panel_grid(len(mechs))
    for ax, s in zip(axes, mechs):
        vs = [v for v in d.vcpus if d.value("fault_breakdown_ns.mean_fault_latency", s, v)]
        x = list(range(len(vs)))
        bottom = [0.0] * len(vs)
        # means over runs: the parts' means add up to the total's mean (medians need not)
        totals = [d.value("fault_breakdown_ns.mean_fault_latency", s, v, "mean") for v in vs]
        for g in segments:
            vals = [d.value(f"fault_breakdown_ns.parts.{g}", s, v, "mean") for v in vs]
            if all(val is None for val in vals):
                continue
            share = [(val or 0) / t * 100 for val, t in zip(vals, totals)]
            ax.bar(x, share, bottom=bottom, color=colors[g], label=g.replace("_", " "),
                   edgecolor="white", linewidth=0.4, hatch="//" if s in d.emulated else None)
            bottom = [b + sh for b, sh in zip(bottom, share)]
        for xi, t in zip(x, totals):
            ax.text(xi, 101, _us(t), ha="center", va="bottom", fontsize=9)
        ax.set_xticks(x, [str(v) for v in vs])
        ax.set_ylim(0, 114)
        ax.set_yticks([0, 25, 50, 75, 100])
        ax.set_title(d.legend(s), color=d.colors[s])
        ax.set_xlabel("vCPUs")
        ax.set_ylabel("% of mean fault time")
    legend = _legend_of(axes, ncol=4)
    title = "Where a fault's time goes, per mechanism and vCPU count"
    cap = d.caption("Mean time per fault split into segments from per-fault timestamps "
                    "(shares of the total; the mean total per fault is written above each bar); "
                    "means over runs. Hatched: emulated.")
    _finish(fig, title, cap, legend)
    return Figure("breakdown", title, cap, fig)


def _us(ns: float) -> str:
    us = ns / 1000
    return f"{us / 1000:.1f} ms" if us >= 1000 else f"{us:.0f} us"


def lock_contention(d: ReportData, top_sites: int = 6) -> Figure | None:
    if d.traced.empty or not d.lock_sites():
        return None
    sites = d.lock_sites()[:top_sites]
    series = [s for s in d.series if not d.cell_rows(s, d.vcpus[-1], d.traced).empty
              or any(not d.cell_rows(s, v, d.traced).empty for v in d.vcpus)]
    palette = SEGMENT_COLORS
    colors = {site: palette[i % len(palette)] for i, site in enumerate(sites)}
    fig, axes = plt.subplots(2, len(series), figsize=SLIDE_INCHES, squeeze=False, sharey="row")
    for j, s in enumerate(series):
        rows = d.traced[d.traced["series"] == s].sort_values("vcpus")
        for i, (suffix, scale, ylabel) in enumerate(((".wait_ns", 1e-6, "wait, ms"),
                                                     (".count", 1.0, "contentions"))):
            ax = axes[i][j]
            for site in sites:
                col = f"lock_site.{site}{suffix}"
                if col not in rows.columns:
                    continue
                grouped = rows.groupby("vcpus")[col].median().dropna()
                grouped = grouped[grouped > 0]
                if grouped.empty:
                    continue
                ax.plot(grouped.index, grouped.values * scale, marker="o", color=colors[site],
                        linestyle="--" if s in d.emulated else "-", label=site, linewidth=1.8)
            _vcpu_axis(ax, d.vcpus)
            ax.set_yscale("log")
            ax.tick_params(axis="x", labelsize=9, labelrotation=90)
            if j == 0:
                ax.set_ylabel(ylabel)
            if i == 0:
                ax.set_title(d.legend(s).replace(" (", "\n("), color=d.colors[s], fontsize=12)
            if i == 0:
                ax.set_xlabel("")
    from matplotlib.lines import Line2D
    proxies = [Line2D([], [], color=colors[site], marker="o", linewidth=1.8) for site in sites]
    legend = (proxies, sites, 3)
    title = "Kernel lock contention by call site vs vCPUs"
    cap = d.caption(f"lock:contention_begin/end in a private tracefs instance with the kernel call "
                    f"chain; the {len(sites)} call sites with the most wait over the whole report; "
                    "one traced run per cell (extra runs: headline numbers come from untraced runs). "
                    "Dashed: emulated.", series)
    _finish(fig, title, cap, legend)
    return Figure("locks", title, cap, fig)


def blocktime(d: ReportData) -> Figure | None:
    if not d.has("blocktime_ns.all_vcpus"):
        return None
    fig, axes = plt.subplots(1, 2, figsize=SLIDE_INCHES)
    drawn = set(_series_lines(axes[0], d, "blocktime_ns.all_vcpus", 1e-6, d.series))
    drawn |= set(_series_lines(axes[1], d, "blocktime_ns.per_vcpu_mean", 1e-6, d.series))
    for ax, t in zip(axes, ("all vCPUs blocked at once", "each vCPU blocked (mean over vCPUs)")):
        _vcpu_axis(ax, d.vcpus)
        ax.set_yscale("log")
        ax.set_title(t)
        ax.set_ylabel("ms (log scale)")
    legend = _series_legend(d, [s for s in d.series if s in drawn])
    title = "Blocktime vs vCPUs"
    cap = d.caption("As QEMU's postcopy-blocktime: time during which every vCPU waited on a fault "
                    "at once, and each vCPU's own waiting time; median over runs, bars min..max. "
                    "Baselines deliver no fault, so they have no blocktime.")
    _finish(fig, title, cap, legend)
    return Figure("blocktime", title, cap, fig)


def cpu_by_role(d: ReportData) -> Figure | None:
    roles = d.roles()
    if not roles:
        return None
    role_colors = {r: SEGMENT_COLORS[i] for i, r in enumerate(roles)}
    fig, axes = _panel_grid(len(d.series))
    for ax, s in zip(axes, d.series):
        vs = [v for v in d.vcpus if per_fault_divisor(d, s, v)]
        x = list(range(len(vs)))
        bottom = [0.0] * len(vs)
        for r in roles:
            for part, hatch, alpha in (("user_ns", None, 1.0), ("system_ns", "xx", 0.6)):
                vals = [(d.value(f"cpu_by_role.{r}.{part}", s, v) or 0) / per_fault_divisor(d, s, v) / 1000
                        for v in vs]
                if not any(vals):
                    continue
                ax.bar(x, vals, bottom=bottom, color=role_colors[r], alpha=alpha, hatch=hatch,
                       edgecolor="white", linewidth=0.4,
                       label=f"{r} {'user' if part == 'user_ns' else 'system'}")
                bottom = [b + val for b, val in zip(bottom, vals)]
        ax.set_xticks(x, [str(v) for v in vs], fontsize=10)
        ax.set_title(d.legend(s), color=d.colors[s])
        ax.set_xlabel("vCPUs")
        ax.set_ylabel("CPU us per fault")
    legend = _legend_of(axes, ncol=4)
    title = "CPU time per fault by thread role"
    cap = d.caption("User and system CPU time of each thread role over a run, divided by the faults "
                    "delivered (baselines: by the pages the kernel faulted in); medians over runs. "
                    "On an oversubscribed host this includes time spent spinning or waiting on CPU.")
    _finish(fig, title, cap, legend)
    return Figure("cpu_by_role", title, cap, fig)


def all_figures(d: ReportData, cdf_vcpus: int) -> list[Figure]:
    makers = [lambda: rate_vs_vcpus(d), lambda: rate_vs_vcpus(d, per_vcpu=True),
              lambda: latency_vs_vcpus(d), lambda: latency_cdf(d, cdf_vcpus),
              lambda: breakdown_bars(d), lambda: lock_contention(d), lambda: blocktime(d),
              lambda: cpu_by_role(d)]
    return [f for f in (m() for m in makers) if f is not None]
