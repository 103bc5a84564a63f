"""Every workload with every mechanism on real vCPUs, and the workloads' own promises."""
import numpy as np
import pytest

from bench.runner import execute
from bench.workloads import REGISTRY as WORKLOADS
from bench.workloads.base import TOUCH_FIRST, TOUCH_READ, first_touch_mask
from conftest import process_resources
from helpers import make_plan, mech_names

MECHS = mech_names()


def _matrix_cells():
    """Every mechanism with every workload at 1 and 8 vCPUs. At 64 vCPUs, half the
    pairs of the mechanisms that deliver faults, alternating, so that every workload
    meets two of them and each of them three or four workloads; the two baselines
    (`none`, `prefault`) one workload each. A 64-vCPU cell walks about 2 s of guest
    time (2 MiB a vCPU is the floor), and the full 64-vCPU row took about a minute
    of a suite the brief keeps under 10 minutes."""
    delivering = mech_names(delivers=True)
    baselines = [m for m in MECHS if m not in delivering]
    workloads = sorted(WORKLOADS)
    cells = []
    for mech in MECHS:
        for w, workload in enumerate(workloads):
            for vcpus in (1, 8, 64):
                if vcpus == 64:
                    if mech in delivering:
                        if (delivering.index(mech) + w) % 2:
                            continue
                    elif w != baselines.index(mech) % len(workloads):
                        continue
                cells.append((mech, workload, vcpus))
    return cells


@pytest.mark.slow
@pytest.mark.parametrize("mech,workload,vcpus", _matrix_cells())
def test_matrix(kvm, mech, workload, vcpus):
    before = process_resources()
    plan = make_plan(mech, vcpus, mib=2, workload=workload)
    metrics, raw = execute(plan)
    assert metrics["content_errors"] == 0
    assert all(v["touches"] == plan.workload.touches(vcpus, 512, np.random.default_rng(1)).shape[1]
               for v in raw["vcpus"])
    if mech not in ("none",):
        assert metrics["pages_never_installed"] == 0
        assert metrics["pages_installed_more_than_once"] == 0
    assert process_resources() == before


def test_overlap_64_vcpus_installs_each_page_once(kvm):
    for mech in mech_names(delivers=True, one_per_c_mechanism=True):
        metrics, raw = execute(make_plan(mech, 64, mib=2, workload="overlap"))
        assert metrics["pages"] == 512
        assert metrics["pages_installed"] == 512          # counted by the resolvers
        assert metrics["pages_installed_more_than_once"] == 0
        assert metrics["faults"] >= 512
        assert all(v["end_ns"] > 0 for v in raw["vcpus"])   # every vCPU finished
        assert metrics["content_errors"] == 0


@pytest.mark.parametrize("mech", mech_names(delivers=True))
def test_precopy_stale_copies_exactly_the_stale_pages(kvm, mech):
    plan = make_plan(mech, 8, mib=2, workload="precopy-stale", extra=["--stale", "0.3"])
    metrics, _ = execute(plan)
    stale = metrics["precopy"]["stale_pages"]
    assert stale == round(0.3 * 8 * 512)
    assert metrics["pages_copied"] == stale
    assert metrics["precopy"]["pages_declared_clean"] + stale <= metrics["pages"]
    assert metrics["pages_installed"] == metrics["pages"]
    assert metrics["content_errors"] == 0


def test_precopy_faults_wait_for_the_bitmap(kvm):
    plan = make_plan("exits", 2, mib=2, workload="precopy-stale",
                     extra=["--stale", "0.5", "--bitmap-delay-ms", "200"])
    metrics, _ = execute(plan)
    assert metrics["precopy"]["bitmap_arrived_after_s"] >= 0.15
    assert metrics["guest_seconds"] >= 0.15
    assert metrics["fault_latency_ns"]["max"] >= 100e6
    assert metrics["content_errors"] == 0


@pytest.mark.parametrize("mech", mech_names(delivers=True, one_per_c_mechanism=True))
def test_fault_around_counts_faults_and_pages_apart(kvm, mech):
    metrics, _ = execute(make_plan(mech, 2, mib=2, fault_around=8))
    assert metrics["pages_installed"] == metrics["pages"] == 1024
    assert metrics["faults"] == 1024 // 8
    assert metrics["content_errors"] == 0


def test_write_mix_reads_and_writes(kvm):
    plan = make_plan("uffd", 2, mib=2, workload="write-mix", extra=["--write-percent", "30"])
    table = plan.workload.touches(2, 512, np.random.default_rng(1))
    reads = ((table & TOUCH_READ) != 0).mean()
    assert 0.6 < reads < 0.8
    metrics, _ = execute(plan)
    assert metrics["faults"] == 1024 and metrics["content_errors"] == 0


def test_zipf_separates_first_touches_from_retouches(kvm):
    plan = make_plan("exits", 2, mib=2, workload="zipf", extra=["--retouch-ratio", "1"])
    metrics, _ = execute(plan)
    assert metrics["faults"] == 1024
    assert metrics["touches"] == 2048
    assert metrics["retouch_latency_ns"]["count"] == 1024
    assert metrics["retouch_latency_ns"]["p50"] < metrics["fault_latency_ns"]["p50"]


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_tables_are_seeded_and_mark_first_touches(name):
    plan = make_plan("uffd", 4, mib=2, workload=name)
    a = plan.workload.touches(4, 512, np.random.default_rng(5))
    b = plan.workload.touches(4, 512, np.random.default_rng(5))
    assert (a == b).all()
    pages = (a >> 12).astype(np.int64)
    assert (((a & TOUCH_FIRST) != 0) == first_touch_mask(pages)).all()
    assert pages.max() < plan.workload.memory_pages(4, 512)


@pytest.mark.parametrize("mech,extra", [
    ("exits", ["--fault-around", "256", "--fetch-delay-us", "500", "--fetch-delay-mode", "spin"]),
    ("uffd", ["--readers", "4", "--fetch-delay-us", "500"]),
    ("async", ["--readers", "2", "--fault-around", "64", "--fetch-delay-us", "200"]),
])
def test_precopy_stale_pages_never_mapped_before_their_content(kvm, mech, extra):
    """A stale page is claimed, fetched, then marked clean: the bitmap and other
    resolvers must not map it in between (regression: content errors)."""
    vcpus = 64 if mech == "exits" else 8
    plan = make_plan(mech, vcpus, mib=2, workload="precopy-stale",
                     extra=["--stale", "0.5", "--bitmap-delay-ms", "1"] + extra)
    metrics, _ = execute(plan)
    assert metrics["content_errors"] == 0
    assert metrics["pages_copied"] == metrics["precopy"]["stale_pages"]


def test_overlap_latency_counts_faults_not_first_touches(kvm):
    metrics, _ = execute(make_plan("uffd", 16, mib=2, workload="overlap"))
    assert metrics["fault_latency_ns"]["count"] == metrics["faults_attributed_to_vcpus"]
    assert metrics["first_touch_latency_ns"]["count"] == 16 * 512
    assert metrics["fault_breakdown_ns"]["faults_used"] >= 0.9 * metrics["fault_latency_ns"]["count"]


@pytest.mark.parametrize("workload", ["sequential", "overlap"])
def test_a_partial_walk_is_a_prefix_and_counts_only_the_pages_it_reached(kvm, workload):
    """A traced run's --trace-share: each vCPU walks the first quarter of its own table;
    pages, installs and never-installed pages count what that prefix reached (with shared
    pages, the union of the prefixes), not the whole of guest memory."""
    plan = make_plan("uffd", 4, mib=2, workload=workload, touch_share=0.25)
    metrics, raw = execute(plan)
    table = plan.workload.touches(4, 512, np.random.default_rng(plan.seed))
    walked = table.shape[1] // 4
    assert all(v["touches"] == walked for v in raw["vcpus"])
    reached = np.unique(table[:, :walked] >> np.uint64(12)).size
    assert reached < plan.memory_pages
    assert metrics["pages"] == metrics["pages_installed"] == reached
    assert metrics["pages_never_installed"] == 0 and metrics["content_errors"] == 0
