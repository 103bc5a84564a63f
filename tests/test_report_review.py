"""The design-review report's own checks, from real records committed in tests/data
(exits and uffd at 1 and 2 vCPUs, 5 runs each): marks that must appear when their
condition holds and stay away when it does not. No KVM needed."""
import copy
import json
import os
import statistics
import subprocess
import sys

import pytest

from bench import result as resultmod
from bench.reporting import data as datamod
from bench.reporting.data import ReportData, outlier_runs, tick_multiple
from bench.table import load_table

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "tests", "data")
RECORDS = [os.path.join(DATA, f"{m}-v{v}.json") for m in ("exits", "uffd") for v in (1, 2)]


def _copy_records(tmp_path, edit=None):
    out = []
    for path in RECORDS:
        rec = resultmod.load(path)
        if edit:
            edit(os.path.basename(path), rec)
        dst = tmp_path / os.path.basename(path)
        dst.write_text(json.dumps(rec))
        out.append(str(dst))
    return out


def test_outlier_rule_catches_one_far_run_and_not_ordinary_scatter():
    assert outlier_runs([100, 101, 99, 100.5, 115]) == [4]       # 15% off, others within 1%
    assert outlier_runs([100, 101, 99, 100.5, 108]) == []        # under the 10% floor
    assert outlier_runs([100, 120, 80, 110, 90]) == []           # scatter, no single run
    assert outlier_runs([100, 101, 130]) == []                   # too few runs to say


def test_tick_multiple_within_five_percent():
    assert tick_multiple(4.137e6, 250) == 1 and tick_multiple(8.143e6, 250) == 2
    assert tick_multiple(12.19e6, 250) == 3
    assert tick_multiple(6.0e6, 250) is None and tick_multiple(4.3e6, 250) is None
    assert tick_multiple(4.0e6, None) is None
    assert tick_multiple(44.0e6, 250) is None   # 11 ticks: too many for the match to mean much


def test_a_failed_check_and_an_outlier_are_flagged_in_the_rate_table(tmp_path):
    def edit(name, rec):
        if name == "exits-v2.json":
            rec["runs"][1]["metrics"]["checks"]["guest_window_vs_host_clock"]["ok"] = False
        if name == "uffd-v1.json":
            rates = [r["metrics"]["pages_per_s"] for r in rec["runs"]]
            rec["runs"][0]["metrics"]["pages_per_s"] = statistics.median(rates) * 2.0
            rec["summary"] = {}
            resultmod.finalize(rec)
    d = ReportData(load_table(_copy_records(tmp_path, edit)))
    from bench.reporting.tables import rate_table
    rows = {(r[0], r[1]): r[-1] for r in rate_table(d, d.warning_ids()).rows}
    assert "X" in rows[("exits", "2")].split() and "O" not in rows[("exits", "2")].split()
    assert "O" in rows[("uffd", "1")].split()
    assert "X" not in rows[("exits", "1")].split() and "O" not in rows[("exits", "1")].split()


def test_a_few_long_lock_waits_are_called_one_event(tmp_path):
    def edit(name, rec):
        if name not in ("exits-v1.json", "exits-v2.json"):
            return
        traced = copy.deepcopy(rec["runs"][0])
        spread = name == "exits-v1.json"   # the same wait, spread over many contentions
        traced["metrics"]["kernel_locks"] = {
            "contentions": 400, "wait_ns_total": 234e6, "events_lost": 0,
            "top_locks": [{"lock": "0x1", "call_site": "down_read+0x10",
                           "count": 300 if spread else 16, "wait_ns_total": 232e6},
                          {"lock": "0x2", "call_site": "paging64_page_fault+0x171",
                           "count": 100 if spread else 384, "wait_ns_total": 2e6}]}
        rec["traced_runs"] = [traced]
    d = ReportData(load_table(_copy_records(tmp_path, edit)))
    found = d.view.concentrated_locks("exits", 2)
    assert found and "16 contentions at down_read+0x10" in found[0] and "99%" in found[0]
    assert d.view.concentrated_locks("exits", 1) == []


def test_fairness_is_computed_from_each_vcpus_own_window():
    d = ReportData(load_table(RECORDS))
    f = d.view.fairness("uffd", 2)
    rec = resultmod.load(os.path.join(DATA, "uffd-v2.json"))
    per_run_min = []
    for run in rec["runs"]:
        vs = run["raw"]["vcpus"]
        per_run_min.append(min(v["touches"] / ((v["end_ns"] - v["start_ns"]) / 1e9) for v in vs))
    assert f["rate_min"] == pytest.approx(statistics.median(per_run_min))
    assert f["rate_min"] <= f["rate_median"] <= f["rate_max"]
    assert f["finish_s_min"] <= f["finish_s_max"]


def test_summary_names_cpus_oversubscription_and_one_sentence_per_series():
    d = ReportData(load_table(RECORDS))
    from bench.reporting.summary import summary
    from bench.reporting.tables import who_wins
    lines = summary(d, who_wins(d, "exits"))
    text = " ".join(lines)
    assert "2 CPUs" in text and "No cell runs more vCPUs than the host's 2 CPUs" in text
    assert sum(1 for line in lines if line.startswith(("exits:", "uffd:"))) == 2
    assert "Fetch delay" in text and "Placement" in text and "Runs: 5 a cell" in text


def test_mail_block_in_selftest_terms_fits_72_columns():
    d = ReportData(load_table(RECORDS))
    from bench.reporting.summary import mail_block
    block = mail_block(d)
    assert max(len(line) for line in block.splitlines()) <= 72
    for word in ("Host:", "Command:", "Commit:", "Per-vcpu demand paging rate",
                 "Overall demand paging rate"):
        assert word in block
    # the overall rate of uffd at 2 vCPUs: median [min-max] of its runs
    rec = resultmod.load(os.path.join(DATA, "uffd-v2.json"))
    rates = [r["metrics"]["pages_per_s"] for r in rec["runs"]]
    want = f"{datamod.fmt_si(statistics.median(rates))} [{datamod.fmt_si(min(rates))}-"
    assert want in block


def test_who_wins_gives_interval_and_the_nightly_verdict():
    d = ReportData(load_table(RECORDS))
    from bench.reporting.tables import who_wins_table
    t = who_wins_table(d, "exits", {})
    assert [row[0] for row in t.rows] == ["uffd", "uffd"]
    for row in t.rows:
        ratio = float(row[2])
        lo, hi = (float(x) for x in row[3].split("-"))
        assert lo <= ratio <= hi
        assert row[4] in ("SAME", "DIFFERENT", "UNKNOWN")
        assert (row[5] == "not significant") == (row[4] == "UNKNOWN")


def test_who_wins_says_too_few_runs_below_five():
    d = ReportData(load_table(RECORDS))
    d.runs = d.runs[d.runs["rep"] < 3]
    from bench.reporting.tables import who_wins_table
    t = who_wins_table(d, "exits", {})
    assert {row[4] for row in t.rows} == {"UNKNOWN"} and {row[5] for row in t.rows} == {"too few runs"}


def test_report_text_fits_and_every_figure_is_slide_text(tmp_path):
    r = subprocess.run([sys.executable, "run_bench.py", "report", *RECORDS, "--out", str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "report.txt").read_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert text.startswith("Host:")   # the mail block opens the file
    mail = text.split("\n\nSummary\n")[0]
    assert max(len(line) for line in mail.splitlines()) <= 72
    assert text.count("EMULATED") <= 1   # no emulated series here; said once where there is one
    import re
    for svg in (tmp_path / "figures").glob("*.svg"):
        body = svg.read_text()
        sizes = [float(x) for x in re.findall(r"font-size: ?([0-9.]+)px", body)]
        sizes += [float(x) for x in re.findall(r"font: [a-z ]*?([0-9.]+)px", body)]
        assert sizes and min(sizes) >= 14, (svg.name, min(sizes or [0]))
        assert "online CPUs" not in body and "Config:" not in body   # captions stay in the page


def test_a_report_over_harness_and_imported_selftest_records_shows_both(tmp_path):
    st = os.path.join(DATA, "selftest")
    out = tmp_path / "st.json"
    with open(os.path.join(st, "v1-missing-r1.cmd")) as f:
        args = f.readline().strip()
    r = subprocess.run([sys.executable, "run_bench.py", "import-selftest",
                        *[os.path.join(st, f"v1-missing-r{i}.out") for i in range(1, 6)],
                        "--args", args, "--out", str(out), "--cpus", "2"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    d = ReportData(load_table([*RECORDS, str(out)]))
    imported = [s for s in d.series if s.startswith("demand_paging_test")]
    # its machine is only what was stated (2 CPUs, no hostname): another host's series
    assert len(imported) == 1 and {s.split()[0] for s in d.series} >= {"exits", "uffd"}
    from bench.reporting.summary import mail_block, summary
    from bench.reporting.tables import who_wins
    wins = who_wins(d, "exits")
    # the selftest's numbers are never paired with the harness's (not measured side by side)
    assert all(not w["series"].startswith("demand_paging_test") for w in wins)
    block = mail_block(d)
    assert imported[0] in block and max(len(line) for line in block.splitlines()) <= 72
    rec = resultmod.load(str(out))
    overall = [run["metrics"]["selftest"]["overall_demand_paging_rate"] for run in rec["runs"]]
    assert datamod.fmt_si(statistics.median(overall)) in block.split(imported[0])[1]
    assert any(line.startswith("Imported, not measured by faultbench") for line in summary(d, wins))


def test_model_predictions_are_drawn_marked_model_with_their_provenance(tmp_path):
    model_dir = os.path.join(REPO, "bench", "model", "data")
    preds = [os.path.join(model_dir, f"predictions-p256-{m}.json") for m in ("shadow", "tdp")]
    cal = os.path.join(model_dir, "calibration.json")
    r = subprocess.run([sys.executable, "run_bench.py", "report", *RECORDS, "--out", str(tmp_path),
                        "--model", *preds, "--calibration", cal],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert "model" in [f["name"] for f in m["figures"]]
    svg = (tmp_path / "figures" / "model.svg").read_text()
    assert "MODEL prediction" in svg and "P = 256 CPUs, shadow MMU" in svg and "tdp MMU" in svg
    text = (tmp_path / "report.txt").read_text()
    assert "What the scaling model predicts (MODEL, not measured)" in text
    assert "MODEL calibrated" in text and len(m["model_answers"]) == 6
    # without the calibration, no prediction is shown
    r = subprocess.run([sys.executable, "run_bench.py", "report", *RECORDS, "--out",
                        str(tmp_path / "x"), "--model", *preds], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2 and "needs --calibration" in r.stderr
