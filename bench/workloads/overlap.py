import numpy as np

from .base import Workload


class Overlap(Workload):
    name = "overlap"
    summary = ("every vCPU touches the same pages, each in its own random order, so several "
               "vCPUs fault on one page at once; guest memory is one shared window of "
               "--mem-per-vcpu")
    partitioned = False

    def memory_pages(self, vcpus, pages_per_vcpu):
        return pages_per_vcpu

    def pages_order(self, vcpus, pages_per_vcpu, rng):
        shared = np.arange(pages_per_vcpu, dtype=np.int64)
        return np.stack([rng.permutation(shared) for _ in range(vcpus)])
