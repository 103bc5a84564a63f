from .uffd import Uffd


class UffdMany(Uffd):
    name = "uffd-many"
    summary = ("guest memory split over several userfaultfds (one per vCPU partition by "
               "default, --uffds K), each with --readers threads")
    options = ("readers", "wait", "resolve", "uffds")

    def validate(self):
        super().validate()
        k, pages = self.uffds(), self.args.memory_pages
        # equal ranges, as the core splits guest memory
        if not 1 <= k <= 1024 or pages % k:
            raise ValueError(f"--uffds {k} must be in 1..1024 and divide the {pages} pages of "
                             f"guest memory at {self.vcpus} vCPUs")

    def uffds(self):
        if self.args.uffds:
            return self.args.uffds
        # one per vCPU partition; where the pages do not split that evenly (shared
        # workloads), the most equal ranges that do
        pages = self.args.memory_pages
        return max(d for d in range(1, min(self.vcpus, 1024) + 1) if pages % d == 0)
