from .base import Workload, own_range


class WriteMix(Workload):
    name = "write-mix"
    summary = "sequential sweep where --write-percent of touches are writes, the rest reads"

    @classmethod
    def add_arguments(cls, group):
        group.add_argument("--write-percent", type=float, default=50.0,
                           help="write-mix: percentage of touches that are writes (default 50)")

    def validate(self):
        if not 0 <= self.args.write_percent <= 100:
            raise ValueError(f"--write-percent must be in 0..100 (got {self.args.write_percent})")

    def params(self):
        return {"write_percent": self.args.write_percent}

    def pages_order(self, vcpus, pages_per_vcpu, rng):
        return own_range(vcpus, pages_per_vcpu)

    def read_mask(self, shape, rng):
        return rng.random(shape) >= self.args.write_percent / 100.0
