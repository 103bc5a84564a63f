import numpy as np

from .base import Workload, own_range


class PrecopyStale(Workload):
    name = "precopy-stale"
    summary = ("the seed's scenario: shared memory with two mappings, pre-copy left every page "
               "in the page cache; a fraction --stale must be fetched again, the rest are "
               "declared present with UFFDIO_CONTINUE (no copy) when the final dirty bitmap "
               "arrives after --bitmap-delay-ms; faults before it block")
    # the bitmap thread clears every clean page of the whole memory however short the
    # walk, so a prefix's faults would meet a whole run's bitmap traffic
    prefix_is_representative = False
    needs_shared_memory = True

    @classmethod
    def add_arguments(cls, group):
        group.add_argument("--stale", type=float, default=0.2,
                           help="precopy-stale: fraction of pages dirtied after pre-copy (default 0.2)")
        group.add_argument("--bitmap-delay-ms", type=float, default=2.0,
                           help="precopy-stale: when the final dirty bitmap arrives, from the start "
                                "of the run (default 2)")

    def validate(self):
        if not 0 <= self.args.stale <= 1:
            raise ValueError(f"--stale must be in 0..1 (got {self.args.stale})")
        if not 0 <= self.args.bitmap_delay_ms <= 60_000:
            raise ValueError(f"--bitmap-delay-ms must be in 0..60000 (got {self.args.bitmap_delay_ms})")

    def params(self):
        return {"stale": self.args.stale, "bitmap_delay_ms": self.args.bitmap_delay_ms}

    def pages_order(self, vcpus, pages_per_vcpu, rng):
        return rng.permuted(own_range(vcpus, pages_per_vcpu), axis=1)

    def stale_map(self, memory_pages, rng):
        stale = np.zeros(memory_pages, dtype=np.uint8)
        count = int(round(self.args.stale * memory_pages))
        stale[rng.choice(memory_pages, size=count, replace=False)] = 1
        return stale

    def bitmap_delay_ns(self):
        return int(self.args.bitmap_delay_ms * 1e6)
