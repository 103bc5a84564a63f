from .base import Workload, own_range


class RandomOrder(Workload):
    name = "random"
    summary = "each vCPU writes every page of its own range once, in a seeded random order"

    def pages_order(self, vcpus, pages_per_vcpu, rng):
        return rng.permuted(own_range(vcpus, pages_per_vcpu), axis=1)
