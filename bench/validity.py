"""Plain-words warnings about what a record's own numbers say of its validity.

The checks themselves are computed with the data they check (bench/breakdown.py,
bench/runner.py); this module words their outcome, and says what each warning
is about (`subject`): the host (other processes' load, bench/hostnoise.py), the
configuration (the flags chose a run the tool warns about) or the measurement
(the run is not what was asked: vCPUs not overlapping, a failed self-check,
spread between repetitions).
"""
from . import cpustate
from .hostnoise import WARNING_STARTS as HOST_WARNING_STARTS
from .placement import BIMODAL_MIN_GROUP_RUNS, bimodal_groups

# Runs shorter than this in guest time are warned about. Measured here
# (benchmarks/run_length.py: uffd and exits at 1 and 8 vCPUs, 2/4/8/32 MiB, 5 runs x 2
# interleaved rounds; the table is in docs/workloads.md): from 41 ms on, no size paged
# differently from 8-32x longer runs beyond the spread between two rounds of one size
# (up to 10-20%, from placement and the host's state); the one round outside the long
# runs' range was a 22 ms one (exits, 1 vCPU, 2 MiB). The threshold sits between.
MIN_GUEST_MS_WARN = 40.0
SHORT_RUN_START = "runs last"   # the configuration's warning: its memory size makes short runs
CPU_STATE_START = "the CPU was slowed"   # a host warning (bench/cpustate.py)


def _check_warnings(where: str, checks: dict) -> list[str]:
    """One warning per failed check, each naming it (`check failed: NAME: ...`)."""
    out = []
    cb = checks.get("guest_tsc_within_host_bracket")
    if cb and cb.get("ok") is False:
        out.append(f"{where}: check failed: guest_tsc_within_host_bracket: {cb['vcpus_outside']} of "
                   f"{cb['vcpus_checked']} vCPUs' start-up rdtsc fell outside the host's rdtsc "
                   "before and after that KVM_RUN: guest and host TSCs differ, so fault latency, "
                   "first-touch and re-touch latency, block time and the breakdown are unusable "
                   "(left out of metrics; kept in raw.unusable_metrics)")
    gw = checks.get("guest_window_vs_host_clock")
    if gw and gw.get("ok") is False:
        lim = gw["limits"]
        low = lim.get("vcpu_ratio_min", lim.get("fill_min"))   # fill_min: records before the two-sided check
        out.append(f"{where}: check failed: guest_window_vs_host_clock: the best vCPU's guest TSC "
                   f"window is {gw['max_vcpu_ratio']:.4f} of its host CLOCK_MONOTONIC window over the "
                   f"touch loop (fill {gw['fill']:.3f} over all vCPUs; "
                   + (f"limits {low} to {lim['vcpu_ratio_max']}" if gw.get("lower_applies", True)
                      else f"limit {lim['vcpu_ratio_max']}: the lower one stands aside in windows "
                           f"under {lim['window_min_ns'] / 1e6:g} ms")
                   + "): guest timings or the TSC frequency are wrong")
    tr = checks.get("tsc_rate_vs_monotonic")
    if tr and tr.get("ok") is False:
        out.append(f"{where}: check failed: tsc_rate_vs_monotonic: the TSC frequency used to convert "
                   f"cycles ({tr['tsc_khz']:.0f} kHz) is {tr['deviation'] * 1e6:+.0f} ppm off the TSC's "
                   f"rate measured with CLOCK_MONOTONIC over the run ({tr['measured_khz']:.0f} kHz; "
                   f"tolerance {tr['tolerance'] * 1e6:.0f} ppm): every time converted from cycles is "
                   "off by as much (or a time daemon slewed CLOCK_MONOTONIC faster than 500 ppm)")
    ct = checks.get("cpu_time_vs_latency")
    if ct and ct.get("applies") and ct["ok"] is False:
        out.append(f"{where}: check failed: cpu_time_vs_latency: the vCPU threads' guest-timed fault "
                   f"latency is {ct['ratio']:.3f} x their on-CPU plus run-queue time (the scheduler's "
                   "accounting): latency cannot exceed the time the threads were awake")
    return out


def run_warnings(rec: dict) -> list[str]:
    """Plain-words warnings about what a run's own numbers say of its validity."""
    out = []
    vcpus = rec["config"]["vcpus"]
    for kind in ("runs", "warmups", "traced_runs"):
        for i, r in enumerate(rec.get(kind, [])):
            m = r["metrics"]
            where = f"{kind[:-1]} {i + 1}"
            if m["content_errors"]:
                out.append(f"{where}: {m['content_errors']} pages had wrong content")
            overlap = m.get("vcpu_windows_overlapping_max")
            if overlap is not None and overlap < vcpus:
                out.append(f"{where}: only {overlap} of {vcpus} vCPUs' start-to-end windows overlapped "
                           f"(starts spread over {m['vcpu_start_spread_s']:.3f} s): not a "
                           f"{vcpus}-vCPU measurement")
            inside = m.get("vcpus_inside_kvm_run_max")
            if inside is not None and inside < vcpus / 2:
                out.append(f"{where}: at most {inside} of {vcpus} vCPUs were inside KVM_RUN at once: "
                           "most were handling faults in userspace or not yet started")
            if m.get("fault_records_dropped"):
                out.append(f"{where}: {m['fault_records_dropped']} fault records did not fit the "
                           "per-vCPU log and are missing from latency and breakdown")
            if m.get("faults_unattributed"):
                out.append(f"{where}: {m['faults_unattributed']} userfaultfd messages came from no "
                           "vCPU thread and are not in the per-vCPU figures")
            pinned = {c for d in ((r.get("raw") or {}).get("placement") or {}).get("by_role", {}).values()
                      for c in d["pinned"]}
            if -2 in pinned:
                out.append(f"{where}: a thread's CPU affinity was refused: it ran unpinned, not as "
                           f"--placement {rec['config'].get('placement')} planned")
            bd = m.get("fault_breakdown_ns") or {}
            if bd.get("faults_total") and bd["faults_used"] < 0.9 * bd["faults_total"]:
                out.append(f"{where}: the cost breakdown covers {bd['faults_used']} of "
                           f"{bd['faults_total']} faults")
            split = bd.get("sched_split") or {}
            if split.get("withheld"):
                out.append(f"{where}: the per-segment CPU/wait split is withheld: {split['withheld']}")
            out += _check_warnings(where, m.get("checks") or {})
    runs = [r["metrics"] for r in rec["runs"]]
    ms = sorted(r["guest_seconds"] * 1000 for r in runs)
    if ms and ms[len(ms) // 2] < MIN_GUEST_MS_WARN:
        out.append(f"{SHORT_RUN_START} {ms[len(ms) // 2]:.0f} ms of guest time (median), under "
                   f"{MIN_GUEST_MS_WARN:g} ms: start-up and timer effects weigh in; raise "
                   f"--mem-per-vcpu or use --min-guest-ms {MIN_GUEST_MS_WARN:g}")
    probes = cpustate.run_probes(rec)
    slowed = cpustate.slowed(probes)
    if slowed:
        out.append(f"{CPU_STATE_START} around {len(slowed)} of {len(probes)} runs (runs "
                   + ",".join(str(i + 1) for i, _x in slowed)
                   + f": the CPU-state probe up to x{max(x for _i, x in slowed):.2f} its floor, "
                   f"over x{cpustate.CONTENDED_RATIO}): the host's own CPU, not this cell; the "
                   "verdicts leave such runs out where enough remain (docs/nightly.md), this record keeps them")
    rates = [r["pages_per_s"] for r in runs]
    groups = bimodal_groups(rates)
    if groups:
        def about(g):
            return f"{sorted(rates[i] for i in g)[len(g) // 2]:,.0f} pages/s"
        policy = rec["config"].get("placement", "free")
        fixed = (f"placement is fixed (--placement {policy}): something else {{}}, such as other "
                 "processes on the host")
        lone = [g for g in groups if len(g) == 1]
        if lone:   # one run apart is an outlier, not a second group
            i, rest = lone[0][0], max(groups, key=len)
            why = ("thread placement may have set it apart; compare --placement packed and spread"
                   if policy == "free" else fixed.format("set it apart"))
            few = (f"; under {BIMODAL_MIN_GROUP_RUNS} runs only a lone run is looked for, not two groups"
                   if len(rates) < BIMODAL_MIN_GROUP_RUNS else "")
            out.append(f"run {i + 1} is an outlier at {rates[i]:,.0f} pages/s (the other {len(rest)} runs "
                       f"at about {about(rest)}); {why}{few}")
        else:
            desc = " vs ".join("runs " + ",".join(str(i + 1) for i in g) + f" at about {about(g)}"
                               for g in groups)
            why = ("thread placement may decide which; compare --placement packed and spread"
                   if policy == "free" else fixed.format("decides"))
            out.append(f"bimodal: the repetitions fall into two groups ({desc}); {why}")
    return out


def subject(warning: str) -> str:
    """What a warning is about: "host", "configuration" or "measurement"."""
    if warning.startswith((*HOST_WARNING_STARTS, CPU_STATE_START)):
        return "host"
    if warning.startswith(SHORT_RUN_START):
        return "configuration"
    return "measurement"
