"""Reports from records of the in-kernel (BPF) tracer. Made with --trace-every-run:
lock contention and the scheduler split in every measured run's metrics, no traced
runs; by default: one traced run a cell, walking part of the touches. The records are
synthetic: the committed tests/data records with the schema-1 record's traced-run
lock data moved into each measured run (scaled per run, so medians mean something),
tracer "bpf", traced_runs deleted and `tracing` as the BPF tracer writes it. No KVM."""
import copy
import json
import os
import statistics

import pytest

from bench import result as resultmod
from bench import table as tablemod
from bench.model import extract
from bench.reporting import tables as tablesmod
from bench.reporting.data import ReportData

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "tests", "data")
RECORDS = [os.path.join(DATA, f"{m}-v{v}.json") for m in ("exits", "uffd") for v in (1, 2)]
SCHEMA1 = os.path.join(DATA, "schema1-uffd-v1.json")


def _bpf_locks(template: dict, factor: int) -> dict:
    kl = copy.deepcopy(template)
    kl["tracer"] = "bpf"
    kl["contentions"] *= factor
    kl["wait_ns_total"] *= factor
    for lock in kl["top_locks"]:
        lock["count"] *= factor
        lock["wait_ns_total"] *= factor
    return kl


def bpf_record(path: str, template: dict, split: bool = False) -> dict:
    rec = resultmod.load(path)
    for i, run in enumerate(rec["runs"]):
        run["metrics"]["kernel_locks"] = _bpf_locks(template, i + 1)
        if split:
            run["metrics"].setdefault("fault_breakdown_ns", {})["sched_split"] = {
                "tracer": "bpf", "events": 100 + i, "events_lost": 0}
    rec.pop("traced_runs", None)
    rec["tracing"] = {"tracer": "bpf", "every_measured_run": True, "lock_tracing": True,
                      "stacks": True, "mmap_lock": True}
    return rec


@pytest.fixture(scope="module")
def template():
    return resultmod.load(SCHEMA1)["traced_runs"][0]["metrics"]["kernel_locks"]


@pytest.fixture(scope="module")
def bpf_records(template):
    return [(p, bpf_record(p, template, split=True)) for p in RECORDS]


@pytest.fixture(scope="module")
def bpf_data(bpf_records):
    return ReportData(tablemod.build(bpf_records), dict(bpf_records))


def test_lock_rows_are_the_measured_runs(bpf_data, bpf_records):
    d = bpf_data
    assert not d.traced.empty and set(d.traced["kind"]) == {"run"}
    assert len(d.traced) == sum(len(rec["runs"]) for _p, rec in bpf_records)
    assert d.lock_sources() == {"traced": [], "runs": ["bpf"], "least_share": 1.0}
    assert d.split_tracers() == ["bpf"]
    assert d.lock_sites()   # call sites of the runs' top locks
    # the measured rows are still the headline rows
    assert len(d.runs) == len(d.traced)


def test_lock_table_is_medians_over_runs_and_names_the_bpf_tracer(bpf_data, bpf_records, template):
    t = tablesmod.lock_table(bpf_data, {})
    assert t is not None and len(t.rows) == len(bpf_records)
    assert "Medians over each cell's measured runs" in t.title
    assert "in-kernel (BPF) tracer" in t.notes[0] and "every measured run" in t.notes[0]
    assert not any("traced run" in n for n in t.notes)
    want = statistics.median(template["contentions"] * (i + 1) for i in range(5))
    assert all(row[2] == f"{int(want):,}" for row in t.rows)
    wait_ms = statistics.median(template["wait_ns_total"] * (i + 1) for i in range(5)) / 1e6
    assert all(row[3] == f"{wait_ms:.2f}" for row in t.rows)


def test_cost_table_says_the_split_is_in_every_run(bpf_data):
    t = tablesmod.cost_and_wait_table(bpf_data, {})
    assert "in-kernel (BPF) tracer" in t.notes[0] and "traced run" not in t.notes[0]


def test_lock_figure_is_drawn_from_the_runs(bpf_data):
    import matplotlib.pyplot as plt
    from bench.reporting import figures
    f = figures.lock_contention(bpf_data)
    assert f is not None
    plt.close(f.fig)
    assert "in-kernel (BPF) tracer in every measured run" in f.caption
    assert "median over the cell's measured runs" in f.caption
    assert "one traced run per cell" not in f.caption


def test_concentrated_locks_read_the_measured_runs(template):
    rec = bpf_record(RECORDS[0], template)
    rec["runs"][2]["metrics"]["kernel_locks"] = {
        "tracer": "bpf", "contentions": 400, "wait_ns_total": 234e6, "events_lost": 0,
        "top_locks": [{"lock": "0x1", "call_site": "down_read+0x10", "count": 16, "wait_ns_total": 232e6},
                      {"lock": "0x2", "call_site": "paging64_page_fault+0x171", "count": 384,
                       "wait_ns_total": 2e6}]}
    recs = [(RECORDS[0], rec)]
    d = ReportData(tablemod.build(recs), dict(recs))
    s, v = d.series[0], d.vcpus[0]
    found = d.view.concentrated_locks(s, v)
    assert len(found) == 1 and "measured run 3's lock wait" in found[0] and "down_read+0x10" in found[0]


def test_tracefs_record_keeps_its_traced_run():
    recs = [(SCHEMA1, resultmod.load(SCHEMA1))]
    d = ReportData(tablemod.build(recs), dict(recs))
    assert set(d.traced["kind"]) == {"traced"}
    assert d.lock_sources() == {"traced": ["tracefs"], "runs": [], "least_share": 1.0}
    t = tablesmod.lock_table(d, {})
    assert t.title == "Which kernel locks are contended? One traced run per cell"
    assert "traced runs are extra runs" in t.notes[0]


def bpf_traced_record(path: str, template: dict, share: float) -> dict:
    """As the default writes it: one traced run by the in-kernel tracer, walking `share`."""
    rec = resultmod.load(path)
    traced = copy.deepcopy(rec["runs"][0])
    traced["metrics"]["kernel_locks"] = _bpf_locks(template, 1)
    # a part of the walk: fewer faults than a measured run
    traced["metrics"]["faults"] = max(1, int(traced["metrics"]["faults"] * share))
    rec["traced_runs"] = [traced]
    rec["config"]["trace_share"] = "auto"
    rec["command"]["argv"] += ["--trace-share", repr(share)]   # as Cell.trace pins it
    rec["tracing"] = {"tracer": "bpf", "every_measured_run": False, "lock_tracing": True,
                      "stacks": True, "mmap_lock": True, "touch_share": share}
    return rec


def test_bpf_traced_runs_are_named_with_their_tracer_and_walk(template):
    import matplotlib.pyplot as plt
    from bench.reporting import figures
    recs = [(p, bpf_traced_record(p, template, 0.25 if "v2" in p else 1.0)) for p in RECORDS]
    d = ReportData(tablemod.build(recs), dict(recs))
    assert set(d.traced["kind"]) == {"traced"}
    assert d.lock_sources() == {"traced": ["bpf"], "runs": [], "least_share": 0.25}
    t = tablesmod.lock_table(d, {})
    assert t.title == "Which kernel locks are contended? One traced run per cell"
    assert ("recorded by the in-kernel (BPF) tracer; traced runs are extra runs, walking as "
            "little as 25% of each vCPU's touches" in t.notes[0])
    # per fault of the traced run: its wait over its own faults
    for row, (p, rec) in zip(t.rows, recs):
        m = rec["traced_runs"][0]["metrics"]
        assert row[4] == f"{m['faults']:,}"
        assert row[5] == f"{m['kernel_locks']['wait_ns_total'] / m['faults'] / 1e3:.3f}"
    f = figures.lock_contention(d)
    plt.close(f.fig)
    assert "one traced run per cell, recorded by the in-kernel (BPF) tracer" in f.caption
    assert "walking as little as 25%" in f.caption and "every measured run" not in f.caption
    # the mail block's sweep command drops each cell's pinned share (the sweep asked auto)
    from bench.reporting.summary import sweep_command
    assert "--trace-share" not in sweep_command(d)
    # whole walks only: no walk is mentioned
    whole = [(p, bpf_traced_record(p, template, 1.0)) for p in RECORDS]
    d1 = ReportData(tablemod.build(whole), dict(whole))
    assert "walking" not in tablesmod.lock_table(d1, {}).notes[0]


def test_model_extract_falls_back_to_the_runs(bpf_records, template):
    path, rec = bpf_records[0]
    c = extract.cell(path, rec)
    assert len(c["traced"]) == len(rec["runs"])
    assert [t["contentions"] for t in c["traced"]] == [template["contentions"] * (i + 1)
                                                      for i in range(len(rec["runs"]))]
    old = resultmod.load(SCHEMA1)
    assert len(extract.cell(SCHEMA1, old)["traced"]) == len(old["traced_runs"])


def test_full_report_from_bpf_records(tmp_path, bpf_records):
    from bench.reporting import build
    paths = []
    for path, rec in bpf_records:
        dst = tmp_path / os.path.basename(path)
        dst.write_text(json.dumps(rec))
        paths.append(str(dst))
    build.generate(paths, str(tmp_path / "out"))
    text = " ".join((tmp_path / "out" / "report.txt").read_text().split())   # unwrapped
    assert "Which kernel locks are contended? Medians over each cell's measured runs" in text
    assert "in-kernel (BPF) tracer" in text
    assert (tmp_path / "out" / "figures" / "locks.png").exists()
