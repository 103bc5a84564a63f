"""Reports from result files, the module form of `run_bench.py report|compare`.

    python -m bench.report RECORDS... [--out DIR]     (the full report: bench/reporting/)
    python -m bench.report scaling results/*.json [--out report/]
    python -m bench.report compare BASELINE NEW        (the nightly verdict: bench/nightly/)
"""
import os
import sys

from . import result as resultmod
from .cmdline import OneLineParser

def load_all(paths: list[str]) -> list[dict]:
    return [resultmod.load(p) for p in paths]


def label(rec: dict) -> str:
    c = rec["config"]
    name = c["mech"]
    if c.get("resolve") == "continue":
        name += "/continue"
    per = c.get("readers_per_uffd", c.get("resolvers", 1))
    if per > 1:
        name += f"/r{per}"
    if c.get("fetch") == "worker":
        name += "/worker"
    if rec["emulated"]:
        name += " (EMULATED)"
    return name


def _median(rec, path):
    s = rec["summary"].get(path)
    return None if s is None else s["median"]


def _range(rec, path):
    s = rec["summary"].get(path)
    return None if s is None else (s["min"], s["max"])


def scaling(records: list[dict], out_dir: str, name: str = "scaling") -> list[str]:
    """Paging rate and fault latency against vCPU count, one line per mechanism."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[tuple, list[dict]] = {}
    for r in records:
        series.setdefault((label(r), r["config"]["workload"]), []).append(r)
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    panels = [("pages_per_s", "overall paging rate (pages/s)", 1.0),
              ("fault_latency_ns.p50", "fault latency p50 (us)", 1e-3),
              ("fault_latency_ns.p99", "fault latency p99 (us)", 1e-3)]
    for ax, (path, title, scale) in zip(axes, panels):
        for (lab, wl), recs in sorted(series.items()):
            recs = sorted((r for r in recs if _median(r, path) is not None),
                          key=lambda r: r["config"]["vcpus"])
            if not recs:
                continue
            x = [r["config"]["vcpus"] for r in recs]
            y = [_median(r, path) * scale for r in recs]
            lo = [y_ - _range(r, path)[0] * scale for y_, r in zip(y, recs)]
            hi = [_range(r, path)[1] * scale - y_ for y_, r in zip(y, recs)]
            ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=3,
                        linestyle="--" if "EMULATED" in lab else "-", label=f"{lab} [{wl}]")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")   # baselines and mechanisms differ by orders of magnitude
        ax.set_xlabel("vCPUs")
        ax.set_title(title + "\nmedian over runs, bars: min..max")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    m = records[0]["machine"]
    fig.suptitle(f"faultbench on {m.get('online_cpus')} CPUs ({m.get('cpu_model')}), "
                 f"kernel {m.get('kernel_release')}; "
                 f"{records[0]['config']['mem_per_vcpu_mib']} MiB per vCPU", fontsize=10)
    notes = sorted({r["emulation_reason"] for r in records if r["emulated"]})
    if notes:
        fig.text(0.01, 0.01, "EMULATED: " + " | ".join(notes), fontsize=7, wrap=True)
    fig.tight_layout(rect=(0, 0.06 if notes else 0, 1, 0.95))
    os.makedirs(out_dir, exist_ok=True)
    png = os.path.join(out_dir, f"{name}.png")
    fig.savefig(png, dpi=110)
    plt.close(fig)
    md = os.path.join(out_dir, f"{name}.md")
    with open(md, "w") as f:
        f.write(table(records))
        if notes:
            f.write("\nEMULATED: " + "\n\nEMULATED: ".join(notes) + "\n")
    return [png, md]


def table(records: list[dict]) -> str:
    rows = ["| mechanism | workload | vCPUs | runs | pages/s median [min..max] | p50 us | p99 us | "
            "p99.9 us | all-vCPU blocktime ms | content errors |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: (label(r), r["config"]["workload"], r["config"]["vcpus"])):
        s = r["summary"]
        def us(path):
            v = _median(r, path)
            return "-" if v is None else f"{v / 1000:.1f}"
        bt = _median(r, "blocktime_ns.all_vcpus")
        errors = sum(run["metrics"]["content_errors"] for run in r["runs"])
        rows.append(f"| {label(r)} | {r['config']['workload']} | {r['config']['vcpus']} | {len(r['runs'])} | "
                    f"{s['pages_per_s']['median']:.0f} [{s['pages_per_s']['min']:.0f}..{s['pages_per_s']['max']:.0f}] | "
                    f"{us('fault_latency_ns.p50')} | {us('fault_latency_ns.p99')} | {us('fault_latency_ns.p99_9')} | "
                    f"{'-' if bt is None else f'{bt / 1e6:.2f}'} | {errors} |")
    return "\n".join(rows) + "\n"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compare"]:
        # the nightly verdict (rank test, effect size, host fingerprint): bench/nightly/
        # deferred: scipy.stats costs a second of start-up
        from .nightly.compare import main as compare_main
        return compare_main(argv[1:], prog="python -m bench.report compare", error_prefix="bench.report")
    if argv and argv[0] not in ("scaling", "compare", "-h", "--help"):
        # deferred: pandas and matplotlib load only for a report (RECORDS... [--out DIR])
        from .reporting.build import main as full_report
        return full_report(argv)
    p = OneLineParser(prog="python -m bench.report", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("scaling", help="plot and table of result files against vCPU count")
    s.add_argument("results", nargs="+")
    s.add_argument("--out", default="report")
    s.add_argument("--name", default="scaling")
    sub.add_parser("compare", help="SAME / DIFFERENT / UNKNOWN per cell and metric (exit 1: DIFFERENT and worse)")
    a = p.parse_args(argv)
    try:
        for path in scaling(load_all(a.results), a.out, a.name):
            print(path)
        return 0
    except (OSError, ValueError, KeyError) as exc:
        print(f"bench.report: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
