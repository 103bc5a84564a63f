"""What a measured point prints on the terminal: the selftest's lines first,
then the harness's own (latency, mechanism cost and CPU wait, locks, warnings)."""
from .validity import subject

def _print_cost_and_wait(rec: dict, med) -> None:
    """Mechanism cost (CPU time per fault) and CPU wait (run-queue time per fault)
    apart, from the scheduler's accounting of every harness thread (schedstat)."""
    s = rec["summary"]
    roles = sorted({k.split(".")[1] for k in s if k.startswith("sched.") and k.endswith(".on_cpu_ns_per_fault")})
    if not roles:
        return
    cost = sum(med(f"sched.{r}.on_cpu_ns_per_fault") or 0 for r in roles)
    wait = {r: med(f"sched.{r}.run_queue_wait_ns_per_fault") or 0 for r in roles}
    by_role = ", ".join(f"{r} {med(f'sched.{r}.on_cpu_ns_per_fault') / 1000:.1f}" for r in roles)
    waits = ", ".join(f"{r} {wait[r] / 1000:.1f}" for r in roles)
    print(f"Mechanism cost per fault (on-CPU time of the harness threads per fault, guest loop "
          f"included; us; thread CPU clock): {cost / 1000:.1f} ({by_role})")
    print(f"CPU wait per fault (runnable, waiting for a CPU, us; schedstat run delay): "
          f"{sum(wait.values()) / 1000:.1f} ({waits})")
    mean = med("fault_latency_ns.mean")
    if mean:
        print(f"   fault latency mean {mean / 1000:.1f} us, p50 {med('fault_latency_ns.p50') / 1000:.1f} us; "
              f"breakdown medians: " + ", ".join(
                  f"{k.rsplit('.', 1)[1]} {med(k) / 1000:.1f}" for k in sorted(s)
                  if k.startswith("fault_breakdown_ns.parts_median.") and med(k)))
    src, split = _split_source(rec)
    if split and split.get("withheld"):
        print(f"{src}: per-segment split withheld: {split['withheld']}")
    elif split:
        parts = split["parts"]
        total = sum(p["total_ns"] or 0 for p in parts.values())
        wait = sum(p["cpu_wait_ns"] or 0 for p in parts.values())
        on = sum(p["on_cpu_ns"] or 0 for p in parts.values())
        if split.get("tracer") == "bpf":   # the log's wall clock sums exactly; CPU time apart
            won = sum(p["on_cpu_wall_ns"] or 0 for p in parts.values())
            wwait = sum(p["cpu_wait_wall_ns"] or 0 for p in parts.values())
            print(f"{src}, per fault (us): latency {total / 1000:.1f} = on a CPU {won / 1000:.1f} + "
                  f"CPU wait {wwait / 1000:.1f} + asleep/blocked {(total - won - wwait) / 1000:.1f} "
                  f"(scheduler: CPU time {on / 1000:.1f}, run delay {wait / 1000:.1f}); "
                  f"vCPUs on a CPU at once: at most {split['vcpus_on_cpu_at_once_max']}")
        else:
            print(f"{src}, per fault (us): latency {total / 1000:.1f} = on CPU {on / 1000:.1f} + CPU wait "
                  f"{wait / 1000:.1f} + asleep/blocked {(total - on - wait) / 1000:.1f}; "
                  f"vCPUs on a CPU at once: at most {split['vcpus_on_cpu_at_once_max']}")
        print("   by segment (total/wait): " + ", ".join(
            f"{name} {p['total_ns'] / 1000:.1f}/{p['cpu_wait_ns'] / 1000:.1f}" for name, p in parts.items()
            if p["total_ns"] and p["total_ns"] >= 50))
        cc = split.get("cross_check")
        if cc:
            print(f"   split checked against each thread's own clocks: {cc['threads_checked']} threads, "
                  f"worst CPU {100 * (cc['worst_cpu_rel_error'] or 0):.2f}%, worst run delay "
                  f"{100 * (cc['worst_wait_rel_error'] or 0):.2f}% (limit {100 * cc['limit']:.0f}%)")
    pl = rec["runs"][0]["raw"].get("placement") if rec["runs"] else None
    if pl:
        seen = "; ".join(f"{role}: CPUs {','.join(map(str, d['cpus_seen']))}, "
                         f"{d['migrations'] if d['migrations'] is not None else '?'} migrations"
                         for role, d in pl["by_role"].items())
        print(f"Placement {pl['policy']} (run 1): {seen}")


def _split_source(rec: dict) -> tuple[str, dict | None]:
    """(label, split) of the run the terminal shows: the first traced run, or with
    --trace-every-run the in-kernel tracer's first measured run."""
    for r in rec.get("traced_runs", [])[:1]:
        return "Traced run", (r["metrics"].get("fault_breakdown_ns") or {}).get("sched_split")
    for i, r in enumerate(rec.get("runs", [])[:1]):
        split = (r["metrics"].get("fault_breakdown_ns") or {}).get("sched_split")
        if split:
            return f"Run {i + 1} (in-kernel tracer)", split
    return "", None


def print_point(rec: dict, path: str) -> None:
    cfg, s = rec["config"], rec["summary"]
    m = rec["machine"]
    def med(key):
        return s.get(key, {}).get("median")
    runs = [r["metrics"] for r in rec["runs"]]
    print(f"== {cfg['mech']} / {cfg['workload']}: {cfg['vcpus']} vCPUs x {cfg['mem_per_vcpu_mib']} MiB, "
          f"{len(runs)} run(s), on {m.get('online_cpus')} CPUs ({m.get('cpu_model')}, {m.get('kernel_release')})")
    if rec["emulated"]:
        print(f"   EMULATED: {rec['emulation_reason']}")
    # the selftest's lines, under its names and with its definitions
    print(f"Total guest execution time: {med('guest_seconds'):.6f}s")
    print(f"Per-vcpu demand paging rate: {med('pages_per_s_per_vcpu'):f} pgs/sec/vcpu")
    print(f"Overall demand paging rate: {med('pages_per_s'):f} pgs/sec"
          + (f"  (min {s['pages_per_s']['min']:.0f}, max {s['pages_per_s']['max']:.0f})" if len(runs) > 1 else ""))
    print(f"Per-vCPU rate over each vCPU's own window (harness measure, mean): "
          f"{med('pages_per_s_per_vcpu_own_window'):.0f} pages/s")
    print(f"Pages: {runs[0]['pages']}  faults delivered: {runs[0]['faults']}  "
          f"installed: {runs[0]['pages_installed']}  content errors: {sum(r['content_errors'] for r in runs)} "
          f"(verify {cfg.get('verify', 'header')})  fault records dropped: "
          f"{sum(r.get('fault_records_dropped', 0) for r in runs)}  unattributed: "
          f"{sum(r.get('faults_unattributed', 0) for r in runs)}")
    keys = ["p50", "p90", "p99", "p99_9", "max"]
    # the summary holds a latency only where every run has it (a failed clock check
    # sets a run's aside: metrics.unusable)
    unusable = [i + 1 for i, r in enumerate(runs) if r.get("unusable")]
    if unusable:
        print(f"Fault latency and breakdown: unusable in run(s) {','.join(map(str, unusable))} of "
              f"{len(runs)}: {runs[unusable[0] - 1]['unusable']['reason']}; no latency is summarized")
    if med("fault_latency_ns.p50") is not None:
        parts = "  ".join(f"{k.replace('_', '.')} {med('fault_latency_ns.' + k) / 1000:.1f}" for k in keys)
        print(f"Fault latency (us, each fault as its vCPU saw it): {parts}")
    elif not unusable and med("first_touch_latency_ns.p50") is not None:
        parts = "  ".join(f"{k.replace('_', '.')} {med('first_touch_latency_ns.' + k) / 1000:.2f}"
                          for k in keys)
        print(f"First-touch latency (us; no fault reaches userspace here): {parts}")
    _print_cost_and_wait(rec, med)
    traced = rec.get("traced_runs") or []
    for label, r in ([("traced run", traced[0])] if traced else
                     [("run 1, in-kernel tracer", r) for r in rec["runs"][:1]]):
        kl = r["metrics"].get("kernel_locks")
        if not kl:
            continue
        top = ", ".join(f"{t['call_site'] or t['lock']} x{t['count']}" for t in kl["top_locks"][:3])
        print(f"Kernel lock contention ({label}): {kl['contentions']} contentions, "
              f"{kl['wait_ns_total'] / 1e6:.2f} ms waited; top: {top or '-'}")
    tr = rec.get("tracing") or {}
    if tr.get("overhead_ratio") is not None:
        share = tr.get("touch_share")
        walked = (f", walking {share * 100:.0f}% of each vCPU's touches" if share and share < 1
                  else "")
        print(f"Tracing ({tr.get('tracer', 'tracefs')}, {len(traced)} traced run(s){walked}): "
              f"traced/untraced touch rate = {tr['overhead_ratio']:.3f}; headline numbers come "
              f"from untraced runs"
              + (f"; tracefs, not bpf: {tr['why_not_bpf']}" if tr.get("why_not_bpf") else ""))
    elif tr.get("tracer") == "bpf":
        print("Tracing: in-kernel (BPF) in every measured run (--trace-every-run): the headline "
              "numbers carry its cost (docs/tracing.md)")
    for w in rec["warnings"]:
        print(f"   warning ({subject(w)}): {w}")
    print(f"Result: {path}")
