"""Subcommands of `run_bench.py` beside the benchmark itself.

`run_bench.py NAME ARGS...` hands ARGS to NAME's `main(argv) -> int`; anything else
is a benchmark run. One line per subcommand: name -> (module, one-line summary).
"""
import importlib

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "table": ("bench.table", "export result records as one tidy table (CSV, Parquet)"),
    "report": ("bench.reporting.build", "figures and tables (HTML, Markdown, 80-column text) from records"),
}


def dispatch(argv: list[str]) -> int | None:
    """Run the subcommand named by argv[0]; None when argv is a benchmark run."""
    if not argv or argv[0] not in SUBCOMMANDS:
        return None
    module, _summary = SUBCOMMANDS[argv[0]]
    return importlib.import_module(module).main(argv[1:])
