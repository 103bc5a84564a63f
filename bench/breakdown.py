"""Where a fault's time went, from the core's per-fault stamps.

Each fault the guest timed comes back as one row of raw TSC stamps
(`struct fb_fault_row`): the guest's rdtsc before the touch (g0), the host's
stamps on the fault's way through userspace, and the guest's rdtsc after (g1).
Consecutive stamps partition [g0, g1] into segments, so the segments always sum
to the latency: that sum is a presentation, not a check. The checks are apart,
each against a clock or a counter that shares no stamp with the segments:

- `guest_window_vs_host_clock`: the guest's own TSC window over its touch loop
  against the vCPU thread's CLOCK_MONOTONIC time from the start-up exit to the
  completion exit (the loop runs inside those KVM_RUN calls and the handling
  between them); the guest window must fit inside and fill nearly all of it.
- `segments_vs_monotonic`: the fetch and install segments (TSC stamps) against
  CLOCK_MONOTONIC sums taken around the same work by the resolving thread.
- `cpu_time_vs_latency` (in runner): an upper bound from the scheduler's accounting:
  the guest-timed fault latency of the vCPU threads cannot exceed their on-CPU +
  run-queue time where they never sleep (`exits`, `async`).
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

# tolerances of the checks (see README, "Checks")
HOST_WINDOW_MIN_FILL = 0.90     # guest loop / host loop window, aggregate over vCPUs
HOST_WINDOW_MAX_OVER = 1.002    # the guest window cannot exceed the host's (0.2%: clock rounding)
MONO_TOLERANCE = 0.05           # |segment - monotonic| / monotonic, per fault
MONO_DISAGREE_MAX = 0.01        # share of faults that may disagree (preempted between reads)
CPU_TIME_SLACK = 0.005         # fault latency / (on-CPU + run-queue wait) of the vCPU threads
MONO_SLACK_NS = 2000.0          # per fault: the clock reads sit a few instructions apart


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
    cut_any = (filled[:, 1:-1] > g1).any(axis=1)
    filled[:, 1:-1] = np.minimum(filled[:, 1:-1], g1)
    diffs = np.diff(filled, axis=1)
    ordered = (diffs >= 0).all(axis=1)
    use = complete & ordered
    return {
        "cycles": diffs[use],                       # columns: SEGMENT_ENDING_AT order
        "stamps": filled[use],                      # the filled, cut stamps they come from
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


def check_segments_vs_monotonic(cols: dict, to_ns) -> dict:
    """Per fault: the fetch and install segments from their raw TSC stamps (not cut,
    not filtered for order) against CLOCK_MONOTONIC taken around the same work by
    the same thread. A fault disagrees when the two differ by more than
    MONO_SLACK_NS + MONO_TOLERANCE of the monotonic time; the check fails when more
    than MONO_DISAGREE_MAX of the timed faults disagree (a preemption between two
    adjacent clock reads makes a rare honest disagreement)."""
    timed = cols["complete"] & ((cols["mono_fetch_ns"] > 0) | (cols["mono_install_ns"] > 0))
    n = int(timed.sum())
    out = {"faults_timed": n, "faults": int(cols["complete"].size)}
    if not n:
        out.update(comparable=False, ok=None,
                   reason="no fault was fetched and installed by a timed resolver")
        return out
    st = cols["stamps"][timed].astype(np.int64)
    col = {s: st[:, STAMPS.index(s)] for s in ("fetch_start", "fetched", "done")}
    ok = True
    for part, a, b, key in (("fetch", "fetch_start", "fetched", "mono_fetch_ns"),
                            ("install", "fetched", "done", "mono_install_ns")):
        stamped = to_ns((col[b] - col[a]).astype(np.float64))
        mono = cols[key][timed]
        diff = stamped - mono
        bad = np.abs(diff) > MONO_SLACK_NS + MONO_TOLERANCE * mono
        share = float(bad.mean())
        out[part] = {"segment_ns_mean": float(stamped.mean()), "monotonic_ns_mean": float(mono.mean()),
                     "difference_ns_median": float(np.median(diff)),
                     "faults_disagreeing": int(bad.sum()), "share_disagreeing": share,
                     "ok": share <= MONO_DISAGREE_MAX}
        ok = ok and share <= MONO_DISAGREE_MAX
    out.update(comparable=True, ok=ok)
    return out


def check_guest_window(vres, vcpus: int, to_ns) -> dict | None:
    """The guest's TSC window over its touch loop against the host's monotonic one."""
    host = [vres[i].host_loop_ns for i in range(vcpus)]
    guest = [to_ns(vres[i].guest_loop_cycles) for i in range(vcpus)]
    if not all(host) or not all(guest):
        return None
    over = [g / h for g, h in zip(guest, host)]
    fill = sum(guest) / sum(host)
    worst = max(over)
    return {"guest_loop_ns": float(sum(guest)), "host_loop_ns": float(sum(host)),
            "fill": fill, "max_vcpu_ratio": worst,
            "ok": fill >= HOST_WINDOW_MIN_FILL and worst <= HOST_WINDOW_MAX_OVER,
            "limits": {"fill_min": HOST_WINDOW_MIN_FILL, "vcpu_ratio_max": HOST_WINDOW_MAX_OVER}}


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
