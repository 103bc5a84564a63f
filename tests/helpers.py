"""Building runs for tests without going through the command line."""
import argparse

from bench.cli import build_parser, service_of
from bench.mechanisms import REGISTRY as MECHANISMS
from bench.runner import Plan
from bench.workloads import REGISTRY as WORKLOADS


def make_plan(mech: str, vcpus: int, mib: int = 2, workload: str = "sequential",
              extra: list[str] | None = None, **plan_kw) -> Plan:
    args = build_parser().parse_args(["--workload", workload, "--mem-per-vcpu", str(mib)] + (extra or []))
    wl = WORKLOADS[workload](args)
    wl.validate()
    args.needs_shared_memory = wl.needs_shared_memory or args.fetch == "worker"
    args.shared_memory_reason = f"workload {workload}"
    args.memory_pages = wl.memory_pages(vcpus, mib * 256)
    m = MECHANISMS[mech](args, vcpus, {"memslot_flag_userfault": False})
    m.validate()
    kw = {"fetch_delay_us": args.fetch_delay_us, "fetch_delay_mode": args.fetch_delay_mode,
          "fetch": args.fetch, "fault_around": args.fault_around,
          "worker": {"threads": args.worker_threads, "batch": args.worker_batch,
                     "service": service_of(args)}}
    kw.update(plan_kw)
    return Plan(vcpus=vcpus, mechanism=m, workload=wl, mem_per_vcpu_mib=mib, **kw)


def namespace(**kw) -> argparse.Namespace:
    return argparse.Namespace(**kw)
