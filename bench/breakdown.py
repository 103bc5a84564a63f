"""Where a fault's time went, from the core's per-fault stamps.

Each fault the guest timed comes back as one row of raw TSC stamps
(`struct fb_fault_row`): the guest's rdtsc before the touch (g0), the host's
stamps on the fault's way through userspace, and the guest's rdtsc after (g1).
Consecutive stamps partition [g0, g1] into segments, so the segments always sum
to the latency: that sum is a presentation, not a check. The checks are apart,
each against a clock that shares no stamp with what it checks (docs/checks.md says
the smallest error each catches and which test shows it):

- `guest_window_vs_host_clock`: the guest's own TSC window over its touch loop
  against the vCPU thread's CLOCK_MONOTONIC time from the start-up exit to the
  completion exit (the loop runs inside those KVM_RUN calls and the handling
  between them), two-sided: no vCPU's guest window may exceed its host window, and
  the best-filled vCPU's must fill nearly all of it.
- `tsc_rate_vs_monotonic`: the TSC frequency the core converts cycles with
  (KVM_GET_TSC_KHZ) against the TSC's rate over the run measured with the kernel's
  CLOCK_MONOTONIC, from the (rdtsc, clock_gettime, rdtsc) pairs taken at the start
  gate and at the stop.
- `cpu_time_vs_latency` (in runner): an upper bound from the scheduler's accounting:
  the guest-timed fault latency of the vCPU threads cannot exceed their on-CPU +
  run-queue time + the hypervisor's steal where they never sleep (`exits`, `async`).

No check compares the intermediate stamps (notify ... resumed) with an independent
clock: the former `segments_vs_monotonic` read CLOCK_MONOTONIC beside the very TSC
stamps it checked, so a misplaced stamp moved both and it could not fail (removed;
records that carry it still load).
"""
from __future__ import annotations

import numpy as np

# stamp slots of struct fb_fault_row, in chain order
STAMPS = ["g0", "notify", "enqueued", "popped", "claimed", "fetch_start", "fetched", "done",
          "resumed", "g1"]
# the segment that ends at each stamp (after g0), in C's FB_BD_* naming
SEGMENT_ENDING_AT = {"notify": "notify", "enqueued": "enqueue", "popped": "queue",
                     "claimed": "dispatch", "fetch_start": "wait", "fetched": "fetch",
                     "done": "install", "resumed": "wake", "g1": "resume"}
OPTIONAL_STAMPS = {"enqueued", "popped", "resumed"}

# tolerances of the checks (docs/checks.md says what each lets through)
# guest_window_vs_host_clock, on the best-filled vCPU's guest/host window ratio. The
# host window always contains the guest's loop, so an honest ratio is at most 1; the
# start-up and completion exits leave 50-350 us of it outside the loop (measured here
# at 1, 8 and 64 vCPUs, uffd and exits: the best vCPU's ratio 0.9967 to 0.99998), more
# where a preemption lands there (a 4 ms tick is 10% of a 40 ms run): the lower bound
# leaves room for that on the best vCPU, the upper one for CLOCK_MONOTONIC's rounding and
# an NTP slew (at most 500 ppm).
HOST_WINDOW_MIN_RATIO = 0.96    # the best vCPU's guest window / host window, at least
HOST_WINDOW_MAX_RATIO = 1.002   # every vCPU's, at most
# ... the lower bound only where the best vCPU's host window is this long: in a 3 ms
# window (`prefault`, 1 vCPU, 2 MiB here) the exits alone are 5% of it (ratio 0.946-0.952)
HOST_WINDOW_MIN_NS = 20e6
# tsc_rate_vs_monotonic: |tsc_khz / measured - 1| may reach the pairs' own uncertainty
# plus this: CLOCK_MONOTONIC is the TSC scaled by the kernel's own frequency (here the
# two agree to 0.1 ppm), slewed by NTP by at most 500 ppm (adjtimex's MAXFREQ)
TSC_RATE_SLACK = 500e-6
CPU_TIME_SLACK = 0.005          # fault latency / (on-CPU + run-queue wait) of the vCPU threads

ROW_DTYPE = np.dtype([("vcpu", "<i4"), ("vcpu_tid", "<i4"), ("resolver_tid", "<i4"),
                      ("complete", "<i4"), ("stamp", "<u8", (11,)),
                      ("mono_fetch_ns", "<u8"), ("mono_install_ns", "<u8")])   # struct fb_fault_row


def rows_array(buffer) -> dict:
    """The core's rows (a buffer of struct fb_fault_row) as numpy columns."""
    rows = np.frombuffer(buffer, dtype=ROW_DTYPE)
    return {"stamps": rows["stamp"][:, :len(STAMPS)].copy(), "vcpu": rows["vcpu"].copy(),
            "vcpu_tid": rows["vcpu_tid"].copy(), "resolver_tid": rows["resolver_tid"].copy(),
            "complete": rows["complete"] != 0,
            "mono_fetch_ns": rows["mono_fetch_ns"].astype(np.float64),
            "mono_install_ns": rows["mono_install_ns"].astype(np.float64)}


def segments(cols: dict) -> dict:
    """Per-fault segment lengths (cycles) for the complete, ordered faults.

    An optional stamp the mechanism does not set takes its predecessor's value
    (a zero-length segment). A stamp past g1 (a woken vCPU can run again before
    its resolver's install ioctl returns) is cut at g1 and counted; any other
    out-of-order stamp makes the fault skipped and counted.
    """
    st = cols["stamps"].astype(np.int64)
    complete = cols["complete"]
    filled = st.copy()
    for k, name in enumerate(STAMPS):
        if name in OPTIONAL_STAMPS:
            absent = filled[:, k] == 0
            filled[absent, k] = filled[absent, k - 1]
    g1 = filled[:, -1:]
    cut = np.zeros(filled.shape, dtype=bool)
    cut[:, 1:-1] = filled[:, 1:-1] > g1
    cut_any = cut.any(axis=1)
    filled[:, 1:-1] = np.minimum(filled[:, 1:-1], g1)
    diffs = np.diff(filled, axis=1)
    ordered = (diffs >= 0).all(axis=1)
    use = complete & ordered
    return {
        "cycles": diffs[use],                       # columns: SEGMENT_ENDING_AT order
        "stamps": filled[use],                      # the filled, cut stamps they come from
        "cut_at_g1": cut[use],                      # which of those stamps were cut at g1
        "names": [SEGMENT_ENDING_AT[s] for s in STAMPS[1:]],
        "used": use,
        "skipped": int((complete & ~ordered).sum()),
        "incomplete": int((~complete).sum()),
        "cut": int((cut_any & use).sum()),
        "latency_cycles": (st[:, -1] - st[:, 0])[use],
    }


def summarize(seg: dict, names: dict, to_ns) -> dict | None:
    """Mean and median per named segment, in ns. `names` maps the mechanism's
    segments (C names) to what they are called in its results."""
    cyc = seg["cycles"]
    used = cyc.shape[0]
    counts = {"faults_used": int(used), "faults_skipped": seg["skipped"],
              "faults_incomplete": seg["incomplete"],
              "faults_total": int(used + seg["skipped"] + seg["incomplete"]),
              "faults_resumed_before_install_returned": seg["cut"]}
    if not used:   # say so, with the counts: every fault skipped is not "no faults"
        return {"parts": {}, "parts_median": {}, "mean_fault_latency": None,
                "median_fault_latency": None, **counts}
    parts, medians, unexpected = {}, {}, {}
    for j, s in enumerate(seg["names"]):
        col = cyc[:, j]
        if s in names:
            parts[names[s]] = to_ns(float(col.mean()))
            medians[names[s]] = to_ns(float(np.median(col)))
        elif col.any():   # a stamp this mechanism should not set: report, never hide it
            unexpected[f"unexpected_{s}"] = to_ns(float(col.mean()))
    parts.update(unexpected)
    lat = seg["latency_cycles"]
    return {"parts": parts, "parts_median": medians,
            "mean_fault_latency": to_ns(float(lat.mean())),
            "median_fault_latency": to_ns(float(np.median(lat))), **counts,
            "note": "segments partition each fault's guest-timed latency, so they sum to it "
                    "by construction; see `checks` for the independent cross-checks"}


def check_guest_window(vres, vcpus: int, to_ns) -> dict | None:
    """The guest's TSC window over its touch loop against the host's monotonic one,
    per vCPU. Every vCPU's ratio must be at most HOST_WINDOW_MAX_RATIO (the guest's
    loop runs inside the host's window), and the best one at least
    HOST_WINDOW_MIN_RATIO (the best, not the aggregate: at many vCPUs some vCPU's
    completion exit waits long for a CPU, but one whose did not is there) where its
    host window is HOST_WINDOW_MIN_NS or longer (`lower_applies`)."""
    host = [vres[i].host_loop_ns for i in range(vcpus)]
    guest = [to_ns(vres[i].guest_loop_cycles) for i in range(vcpus)]
    if not all(host) or not all(guest):
        return None
    ratios = [g / h for g, h in zip(guest, host)]
    best = max(ratios)
    lower_applies = bool(host[ratios.index(best)] >= HOST_WINDOW_MIN_NS)
    return {"guest_loop_ns": float(sum(guest)), "host_loop_ns": float(sum(host)),
            "fill": sum(guest) / sum(host), "max_vcpu_ratio": best, "min_vcpu_ratio": min(ratios),
            "lower_applies": lower_applies,
            "ok": best <= HOST_WINDOW_MAX_RATIO and (best >= HOST_WINDOW_MIN_RATIO or not lower_applies),
            "limits": {"vcpu_ratio_min": HOST_WINDOW_MIN_RATIO,
                       "vcpu_ratio_max": HOST_WINDOW_MAX_RATIO,
                       "window_min_ns": HOST_WINDOW_MIN_NS}}


def check_tsc_rate(totals: dict) -> dict | None:
    """The TSC frequency the core converts with (`tsc_khz`) against the TSC's rate
    over the run, measured with CLOCK_MONOTONIC from the core's (TSC, monotonic)
    pairs at the start gate and at the stop. Each pair's TSC is the midpoint of two
    rdtsc around one clock_gettime, so it is off by at most half the pair's width,
    and each monotonic read by under 1 ns: the tolerance is that over the elapsed
    cycles, plus TSC_RATE_SLACK. None where the core recorded no pairs."""
    t0, t1 = totals.get("pair_start_tsc"), totals.get("pair_end_tsc")
    m0, m1 = totals.get("pair_start_mono_ns"), totals.get("pair_end_mono_ns")
    if not (t0 and t1 and m0 and m1) or t1 <= t0 or m1 <= m0 or not totals.get("tsc_khz"):
        return None
    cycles, ns = t1 - t0, m1 - m0
    measured_khz = cycles * 1e6 / ns
    deviation = totals["tsc_khz"] / measured_khz - 1.0
    pairs = ((totals["pair_start_width"] + totals["pair_end_width"]) / 2
             + 2 * measured_khz / 1e6) / cycles
    tolerance = pairs + TSC_RATE_SLACK
    return {"tsc_khz": float(totals["tsc_khz"]), "measured_khz": measured_khz,
            "deviation": deviation, "tolerance": tolerance, "pairs_uncertainty": pairs,
            "elapsed_ns": float(ns), "pair_widths_cycles": float(totals["pair_start_width"]
                                                               + totals["pair_end_width"]),
            "ok": abs(deviation) <= tolerance}


def max_at_once(times, deltas) -> int:
    """Most things present at once, from +1 (enter) / -1 (leave) events at `times`;
    at the same instant leaving comes first."""
    t, d = np.asarray(times, dtype=np.int64), np.asarray(deltas, dtype=np.int64)
    if not t.size:
        return 0
    order = np.lexsort((d, t))
    return int(np.cumsum(d[order]).max())


def inside_kvm_run_max(cols: dict, vres, vcpus: int, handles_on_vcpu: bool) -> int | None:
    """Most vCPU threads inside KVM_RUN at once: each is inside from its start to its
    end except, for mechanisms that handle faults on the vCPU thread, from its exit
    (notify) to its install returning (done) or, for async, to seeing its bit (resumed)."""
    starts = np.array([vres[i].tsc_host_after for i in range(vcpus)], dtype=np.int64)
    if not starts.all():
        return None
    events = [(starts, np.ones(vcpus, dtype=np.int64))]
    # the end of each vCPU's loop: its last touch's end stamp (the done exit follows at once)
    ends = np.array([vres[i].guest_first_tsc + vres[i].guest_loop_cycles for i in range(vcpus)],
                    dtype=np.int64)
    ends = np.where(ends > 0, ends, starts)
    events.append((ends, -np.ones(vcpus, dtype=np.int64)))
    st = cols["stamps"].astype(np.int64)
    if handles_on_vcpu and st.shape[0]:
        complete = cols["complete"]
        left = st[complete, STAMPS.index("notify")]
        back = np.maximum(st[complete, STAMPS.index("done")], st[complete, STAMPS.index("resumed")])
        events.append((left, -np.ones(left.size, dtype=np.int64)))
        events.append((back, np.ones(back.size, dtype=np.int64)))
    return max_at_once(np.concatenate([e[0] for e in events]), np.concatenate([e[1] for e in events]))
