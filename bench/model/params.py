"""The model's parameters, apart from its structure (bench/model/sim.py).

`Params` holds one mechanism's numbers as the simulation reads them. Each comes
from a calibration (bench/model/calibrate.py: measured or fitted on the host the
records came from), from `CITED` (a published measurement, cited in
docs/MODEL.md) or from a flag; `from_calibration` records which, per field.
Hand-set Params (the textbook tests) use the constructor directly.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, asdict

# Parameters a 2-CPU host cannot measure. Each: its value, the source, and the
# assumption that turns the source's figure into this parameter. Every
# prediction that depends on one is also given at 0.5x and 2x (SENSITIVITY).
CITED = {
    "line_transfer_ns": {
        "value": 226.0,
        "unit": "ns",
        "what": "extra cost of moving one contended cache line (a lock word, a wait-queue "
                "entry) between CPUs farther apart than any two CPUs of the calibration host",
        "source": "nviennot/core-to-core-latency (github.com/nviennot/core-to-core-latency), "
                  "results/'Dual AMD EPYC 7742 64-Core Processor.csv' (added 2022-09-19, "
                  "commit 47795f24): one-way compare-exchange latency (half a round trip on "
                  "one shared line; src/main.rs then, src/bench/cas.rs later) for every pair "
                  "of the 256 CPUs of a "
                  "dual-socket EPYC 7742; mean over the 32,640 pairs 226 ns (median 261 ns, "
                  "10th-90th percentile 128-275 ns)",
        "assumption": "a contended line moves between two CPUs drawn at random from such a "
                      "host, at that measured mean; charged in full on top of what the "
                      "calibration host measured (which already contains its own, nearer, "
                      "transfers)",
    },
}
SENSITIVITY = (0.5, 1.0, 2.0)


@dataclass
class Params:
    # scheduler
    quantum_ns: float = 4e6          # slice a CPU-bound thread runs while others wait
    run_queue_order: str = "wakecredit"  # structure, not a number: sim.RUN_QUEUE_ORDERS (MODEL.md)
    # thread counts (from the calibration records' configuration)
    readers: int = 1                 # reader / resolver threads per queue
    uffds: int = 0                   # uffd-many: userfaultfds (0: one per vCPU)
    # fetch
    fetch_delay_ns: float = 0.0      # resolving thread sleeps this long per fault
    # vCPU side
    vcpu_pre_ns: float = 0.0         # before it blocks / spins / installs
    vcpu_post_ns: float = 0.0        # after the page is there, back to the guest
    vcpu_idle_cpu_ns: float = 0.0    # extra CPU when woken onto an idle CPU
    vcpu_idle_wake_ns: float = 0.0   # delay before a woken vCPU runs on an idle CPU
    yield_ns: float = 0.0            # async: one busy-wait round (sched_yield)
    # resolver side (uffd reader, async resolver)
    reader_wake_ns: float = 0.0      # per wake-up from poll / eventfd
    reader_msg_ns: float = 0.0       # per fault: read, copy, install
    reader_idle_cpu_ns: float = 0.0
    reader_idle_wake_ns: float = 0.0
    # locks
    enqueue_ns: float = 0.0          # uffd: wait-queue spinlock held to enqueue
    wake_base_ns: float = 0.0        # uffd: wake under the wait-queue lock, fixed part
    wake_per_waiter_ns: float = 0.0  # uffd: wake walk, per waiter on the queue
    mmu_hold_ns: float = 0.0         # mmu_lock held per fault (write on shadow)
    list_hold_ns: float = 0.0        # async: list lock per push / pop
    handoff_ns: float = 0.0          # added to a lock hold when the holder changes CPU
    # per doubling of threads per CPU past one each: context switches and cache
    # refills cost more when many threads share a CPU (fitted; zero when P >= threads)
    vcpu_pressure_ns_per_doubling: float = 0.0
    reader_pressure_ns_per_doubling: float = 0.0
    vcpu_pressure_ns_per_doubling_sq: float = 0.0   # its square term, where fitted
    pressure_doublings_max: float = 0.0   # the calibrated range: the square term goes on along its tangent past it
    # share of a busy CPU the benchmark's own threads get (the rest: harness
    # threads, kernel threads, interrupts); every CPU cost is divided by it
    cpu_share: float = 1.0

    @classmethod
    def names(cls):
        return [f.name for f in fields(cls)]

    def as_dict(self):
        return asdict(self)


def far_fraction(pcpus: int, calibration_pcpus: int) -> float:
    """The share of CPU pairs farther apart than any pair of the calibration host:
    a line moving between two CPUs picked at random on P CPUs stays within
    calibration distance with probability about Pcal/P (assumption, MODEL.md)."""
    if pcpus <= calibration_pcpus:
        return 0.0
    return 1.0 - calibration_pcpus / pcpus


# the CPU time a thread spends (what a smaller share of a busy CPU stretches:
# bench/model/sim.py's with_pressure)
CPU_TIMES = ("vcpu_pre_ns", "vcpu_post_ns", "vcpu_idle_cpu_ns", "yield_ns", "reader_wake_ns",
             "reader_msg_ns", "reader_idle_cpu_ns", "enqueue_ns", "wake_base_ns",
             "wake_per_waiter_ns", "mmu_hold_ns", "list_hold_ns",
             "vcpu_pressure_ns_per_doubling", "reader_pressure_ns_per_doubling",
             "vcpu_pressure_ns_per_doubling_sq")
# the CPU costs a CPU-state scale multiplies: those, and the idle wake-ups (kernel work
# too); not the fetch sleep, the slice, the cited line transfer or the counts
CPU_COSTS = CPU_TIMES + ("vcpu_idle_wake_ns", "reader_idle_wake_ns")


def cpu_scale(cal: dict, cpu_probe_ns: float | None) -> float:
    """Target probe / the calibration's reference probe (1 without a target). A
    target with a calibration that has no reference is an error, not a silent 1."""
    if cpu_probe_ns is None:
        return 1.0
    ref = (cal.get("cpu_probe") or {}).get("value")
    if not ref:
        raise KeyError("the calibration has no CPU-state reference (cpu_probe): it cannot be "
                       "scaled to --cpu-probe-ns; recalibrate from records that carry raw.cpu_probe")
    if not cpu_probe_ns > 0:
        raise KeyError(f"--cpu-probe-ns must be positive, not {cpu_probe_ns}")
    return cpu_probe_ns / ref


def for_prediction(cal: dict, mech: str, pcpus: int, fetch_delay_us: float | None = None,
                   line_scale: float = 1.0, line_transfer_ns: float | None = None,
                   cpu_probe_ns: float | None = None) -> Params:
    """Params for one mechanism from a calibration (bench/model/calibrate.py's
    JSON), on `pcpus` CPUs, with the cited line-transfer cost scaled by `line_scale`
    and every CPU cost by the target's CPU-state probe over the calibration's."""
    mc = cal["mechanisms"][mech]
    names = Params.names()
    values = {k: v["value"] for k, v in mc["params"].items()
              if k in names and v.get("value") is not None}
    missing = [k for k, v in mc["params"].items() if k in names and v.get("value") is None]
    if missing:
        raise KeyError(f"{mech}: the calibration lacks {', '.join(missing)}: "
                       + "; ".join(mc["params"][k].get("missing", "") for k in missing))
    p = Params(**values)
    p.readers = int(p.readers)
    p.uffds = int(p.uffds)
    # lock holds are part of the per-fault CPU the calibration measured: carve
    # them out of the thread's own path so the total stays what was measured
    if mech in ("uffd", "uffd-many"):
        p.vcpu_pre_ns = max(0.0, p.vcpu_pre_ns - p.enqueue_ns)
    if mech == "async":
        p.vcpu_pre_ns = max(0.0, p.vcpu_pre_ns - p.list_hold_ns)
        p.reader_msg_ns = max(0.0, p.reader_msg_ns - p.list_hold_ns)
    p.vcpu_post_ns = max(0.0, p.vcpu_post_ns - p.mmu_hold_ns)
    scale = cpu_scale(cal, cpu_probe_ns)
    for name in CPU_COSTS:
        setattr(p, name, getattr(p, name) * scale)
    if fetch_delay_us is not None:
        p.fetch_delay_ns = fetch_delay_us * 1e3
    line = CITED["line_transfer_ns"]["value"] if line_transfer_ns is None else line_transfer_ns
    far = far_fraction(pcpus, cal["host"]["pcpus"])
    p.handoff_ns = line * line_scale * far
    # each waiter's queue entry is a line its own vCPU's CPU wrote
    p.wake_per_waiter_ns += p.handoff_ns
    return p
