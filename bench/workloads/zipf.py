import numpy as np

from .base import Workload, own_range


class Zipf(Workload):
    name = "zipf"
    summary = ("skewed hot set: every page of the vCPU's range once, plus re-touches drawn "
               "from a Zipf distribution (--skew); first touches fault, re-touches find the page")

    @classmethod
    def add_arguments(cls, group):
        group.add_argument("--skew", type=float, default=1.1,
                           help="zipf: exponent s of the rank distribution (> 1; default 1.1)")
        group.add_argument("--retouch-ratio", type=float, default=1.0,
                           help="zipf: re-touches per page of the range (default 1.0)")

    def validate(self):
        if not self.args.skew > 1.0:
            raise ValueError(f"--skew must be > 1 (got {self.args.skew})")
        if not 0 <= self.args.retouch_ratio <= 16:
            raise ValueError(f"--retouch-ratio must be in 0..16 (got {self.args.retouch_ratio})")

    def params(self):
        return {"skew": self.args.skew, "retouch_ratio": self.args.retouch_ratio}

    def touches_per_vcpu(self, pages_per_vcpu):
        return pages_per_vcpu + int(round(pages_per_vcpu * self.args.retouch_ratio))

    def pages_order(self, vcpus, pages_per_vcpu, rng):
        base = own_range(vcpus, pages_per_vcpu)
        extra = int(round(pages_per_vcpu * self.args.retouch_ratio))
        # hot ranks map to pages through a per-vCPU permutation, so the hot set is spread
        ranks = np.minimum(rng.zipf(self.args.skew, size=(vcpus, extra)) - 1, pages_per_vcpu - 1)
        perm = rng.permuted(base, axis=1)
        hot = np.take_along_axis(perm, ranks, axis=1)
        # interleave: the full sweep in random order, with re-touches mixed in after
        # each page's first touch is guaranteed by sorting on position
        order = np.concatenate([perm, hot], axis=1)
        keys = np.concatenate([np.arange(pages_per_vcpu)[None, :].repeat(vcpus, 0),
                               rng.integers(0, pages_per_vcpu, size=(vcpus, extra))], axis=1)
        idx = np.argsort(keys, axis=1, kind="stable")
        return np.take_along_axis(order, idx, axis=1)
