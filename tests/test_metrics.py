"""The metrics table (bench/metrics.py) defines every number a run records."""
import pytest

from bench import metrics, result
from bench.plan import RunError
from bench.runner import execute
from helpers import make_plan, mech_names


def _undefined(m: dict) -> list[str]:
    return [p for p in result._numeric_leaves(m) if metrics.lookup(p) is None]


@pytest.mark.parametrize("mech", mech_names())
def test_every_recorded_number_has_a_definition(kvm, mech):
    m, _ = execute(make_plan(mech, 2))
    assert _undefined(m) == []


def test_traced_and_worker_numbers_have_definitions(kvm):
    try:
        m, _ = execute(make_plan("async", 2, trace_locks=True, trace_sched=True))
    except RunError as exc:
        if "tracing unavailable" in str(exc):
            pytest.skip(f"tracefs: {exc}")
        raise
    assert "kernel_locks" in m and m["fault_breakdown_ns"]["sched_split"]
    assert _undefined(m) == []
    w, _ = execute(make_plan("uffd", 2, extra=["--fetch", "worker"]))
    assert _undefined(w) == []
    p, _ = execute(make_plan("exits", 2, workload="precopy-stale"))
    assert _undefined(p) == []


def test_table_answers():
    assert metrics.HEADLINE == ("pages_per_s", "fault_latency_ns.p50", "fault_latency_ns.p99")
    assert metrics.lookup("pages_per_s").better == "higher"
    assert metrics.lookup("fault_latency_ns.p99").better == "lower"
    assert metrics.unit("fault_breakdown_ns.sched_split.parts.fetch.cpu_wait_ns") == "ns"
    assert metrics.unit("sched.vcpu.timeslices") == "count"
    # the most literal pattern wins over a wildcard one
    assert metrics.unit("kernel_locks.wait_ns_total") == "ns"
    assert metrics.unit("kernel_locks.contentions") == "count"


def test_bpf_traced_numbers_have_definitions(kvm):
    from bench import kerneltrace
    why = kerneltrace.unavailable()
    if why:
        pytest.skip(why)
    m, _ = execute(make_plan("uffd", 2, trace_bpf=True))
    assert m["kernel_locks"]["tracer"] == "bpf" and m["fault_breakdown_ns"]["sched_split"]["tracer"] == "bpf"
    assert _undefined(m) == []
