"""`python -m bench ARGS`: the same command as run_bench.py, for tools that run
the benchmark as a separate invocation (ab, nightly) wherever it is installed."""
from .entry import entry

entry()
