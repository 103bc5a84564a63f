import datetime
import json
import os
import subprocess

import pytest

from bench import machine, result

CONFIG = {"mech": "uffd", "workload": "seq", "vcpus": 4, "record_latency": True}


def metrics(pages_per_s=1000.0, p50=2000, content_errors=0):
    return {
        "pages": 4096,
        "guest_seconds": 4096 / pages_per_s,
        "pages_per_s": pages_per_s,
        "pages_per_s_per_vcpu": pages_per_s / 4,
        "content_errors": content_errors,
        "fault_latency_ns": {"p50": p50, "p90": 3000, "p99": 5000,
                             "p99_9": 8000, "max": 9000},
        "per_vcpu_pages": [1024, 1024, 1024, 1024],
    }


def make_record(run_metrics=(), warmups=()):
    record = result.new_record(["run_bench.py", "--vcpus", "4", "--note", "a b"],
                               CONFIG, {"hostname": "h", "online_cpus": 4}, {"version": "0"},
                               emulated=False, emulation_reason=None)
    for m in warmups:
        result.add_run(record, m, warmup=True)
    for m in run_metrics:
        result.add_run(record, m, raw={"latency_hist": {"10": 3}})
    return record


def test_roundtrip_is_valid():
    record = make_record([metrics(1000), metrics(1010), metrics(990)],
                         warmups=[metrics(10)])
    result.finalize(record)
    assert result.validate(record) == []
    summary = record["summary"]
    assert summary["pages_per_s"]["median"] == 1000
    assert summary["pages_per_s"]["n"] == 3          # warmup left out
    assert summary["pages_per_s"]["unit"] == "pages/s"
    assert summary["pages_per_s_per_vcpu"]["unit"] == "pages/s"
    assert summary["fault_latency_ns.p99"]["unit"] == "ns"
    assert summary["guest_seconds"]["unit"] == "s"
    assert summary["content_errors"]["unit"] == "count"
    assert "per_vcpu_pages" not in summary           # lists are not leaves
    assert not any(path.startswith("latency_hist") for path in summary)
    assert record["warnings"] == []
    assert record["command"]["rerun"] == "python run_bench.py --vcpus 4 --note 'a b'"
    created = datetime.datetime.fromisoformat(record["created"])
    assert created.utcoffset() == datetime.timedelta(0)


def test_metric_units():
    assert result.metric_unit("guest_seconds") == "s"
    assert result.metric_unit("blocktime_ns.all_vcpus") == "ns"   # a guess from "vcpus" said count
    assert result.metric_unit("faults") == "count"
    assert result.metric_unit("worker.mean_batch") == "ratio"
    assert result.metric_unit("checks.segments_vs_monotonic.fetch.share_disagreeing") == "ratio"
    assert result.metric_unit("kernel_locks.by_type.SPIN.wait_ns_total") == "ns"
    assert result.metric_unit("no_such_metric") is None
    # leaves name their own unit; only unit-less statistics inherit the parent's
    assert result.metric_unit("fault_latency_ns.count") == "count"
    assert result.metric_unit("fault_latency_ns.p99_9") == "ns"
    assert result.metric_unit("checks.cpu_time_vs_latency.ratio") == "ratio"
    assert result.metric_unit("fault_breakdown_ns.parts.install_ioctl") == "ns"
    assert result.metric_unit("kernel_locks.wait_ns_total") == "ns"
    assert result.metric_unit("worker.copied_bytes") == "bytes"


def test_finalize_summarizes_only_common_metrics_and_warns():
    first, second = metrics(1000), metrics(3000)
    first["only_here_ns"] = 5
    record = make_record([first, second])
    result.finalize(record)
    assert "only_here_ns" not in record["summary"]
    text = "\n".join(record["warnings"])
    assert "only 2 runs: spread unknown" in text
    assert "pages_per_s: stdev is" in text
    # finalize again: same warnings, not repeated
    count = len(record["warnings"])
    result.finalize(record)
    assert len(record["warnings"]) == count


def test_validate_catches_missing_metric():
    broken = metrics()
    del broken["pages_per_s"]
    del broken["fault_latency_ns"]["p99_9"]
    record = make_record([broken])
    problems = result.validate(record)
    # each problem names its place in the record (a JSON path), as jsonschema says it
    assert "runs[0].metrics: 'pages_per_s' is a required property" in problems
    assert "runs[0].metrics.fault_latency_ns: 'p99_9' is a required property" in problems


def test_validate_latency_null_only_when_off():
    run = metrics()
    run["fault_latency_ns"] = None
    record = result.finalize(make_record([run, metrics()]))
    assert any("record_latency is on" in p for p in result.validate(record))
    record["config"]["record_latency"] = False
    assert result.validate(record) == []


def test_validate_types():
    record = result.finalize(make_record([metrics()]))
    record["schema_version"] = True   # bool is not an integer, whatever Python says
    del record["summary"]
    problems = result.validate(record)
    assert "schema_version: True is not of type 'integer'" in problems
    assert "'summary' is a required property" in problems
    assert result.validate([]) == ["[] is not of type 'object'"]


def test_validate_relations_once_the_shape_is_right():
    record = result.finalize(make_record([metrics()]))
    record["emulated"] = True
    assert result.validate(record) == ["emulated is true but emulation_reason is empty"]
    record["emulation_reason"] = "modelled"
    record["runs"][0]["metrics"]["fault_latency_ns"]["p99"] = 1   # below p90
    assert "percentiles are not in increasing order" in result.validate(record)[0]
    record["runs"][0]["metrics"]["fault_latency_ns"]["p99"] = 5000
    record["summary"]["pages_per_s"]["min"] = 1e9
    assert result.validate(record) == ["summary.pages_per_s: min <= median <= max does not hold"]


def test_readers_need_more_than_a_valid_record():
    record = result.finalize(make_record([metrics()]))
    assert result.usable_problems(record) == []
    del record["machine"]["online_cpus"]
    del record["config"]["workload"]
    assert result.validate(record) == []
    assert result.usable_problems(record) == ["config: 'workload' is a required property",
                                              "machine: 'online_cpus' is a required property"]
    record = result.finalize(make_record([metrics()]))
    record["incomplete"] = True
    assert result.usable_problems(record) == [
        "it is marked incomplete (the run that wrote it did not finish)"]


def test_write_atomic_and_load(tmp_path):
    record = make_record([metrics()])
    result.finalize(record)
    path = tmp_path / "out.json"
    assert result.write_atomic(record, str(path)) == str(path)
    assert os.listdir(tmp_path) == ["out.json"]
    assert result.load(str(path)) == json.loads(json.dumps(record))
    assert path.read_text().endswith("\n")


def test_write_atomic_failure_leaves_nothing(tmp_path):
    record = make_record([metrics()])
    record["config"]["bad"] = object()
    path = tmp_path / "out.json"
    with pytest.raises(TypeError):
        result.write_atomic(record, str(path))
    assert os.listdir(tmp_path) == []


def test_write_atomic_failure_keeps_previous_file(tmp_path):
    path = tmp_path / "out.json"
    result.write_atomic({"old": 1}, str(path))
    with pytest.raises(ValueError, match=r"\(value is nan"):
        result.write_atomic({"value": float("nan")}, str(path))
    with pytest.raises(ValueError, match=r"\(a\.b\[1\] is inf"):   # the field is named
        result.write_atomic({"a": {"b": [1.0, float("inf")]}}, str(path))
    assert json.loads(path.read_text()) == {"old": 1}
    assert os.listdir(tmp_path) == ["out.json"]


def test_load_refuses_future_version(tmp_path):
    path = tmp_path / "future.json"
    path.write_text(json.dumps({"schema_version": 999}))
    with pytest.raises(ValueError, match="999"):
        result.load(str(path))
    path.write_text("[1, 2]")
    with pytest.raises(ValueError):
        result.load(str(path))


def test_migrate_current_version_is_identity():
    record = make_record([metrics()])
    assert result.migrate(record) is record
    assert result.update_to_1(record) is record


def test_default_path():
    when = datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    path = result.default_path("results", {"mech": "uffd", "workload": "seq/rand",
                                           "vcpus": 8}, now=when, pid=42)
    assert path == os.path.join("results", "uffd-seq_rand-v8-20250102T030405Z-42.json")
    assert result.default_path("r", CONFIG).endswith(f"-{os.getpid()}.json")


def test_collect_machine():
    info = machine.collect_machine(extra={"kvm": {"max_vcpus": 1}})
    assert info["kernel_release"] == os.uname().release
    assert info["online_cpus"] >= 1
    assert info["affinity_cpus"] >= 1
    assert info["kvm"] == {"max_vcpus": 1}
    assert "pyperf" in info or "pyperf_metadata_error" in info
    json.dumps(info)  # must be storable in a record
    assert machine.mem_available_bytes() is None or machine.mem_available_bytes() > 0


def test_collect_harness(tmp_path):
    outside = machine.collect_harness(str(tmp_path), version="1.2")
    assert outside["git_commit"] is None and outside["git_dirty"] is None
    assert outside["version"] == "1.2"

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t",
                        "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.txt").write_text("a")
    git("add", "a.txt")
    git("commit", "-q", "-m", "init")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "r.json").write_text("{}")
    clean = machine.collect_harness(str(tmp_path), version="1.2")
    assert len(clean["git_commit"]) == 40
    assert clean["git_dirty"] is False
    (tmp_path / "a.txt").write_text("changed")
    assert machine.collect_harness(str(tmp_path))["git_dirty"] is True
