"""One loader for files and directories of records (bench.nightly.cells.load_records):
compare, ingest, export-pyperf, nightly --records, table and report read a sweep
directory as the sweep left it, its index.json skipped; anything else in a
directory that is not a record is refused in one line."""
import json
import os
import shutil
import sqlite3
import subprocess
import sys

import pytest

from bench import result as resultmod
from bench import sweep, table
from bench.nightly import cells

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "tests", "data")
EXAMPLE_INDEX = os.path.join(REPO, "report", "example", "records", "index.json")
# two real cells of one host, 5 runs each: compared with themselves, SAME everywhere
RECORDS = ("exits-v1.json", "exits-v2.json")


def run_bench(*args, timeout=300):
    done = subprocess.run([sys.executable, "run_bench.py", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def sweep_dir(tmp_path):
    """A sweep directory as `run_bench.py --out DIR` leaves it: records and the index."""
    d = tmp_path / "sweep"
    d.mkdir()
    for name in RECORDS:
        shutil.copy(os.path.join(DATA, name), d / name)
    shutil.copy(EXAMPLE_INDEX, d / sweep.INDEX_NAME)
    return d


def test_the_loader_knows_the_sweeps_index():
    # bench/sweep.py cannot be imported by the loader (it imports bench.table)
    assert cells.INDEX_NAME == sweep.INDEX_NAME and cells.INDEX_KIND == sweep.INDEX_KIND


def test_compare_dir_dir_on_a_sweep_directory(sweep_dir):
    rc, out, err = run_bench("compare", sweep_dir, sweep_dir)
    # read as records, every cell judged: SAME, or UNKNOWN where 5 live runs spread too
    # wide to bound a change (a statistics matter, not the loader's)
    assert rc == 0 and err == "" or rc == 2 and err.startswith("run_bench.py compare: error: no verdict ("), out + err
    assert "exits/sequential/v1/2MiB" in out and "exits/sequential/v2/2MiB" in out


def test_ingest_dir_stores_the_records(sweep_dir, tmp_path):
    db = tmp_path / "h.sqlite"
    rc, out, err = run_bench("ingest", sweep_dir, "--db", db)
    assert rc == 0 and "ingested 2 new record(s), 0 already present" in out, out + err
    con = sqlite3.connect(db)
    stored = sorted(json.loads(r[0])["config"]["vcpus"] for r in
                    con.execute("select record_json from records"))
    assert stored == [1, 2]
    rc, out, err = run_bench("ingest", sweep_dir, "--db", db)
    assert rc == 0 and "ingested 0 new record(s), 2 already present" in out, out + err


def test_export_pyperf_table_and_nightly_read_the_directory(sweep_dir, tmp_path):
    rc, out, err = run_bench("export-pyperf", sweep_dir, "--out-dir", tmp_path / "cells")
    assert rc == 0 and len(os.listdir(tmp_path / "cells")) == 2, out + err
    rc, out, err = run_bench("table", sweep_dir, "--csv", tmp_path / "t.csv")
    assert rc == 0 and "10 rows" in out, out + err   # 5 runs in each of 2 records
    rc, out, err = run_bench("nightly", "--records", sweep_dir, "--db", tmp_path / "n.sqlite",
                             "--out-dir", tmp_path / "nightly")
    # the first night has nothing to compare with: inconclusive, its records stored
    assert rc == 2, out + err
    assert json.load(open(tmp_path / "nightly" / "verdict.json"))["status"] == "inconclusive"


def test_a_json_in_a_directory_that_is_not_a_record_is_refused(sweep_dir):
    (sweep_dir / "notes.json").write_text('{"note": "not a record"}')
    rc, out, err = run_bench("compare", sweep_dir, sweep_dir)
    assert rc == 2 and out == "", out + err
    assert err == (f"run_bench.py compare: error: {sweep_dir / 'notes.json'}: "
                   "not a result record (no schema_version)\n")


def test_what_is_skipped_and_what_is_refused(sweep_dir):
    index = sweep_dir / sweep.INDEX_NAME
    assert [os.path.basename(p) for p, _r in cells.load_records([str(sweep_dir)])] == list(RECORDS)
    with pytest.raises(cells.BadInput, match="a sweep index, not a result record"):
        cells.load_records([str(index)])
    # the same index under another name is not the sweep's own: refused
    shutil.copy(index, sweep_dir / "copy.json")
    with pytest.raises(cells.BadInput, match="copy.json: a sweep index"):
        cells.load_records([str(sweep_dir)])
    os.unlink(sweep_dir / "copy.json")
    # an index.json that is not a sweep's index is just a file that is not a record
    index.write_text('{"kind": "something else"}')
    with pytest.raises(cells.BadInput, match="index.json: not a result record"):
        cells.load_records([str(sweep_dir)])
    os.unlink(index)
    # a record whose run did not finish: skipped in a directory, refused when named
    rec = json.load(open(sweep_dir / RECORDS[0]))
    (sweep_dir / "partial.json").write_text(json.dumps(dict(rec, incomplete=True)))
    assert len(cells.load_records([str(sweep_dir)])) == 2
    with pytest.raises(cells.BadInput, match="marked incomplete"):
        cells.load_records([str(sweep_dir / "partial.json")])
    # hidden files (write_atomic's temporaries) are not read; subdirectories are
    (sweep_dir / ".half-written.json").write_text("{")
    (sweep_dir / "more").mkdir()
    shutil.copy(os.path.join(DATA, "uffd-v1.json"), sweep_dir / "more" / "uffd-v1.json")
    assert len(cells.load_records([str(sweep_dir)])) == 3


def test_a_directory_without_records_is_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(cells.BadInput, match="no result record in this directory"):
        cells.load_records([str(empty)])
    shutil.copy(EXAMPLE_INDEX, empty / sweep.INDEX_NAME)   # a sweep that finished no cell
    with pytest.raises(table.TableError, match="no result record in this directory"):
        table.load_records([str(empty)])
    with pytest.raises(cells.BadInput, match="missing.json: no such file or directory"):
        cells.load_records([str(tmp_path / "missing.json")])


def test_every_committed_record_loads():
    """Both schema versions, as the harness wrote them; the old one is migrated."""
    names = sorted(f for f in os.listdir(DATA) if f.endswith(".json"))
    loaded = cells.load_records([DATA])
    assert [os.path.basename(p) for p, _r in loaded] == names
    assert all(r["schema_version"] == resultmod.SCHEMA_VERSION for _p, r in loaded)


def test_compare_and_ingest_on_a_real_sweep(kvm, tmp_path):
    """A tiny real sweep (needs /dev/kvm: the kvm fixture skips, naming it, without)."""
    out = tmp_path / "sweep"
    done = subprocess.run([sys.executable, "run_bench.py", "--vcpus", "1", "--mech", "exits,none",
                           "--mem-per-vcpu", "2", "--repeat", "5", "--no-trace-locks", "--no-fingerprint", "--quiet",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (out / sweep.INDEX_NAME).exists()
    rc, text, err = run_bench("compare", out, out)
    assert rc in (0, 2) and "exits/sequential/v1" in text and "none/sequential/v1" in text, text + err
    assert rc == 0 or err.startswith("run_bench.py compare: error: no verdict"), err
    rc, text, err = run_bench("ingest", out, "--db", tmp_path / "h.sqlite")
    assert rc == 0 and "ingested 2 new record(s)" in text, text + err
