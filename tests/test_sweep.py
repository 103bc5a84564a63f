"""Sweeps: one directory with an index, progress on a terminal only, Ctrl-C then --resume."""
import datetime
import glob
import hashlib
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest

from bench import sweep as sweepmod

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# exits with a 1 ms modelled fetch: 512 faults take about 0.5 s a run, long enough
# to interrupt a sweep between cells, short enough for the suite
SLOW_CELLS = ["--mech", "exits", "--mem-per-vcpu", "2", "--fetch-delay-us", "1000",
              "--repeat", "2", "--no-trace-locks", "--no-fingerprint", "--quiet"]


def _index(d):
    with open(os.path.join(d, "index.json")) as f:
        return json.load(f)


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_ctrl_c_then_resume_runs_only_the_missing_cells(kvm, tmp_path):
    out = str(tmp_path / "sweep")
    # 4 repetitions: the cells after the first take seconds, so the interrupt lands
    # before the sweep ends even when a CPU hog slows this polling loop
    cmd = [sys.executable, "run_bench.py", "--vcpus", "1,2,3,4", *SLOW_CELLS, "--repeat", "4",
           "--order", "blocked", "--out", out]
    p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    done = []
    while time.monotonic() < deadline:
        if os.path.exists(os.path.join(out, "index.json")):
            done = [c for c in _index(out)["cells"] if c["status"] == "done"]
            if done:
                break
        time.sleep(0.05)
    assert done, "no cell finished within 60 s"
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert f"--resume {out}" in err

    index = _index(out)
    assert index["status"] == "incomplete"
    finished = {c["record"]: _digest(os.path.join(out, c["record"]))
                for c in index["cells"] if c["status"] == "done"}
    assert 1 <= len(finished) < 4
    statuses = {c["status"] for c in index["cells"] if c["status"] != "done"}
    assert statuses <= {"interrupted", "pending"} and statuses
    # a finished cell's record is whole and usable
    from bench import result as resultmod
    for name in finished:
        assert resultmod.validate(resultmod.load(os.path.join(out, name))) == []

    r = subprocess.run([sys.executable, "run_bench.py", "--resume", out], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    index = _index(out)
    assert index["status"] == "complete"
    assert [c["vcpus"] for c in index["cells"]] == [1, 2, 3, 4]
    for name, digest in finished.items():   # not rerun: byte for byte the same file
        assert _digest(os.path.join(out, name)) == digest
    rerun = [c for c in index["cells"] if c["record"] not in finished]
    assert all(c["status"] == "done" and not c.get("reused") for c in rerun)
    assert all(c.get("reused") for c in index["cells"] if c["record"] in finished)
    # the quiet output names exactly the records this invocation wrote
    written = {os.path.basename(line) for line in r.stdout.split()}
    assert written == {c["record"] for c in rerun}
    assert len(index["invocations"]) == 2


def test_index_accounts_for_the_wall_time(kvm, tmp_path):
    out = str(tmp_path / "s")
    r = subprocess.run([sys.executable, "run_bench.py", "--vcpus", "1,2", "--mech", "exits,none",
                        "--mem-per-vcpu", "2", "--repeat", "2", "--out", out],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    t = _index(out)["time"]
    # the host fingerprint runs before the first cell: its time is the sweep's, in "startup"
    # (it was left out of the wall time until 2026-12-07)
    fingerprint_s = json.load(open(glob.glob(os.path.join(out, "exits-*-v1.json"))[0]))["machine"]["fingerprint"]["seconds"]
    assert t["accounts_s"]["startup"] >= fingerprint_s > 0, (t, fingerprint_s)
    # and the wall-clock stamps span the same time as wall_s (whole seconds)
    span = (datetime.datetime.fromisoformat(t["updated_at"])
            - datetime.datetime.fromisoformat(t["started_at"])).total_seconds()
    assert abs(span - t["wall_s"]) <= 1.5, (span, t)
    acc = t["accounts_s"]
    assert set(acc) == set(sweepmod.ACCOUNTS)
    tracer = json.load(open(glob.glob(os.path.join(out, "exits-*-v1.json"))[0]))["tracing"]["tracer"]
    # either tracer records in an extra traced run a cell, with guest time of its own;
    # its set-up and read-out are its tracing time
    assert acc["guest"] > 0 and acc["tracing"] > 0 and acc["guest_traced"] > 0, acc
    assert all(v >= -0.01 for v in acc.values()), acc
    # every account but "startup" is measured; startup is what remains of the wall time
    assert sum(acc.values()) == pytest.approx(t["wall_s"], rel=0.02)
    assert 0 < t["outside_guest_share"] < 1
    assert "outside the guest" in r.stdout
    for c in _index(out)["cells"]:
        assert c["status"] == "done" and c["wall_s"] >= sum(c["time_s"].values()) * 0.98


def _run_on_tty(cmd):
    """Run cmd with stderr on a pseudo-terminal; returns (rc, what the terminal showed)."""
    master, slave = pty.openpty()
    p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=slave, stdin=slave)
    os.close(slave)
    shown = b""
    while True:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
        elif p.poll() is not None:
            break
    p.wait(timeout=60)
    os.close(master)
    return p.returncode, shown.decode(errors="replace")


def test_progress_on_a_terminal_and_quiet_otherwise(kvm, tmp_path):
    cmd = [sys.executable, "run_bench.py", "--vcpus", "1,2", *SLOW_CELLS[:-1], "--repeat", "1",
           "--order", "blocked", "--quiet", "--out", str(tmp_path / "tty")]
    rc, shown = _run_on_tty(cmd)
    assert rc == 0, shown
    assert "cell 1 of 2: exits at 1 vCPUs; elapsed 0:0" in shown
    assert "cell 2 of 2: exits at 2 vCPUs" in shown and "left" in shown   # estimate after a cell
    il = [sys.executable, "run_bench.py", "--vcpus", "1,2", *SLOW_CELLS[:-1], "--repeat", "1",
          "--quiet", "--out", str(tmp_path / "tty-il")]
    rc, shown = _run_on_tty(il)
    assert rc == 0, shown
    assert "round 1 of 1: exits at 1 vCPUs" in shown and "round 1 of 1: exits at 2 vCPUs" in shown
    cmd[-1] = str(tmp_path / "pipe")
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "cell 1 of" not in r.stderr + r.stdout


def test_resume_refuses_what_it_cannot_use(tmp_path):
    r = subprocess.run([sys.executable, "run_bench.py", "--resume", str(tmp_path)], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "no sweep index" in r.stderr and len(r.stderr.splitlines()) == 1
    (tmp_path / "index.json").write_text('{"kind": "something else"}')
    r = subprocess.run([sys.executable, "run_bench.py", "--resume", str(tmp_path)], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "not a faultbench sweep index" in r.stderr
    r = subprocess.run([sys.executable, "run_bench.py", "--resume", str(tmp_path), "--vcpus", "2"],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and "give no other option" in r.stderr


def test_incomplete_record_is_not_taken_as_done(tmp_path):
    path = tmp_path / "exits-sequential-v1.json"
    path.write_text('{"schema_version": 1, "runs": []')   # cut short
    assert not sweepmod.record_complete(str(path), 1)
    s = sweepmod.Sweep([("exits", 1)], "sequential", 1, str(tmp_path), ["--vcpus", "1"])
    assert not s.is_done("exits", 1)


def test_a_directory_of_another_sweep_is_refused(tmp_path):
    d = tmp_path / "s"
    s = sweepmod.Sweep([("exits", 1)], "sequential", 1, str(d), ["--vcpus", "1", "--out", str(d)])
    s.finish()
    r = subprocess.run([sys.executable, "run_bench.py", "--vcpus", "2", "--out", str(d)],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and "holds the sweep of another command" in r.stderr
    (tmp_path / "loose").mkdir()
    (tmp_path / "loose" / "x.json").write_text("{}")
    r = subprocess.run([sys.executable, "run_bench.py", "--vcpus", "2", "--out",
                        str(tmp_path / "loose")], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and "no sweep index" in r.stderr


def test_interleaved_sweep_alternates_cells_run_by_run(kvm, tmp_path):
    """The default order: run 1 of every cell, then run 2 of every cell; the index and
    every record say so, and each run carries its start time."""
    out = str(tmp_path / "il")
    r = subprocess.run([sys.executable, "run_bench.py", "--vcpus", "1,2", "--mech", "exits,none",
                        "--mem-per-vcpu", "2", "--repeat", "3", "--no-trace-locks", "--no-fingerprint",
                        "--quiet", "--out", out], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    index = _index(out)
    assert index["order"] == "interleaved" and "round-robin" in index["order_meaning"]
    from bench import result as resultmod
    starts = []
    for c in index["cells"]:
        rec = resultmod.load(os.path.join(out, c["record"]))
        assert rec["sweep"]["order"] == "interleaved" and rec["sweep"]["cells"] == 4
        assert c["runs_done"] == 3 and c["wall_s"] > 0
        starts += [(run["raw"]["started_unix_s"], c["record"]) for run in rec["runs"]]
    order = [name for _t, name in sorted(starts)]
    cells = [c["record"] for c in index["cells"]]
    assert order == cells * 3, order   # blocked would be each name three times in a row
    # outside load is counted over the cell's own runs, not over the whole sweep
    for c in index["cells"]:
        rec = resultmod.load(os.path.join(out, c["record"]))
        assert rec["host_noise"]["interval_s"] <= c["wall_s"], (c, rec["host_noise"]["interval_s"])
    # per-cell wall time counts only that cell's own stretches: they add up to less
    # than the sweep's wall time
    assert sum(c["wall_s"] for c in index["cells"]) <= index["time"]["wall_s"]


def test_interleaved_traced_run_follows_its_own_cells_last_run(kvm, tmp_path):
    """Each cell's traced run is made right after that cell's last measured run, in the
    last round, not after the whole sweep."""
    out = str(tmp_path / "ilt")
    r = subprocess.run([sys.executable, "run_bench.py", "--vcpus", "1,2", "--mech", "exits",
                        "--mem-per-vcpu", "2", "--repeat", "2", "--no-fingerprint", "--quiet",
                        "--out", out], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    from bench import result as resultmod
    starts = []
    for c in _index(out)["cells"]:
        rec = resultmod.load(os.path.join(out, c["record"]))
        starts += [(run["raw"]["started_unix_s"], c["record"], "run") for run in rec["runs"]]
        starts += [(run["raw"]["started_unix_s"], c["record"], "traced") for run in rec["traced_runs"]]
    order = [(name, kind) for _t, name, kind in sorted(starts)]
    one, two = [c["record"] for c in _index(out)["cells"]]
    assert order == [(one, "run"), (two, "run"), (one, "run"), (one, "traced"),
                     (two, "run"), (two, "traced")], order


def test_interleaved_ctrl_c_writes_no_partial_record_and_resume_finishes(kvm, tmp_path):
    out = str(tmp_path / "ilc")
    cmd = [sys.executable, "run_bench.py", "--vcpus", "1,2", *SLOW_CELLS, "--repeat", "6", "--out", out]
    p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if os.path.exists(os.path.join(out, "index.json")) and any(
                c.get("runs_done", 0) >= 1 for c in _index(out)["cells"]):
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "writes its records after the last round" in err
    index = _index(out)
    assert index["status"] == "incomplete"
    assert {c["status"] for c in index["cells"]} == {"interrupted"}
    # the runs made before the interrupt are in the accounts, cell by cell, not in
    # "startup" (before 2026-12-07 a cell left running had no time_s, and guest was 0)
    ran = [c for c in index["cells"] if c.get("runs_done", 0) >= 1]
    assert ran and all(c["time_s"].get("guest", 0) > 0 and c["wall_s"] > 0 for c in ran), index["cells"]
    assert index["time"]["accounts_s"]["guest"] == pytest.approx(
        sum(c["time_s"].get("guest", 0) for c in index["cells"]), abs=0.01)
    # no cell had all its runs: none has a record, so none can be taken for complete
    assert not [n for n in os.listdir(out) if n != "index.json"]
    r = subprocess.run([sys.executable, "run_bench.py", "--resume", out], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert _index(out)["status"] == "complete"
    assert len(r.stdout.split()) == 2


def test_a_cell_left_running_by_another_cells_failure_keeps_its_time(tmp_path):
    """An interleaved sweep stopped by one cell's failure: the cells it leaves running
    are closed with the time their runs took (their runner phases), so "startup", the
    remainder of the wall time, does not take it."""
    out = str(tmp_path / "s")
    sw = sweepmod.Sweep([("exits", 1), ("uffd", 1)], "sequential", 3, out, ["--vcpus", "1"],
                        stream=open(os.devnull, "w"), order="interleaved")
    running = {"guest": 0.4, "setup": 0.1, "traced.guest": 0.05, "traced.read": 0.02}
    sw.begin("exits", 1, running)
    sw.begin("uffd", 1, {"guest": 0.2})
    sw.end("uffd", 1, "failed", {"guest": 0.2}, "a run failed")
    sw.finish()
    cells = {c["mech"]: c for c in _index(out)["cells"]}
    assert cells["exits"]["status"] == "interrupted"
    assert cells["exits"]["error"] == "the sweep stopped at another cell's failure"
    assert cells["exits"]["time_s"]["guest"] == 0.4 and cells["exits"]["time_s"]["tracing"] == 0.02
    acc = _index(out)["time"]["accounts_s"]
    assert acc["guest"] == pytest.approx(0.6) and acc["guest_traced"] == pytest.approx(0.05)
