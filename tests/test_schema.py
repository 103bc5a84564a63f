"""The record's JSON Schema (bench/schema.py): a valid Draft 2020-12 schema that
describes every field the readers read, lets optional parts be absent, and
types them when present."""
import copy
import json
import os

import jsonschema
import pytest

from bench import result as resultmod
from bench import schema

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_PATH = os.path.join(REPO, "report", "example", "records", "uffd-sequential-v1.json")

# What compare/ab/history (verdict.py, fingerprint.py), ingest (store.py), table,
# report (bench/reporting/, bench/report.py) and export-pyperf read from a record,
# as paths into it: "*" is any key of an object, "[]" any item of an array.
READ = [
    "schema_version", "created", "command.argv", "command.cwd", "command.rerun",
    "config.mech", "config.workload", "config.vcpus", "config.mem_per_vcpu_mib",
    "config.readers_per_uffd", "config.resolvers", "config.resolve", "config.fetch",
    "config.fetch_delay_us", "config.fetch_delay_mode", "config.record_latency",
    "machine.hostname", "machine.machine_id", "machine.boot_id", "machine.kernel_release", "machine.cpu_model",
    "machine.online_cpus", "machine.affinity_cpus", "machine.arch", "machine.mem_total_bytes",
    "machine.load_avg",
    "machine.fingerprint.measured", "machine.fingerprint.components.*.values",
    "machine.fingerprint.components.*.median", "machine.fingerprint.components.*.min",
    "machine.fingerprint.components.*.max", "machine.fingerprint.components.*.unit",
    "machine.fingerprint.components.*.better", "machine.fingerprint.components.*.what",
    "harness.version", "harness.git_commit", "harness.git_dirty",
    "emulated", "emulation_reason", "warnings", "summary.*.median", "summary.*.min",
    "summary.*.max", "summary.*.n", "summary.*.unit", "host_noise.other_cpu_share",
    "tracing.overhead_ratio",
    *[f"{kind}[].metrics.{m}" for kind in ("runs", "warmups", "traced_runs") for m in (
        "pages_per_s", "pages_per_s_per_vcpu", "guest_seconds", "pages", "content_errors",
        "fault_latency_ns.p50", "fault_latency_ns.p99", "first_touch_latency_ns.p50",
        "blocktime_ns.all_vcpus", "fault_breakdown_ns.parts.*",
        "sched.*.on_cpu_ns", "sched.*.run_queue_wait_ns", "sched.*.on_cpu_ns_per_fault",
        "cpu_by_role.*.threads", "cpu_by_role.*.user_ns", "cpu_by_role.*.involuntary_ctxt_switches",
        "kernel_locks.contentions", "kernel_locks.wait_ns_total",
        "kernel_locks.top_locks[].call_site", "kernel_locks.top_locks[].count",
        "kernel_locks.top_locks[].wait_ns_total")],
    "runs[].raw.fault_latency_hist.*",
]


def described(path: str):
    """The subschema the record schema gives `path`, or None."""
    node = schema.RECORD
    for part in path.replace("[]", ".[]").split("."):
        if part == "[]":
            node = node.get("items")
        elif part == "*":
            node = node.get("additionalProperties")
        else:   # a named key, or one of an object's keys the schema types alike
            node = node.get("properties", {}).get(part, node.get("additionalProperties"))
        if not isinstance(node, dict):
            return None
    return node


def test_the_schemas_are_draft_2020_12():
    for s in (schema.RECORD, schema.READABLE, schema.IMPORTED, schema.IMPORTED_READABLE):
        assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        jsonschema.Draft202012Validator.check_schema(s)


@pytest.mark.parametrize("path", READ)
def test_every_field_readers_read_is_typed(path):
    node = described(path)
    assert node is not None and ("type" in node or "enum" in node), path


def test_optional_parts_may_be_absent_but_not_wrong():
    rec = resultmod.load(REAL_PATH)
    bare = copy.deepcopy(rec)
    del bare["machine"]["fingerprint"], bare["machine"]["load_avg"]
    for key in ("traced_runs", "tracing", "host_noise"):
        del bare[key]
    for run in bare["runs"]:
        del run["metrics"]["sched"], run["metrics"]["cpu_by_role"], run["raw"]
    assert resultmod.usable_problems(bare) == []
    wrong = [(("machine", "load_avg"), "high", "machine.load_avg: 'high' is not of type 'array', 'null'"),
             (("traced_runs",), {}, "traced_runs: {} is not of type 'array'"),
             (("host_noise", "other_cpu_share"), None,
              "host_noise.other_cpu_share: None is not of type 'number'"),
             (("runs", 1, "metrics", "cpu_by_role", "vcpu", "threads"), -1,
              "runs[1].metrics.cpu_by_role.vcpu.threads: -1 is less than the minimum of 0"),
             (("traced_runs", 0, "metrics", "kernel_locks", "top_locks", 0, "count"), "3",
              "traced_runs[0].metrics.kernel_locks.top_locks[0].count: '3' is not of type 'number'"),
             (("runs", 0, "raw", "fault_latency_hist"), {"x": 1},
              "runs[0].raw.fault_latency_hist: 'x' does not match '^[0-9]+$'")]
    for path, value, problem in wrong:
        bad = copy.deepcopy(rec)
        parent = bad
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = value
        assert resultmod.validate(bad)[0] == problem


def test_a_huge_wrong_value_is_shown_short(tmp_path):
    rec = resultmod.load(REAL_PATH)
    rec["machine"]["fingerprint"] = list(range(100_000))
    path = tmp_path / "x.json"
    path.write_text(json.dumps(rec))
    with pytest.raises(resultmod.RecordError) as caught:
        resultmod.load(str(path))
    assert str(caught.value) == (f"{path}: not a usable result record: machine.fingerprint: "
                                 "[0, 1, 2, 3, 4, 5, ...] is not of type 'object'")
