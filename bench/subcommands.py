"""The subcommands of `run_bench.py` beside the benchmark itself, one line each:
name -> (module, one-line summary). Data only, so that the flags' help
(bench/options.py) can list them without importing any of them."""

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "table": ("bench.table", "export result records as one tidy table (CSV, Parquet)"),
    "report": ("bench.reporting.build", "figures and tables (HTML, Markdown, 80-column text) from records"),
    "ingest": ("bench.nightly.ingest", "load result records into the history database (SQLite or PostgreSQL)"),
    "history": ("bench.nightly.history", "change points in each cell's nightly series, host vs code"),
    "export-pyperf": ("bench.nightly.pyperf_export", "one cell's runs as pyperf JSON (for pyperf compare_to)"),
    "ab": ("bench.nightly.ab", "two configurations interleaved until SAME/DIFFERENT (or a cap)"),
    "nightly": ("bench.nightly.nightly", "sweep, ingest, compare with last night and history; exit 0/1/2/3"),
    "compare": ("bench.nightly.compare", "SAME/DIFFERENT/UNKNOWN per cell and metric, host fingerprint checked"),
    "plan": ("bench.jobs.plan", "a sweep as scheduler jobs (jsonl, GitHub matrix, Slurm array script)"),
    "run-job": ("bench.jobs.run_job", "run one job of a plan (a scheduler task); exit 0/1/2/75"),
    "import-selftest": ("bench.selftest_import", "demand_paging_test output as a result record (machine as stated)"),
    "calibrate": ("bench.model.calibrate", "calibrate the scaling model from one host's records (docs/MODEL.md)"),
    "model": ("bench.model.predict", "predict paging rate, latency, lock waits on P CPUs from a calibration"),
}
