"""Verdicts from committed records (tests/data, real runs): deterministic, so they
hold on a busy host. Where a test changes a record it says how, and the change
is the case under test (a regression, a host change, outside load)."""
import copy
import json
import os
import subprocess
import sys

import pytest

import nightly_helpers as nh
from bench import result as resultmod
from bench.nightly import fingerprint as fpmod
from bench.nightly.verdict import BUSY_SHARE, compare_records

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "tests", "data")
NIGHTS = os.path.join(DATA, "nightly-exits-v1.json")   # 48 runs of one invocation, quiet host
BASE = NIGHTS


def load(path=BASE) -> dict:
    return resultmod.load(path)


def later(record: dict, days: int = 1) -> dict:
    out = copy.deepcopy(record)
    out["created"] = f"2099-01-{1 + days:02d}T02:00:00+00:00"
    return out


def regressed(record: dict, factor: float, kernel_path_too: bool = True) -> dict:
    """The record as if its fault path were `factor` slower: every latency
    percentile x factor and the paging rates / factor in every run, and (as a
    kernel regression would) the fingerprint's kernel-path parts x factor."""
    out = later(record)
    for run in out["runs"]:
        m = run["metrics"]
        for key in m["fault_latency_ns"]:
            if key != "count":
                m["fault_latency_ns"][key] *= factor
        for key in ("pages_per_s", "pages_per_s_per_vcpu", "pages_per_s_per_vcpu_own_window"):
            m[key] /= factor
    if kernel_path_too:
        for name in fpmod.KERNEL_PATH:
            c = out["machine"]["fingerprint"]["components"][name]
            c["values"] = [v * factor for v in c["values"]]
            for k in ("median", "min", "max"):
                c[k] *= factor
    out["summary"] = {}
    return resultmod.finalize(out)


def compare_cli(tmp_path, base: dict, new: dict, *extra):
    b = nh.write(base, str(tmp_path / "base.json"))
    n = nh.write(new, str(tmp_path / "new.json"))
    p = subprocess.run([sys.executable, "run_bench.py", "compare", b, n, *extra], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout + p.stderr


def test_committed_records_are_quiet():
    """The verdict tests below need records measured with nothing else running."""
    for path in (BASE, NIGHTS):
        share = load(path)["host_noise"]["other_cpu_share"]
        assert share <= BUSY_SHARE, (path, share)


@pytest.mark.parametrize("factor", [1.25, 1.35, 1.5, 2.0])
def test_regression_stays_a_regression_when_the_kernel_path_moves_too(tmp_path, factor):
    """A kernel or core regression moves the fingerprint's kernel-path parts with
    the cells: the verdict is monotone in the size of the regression (exit 1), and
    says the kernel's own path moved too."""
    rc, out = compare_cli(tmp_path, load(), regressed(load(), factor))
    assert rc == 1 and "DIFFERENT worse" in out, out
    # beyond the kernel-path parts' 30% tolerance, the output says they moved too
    assert ("kernel's own fault path moved too" in out) == (factor > 1.3), out


def test_hardware_change_is_host_changed(tmp_path):
    """CPU loop x1.6 and memcpy x0.55, the cells unchanged: the host changed."""
    new = later(load())
    comps = new["machine"]["fingerprint"]["components"]
    for name, factor in (("cpu_loop_ns", 1.6), ("memcpy_bytes_per_s", 0.55)):
        comps[name]["values"] = [v * factor for v in comps[name]["values"]]
        for k in ("median", "min", "max"):
            comps[name][k] *= factor
    rc, out = compare_cli(tmp_path, load(), new)
    assert rc == 2, out
    assert "HOST CHANGED: host fingerprint: cpu_loop_ns" in out and "memcpy_bytes_per_s" in out, out


def _busy(record: dict, share: float = 0.51, comm: str = "chromium") -> dict:
    """The record as if a browser had used `share` of the CPUs during its point."""
    out = copy.deepcopy(record)
    out["host_noise"].update(other_cpu_share=share, other_cpu_s=share * 2,
                             top_processes=[{"pid": 4242, "comm": comm, "cpu_s": share * 2}])
    return out


def test_outside_load_is_host_busy_never_a_regression(tmp_path):
    """The case seen: a rerun while a browser used 51% of the CPUs came out 0.822x;
    it must be 'host busy' (exit 2) naming the browser, never exit 1."""
    new = _busy(regressed(load(), 1 / 0.822, kernel_path_too=False))
    rc, out = compare_cli(tmp_path, load(), new)
    assert rc == 2, out
    assert "HOST BUSY: " in out and "chromium (pid 4242)" in out and "host busy (exit 2)" in out, out


def test_busy_records_are_left_out_while_enough_runs_remain():
    base = load()
    quiet_new, busy_new = later(base), _busy(regressed(base, 2.0, kernel_path_too=False))
    cmp = compare_records([base], [quiet_new, busy_new])
    assert not cmp.host_busy and cmp.exit_status() != 1, cmp.as_dict()
    assert any("left out" in n and "chromium" in n for n in cmp.notes), cmp.notes
    assert all(len(j.new) == len(quiet_new["runs"]) for j in cmp.judgements)


def test_a_quiet_regression_is_reported_beside_a_busy_cell():
    """One cell busy (UNKNOWN), another regressed on quiet records: exit 1."""
    exits, uffd = load(), load(os.path.join(DATA, "uffd-v1.json"))
    cmp = compare_records([exits, uffd], [regressed(exits, 1.5), _busy(later(uffd))])
    assert cmp.host_busy and cmp.regression and cmp.exit_status() == 1, cmp.as_dict()


def test_own_run_queue_wait_never_vetoes():
    """The cell's own CPU wait is an outcome of the code under test: doubling it
    in every new run changes nothing about the verdict."""
    base = load()
    new = regressed(base, 1.5)
    plain = compare_records([base], [new]).exit_status()
    for run in new["runs"]:
        for role in run["metrics"]["sched"].values():
            role["run_queue_wait_ns"] *= 10
    assert compare_records([base], [new]).exit_status() == plain == 1


# --- history, and the nightly job, from one committed 48-run invocation ------------

@pytest.fixture(scope="module")
def nights():
    return nh.nights_from(load(NIGHTS), 3)


def _history(tmp_path, records):
    db = str(tmp_path / "h.sqlite")
    paths = [nh.write(r, str(tmp_path / f"n{i:02d}.json")) for i, r in enumerate(records)]
    run = [sys.executable, "run_bench.py"]
    p = subprocess.run(run + ["ingest", *paths, "--db", db], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    p = subprocess.run(run + ["history", "--db", db, "--json", str(tmp_path / "h.json")], cwd=REPO,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    return [c for c in json.load(open(tmp_path / "h.json"))["changes"]
            if c["metric"] == "fault_latency_ns.p50"], p.stdout


def test_history_finds_the_night_of_an_injected_step(nights, tmp_path):
    step_at = 10
    records = [copy.deepcopy(r) for r in nights]
    for i, r in enumerate(records):
        r["harness"]["git_commit"] = "a" * 40 if i < step_at else "b" * 40
    records = records[:step_at] + [regressed(r, 1.5) for r in records[step_at:]]
    for r, night in zip(records[step_at:], nights[step_at:]):
        r["created"] = night["created"]
    p50, out = _history(tmp_path, records)
    assert len(p50) == 1, out
    assert p50[0]["night"] == records[step_at]["created"][:10], out
    # the kernel-path parts moved with the step: a code change still, said beside it
    assert p50[0]["cause"] == "code" and "bbbbbbbbbbbb" in p50[0]["explanation"], out
    assert "kernel's own fault path moved too" in p50[0]["explanation"], out
    assert p50[0]["worse"] and 1.3 < p50[0]["ratio"] < 1.7, out


def test_flat_history_finds_nothing(nights, tmp_path):
    p50, out = _history(tmp_path, nights)
    assert p50 == [], out


def test_history_step_with_a_hardware_change_is_blamed_on_the_host(nights, tmp_path):
    records = [copy.deepcopy(r) for r in nights]
    for r in records[8:]:
        c = r["machine"]["fingerprint"]["components"]["cpu_loop_ns"]
        c["values"] = [v * 1.6 for v in c["values"]]
        for k in ("median", "min", "max"):
            c[k] *= 1.6
    records = records[:8] + [nh.scaled(r, 1.3) for r in records[8:]]
    p50, out = _history(tmp_path, records)
    assert len(p50) == 1 and p50[0]["cause"] == "host" and "cpu_loop_ns" in p50[0]["explanation"], out


def _nightly(tmp_path, db, record, name):
    out = str(tmp_path / "out")
    p = subprocess.run([sys.executable, "run_bench.py", "nightly", "--db", db, "--out-dir", out,
                        "--records", nh.write(record, str(tmp_path / name))], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout + p.stderr, json.load(open(os.path.join(out, "verdict.json")))


def test_nightly_same_code_same_host_is_exit_0(tmp_path):
    """Two nights made of one invocation's runs, alternate runs each: the same
    code on the same host, measured side by side: SAME."""
    whole = load(NIGHTS)
    first, second = copy.deepcopy(whole), later(whole)
    first["runs"], second["runs"] = whole["runs"][0::2], whole["runs"][1::2]
    for r in (first, second):
        r["summary"] = {}
        resultmod.finalize(r)
    db = str(tmp_path / "h.sqlite")
    assert _nightly(tmp_path, db, first, "n1.json")[0] == 2   # the first night: nothing to compare
    rc, out, verdict = _nightly(tmp_path, db, second, "n2.json")
    assert rc == 0 and verdict["status"] == "same", out


def test_nightly_regression_is_exit_1(tmp_path):
    db = str(tmp_path / "h.sqlite")
    whole = load(NIGHTS)
    assert _nightly(tmp_path, db, whole, "n1.json")[0] == 2
    rc, out, verdict = _nightly(tmp_path, db, regressed(whole, 1.25), "n2.json")
    assert rc == 1 and verdict["status"] == "regression", out
    assert "**regression** (exit 1)" in open(tmp_path / "out" / "summary.md").read()


def test_nightly_over_a_store_holding_a_malformed_record_is_a_harness_error(tmp_path):
    """A record that got into the store without the door's checks (an older
    version's, a hand edit): exit 3, one line, never exit 1 or a traceback."""
    from bench.nightly.store import Store
    db = str(tmp_path / "h.sqlite")
    bad = copy.deepcopy(load())
    bad["machine"]["fingerprint"] = "hello"
    store = Store(db)
    try:
        store.ingest([bad])
    finally:
        store.close()
    rc, out, verdict = _nightly(tmp_path, db, later(load()), "tonight.json")
    assert rc == 3 and verdict["status"] == "harness error", out
    assert "Traceback" not in out and len([l for l in out.splitlines() if "error" in l]) == 1, out
