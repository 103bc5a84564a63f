"""Reports for design reviews and mailing lists, from one results table
(bench/table.py): figures, 80-column text, Markdown and a self-contained HTML page.
`run_bench.py report` runs `build.main`."""
from .build import generate, main  # noqa: F401
