"""A/B verdicts that do not cry wolf: SAME / DIFFERENT / UNKNOWN per cell and metric.

For each cell and metric the samples are the per-run values (one per
repetition). A verdict needs all of:
  - enough repetitions: fewer than MIN_REPETITIONS a side is UNKNOWN, saying so;
  - a rank test: Mann-Whitney U, two-sided, its p-values corrected across every
    cell and metric compared at once by Benjamini-Hochberg (false-discovery rate
    ALPHA), so a sweep of many cells does not find a "regression" by chance;
  - an effect size: the Hodges-Lehmann ratio NEW/BASE (the median of every
    pairwise ratio, the estimate that goes with the rank test) with a percentile
    bootstrap 95% interval.

DIFFERENT: the corrected p is below ALPHA, the interval excludes 1, and the ratio
is beyond the metric's minimum effect. SAME: the interval lies inside the
minimum effect on both sides (no change that large is plausible). Anything else
is UNKNOWN: the data admit a change of the minimum effect but do not show one;
more repetitions decide it. An UNKNOWN whose interval's worse end is inside the
minimum effect (a large improvement is possible, a regression that large is
not) does not make the comparison inconclusive: the exit status asks whether
there is a regression.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as sps

from bench import cpustate
from bench import result as resultmod
from bench import schema
from bench.metrics import JUDGED, Metric

from . import fingerprint as fpmod
from .cells import HOST_KEYS, cell_key, cell_name, record_hosts

ALPHA = 0.05
MIN_REPETITIONS = 5     # with 5 a side, Mann-Whitney's smallest two-sided p is 0.008
BOOTSTRAP_RESAMPLES = 1000   # the interval's ends move 1-2% between seeds at this count
CONFIDENCE = 0.95


# what is judged, its better direction, minimum effect and label: bench/metrics.py
METRICS = JUDGED
METRIC_BY_PATH = {m.path: m for m in METRICS}


@dataclass
class Judgement:
    cell: str
    metric: Metric
    base: list[float]
    new: list[float]
    verdict: str = "UNKNOWN"
    reason: str = ""
    p: float | None = None
    q: float | None = None
    ratio: float | None = None
    interval: tuple[float, float] | None = None
    worse: bool = False
    repetitions_needed: int | None = None
    busy: str | None = None    # the host was busy outside the harness: not judged

    @property
    def rules_out_regression(self) -> bool:
        """An UNKNOWN whose interval's worse end lies inside the minimum effect: the
        data may show a large improvement, never a regression that large (a
        one-sided equivalence, i.e. non-inferiority). It does not hold a night back."""
        if self.verdict != "UNKNOWN" or self.busy or not self.interval or self.interval[0] <= 0:
            return False
        worse_end = self.interval[1] if self.metric.better == "lower" else 1 / self.interval[0]
        return math.log(worse_end) < math.log1p(self.metric.min_effect)

    def as_dict(self) -> dict:
        return {"cell": self.cell, "metric": self.metric.path, "verdict": self.verdict,
                "direction": (None if self.verdict != "DIFFERENT" else
                              "worse" if self.worse else "better"),
                "reason": self.reason, "p": self.p, "q": self.q, "ratio": self.ratio,
                "interval": list(self.interval) if self.interval else None,
                "min_effect": self.metric.min_effect,
                "base_n": len(self.base), "new_n": len(self.new),
                "base_median": float(np.median(self.base)) if self.base else None,
                "new_median": float(np.median(self.new)) if self.new else None,
                "unit": resultmod.metric_unit(self.metric.path),
                "repetitions_needed": self.repetitions_needed,
                "rules_out_regression": self.rules_out_regression}


def hodges_lehmann_ratio(base, new) -> float:
    """The median of every pairwise new/base ratio: the effect estimate that goes
    with the Mann-Whitney test. Unlike a ratio of medians it stays put when a
    metric has two modes (exits' p50 here: 32 or 43 us, run by run), because half
    the pairs then compare like with like."""
    lb, ln = np.log(np.asarray(base, dtype=float)), np.log(np.asarray(new, dtype=float))
    return float(np.exp(np.median(ln[:, None] - lb[None, :])))


def bootstrap_ratio_interval(base, new, seed: int = 0,
                             resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float]:
    """Percentile bootstrap interval of the Hodges-Lehmann ratio."""
    rng = np.random.default_rng(seed)
    lb, ln = np.log(np.asarray(base, dtype=float)), np.log(np.asarray(new, dtype=float))
    bi = lb[rng.integers(0, lb.size, (resamples, lb.size))]
    ni = ln[rng.integers(0, ln.size, (resamples, ln.size))]
    # overwrite_input: the pairwise differences are a temporary; no copy for the partition
    est = np.median((ni[:, :, None] - bi[:, None, :]).reshape(resamples, -1), axis=1, overwrite_input=True)
    tail = (1 - CONFIDENCE) / 2 * 100
    lo, hi = np.exp(np.percentile(est, [tail, 100 - tail]))
    return float(lo), float(hi)


def judge(judgements: list[Judgement], alpha: float = ALPHA) -> list[Judgement]:
    """Fill every judgement's verdict; the p-values are corrected together (BH)."""
    testable = [j for j in judgements if not j.busy
                and len(j.base) >= MIN_REPETITIONS and len(j.new) >= MIN_REPETITIONS]
    testable_ids = {id(j) for j in testable}
    for j in judgements:
        if min(len(j.base), len(j.new)) < MIN_REPETITIONS:
            # more repetitions are needed whatever the host did: say that first
            j.verdict = "UNKNOWN"
            j.repetitions_needed = MIN_REPETITIONS
            j.reason = (f"too few repetitions: {len(j.base)} base and {len(j.new)} new; "
                        f"need at least {MIN_REPETITIONS} a side" + (f"; and {j.busy}" if j.busy else ""))
        elif j.busy:
            j.verdict, j.reason = "UNKNOWN", j.busy
    for j in testable:
        if min(j.base) <= 0 or min(j.new) <= 0:
            j.verdict, j.reason = "UNKNOWN", "a value is 0 or below: no ratio"
            continue
        j.p = float(sps.mannwhitneyu(j.base, j.new, alternative="two-sided").pvalue)
        j.ratio = hodges_lehmann_ratio(j.base, j.new)
        j.interval = bootstrap_ratio_interval(j.base, j.new)
        j.worse = j.ratio > 1 if j.metric.better == "lower" else j.ratio < 1
    with_p = [j for j in testable if j.p is not None]
    if with_p:
        qs = sps.false_discovery_control([j.p for j in with_p], method="bh")
        for j, q in zip(with_p, qs):
            j.q = float(q)
    for j in with_p:
        margin = math.log1p(j.metric.min_effect)
        lo, hi = j.interval
        size = abs(math.log(j.ratio)) if j.ratio > 0 else math.inf
        if j.q < alpha and not lo <= 1 <= hi and size >= margin:
            j.verdict = "DIFFERENT"
            j.reason = (f"{'worse' if j.worse else 'better'}: x{j.ratio:.3f} "
                        f"(95% interval {lo:.3f}..{hi:.3f}), q={j.q:.2g}")
        elif lo > 0 and abs(math.log(lo)) < margin and abs(math.log(hi)) < margin:
            j.verdict = "SAME"
            j.reason = (f"x{j.ratio:.3f}, 95% interval {lo:.3f}..{hi:.3f} inside "
                        f"+-{j.metric.min_effect:.0%}")
        else:
            j.verdict = "UNKNOWN"
            # the interval narrows about as 1/sqrt(n): repetitions to fit the margin
            widest = max(abs(math.log(lo)) if lo > 0 else 10.0, abs(math.log(hi)))
            n = min(len(j.base), len(j.new))
            j.repetitions_needed = int(math.ceil(n * (widest / margin) ** 2)) + 1
            j.reason = (f"inconclusive: x{j.ratio:.3f}, 95% interval {lo:.3f}..{hi:.3f} admits a "
                        f"change of {j.metric.min_effect:.0%} (q={j.q:.2g}); about "
                        f"{j.repetitions_needed} repetitions a side would decide")
            if j.rules_out_regression:
                j.reason = (f"no regression of {j.metric.min_effect:.0%} plausible (x{j.ratio:.3f}, "
                            f"95% interval {lo:.3f}..{hi:.3f}; a larger improvement is): does not "
                            "hold the comparison back")
    return judgements


def metrics_of(record: dict) -> list[Metric]:
    """The judged metrics this record has in every run."""
    out = []
    for m in METRICS:
        if m.path == "first_touch_latency_ns.p50" and resultmod.metric_values(record, "fault_latency_ns.p50"):
            continue
        # an imported record's rate is judged as the selftest printed it, under its name
        # (the same ratio as its distinct-page rate within one cell: judged once)
        if m.path == "pages_per_s" and schema.is_imported(record):
            continue
        if resultmod.metric_values(record, m.path):
            out.append(m)
    return out


@dataclass
class Comparison:
    judgements: list[Judgement]
    host_changes: list[str] = field(default_factory=list)   # plain words, empty: same host
    notes: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    host_busy: list[str] = field(default_factory=list)      # cells judged on a busy host

    @property
    def regression(self) -> bool:
        return any(j.verdict == "DIFFERENT" and j.worse for j in self.judgements)

    @property
    def inconclusive(self) -> bool:
        return (any(j.verdict == "UNKNOWN" and not j.rules_out_regression for j in self.judgements)
                or not self.judgements)

    def exit_status(self) -> int:
        """0 SAME everywhere (or better), 1 slower, 2 unknown, host busy or host changed.
        A busy cell is UNKNOWN: a regression measured on quiet records still says 1."""
        if self.host_changes:
            return 2
        if self.regression:
            return 1
        return 2 if self.inconclusive else 0

    def as_dict(self) -> dict:
        return {"status": {0: "same", 1: "regression", 2: "host changed" if self.host_changes
                           else "host busy" if self.host_busy else "inconclusive"}[self.exit_status()],
                "host_busy": self.host_busy,
                "exit_status": self.exit_status(),
                "host_changes": self.host_changes, "notes": self.notes,
                "unmatched_cells": self.unmatched,
                "judgements": [j.as_dict() for j in self.judgements]}


def host_differences(base: list[dict], new: list[dict]) -> tuple[list[str], list[str]]:
    """(host changes, notes) between two sides' machines and fingerprints. Only the
    hardware parts of the fingerprint can say "host changed"; the kernel-path parts
    are noted beside the verdicts (bench/nightly/fingerprint.py, KERNEL_PATH)."""
    changes, notes = [], []
    for key in HOST_KEYS:
        bv = sorted({str(r["machine"].get(key)) for r in base})
        nv = sorted({str(r["machine"].get(key)) for r in new})
        if bv != nv:
            changes.append(f"{key}: {', '.join(bv)} -> {', '.join(nv)}")
    bk = sorted({str(r["machine"].get("kernel_release")) for r in base})
    nk = sorted({str(r["machine"].get("kernel_release")) for r in new})
    if bk != nk:
        notes.append(f"kernel changed: {', '.join(bk)} -> {', '.join(nk)} (compared: a kernel under "
                     "test is what a nightly job measures)")
    bfp, nfp = fpmod.pooled_records(base), fpmod.pooled_records(new)
    few = [f"{side} {fp['rounds_left_out']}" for side, fp in (("base", bfp), ("new", nfp))
           if fp and fp.get("rounds_left_out")]
    if few:
        notes.append("host fingerprint rounds left out, the CPU itself was slowed during them ("
                     + ", ".join(few) + "; bench/cpustate.py)")
        short = fpmod.uncompared(bfp, nfp)
        if short:
            notes.append(f"fewer than {fpmod.MIN_ROUNDS} unslowed fingerprint rounds on a side: "
                         f"{', '.join(short)} not compared (a hardware change without a new CPU "
                         "model or count goes unseen tonight)")
    moved = fpmod.changes(bfp, nfp)
    if moved is None:
        notes.append("no host fingerprint on " + ("either side" if not bfp and not nfp else
                                                   "the base side" if not bfp else "the new side")
                     + ": a host change cannot be told from a code change")
        return changes, notes
    changes += [f"host fingerprint: {c.describe()}" for c in moved if not c.kernel_path]
    kernel = [c.describe() for c in moved if c.kernel_path]
    if kernel:
        notes.append("the kernel's own fault path moved too (host fingerprint: " + "; ".join(kernel)
                     + "): consistent with a kernel or platform change, not the harness; the "
                     "cells' verdicts stand")
    return changes, notes


# Host load from outside the harness: each record's `host_noise` (bench/hostnoise.py)
# holds the CPU time other processes used during its point and the hypervisor's steal
# time, as shares of all CPUs. Neither is an outcome of the code under test (the
# cell's own run-queue wait is: it never vetoes). A record whose outside share is over
# BUSY_SHARE is left out of its cell's verdicts while MIN_REPETITIONS runs a side
# remain; otherwise the cell is "host busy" (UNKNOWN, exit 2), naming the processes.
# Measured here: quiet points show 0-6% (the VM agent, and steal up to 6%; a point
# of 0.3 s counts in 1.7% steps of one clock tick), a browser 51%, a CPU hog about
# 100%. The record's own warning starts lower (hostnoise.WARN_SHARE, 5%): it only
# advises.
BUSY_SHARE = 0.15


def outside_share(record: dict) -> float | None:
    """Other processes' CPU plus steal during the record's point, as a share of all
    CPUs; None where the record does not say."""
    noise = record.get("host_noise")
    if not noise or noise.get("other_cpu_share") is None:
        return None
    return noise["other_cpu_share"] + (noise.get("steal_share") or 0.0)


def busy_words(record: dict) -> str:
    noise = record["host_noise"]
    top = ", ".join(f"{p['comm']} (pid {p['pid']}) {p['cpu_s']:.1f} s" for p in noise.get("top_processes", [])[:3])
    steal = noise.get("steal_share") or 0.0
    return (f"{noise['other_cpu_share']:.0%} of the CPUs to other processes"
            + (f" ({top})" if top else "") + (f", {steal:.0%} stolen by the hypervisor" if steal else ""))


def quiet_records(cell: str, base: list[dict], new: list[dict]) -> tuple[list[dict], list[dict], str | None, str | None]:
    """(base records, new records, note, busy): the records kept for the verdicts. `busy`
    (plain words naming the outside load) when too few quiet runs remain to judge."""
    def split(recs):
        quiet, loud = [], []
        for r in recs:
            (quiet if (outside_share(r) or 0.0) <= BUSY_SHARE else loud).append(r)
        return quiet, loud
    (qb, lb), (qn, ln) = split(base), split(new)
    if not lb and not ln:
        return base, new, None, None
    loud = "; ".join(f"{side} record {r.get('created', '?')}: {busy_words(r)}"
                     for side, recs in (("base", lb), ("new", ln)) for r in recs[:2])
    runs = sum(len(r["runs"]) for r in qb), sum(len(r["runs"]) for r in qn)
    if min(runs) < MIN_REPETITIONS:
        return base, new, None, (f"host busy during {cell}: {loud} (over {BUSY_SHARE:.0%} of the CPUs "
                                 "outside the harness; too few quiet runs remain to judge)")
    return qb, qn, (f"{cell}: {len(lb)} base and {len(ln)} new record(s) left out, the host was busy "
                    f"outside the harness: {loud}"), None


# The CPU's own state (bench/cpustate.py): a probe just before and after each run,
# on the run's CPUs, reads ~1.3x its floor while the host's core behind that CPU is
# contended (exits' p50 32 us in one state and 43 us in the other, here). Runs
# above cpustate.CONTENDED_RATIO x their side's floor are left out while
# MIN_REPETITIONS a side remain; otherwise the cell is "host busy" (UNKNOWN, exit 2).
# Each side has its own floor: a kernel whose system calls got slower moves its
# whole side's floor and leaves nothing out, so the probe cannot veto a kernel
# regression; a floor that moved between the sides is noted, never used to veto.
def uncontended_runs(cell: str, base: list[dict], new: list[dict]) -> tuple[list[list[bool]], list[list[bool]], list[str], str | None]:
    """(keep flags per base record, per new record, notes, busy)."""
    notes, left = [], []
    keeps, floors = [], []
    everything = [[True] * len(r["runs"]) for r in base], [[True] * len(r["runs"]) for r in new]
    if min(sum(len(r["runs"]) for r in recs) for recs in (base, new)) < MIN_REPETITIONS:
        # too few runs to judge anyway, and too few for a floor
        return *everything, notes, None
    missing = {side: sum(p is None for r in recs for p in cpustate.run_probes(r))
               for side, recs in (("base", base), ("new", new))}
    if any(missing.values()):
        # filtering one side only would keep its slowed runs against the other's quick ones
        why = ("imported from demand_paging_test output"
               if all(schema.is_imported(r) for r in base + new) else "an older harness, or imported")
        notes.append(f"{cell}: " + ", ".join(f"{n} {side}" for side, n in missing.items() if n)
                     + f" run(s) have no CPU-state probe ({why}): no run is left out "
                     "for the CPU's state on either side")
        return *everything, notes, None
    for side, recs in (("base", base), ("new", new)):
        probes, bias = cpustate.host_probes([p for r in recs for p in cpustate.run_probes(r)])
        if bias:
            notes.append(f"{cell}: the {side} runs' after-probes read x{bias:.2f} their before-probes "
                         "(the run's own aftermath, not the host's state): judged by the before-probes")
        # the floor: every probe on the side, its fingerprints' rounds included
        floor = cpustate.floors(probes + fpmod.round_probes([r["machine"].get("fingerprint") for r in recs]))
        ratios = cpustate.contended(probes, floor)
        flags = [x is None or x <= cpustate.CONTENDED_RATIO for x in ratios]
        out, at = [], 0
        for r in recs:
            out.append(flags[at:at + len(r["runs"])])
            at += len(r["runs"])
        keeps.append(out)
        floors.append(floor)
        dropped = flags.count(False)
        if dropped:
            left.append(f"{dropped} of {len(flags)} {side} runs (CPU-state probe up to "
                        f"x{max(x for x in ratios if x is not None):.2f} its floor)")
    moved = [f"CPU {cpu} x{floors[1][cpu] / floors[0][cpu]:.2f}" for cpu in sorted(set(floors[0]) & set(floors[1]))
             if not 1 / cpustate.CONTENDED_RATIO <= floors[1][cpu] / floors[0][cpu] <= cpustate.CONTENDED_RATIO]
    if moved:
        notes.append(f"{cell}: the CPU-state probe's floor moved between the sides ({', '.join(moved)}): "
                     "one side ran slowed throughout (its verdicts are then suspect) or the kernel's "
                     "system-call path changed; not used to veto")
    if not left:
        return keeps[0], keeps[1], notes, None
    kept = [sum(f.count(True) for f in k) for k in keeps]
    words = "; ".join(left)
    if min(kept) < MIN_REPETITIONS:   # not judged: every run stays in the figures shown
        return *everything, notes, (
            f"host busy during {cell}: the CPU itself was slowed around {words} (over "
            f"x{cpustate.CONTENDED_RATIO} the floor; bench/cpustate.py); {kept[0]} base and {kept[1]} "
            f"new runs remain, fewer than {MIN_REPETITIONS}")
    notes.append(f"{cell}: left out {words}: the CPU itself was slowed (over "
                 f"x{cpustate.CONTENDED_RATIO} the floor; bench/cpustate.py)")
    return keeps[0], keeps[1], notes, None


def hosts_of_sides(base: list[dict], new: list[dict]) -> tuple[list[str], list[str]]:
    """Each record's host label (bench.nightly.cells.host_labels), both sides read
    together so that one host has one label on both."""
    labels = record_hosts(base + new)
    return labels[:len(base)], labels[len(base):]


def compare_records(base: list[dict], new: list[dict], ignore_config: frozenset = frozenset(),
                    pair_single: bool = False, alpha: float = ALPHA,
                    cross_host: bool = False) -> Comparison:
    """Judge NEW against BASE cell by cell. pair_single: one cell a side, compared
    even though their configurations differ (an A/B of two configurations).
    A cell is a configuration on one host: a base cell meets only the new cell of
    its own host (cells of records from several hosts are named @host), unless
    cross_host, when a cell pools every host's records and meets across hosts."""
    bhosts, nhosts = hosts_of_sides(base, new)
    hosts = sorted(set(bhosts) | set(nhosts))
    by_host = not cross_host and len(hosts) > 1

    def group(records, labels):
        cells: dict[tuple, list[dict]] = {}
        for r, host in zip(records, labels):
            key = (host if by_host else "", cell_key(r["config"], ignore_config))
            cells.setdefault(key, []).append(r)
        return cells

    def name(key, recs) -> str:
        return cell_name(recs[0]["config"]) + (f" @{key[0]}" if by_host else "")

    bcells, ncells = group(base, bhosts), group(new, nhosts)
    pairs = []
    if pair_single and len(bcells) == 1 and len(ncells) == 1:
        (bk, br), = bcells.items()
        (nk, nr), = ncells.items()
        pairs.append((f"{name(bk, br)} vs {name(nk, nr)}", br, nr))
        unmatched = []
    else:
        for key in sorted(set(bcells) & set(ncells)):
            pairs.append((name(key, bcells[key]), bcells[key], ncells[key]))
        unmatched = ([f"base only: {name(k, bcells[k])}" for k in sorted(set(bcells) - set(ncells))]
                     + [f"new only: {name(k, ncells[k])}" for k in sorted(set(ncells) - set(bcells))])
    judgements, left_out, busy_cells = [], [], []
    for name, brecs, nrecs in pairs:
        common = [m for m in metrics_of(brecs[0]) if m in metrics_of(nrecs[0])]
        brecs, nrecs, note, busy = quiet_records(name, brecs, nrecs)
        if note:
            left_out.append(note)
        if not busy:
            bkeep, nkeep, cpu_notes, busy = uncontended_runs(name, brecs, nrecs)
            left_out += cpu_notes
        else:
            bkeep, nkeep = [None] * len(brecs), [None] * len(nrecs)
        if busy:
            busy_cells.append(busy)
        for m in common:
            bv = [v for r, k in zip(brecs, bkeep) for v in resultmod.metric_values(r, m.path, keep=k)]
            nv = [v for r, k in zip(nrecs, nkeep) for v in resultmod.metric_values(r, m.path, keep=k)]
            judgements.append(Judgement(name, m, bv, nv, busy=busy))
    judge(judgements, alpha)
    if by_host:   # each host against itself
        changes, notes = [], []
        for host in hosts:
            hb = [r for r, h in zip(base, bhosts) if h == host]
            hn = [r for r, h in zip(new, nhosts) if h == host]
            if hb and hn:
                c, n = host_differences(hb, hn)
                changes += [f"@{host}: {x}" for x in c]
                notes += [f"@{host}: {x}" for x in n]
    else:
        changes, notes = host_differences(base, new)
    if cross_host and set(bhosts) != set(nhosts):
        notes.append(f"across hosts (asked for): base from {', '.join(sorted(set(bhosts)))}, new from "
                     f"{', '.join(sorted(set(nhosts)))}; a difference may be the hosts', not the code's")
    notes += left_out
    for side, recs in (("base", base), ("new", new)):
        # the records' own spread warnings (pyperf's checks): the likeliest reason
        # for an UNKNOWN is a busy host, and they say which metric spread
        unstable = sorted({w for r in recs for w in r.get("warnings", [])
                           if w.partition(":")[0] in METRIC_BY_PATH and "run" not in w.partition(":")[2][:6]})
        if unstable:
            notes.append(f"{side} runs unstable ({len(unstable)} warning(s)): " + "; ".join(unstable[:3]))
    imported = [r for r in base + new if schema.is_imported(r)]
    if imported:
        # the selftest's output carries its numbers only: say what no check could see
        stated = sorted({str(r["machine"].get("hostname")) for r in imported})
        notes.append(f"{len(imported)} record(s) imported from {schema.SELFTEST_KIND} output, machine as "
                     f"stated by whoever ran it (host: {', '.join(stated)}): NOT checked for them: "
                     "host fingerprint (none was measured), host identity beyond what was stated, "
                     "load from other processes, the CPU's state around each run, content; "
                     "judged: their own paging rates only")
    if any(r["emulated"] for r in base + new):
        notes.append("EMULATED mechanism in the comparison: " + "; ".join(
            sorted({r["emulation_reason"] for r in base + new if r["emulated"]})))
    return Comparison(judgements, changes, notes, unmatched, busy_cells)


def render_text(cmp: Comparison) -> str:
    lines = []
    for j in cmp.judgements:
        m = j.metric
        bmed = np.median(j.base) * m.scale if j.base else float("nan")
        nmed = np.median(j.new) * m.scale if j.new else float("nan")
        lines.append(f"{j.cell:<32} {m.label:<26} {bmed:>11.1f} -> {nmed:>11.1f} {m.shown_unit:<7} "
                     f"n={len(j.base)}/{len(j.new)}  {j.verdict:<9} {j.reason}")
    for c in cmp.host_changes:
        lines.append(f"HOST CHANGED: {c}")
    for c in cmp.host_busy:
        lines.append(f"HOST BUSY: {c}")
    for n in cmp.notes + cmp.unmatched:
        lines.append(f"note: {n}")
    lines.append(f"verdict: {cmp.as_dict()['status']} (exit {cmp.exit_status()})")
    return "\n".join(lines) + "\n"


def render_markdown(cmp: Comparison, title: str = "faultbench comparison") -> str:
    status = cmp.as_dict()["status"]
    out = [f"### {title}: **{status}**", ""]
    if cmp.host_changes:
        out += ["**Host changed** (fingerprint or machine differs beyond its noise; no slower/faster "
                "verdict is drawn from these numbers):", ""]
        out += [f"- {c}" for c in cmp.host_changes] + [""]
    if cmp.host_busy:
        out += ["**Host busy** (other processes or the hypervisor took the CPUs during the runs; "
                "those cells are not judged):", ""]
        out += [f"- {c}" for c in cmp.host_busy] + [""]
    out += ["| cell | metric | base | new | ratio [95% interval] | q | verdict |",
            "|---|---|---|---|---|---|---|"]
    for j in cmp.judgements:
        m = j.metric
        base = f"{np.median(j.base) * m.scale:.1f} {m.shown_unit} (n={len(j.base)})" if j.base else "-"
        new = f"{np.median(j.new) * m.scale:.1f} {m.shown_unit} (n={len(j.new)})" if j.new else "-"
        ratio = (f"x{j.ratio:.3f} [{j.interval[0]:.3f}..{j.interval[1]:.3f}]" if j.interval else "-")
        q = f"{j.q:.2g}" if j.q is not None else "-"
        verdict = j.verdict + (f" ({'worse' if j.worse else 'better'})" if j.verdict == "DIFFERENT" else "")
        out.append(f"| {j.cell} | {m.label} | {base} | {new} | {ratio} | {q} | {verdict} |")
    notes = cmp.notes + cmp.unmatched + [f"{j.cell} {j.metric.label}: {j.reason}"
                                         for j in cmp.judgements if j.verdict == "UNKNOWN"]
    if notes:
        out += [""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"
