"""Subcommands of `run_bench.py` beside the benchmark itself.

`run_bench.py NAME ARGS...` hands ARGS to NAME's `main(argv) -> int`; anything else
is a benchmark run. One line per subcommand: name -> (module, one-line summary).
"""
import importlib
import subprocess
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "table": ("bench.table", "export result records as one tidy table (CSV, Parquet)"),
    "report": ("bench.reporting.build", "figures and tables (HTML, Markdown, 80-column text) from records"),
    "ingest": ("bench.nightly.ingest", "load result records into the history database (SQLite or PostgreSQL)"),
    "history": ("bench.nightly.history", "change points in each cell's nightly series, host vs code"),
    "export-pyperf": ("bench.nightly.pyperf_export", "one cell's runs as pyperf JSON (for pyperf compare_to)"),
    "ab": ("bench.nightly.ab", "two configurations interleaved until SAME/DIFFERENT (or a cap)"),
    "nightly": ("bench.nightly.nightly", "sweep, ingest, compare with last night and history; exit 0/1/2/3"),
    "compare": ("bench.nightly.compare", "SAME/DIFFERENT/UNKNOWN per cell and metric, host fingerprint checked"),
}


def dispatch(argv: list[str]) -> int | None:
    """Run the subcommand named by argv[0]; None when argv is a benchmark run."""
    if not argv or argv[0] not in SUBCOMMANDS:
        return None
    module, _summary = SUBCOMMANDS[argv[0]]
    return importlib.import_module(module).main(argv[1:])


def run_benchmark(argv: list[str]) -> tuple[int, str]:
    """Run the benchmark as its own invocation (its own host lock, fingerprint and
    clean-up, as from a shell): (exit status, what it printed on stdout). Its
    stderr goes to ours, so its one-line errors reach the user."""
    done = subprocess.run([sys.executable, "-m", "bench", *argv], stdout=subprocess.PIPE, text=True)
    return done.returncode, done.stdout

