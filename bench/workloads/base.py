"""The workload contract and the helpers every workload shares."""
import argparse

import numpy as np

PAGE = 4096
TOUCH_READ = 1    # FB_TOUCH_READ in csrc/fb_api.h
TOUCH_FIRST = 2   # FB_TOUCH_FIRST: this vCPU's first touch of the page


class Workload:
    name = ""
    summary = ""
    #: every vCPU's pages are its own; False when vCPUs share pages
    partitioned = True
    #: guest memory must be a memfd with a second mapping (MINOR faults)
    needs_shared_memory = False
    #: a prefix of each vCPU's walk is the same kind of work as the whole (a traced run
    #: may walk only a prefix: --trace-share); False where the walk has phases
    prefix_is_representative = True

    def __init__(self, args: argparse.Namespace):
        self.args = args

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        """Add this workload's own options (names prefixed to stay unique)."""

    def validate(self) -> None:
        """Raise ValueError with a one-line message for bad options."""

    def params(self) -> dict:
        return {}

    def stale_map(self, memory_pages: int, rng: np.random.Generator):
        """precopy workloads: uint8 per page, 1 where the content must be fetched."""
        return None

    def bitmap_delay_ns(self) -> int:
        return 0

    def touches_per_vcpu(self, pages_per_vcpu: int) -> int:
        """Table entries per vCPU (what the guest walks), for memory planning."""
        return pages_per_vcpu

    def memory_pages(self, vcpus: int, pages_per_vcpu: int) -> int:
        """Pages of guest memory the workload needs."""
        return vcpus * pages_per_vcpu

    def pages_order(self, vcpus: int, pages_per_vcpu: int, rng: np.random.Generator) -> np.ndarray:
        """(vcpus, n) int64 page numbers in touch order."""
        raise NotImplementedError

    def read_mask(self, shape, rng: np.random.Generator) -> np.ndarray:
        """Which touches are reads; writes by default."""
        return np.zeros(shape, dtype=bool)

    def touches(self, vcpus: int, pages_per_vcpu: int, rng: np.random.Generator) -> np.ndarray:
        pages = self.pages_order(vcpus, pages_per_vcpu, rng).astype(np.uint64)
        table = pages * np.uint64(PAGE)
        table |= np.where(self.read_mask(pages.shape, rng), TOUCH_READ, 0).astype(np.uint64)
        table |= np.where(first_touch_mask(pages), TOUCH_FIRST, 0).astype(np.uint64)
        return table


def first_touch_mask(pages: np.ndarray) -> np.ndarray:
    """True where a row touches a page for the first time."""
    mask = np.zeros(pages.shape, dtype=bool)
    for row in range(pages.shape[0]):
        _, first = np.unique(pages[row], return_index=True)
        mask[row, first] = True
    return mask


def own_range(vcpus: int, pages_per_vcpu: int) -> np.ndarray:
    """Each vCPU's own pages in ascending order: the partitioned layout."""
    base = np.arange(vcpus, dtype=np.int64)[:, None] * pages_per_vcpu
    return base + np.arange(pages_per_vcpu, dtype=np.int64)[None, :]
