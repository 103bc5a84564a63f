"""`run_bench.py NAME ARGS...` hands ARGS to subcommand NAME's `main(argv) -> int`
(bench/subcommands.py lists them); anything else is a benchmark run."""
import importlib

from .subcommands import SUBCOMMANDS


def dispatch(argv: list[str]) -> int | None:
    """Run the subcommand named by argv[0]; None when argv is a benchmark run."""
    if not argv or argv[0] not in SUBCOMMANDS:
        return None
    module, _summary = SUBCOMMANDS[argv[0]]
    # deferred: only the subcommand asked for is loaded (tests/test_imports.py counts these edges)
    return importlib.import_module(module).main(argv[1:])
