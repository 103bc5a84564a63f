"""What one run is asked to do (`Plan`) and how a run fails (`RunError`).

Its own module so that everything that plans or supervises a run (the point
library, the watchdog, the fingerprint, the nightly tools) depends on these two
names, not on the runner that executes them.
"""
from dataclasses import dataclass, field

from . import placement


class RunError(RuntimeError):
    """The run failed; the message is one line."""


@dataclass
class Plan:
    vcpus: int
    mechanism: object          # bench.mechanisms.base.Mechanism
    workload: object           # bench.workloads.base.Workload
    mem_per_vcpu_mib: int
    fetch_delay_us: float = 0.0
    fetch_delay_mode: str = "sleep"
    record_latency: bool = True
    seed: int = 1
    timeout_s: float = 300.0
    corrupt_every: int = 0
    fail_spawn_at: int = 0     # test knob: the Nth thread creation fails
    stall_timeout_s: float = 60.0   # no progress this long: the watchdog stops the run
    stall_after: int = 0       # test knob: the resolver of the Nth page stops answering
    fault_around: int = 1
    fetch: str = "inline"              # inline | worker
    worker: dict = field(default_factory=dict)   # threads, batch, service
    trace_locks: bool = False
    lock_stacks: bool = True
    trace_mmap_lock: bool = True
    trace_buffer_kb: int = 16384
    trace_sched: bool = False  # traced runs: sched_switch/wakeup split each segment's CPU wait
    trace_bpf: bool = False    # the in-kernel tracer on this run: lock contention and the exact split
    # a traced run may walk only the first share of each vCPU's touch table (a prefix keeps
    # the workload's order and its first-touch flags): lock data for less guest time
    touch_share: float = 1.0
    placement: str = "free"    # bench.placement.POLICIES
    verify: str = "header"     # header | full
    corrupt_tail_every: int = 0        # test knob: torn copies
    misstamp_fetched_ns: int = 0   # test knob: a late `fetched` stamp
    tsc_khz_error_ppm: int = 0         # test knob: a wrong TSC frequency
    keep: list = field(default_factory=list)   # cffi buffers that must outlive the run

    @property
    def pages_per_vcpu(self) -> int:
        return self.mem_per_vcpu_mib * 256

    @property
    def memory_pages(self) -> int:
        return self.workload.memory_pages(self.vcpus, self.pages_per_vcpu)

    def cpu_map(self) -> tuple[list[int], list[int]]:
        """(CPU per vCPU, CPU per resolver thread) for this plan's placement."""
        mech = self.mechanism
        resolvers = mech.readers_total()
        per = max(1, resolvers // max(1, mech.uffds())) if mech.uses_uffd else resolvers
        first = []
        # the core's split: each userfaultfd spans ceil(pages / uffds) pages
        span = -(-self.memory_pages // max(1, mech.uffds()))
        for r in range(resolvers):
            if mech.uses_uffd and mech.uffds() > 1:
                # resolver r serves userfaultfd r // per; its range starts in this vCPU's partition
                first.append(min(self.vcpus - 1, (r // per) * span // self.pages_per_vcpu))
            else:
                first.append(r)
        return placement.plan_cpus(self.placement, self.vcpus, resolvers, first)
