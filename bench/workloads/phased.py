import numpy as np

from .base import Workload, own_range


class Phased(Workload):
    name = "phased"
    summary = ("a hot phase over a small working set (--hot-fraction of the range, "
               "--hot-rounds passes), then a full sweep of the range")
    # a prefix would be hot passes only, without the sweep
    prefix_is_representative = False

    @classmethod
    def add_arguments(cls, group):
        group.add_argument("--hot-fraction", type=float, default=0.1,
                           help="phased: fraction of each vCPU's range in the hot set (default 0.1)")
        group.add_argument("--hot-rounds", type=int, default=4,
                           help="phased: passes over the hot set before the sweep (default 4)")

    def validate(self):
        if not 0 < self.args.hot_fraction <= 1:
            raise ValueError(f"--hot-fraction must be in (0, 1] (got {self.args.hot_fraction})")
        if not 1 <= self.args.hot_rounds <= 64:
            raise ValueError(f"--hot-rounds must be in 1..64 (got {self.args.hot_rounds})")

    def params(self):
        return {"hot_fraction": self.args.hot_fraction, "hot_rounds": self.args.hot_rounds}

    def touches_per_vcpu(self, pages_per_vcpu):
        return max(1, int(pages_per_vcpu * self.args.hot_fraction)) * self.args.hot_rounds + pages_per_vcpu

    def pages_order(self, vcpus, pages_per_vcpu, rng):
        rng_pages = own_range(vcpus, pages_per_vcpu)
        hot_n = max(1, int(pages_per_vcpu * self.args.hot_fraction))
        hot = rng.permuted(rng_pages, axis=1)[:, :hot_n]
        phases = [rng.permuted(hot, axis=1) for _ in range(self.args.hot_rounds)]
        return np.concatenate(phases + [rng_pages], axis=1)
