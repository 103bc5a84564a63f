"""The tidy table: every committed example record, a row per cell and repetition."""
import copy
import json
import os
import subprocess
import sys

import pytest

from bench import result as resultmod
from bench import table

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORDS = os.path.join(REPO, "report", "example", "records")


@pytest.fixture(scope="module")
def records():
    return table.load_records([RECORDS])


def test_a_row_per_cell_and_repetition(records):
    df = table.build(records)
    expected = sum(len(r["runs"]) + len(r["warmups"]) + len(r.get("traced_runs", []))
                   for _, r in records)
    assert len(df) == expected
    assert df.groupby(["source", "kind", "rep"]).size().max() == 1
    # parameters and machine identity are columns, so hosts and cells can be told apart
    for col in ("mech", "vcpus", "workload", "mem_per_vcpu_mib", "machine.cpu_model",
                "machine.kernel_release", "machine.online_cpus", "machine.hostname", "label"):
        assert col in df.columns
    # each measured row carries its run's own numbers, not the summary
    path, rec = records[0]
    rows = df[(df["source"] == path) & (df["kind"] == "run")].sort_values("rep")
    assert rows["pages_per_s"].tolist() == [r["metrics"]["pages_per_s"] for r in rec["runs"]]
    units = df.attrs["units"]
    assert units["pages_per_s"] == "pages/s" and units["fault_latency_ns.p99"] == "ns"
    assert units["guest_seconds"] == "s"
    traced = df[df["kind"] == "traced"]
    assert not traced.empty and any(c.startswith("lock_site.") for c in df.columns)
    assert traced["kernel_locks.contentions"].notna().all()


def test_csv_and_parquet_export(tmp_path):
    csv, pq = tmp_path / "t.csv", tmp_path / "t.parquet"
    r = subprocess.run([sys.executable, "run_bench.py", "table", RECORDS, "--csv", str(csv),
                        "--parquet", str(pq), "--units"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "pages_per_s" in r.stdout and "pages/s" in r.stdout
    import pandas as pd
    import pyarrow.parquet as papq
    a = pd.read_csv(csv)
    b = pd.read_parquet(pq)
    assert len(a) == len(b) > 0 and list(a.columns) == list(b.columns)
    assert a["pages_per_s"].tolist() == pytest.approx(b["pages_per_s"].tolist())
    field = papq.read_schema(pq).field("fault_latency_ns.p50")
    assert field.metadata[b"unit"] == b"ns"


def test_records_from_two_hosts_stay_apart(records, tmp_path):
    path, rec = records[0]
    other = copy.deepcopy(rec)
    other["machine"]["hostname"] = "other-host"
    other["machine"]["boot_id"] = "another-boot"
    (tmp_path / "a.json").write_text(json.dumps(rec))
    (tmp_path / "b.json").write_text(json.dumps(other))
    df = table.load_table([str(tmp_path)])
    assert df["machine.hostname"].nunique() == 2 and df["cell"].nunique() == 2


@pytest.mark.parametrize("content, reason", ids=["newer", "zero", "no-version", "cut-short",
                                                 "deep-nesting", "wrong-type", "no-cell"],
                         argvalues=[
    ('{"schema_version": 99, "runs": []}', "newer than this harness"),
    ('{"schema_version": 0}', "not a result record"),
    ('{"config": {}}', "no schema_version"),
    ('[1, 2', "not JSON"),
    ('[' * 100000 + ']' * 100000, "not"),
    ('{"schema_version": 1, "runs": "x"}', "not a usable result record"),
    (None, "config.vcpus: 'many' is not of type 'integer'"),
])
def test_bad_records_are_refused_in_one_line(tmp_path, content, reason):
    bad = tmp_path / "bad.json"
    if content is None:   # a valid record whose cell has no vCPU count
        rec = table.load_records([RECORDS])[0][1]
        rec["config"]["vcpus"] = "many"
        content = json.dumps(rec)
    bad.write_text(content)
    r = subprocess.run([sys.executable, "run_bench.py", "table", str(bad), "--csv",
                        str(tmp_path / "o.csv")], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and reason in r.stderr, r.stderr
    assert not (tmp_path / "o.csv").exists()


def test_older_schema_is_migrated(records, monkeypatch, tmp_path):
    """A record of the version before the current one goes through its update_to_N."""
    path, rec = records[0]
    old = copy.deepcopy(rec)
    old["schema_version"] = resultmod.SCHEMA_VERSION
    calls = []
    current = resultmod.SCHEMA_VERSION

    def update(r):
        calls.append(r["schema_version"])
        return r
    monkeypatch.setattr(resultmod, "SCHEMA_VERSION", current + 1)
    monkeypatch.setitem(resultmod.MIGRATIONS, current + 1, update)
    (tmp_path / "old.json").write_text(json.dumps(old))
    loaded = table.load_records([str(tmp_path / "old.json")])
    assert calls == [current] and loaded[0][1]["schema_version"] == current + 1


def test_sweep_index_and_incomplete_records_in_a_directory_are_skipped(records, tmp_path):
    path, rec = records[0]
    (tmp_path / "r.json").write_text(json.dumps(rec))
    (tmp_path / "index.json").write_text(json.dumps({"kind": table.INDEX_KIND, "cells": []}))
    (tmp_path / "partial.json").write_text(json.dumps(dict(rec, incomplete=True)))
    assert len(table.load_records([str(tmp_path)])) == 1
    with pytest.raises(table.TableError, match="sweep index"):
        table.load_records([str(tmp_path / "index.json")])
