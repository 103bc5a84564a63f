"""Guest workloads: each one builds the touch tables the guest walks.

A workload is one file here plus one line in REGISTRY. Its contract
(bench.workloads.base.Workload): options on the command line, its parameters
for the result record, and `touches(vcpus, pages_per_vcpu, rng)` returning a
(vcpus, n) uint64 array of page byte offsets ORed with FB_TOUCH_* flags.
"""
from .base import Workload
from .sequential import Sequential
from .random_order import RandomOrder
from .zipf import Zipf
from .write_mix import WriteMix
from .overlap import Overlap
from .phased import Phased
from .precopy_stale import PrecopyStale

REGISTRY: dict[str, type[Workload]] = {
    Sequential.name: Sequential,
    RandomOrder.name: RandomOrder,
    Zipf.name: Zipf,
    WriteMix.name: WriteMix,
    Overlap.name: Overlap,
    Phased.name: Phased,
    PrecopyStale.name: PrecopyStale,
}

__all__ = ["REGISTRY", "Workload"]
