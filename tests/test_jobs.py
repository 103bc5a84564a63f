"""plan and run-job: a sweep as scheduler jobs, and one job run as a scheduler task
runs it. The Slurm test is tests/test_slurm.py."""
import json
import os
import shlex
import subprocess
import sys

import pytest

from bench.hostlock import HostLock
from bench.jobs.plan import read_plan
from bench.nightly.cells import cell_key, load_records
from bench.options import parse_point

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = ["--vcpus", "1,2", "--mech", "exits,none"]
# tiny cells: 512 pages a vCPU, 2 measured runs, no lock tracing
SMALL = ["--mem-per-vcpu", "2", "--repeat", "2", "--no-trace-locks", "--no-fingerprint"]
CELL_IDS = ["exits-sequential-v1", "exits-sequential-v2", "none-sequential-v1", "none-sequential-v2"]


def bench(*argv, cwd=REPO, env=None, timeout=300):
    return subprocess.run([sys.executable, os.path.join(REPO, "run_bench.py"), *argv], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=env)


def plan(*argv, path=None):
    r = bench("plan", *argv)
    assert r.returncode == 0, r.stderr
    if path:
        path.write_text(r.stdout)
    return r.stdout


def one_error_line(r, status):
    assert r.returncode == status, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "error: " in lines[0] and "Traceback" not in r.stderr, r.stderr
    return lines[0]


# --- plan -------------------------------------------------------------------------

def test_jsonl_is_one_self_contained_job_per_cell():
    text = plan(*SWEEP, "--format", "jsonl")
    jobs = [json.loads(line) for line in text.splitlines()]
    assert [j["id"] for j in jobs] == CELL_IDS
    cells = set()
    for j in jobs:
        words = shlex.split(j["command"])
        assert words[:2] == ["python3", "run_bench.py"] and "--out" not in words
        args = parse_point(words[2:])   # the benchmark's own parser takes it as it is
        assert len(args.mech) == 1 and len(args.vcpus) == 1
        cells.add((args.mech[0], args.vcpus[0]))
        assert j["cells"] == [f"{args.mech[0]}/sequential/v{args.vcpus[0]}"]
    assert cells == {(m, v) for m in ("exits", "none") for v in (1, 2)}
    assert plan(*SWEEP, "--format", "jsonl") == text   # stable: the same sweep, the same plan
    assert len({j["plan"] for j in jobs}) == 1


def test_group_by_vcpus_measures_every_mechanism_of_a_count_together():
    jobs = [json.loads(line) for line in plan(*SWEEP, *SMALL, "--group-by", "vcpus").splitlines()]
    assert [j["id"] for j in jobs] == ["sequential-v1", "sequential-v2"]
    for j, v in zip(jobs, (1, 2)):
        args = parse_point(shlex.split(j["command"])[2:])
        assert args.mech == ["exits", "none"] and args.vcpus == [v] and args.repeat == 2
        assert j["records"] == [f"exits-sequential-v{v}.json", f"none-sequential-v{v}.json"]
    [whole] = [json.loads(line) for line in plan(*SWEEP, "--group-by", "sweep").splitlines()]
    assert whole["cells"] == ["exits/sequential/v1", "exits/sequential/v2",
                              "none/sequential/v1", "none/sequential/v2"]


def test_github_matrix_is_one_line_a_workflow_can_use(tmp_path):
    text = plan(*SWEEP, "--format", "github-matrix", path=tmp_path / "m.json")
    assert text.count("\n") == 1   # $GITHUB_OUTPUT takes one line
    matrix = json.loads(text)
    assert [e["id"] for e in matrix["include"]] == CELL_IDS
    assert all(set(e) == {"id", "command", "cells"} for e in matrix["include"])
    jsonl = [json.loads(line) for line in plan(*SWEEP).splitlines()]
    assert [j["command"] for j in read_plan(str(tmp_path / "m.json"))] == [j["command"] for j in jsonl]


def test_slurm_script_is_an_exclusive_job_array_that_calls_run_job(tmp_path):
    script = plan(*SWEEP, *SMALL, "--format", "slurm", "--out-dir", str(tmp_path / "out"),
                  path=tmp_path / "plan.sbatch")
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    assert "#SBATCH --array=0-3" in lines and "#SBATCH --exclusive" in lines
    assert "#SBATCH --nodes=1" in lines
    assert any("run-job" in line and '"$plan" "$id"' in line for line in lines)
    assert f"ids=({' '.join(CELL_IDS)})" in lines
    assert any(f"out={tmp_path / 'out'}" == line for line in lines)
    assert any('logs/$id.out' in line for line in lines)   # a task's output is named by its job id
    # the script is its own plan: run-job reads the same jobs from it as from the jsonl
    jsonl = [json.loads(line) for line in plan(*SWEEP, *SMALL).splitlines()]
    assert read_plan(str(tmp_path / "plan.sbatch")) == jsonl
    done = subprocess.run(["bash", "-n", str(tmp_path / "plan.sbatch")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_newline_in_a_path_cannot_end_the_scripts_header(tmp_path):
    """sbatch reads #SBATCH lines only until the first line that is not a comment:
    the planning command in the header is JSON-escaped, so a newline in a flag stays
    inside its comment line and every #SBATCH line is still read."""
    script = plan(*SWEEP, *SMALL, "--format", "slurm", "--out-dir", str(tmp_path / "a\nrm -rf x"))
    lines = script.splitlines()
    last_sbatch = max(i for i, line in enumerate(lines) if line.startswith("#SBATCH"))
    assert all(line.startswith("#") for line in lines[:last_sbatch + 1]), lines[:last_sbatch + 1]
    assert "#SBATCH --array=0-3" in lines and "#SBATCH --exclusive" in lines
    assert "rm -rf x" not in [line.strip() for line in lines]


@pytest.mark.parametrize("argv, words", [
    (["--vcpus", "0", "--mech", "exits"], "out of range"),
    (["--vcpus", "1", "--out", "x"], "--out cannot be given"),
    (["--vcpus", "1", "--results-dir", "x"], "--results-dir cannot be given"),
    (["--vcpus", "1", "--format", "yaml"], "invalid choice"),
    (["--vcpus", "1", "--form", "jsonl"], "unrecognized arguments"),   # no abbreviations
    (["--vcpus", "1", "--mech", "uffd", "--workload", "precopy-stale", "--resolve", "copy"],
     "needs --resolve continue"),
])
def test_plan_refuses_bad_flags_in_one_line(argv, words, tmp_path):
    r = bench("plan", *argv, "--plan-out", str(tmp_path / "plan.jsonl"))
    assert words in one_error_line(r, 2) and r.stdout == ""
    assert os.listdir(tmp_path) == []   # no plan, not even an empty one


def test_plan_out_writes_the_plan_whole(tmp_path):
    r = bench("plan", *SWEEP, "--plan-out", str(tmp_path / "plan.jsonl"))
    assert r.returncode == 0 and r.stdout == "", r.stderr
    assert (tmp_path / "plan.jsonl").read_text() == plan(*SWEEP)
    assert os.listdir(tmp_path) == ["plan.jsonl"]   # its temporary file is gone


def test_help_states_the_exit_codes():
    for sub, words in (("plan", "Exit status: 0"), ("run-job", "75 host busy")):
        r = bench(sub, "--help")
        assert r.returncode == 0 and words in " ".join(r.stdout.split()), r.stdout


# --- run-job: what it refuses before anything runs ---------------------------------------

def test_run_job_refuses_bad_plans_and_ids_without_writing(tmp_path):
    good = tmp_path / "plan.jsonl"
    plan(*SWEEP, *SMALL, path=good)
    edited = tmp_path / "edited.jsonl"
    job = json.loads(good.read_text().splitlines()[0])
    edited.write_text(json.dumps({**job, "command": job["command"] + " --out elsewhere"}) + "\n")
    twice = tmp_path / "twice.jsonl"
    twice.write_text(good.read_text().splitlines()[0] + "\n" + good.read_text().splitlines()[0] + "\n")
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    (tmp_path / "bogus.jsonl").write_text(json.dumps({**job, "command": job["command"] + " --bogus 1"}))
    (tmp_path / "path.jsonl").write_text(json.dumps({**job, "id": "../escape"}))
    out = tmp_path / "out"
    cases = [
        (good, "no-such-cell", "no job 'no-such-cell'"),
        (tmp_path / "missing.jsonl", CELL_IDS[0], "cannot read the plan"),
        (tmp_path / "bad.jsonl", CELL_IDS[0], "not JSON"),
        (edited, CELL_IDS[0], "--out cannot be given"),
        (twice, CELL_IDS[0], "appears twice"),
        (tmp_path / "bogus.jsonl", CELL_IDS[0], "unrecognized arguments: --bogus"),
        (tmp_path / "path.jsonl", "../escape", "not a plain name"),
    ]
    for path, job_id, words in cases:
        r = bench("run-job", str(path), job_id, "--out-dir", str(out))
        assert words in one_error_line(r, 2), (path, r.stderr)
    assert not out.exists()
    # a job directory that holds another command's sweep is refused, not mixed
    other = out / CELL_IDS[0]
    other.mkdir(parents=True)
    (other / "index.json").write_text(json.dumps({"kind": "faultbench-sweep-index", "argv": ["--vcpus", "8"]}))
    r = bench("run-job", str(good), CELL_IDS[0], "--out-dir", str(out))
    assert "holds the sweep of another command" in one_error_line(r, 2)
    assert os.listdir(other) == ["index.json"]


def test_run_job_on_a_busy_host_exits_75_and_writes_nothing(kvm, tmp_path):
    p = tmp_path / "plan.jsonl"
    plan(*SWEEP, *SMALL, path=p)
    env = {**os.environ, "FAULTBENCH_LOCK_PATH": str(tmp_path / "host.lock")}
    held = HostLock(str(tmp_path / "host.lock"), command=["another", "benchmark"])
    held.acquire(wait=False)
    try:
        r = bench("run-job", str(p), CELL_IDS[0], "--out-dir", str(tmp_path / "out"), env=env)
    finally:
        held.release()
    assert r.returncode == 75, r.stderr
    assert "host busy" in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()


# --- run-job for real ------------------------------------------------------------------

def _by_cell(records):
    out = {}
    for _path, rec in records:
        out.setdefault(cell_key(rec["config"]), []).append(rec)
    return out


def test_every_job_run_gives_the_records_of_the_sweep_run_directly(kvm, tmp_path):
    direct = tmp_path / "direct"
    r = bench(*SWEEP, *SMALL, "--out", str(direct), "--quiet")
    assert r.returncode == 0, r.stderr
    p = tmp_path / "plan.jsonl"
    jobs = [json.loads(line) for line in plan(*SWEEP, *SMALL, "--format", "jsonl", path=p).splitlines()]
    assert len(jobs) == 4
    out = tmp_path / "jobs"
    for job in jobs:
        r = bench("run-job", str(p), job["id"], "--out-dir", str(out))
        assert r.returncode == 0, r.stderr
        # it prints the job's record paths, one per cell, in DIR/ID
        assert r.stdout.split() == [str(out / job["id"] / name) for name in job["records"]]
    want, got = _by_cell(load_records([str(direct)])), _by_cell(load_records([str(out)]))
    assert len(want) == 4 and set(got) == set(want)
    for key, recs in want.items():
        assert len(recs) == 1 and len(got[key]) == 1   # one record per cell
        a, b = recs[0], got[key][0]
        assert a["config"] == b["config"]               # every config key, every value
        assert len(a["runs"]) == len(b["runs"]) == 2
        assert len(a["warmups"]) == len(b["warmups"])
        assert a["machine"]["hostname"] == b["machine"]["hostname"]
        assert b["machine"]["machine_id"] == a["machine"]["machine_id"]


def test_github_matrix_entries_run_one_by_one_as_a_ci_runner_would(kvm, tmp_path):
    matrix_file = tmp_path / "matrix.json"
    matrix = json.loads(plan(*SWEEP, *SMALL, "--format", "github-matrix", path=matrix_file))
    out = tmp_path / "gathered"
    runner = tmp_path / "runner"   # each job runs from its own checkout's directory, not the repo
    runner.mkdir()
    for entry in matrix["include"]:
        r = bench("run-job", str(matrix_file), entry["id"], "--out-dir", str(out), cwd=runner)
        assert r.returncode == 0, (entry, r.stderr)
    records = load_records([str(out)])
    assert sorted(os.path.relpath(p, out) for p, _r in records) == \
        sorted(f"{i}/{i}.json" for i in CELL_IDS)
    # a runner that retries a finished job runs nothing again: the record stays as it was
    first = out / CELL_IDS[0] / f"{CELL_IDS[0]}.json"
    before = first.read_bytes()
    r = bench("run-job", str(matrix_file), CELL_IDS[0], "--out-dir", str(out), cwd=runner)
    assert r.returncode == 0 and first.read_bytes() == before, r.stderr
    # gathered in one place: one report over every cell, one history store
    r = bench("report", str(out), "--out", str(tmp_path / "report"))
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "report" / "manifest.json").read_text())
    assert manifest["vcpus"] == [1, 2] and sorted(manifest["series"]) == ["exits", "none"]
    assert len(manifest["records"]) == 4
    r = bench("ingest", str(out), "--db", str(tmp_path / "h.sqlite"))
    assert r.returncode == 0 and "ingested 4 new record(s)" in r.stdout, r.stdout + r.stderr


def test_a_job_the_mechanisms_refuse_on_this_host_is_a_bad_job_not_a_failed_cell(kvm, tmp_path):
    """Planned where it is valid (2 CPUs), run where its placement cannot be met (1
    CPU): run-job says so in one line, exit 2, before anything runs."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("planning --placement spread needs 2 CPUs here")
    path = tmp_path / "plan.jsonl"
    plan("--vcpus", "1", "--mech", "uffd", "--placement", "spread", *SMALL, path=path)
    [job] = [json.loads(line) for line in path.read_text().splitlines()]
    cpu = min(os.sched_getaffinity(0))
    r = subprocess.run(["taskset", "-c", str(cpu), sys.executable, os.path.join(REPO, "run_bench.py"),
                        "run-job", str(path), job["id"], "--out-dir", str(tmp_path / "out")],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    one_error_line(r, 2)
    assert not (tmp_path / "out").exists()


def test_a_cell_that_fails_is_exit_1_not_a_bad_job(kvm, tmp_path):
    """The run stalls (its reader stops after 100 pages) and the watchdog ends it
    after 1 s: the benchmark fails the cell, run-job says so with exit 1."""
    path = tmp_path / "plan.jsonl"
    plan("--vcpus", "1", "--mech", "uffd", "--stall-after", "100", "--stall-timeout", "1", *SMALL, path=path)
    [job] = [json.loads(line) for line in path.read_text().splitlines()]
    r = bench("run-job", str(path), job["id"], "--out-dir", str(tmp_path / "out"), timeout=120)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert f"run_bench.py run-job: error: job {job['id']} failed" in r.stderr.strip().splitlines()[-1], r.stderr
    assert not list((tmp_path / "out").rglob("*-v1.json"))   # no record of the failed cell
