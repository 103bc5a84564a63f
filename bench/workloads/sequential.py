from .base import Workload, own_range


class Sequential(Workload):
    name = "sequential"
    summary = "each vCPU writes every page of its own range once, in address order"

    def pages_order(self, vcpus, pages_per_vcpu, rng):
        return own_range(vcpus, pages_per_vcpu)
