"""Records of several hosts gathered in one place stay apart: which host a record
came from, the table, the report, compare, nightly's last night. Made from the
committed records with the machine identity of one copy changed."""
import copy
import json
import os
import subprocess
import sys

import pytest

from bench import table
from bench.nightly.cells import content_hash, host_labels, load_records
from bench.nightly.nightly import previous_night
from bench.nightly.verdict import compare_records

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "tests", "data")
COMMITTED = ("exits-v2.json", "uffd-v2.json")   # one host (hostname vm), no machine id
# another host has its own machine id and, being another machine, its own boot
OTHER = {"hostname": "runner-b", "machine_id": "b" * 32, "boot_id": "bbbbbbbb-0000-4000-8000-000000000000"}


def bench(*argv):
    return subprocess.run([sys.executable, "run_bench.py", *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def _copy(directory, machine: dict | None = None):
    directory.mkdir(parents=True)
    for name in COMMITTED:
        with open(os.path.join(DATA, name)) as f:
            rec = json.load(f)
        rec["machine"].update(machine or {})
        (directory / name).write_text(json.dumps(rec))
    return str(directory)


@pytest.fixture
def two_hosts(tmp_path):
    """Two directories: the committed records as they are, and the same with another
    machine identity (a second CI runner)."""
    return _copy(tmp_path / "host-a"), _copy(tmp_path / "host-b", OTHER)


def test_host_labels_name_hosts_not_boots():
    vm, vm2 = {"hostname": "vm", "machine_id": "1" * 32}, {"hostname": "vm", "machine_id": "2" * 32}
    # a hostname alone is the host; a record without machine id joins its hostname's one host
    assert host_labels([{"hostname": "vm"}, vm, {"hostname": "b"}]) == ["vm", "vm", "b"]
    # two machines that share a hostname stay apart by machine id, and one that cannot be
    # told apart is a host of its own
    assert host_labels([vm, vm2, {"hostname": "vm"}]) == ["vm#11111111", "vm#22222222", "vm#no-id"]
    # another boot of one host is the same host
    assert host_labels([{**vm, "boot_id": "x"}, {**vm, "boot_id": "y"}]) == ["vm", "vm"]


def test_the_table_keeps_hosts_apart_with_their_fingerprints(two_hosts):
    df = table.load_table(list(two_hosts))
    assert sorted(df["host"].unique()) == ["runner-b", "vm"]
    assert df["cell"].nunique() == 4   # 2 cells x 2 hosts: never merged
    assert df.groupby("cell")["host"].nunique().max() == 1
    assert df["fingerprint.cpu_loop_ns"].notna().all()
    assert df.attrs["units"]["fingerprint.cpu_loop_ns"] == "ns"


def test_a_report_over_two_hosts_keeps_them_apart_and_says_so(two_hosts, tmp_path):
    out = tmp_path / "report"
    r = bench("report", *two_hosts, "--out", str(out))
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["hosts"] == ["runner-b", "vm"]
    assert sorted(m["series"]) == ["exits @runner-b", "exits @vm", "uffd @runner-b", "uffd @vm"]
    assert m["tables"][0]["title"].startswith("Which hosts") and m["tables"][0]["rows"] == 2
    text = (out / "report.txt").read_text()
    assert "mixes 2 hosts (runner-b, vm)" in " ".join(text.split())
    assert "relative to exits on each host" in text
    # each host's exits is its own reference: no ratio across hosts
    who = next(t for t in m["tables"] if t["title"].startswith("Who wins"))
    assert who["rows"] == 2   # uffd over exits, once on each host
    from bench.reporting.data import ReportData
    from bench.reporting.tables import who_wins
    pairs = {(w["series"], w["reference"]) for w in who_wins(ReportData(table.load_table(list(two_hosts))), "exits")}
    assert pairs == {("uffd @runner-b", "exits @runner-b"), ("uffd @vm", "exits @vm")}
    assert "boot" not in " ".join(m["series"])   # one boot a host: no boot tag
    # --relative-to names the series as it is on every host
    r = bench("report", *two_hosts, "--out", str(tmp_path / "rel"), "--relative-to", "exits")
    assert r.returncode == 0, r.stderr
    # every figure's caption says which hosts it mixes (report.md: "*caption* ([SVG](...))")
    md = (out / "report.md").read_text().splitlines()
    for f in m["figures"]:
        [caption] = [line for line in md if f"(figures/{f['name']}.svg)" in line]
        assert "mixes 2 hosts (runner-b, vm)" in caption and "never pooled" in caption, f["name"]


def test_one_hostname_two_machine_ids_are_two_hosts(tmp_path):
    a = _copy(tmp_path / "a", {"machine_id": "1" * 32})
    b = _copy(tmp_path / "b", {"machine_id": "2" * 32})
    df = table.load_table([a, b])
    assert sorted(df["host"].unique()) == ["vm#11111111", "vm#22222222"]
    assert df["cell"].nunique() == 4


def test_compare_across_hosts_is_refused_unless_asked(two_hosts):
    a, b = two_hosts
    r = bench("compare", a, b)
    assert r.returncode == 2 and r.stdout == ""
    [line] = r.stderr.strip().splitlines()
    assert "different hosts (base: vm; new: runner-b)" in line and "--allow-cross-host" in line
    r = bench("compare", a, b, "--allow-cross-host")
    assert "different hosts" not in r.stderr and "verdict:" in r.stdout, r.stderr
    assert "across hosts (asked for): base from vm, new from runner-b" in r.stdout


def test_records_of_several_hosts_are_judged_host_by_host(two_hosts):
    recs = [r for _p, r in load_records(list(two_hosts))]
    cmp = compare_records(recs, copy.deepcopy(recs))
    cells = sorted({j.cell for j in cmp.judgements})
    assert cells == ["exits/sequential/v2/2MiB @runner-b", "exits/sequential/v2/2MiB @vm",
                     "uffd/sequential/v2/2MiB @runner-b", "uffd/sequential/v2/2MiB @vm"]
    assert all(len(j.base) == len(j.new) == 5 for j in cmp.judgements)   # no pooling of two hosts
    assert not cmp.host_changes
    # the same hosts' records against only one of them: the other host's cells are unmatched
    only_vm = [r for r in recs if r["machine"]["hostname"] == "vm"]
    cmp = compare_records(recs, only_vm)
    assert {j.cell for j in cmp.judgements} == {"exits/sequential/v2/2MiB @vm", "uffd/sequential/v2/2MiB @vm"}
    assert sorted(cmp.unmatched) == ["base only: exits/sequential/v2/2MiB @runner-b",
                                     "base only: uffd/sequential/v2/2MiB @runner-b"]


def test_nightly_takes_last_night_from_the_same_host(two_hosts):
    a, b = ([r for _p, r in load_records([d])] for d in two_hosts)
    mine, theirs = a[0], b[0]
    later = copy.deepcopy(theirs)
    later["created"] = "2030-01-01T00:00:00+00:00"   # another host's night, after mine
    tonight = copy.deepcopy(mine)
    tonight["created"] = "2031-01-01T00:00:00+00:00"
    rows = [{"record": r, "created": r["created"], "content_hash": content_hash(r)}
            for r in (mine, later)]
    assert previous_night(rows, [tonight]) == [mine]
    assert previous_night(rows[1:], [tonight]) == []


def test_nightlys_history_covers_tonights_host_only(two_hosts, tmp_path):
    """The store also holds another host's nights of the same cells: tonight's
    history section (and its notes) speaks of tonight's host alone."""
    a, b = two_hosts
    db = str(tmp_path / "h.sqlite")
    assert bench("ingest", b, "--db", db).returncode == 0
    out = tmp_path / "night"
    r = bench("nightly", "--db", db, "--out-dir", str(out), "--records", a)
    assert r.returncode in (0, 1, 2), r.stderr
    history = (out / "summary.md").read_text().split("### History")[1]
    assert "runner-b" not in history and "exits" in history, history
