from .uffd import Uffd


class UffdMany(Uffd):
    name = "uffd-many"
    summary = ("guest memory split over several userfaultfds (one per vCPU partition by "
               "default, --uffds K), each with --readers threads")
    options = ("readers", "wait", "resolve", "uffds")

    def validate(self):
        super().validate()
        k = self.uffds()
        if not 1 <= k <= min(1024, self.vcpus_pages()):
            raise ValueError(f"--uffds must be in 1..{min(1024, self.vcpus_pages())} (got {k})")

    def vcpus_pages(self):
        return self.args.memory_pages

    def uffds(self):
        return self.args.uffds if self.args.uffds else min(self.vcpus, 1024)
