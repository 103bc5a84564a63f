"""Reports, the module-form verdict, validation and migration, from records committed
in tests/data (real runs of this machine kind: exits and uffd at 1 and 2 vCPUs, 5 runs
each, schema 2; and one schema-1 record of the example sweep). No KVM needed."""
import copy
import json
import os
import subprocess
import sys

from bench import report
from bench import result as resultmod

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "tests", "data")
RECORDS = [os.path.join(DATA, f"{m}-v{v}.json") for m in ("exits", "uffd") for v in (1, 2)]


def scaled(rec, rate_factor, latency_factor):
    """A copy of a real record with its runs' numbers scaled: a test construct
    standing in for a regressed build."""
    new = copy.deepcopy(rec)
    for run in new["runs"]:
        run["metrics"]["pages_per_s"] *= rate_factor
        for k in (*resultmod.LATENCY_KEYS, "mean"):   # the whole distribution: still ordered
            run["metrics"]["fault_latency_ns"][k] *= latency_factor
    new["summary"] = {}
    new["warnings"] = []
    return resultmod.finalize(new)


def module_compare(tmp_path, base, new):
    b, n = tmp_path / "b.json", tmp_path / "n.json"
    b.write_text(json.dumps(base))
    n.write_text(json.dumps(new))
    return subprocess.run([sys.executable, "-m", "bench.report", "compare", str(b), str(n)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_committed_records_are_valid_and_current():
    for path in RECORDS:
        rec = resultmod.load(path)
        assert rec["schema_version"] == resultmod.SCHEMA_VERSION
        assert resultmod.validate(rec) == []
        assert len(rec["runs"]) == 5


def test_schema1_record_migrates():
    with open(os.path.join(DATA, "schema1-uffd-v1.json")) as f:
        raw = json.load(f)
    assert raw["schema_version"] == 1 and "pages_per_s_per_vcpu_own_window" not in raw["runs"][0]["metrics"]
    rec = resultmod.load(os.path.join(DATA, "schema1-uffd-v1.json"))
    m = rec["runs"][0]["metrics"]
    assert rec["schema_version"] == 2 and resultmod.validate(rec) == []
    assert m["pages_per_s_per_vcpu_own_window"] > 0 and m["pages_per_s_per_vcpu"] > 0


def test_scaling_writes_plot_and_table(tmp_path):
    png, md = report.scaling(report.load_all(RECORDS), str(tmp_path))
    assert os.path.getsize(png) > 10_000
    assert open(md).read().count("\n| ") == 4


def test_module_compare_same_record_is_same(tmp_path):
    # SAME needs runs enough to bound any change inside the minimum effects: 5 runs of a
    # metric with two modes (exits' p50 here) cannot, the committed 48-run record can
    rec = resultmod.load(os.path.join(DATA, "nightly-exits-v1.json"))
    p = module_compare(tmp_path, rec, rec)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SAME" in p.stdout and "DIFFERENT" not in p.stdout


def test_module_compare_flags_a_clear_regression(tmp_path):
    rec = resultmod.load(RECORDS[0])
    p = module_compare(tmp_path, rec, scaled(rec, 0.5, 2.0))
    assert p.returncode == 1, p.stdout + p.stderr
    assert "DIFFERENT" in p.stdout


def test_module_compare_with_too_few_runs_is_unknown(tmp_path):
    rec = resultmod.load(RECORDS[0])
    few = copy.deepcopy(rec)
    few["runs"] = few["runs"][:3]
    resultmod.finalize(few)
    p = module_compare(tmp_path, rec, few)
    assert p.returncode == 2 and "need at least 5 a side" in p.stdout, p.stdout + p.stderr


def test_full_report_from_committed_records(tmp_path):
    p = subprocess.run([sys.executable, "-m", "bench.report", *RECORDS, "--out", str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    text = (tmp_path / "report.txt").read_text()
    assert "how long do its threads wait for a CPU" in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_a_drawing_process_that_dies_fails_or_hangs_is_one_error_and_leaves_no_process(
        monkeypatch, tmp_path):
    """The report draws its figures in forked processes: a child that dies, or raises,
    is a one-line ReportError (exit 2 from the command), and every child is gone after."""
    import multiprocessing
    import time

    import pytest

    from bench.reporting import build

    def dies(job, k, n):
        if k == 1:
            os._exit(3)
        return []

    def fails(job, k, n):
        raise ValueError("no such series")

    def one_hangs(job, k, n):
        if k == 0:
            time.sleep(60)
        raise ValueError("boom")

    for child, message in ((dies, r"process 1 of 2 ended without its figures \(exit code 3\)"),
                           (fails, "drawing the figures: ValueError: no such series"),
                           (one_hangs, "drawing the figures: ValueError: boom")):
        monkeypatch.setattr(build, "_draw_share", child)
        t0 = time.monotonic()
        with pytest.raises(build.ReportError, match=message):
            build._draw_figures(None, [], None, str(tmp_path), processes=2)
        # the hanging child was terminated, not waited for
        assert time.monotonic() - t0 < 30
        assert not multiprocessing.active_children()
