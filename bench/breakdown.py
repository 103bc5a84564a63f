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
- `cpu_time_vs_latency` (in cli): the scheduler's on-CPU + run-queue time of the
  vCPU threads against the guest-timed fault latency they spent.
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
MONO_TOLERANCE = 0.05           # |segment - monotonic| / mean latency
CPU_TIME_SLACK = 0.005         # fault latency / (on-CPU + run-queue wait) of the vCPU threads
MONO_SLACK_NS = 500.0           # per fault: clock reads sit a few instructions apart


ROW_DTYPE = np.dtype([("vcpu", "<i4"), ("vcpu_tid", "<i4"), ("resolver_tid", "<i4"),
                      ("complete", "<i4"), ("stamp", "<u8", (11,))])   # struct fb_fault_row


def rows_array(buffer) -> dict:
    """The core's rows (a buffer of struct fb_fault_row) as numpy columns."""
    rows = np.frombuffer(buffer, dtype=ROW_DTYPE)
    return {"stamps": rows["stamp"][:, :len(STAMPS)].copy(), "vcpu": rows["vcpu"].copy(),
            "vcpu_tid": rows["vcpu_tid"].copy(), "resolver_tid": rows["resolver_tid"].copy(),
            "complete": rows["complete"] != 0}


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
    if not used:
        return None
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
            "median_fault_latency": to_ns(float(np.median(lat))),
            "faults_used": int(used), "faults_skipped": seg["skipped"],
            "faults_incomplete": seg["incomplete"],
            "faults_total": int(used + seg["skipped"] + seg["incomplete"]),
            "faults_resumed_before_install_returned": seg["cut"],
            "note": "segments partition each fault's guest-timed latency, so they sum to it "
                    "by construction; see `checks` for the independent cross-checks"}


def check_segments_vs_monotonic(seg: dict, threads: list[dict], to_ns) -> dict:
    """Fetch and install: the TSC-stamped segments against CLOCK_MONOTONIC sums of
    the resolving threads. Only where both count the same resolutions."""
    count = sum(t["mono_count"] for t in threads)
    used = seg["cycles"].shape[0]
    out = {"resolutions_timed": int(count), "faults_used": int(used)}
    if not used or count != used:
        out["comparable"] = False
        out["reason"] = ("the segments and the monotonic sums count different resolutions "
                         f"({used} faults with stamps, {count} timed resolutions: duplicates, "
                         "fault-around or declared-clean pages)")
        return out
    idx = {s: j for j, s in enumerate(seg["names"])}
    mean_latency = to_ns(float(seg["latency_cycles"].mean()))
    ok = True
    for part, key in (("fetch", "mono_fetch_ns"), ("install", "mono_install_ns")):
        stamped = to_ns(float(seg["cycles"][:, idx[part]].sum())) / used
        mono = sum(t[key] for t in threads) / count
        diff = stamped - mono
        limit = MONO_TOLERANCE * mean_latency + MONO_SLACK_NS
        out[part] = {"segment_ns": stamped, "monotonic_ns": mono, "difference_ns": diff,
                     "limit_ns": limit, "ok": abs(diff) <= limit}
        ok = ok and abs(diff) <= limit
    out["comparable"] = True
    out["ok"] = ok
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


def inside_kvm_run_max(cols: dict, seg: dict, vres, vcpus: int, handles_on_vcpu: bool) -> int | None:
    """Most vCPU threads inside KVM_RUN at once: each is inside from its start to its
    end except, for mechanisms that handle faults on the vCPU thread, from its exit
    (notify) to its install returning (done) or, for async, to seeing its bit (resumed)."""
    starts = np.array([vres[i].tsc_host_after for i in range(vcpus)], dtype=np.int64)
    if not starts.all():
        return None
    events = [(starts, np.ones(vcpus, dtype=np.int64))]
    # the end of each vCPU's loop: its last g1 (the done exit follows at once)
    st = cols["stamps"].astype(np.int64)
    ends = np.zeros(vcpus, dtype=np.int64)
    if st.shape[0]:
        np.maximum.at(ends, cols["vcpu"], st[:, -1])
    ends = np.where(ends > 0, ends, starts)
    events.append((ends, -np.ones(vcpus, dtype=np.int64)))
    if handles_on_vcpu and st.shape[0]:
        complete = cols["complete"]
        left = st[complete, STAMPS.index("notify")]
        back = np.maximum(st[complete, STAMPS.index("done")], st[complete, STAMPS.index("resumed")])
        events.append((left, -np.ones(left.size, dtype=np.int64)))
        events.append((back, np.ones(back.size, dtype=np.int64)))
    t = np.concatenate([e[0] for e in events])
    d = np.concatenate([e[1] for e in events])
    order = np.lexsort((d, t))   # leaving before entering at the same instant
    return int(np.cumsum(d[order]).max())
