"""`run_bench.py ingest RECORDS... [--db URL]`: load result records into the history.

RECORDS are files or directories (a sweep directory as it is:
bench.nightly.cells.load_records). Every file is read and validated before anything
is written, and all go in one transaction: a bad file leaves the database as it was
(exit 2). Records already present (same content hash) are skipped, so ingesting
twice changes nothing.
"""
import argparse
import sys

from bench.cmdline import OneLineParser

from .cells import BadInput, load_records
from .store import Store, StoreError


def add_db_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", help="SQLAlchemy URL (postgresql+psycopg://user@host/db) or SQLite "
                                "file path (default: $FAULTBENCH_DB, else results/history.sqlite)")


def main(argv=None) -> int:
    p = OneLineParser(prog="run_bench.py ingest", description=__doc__.splitlines()[0])
    p.add_argument("records", nargs="+",
                   help="result files or directories (a sweep directory as it is)")
    add_db_argument(p)
    a = p.parse_args(argv)
    try:
        recs = [r for _path, r in load_records(a.records)]
        store = Store(a.db)
    except (BadInput, StoreError) as exc:
        print(f"run_bench.py ingest: error: {exc}", file=sys.stderr)
        return 2
    try:
        done = store.ingest(recs)
    finally:
        store.close()
    print(f"ingested {len(done.added)} new record(s), {len(done.present)} already present "
          f"({store.url.split('?')[0]})")
    return 0
