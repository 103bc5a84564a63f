"""Measure the host fingerprint (bench/nightly/fingerprint.py says what it is):
SAMPLES rounds of every component, interleaved, through the C core."""
from __future__ import annotations

import os
import statistics
import time

from bench import cpustate
from bench.native import ffi, lib
from bench.plan import RunError
from bench.point import make_plan
from bench.runner import execute

from .fingerprint import (COMPONENTS, FINGERPRINT_VERSION, FUTEX_ROUND_TRIPS, MEMCPY_BYTES, SAMPLES,
                          SPIN_ITERATIONS, kind)


# a slow spell here lasts from a fraction of a second to tens of seconds: three
# times the rounds outlasts most, and a fingerprint never makes more (24 rounds took
# 5.1-6.0 s in a test-suite run on 2026-12-07, and 9.8 s under the CPU-hog test)
MAX_ROUNDS_FACTOR = 3


class CalibrationError(RuntimeError):
    """The calibration itself failed; the message is one line."""


def _run_p50(mech: str) -> float:
    plan = make_plan(["--mech", mech, "--vcpus", "1", "--mem-per-vcpu", "2"])
    try:
        metrics, _raw = execute(plan)
    except RunError as exc:
        raise CalibrationError(f"fingerprint ({mech} run): {exc}") from None
    latency = metrics["fault_latency_ns"] or metrics["first_touch_latency_ns"]
    if not latency:
        why = (metrics.get("unusable") or {}).get("reason")   # a failed clock check set it aside
        raise CalibrationError(f"fingerprint ({mech} run): no latency recorded"
                               + (f": {why}" if why else ""))
    return float(latency["p50"])


def _futex_wake_ns() -> float:
    out = ffi.new("uint64_t[]", 1)
    err = ffi.new("char[]", 256)
    if lib.fb_calib_futex(FUTEX_ROUND_TRIPS, 1, out, err, 256):
        raise CalibrationError(ffi.string(err).decode())
    return out[0] / (2 * FUTEX_ROUND_TRIPS)


def _memcpy_bytes_per_s() -> float:
    out = ffi.new("uint64_t[]", 1)
    err = ffi.new("char[]", 256)
    if lib.fb_calib_memcpy(MEMCPY_BYTES, 1, out, err, 256):
        raise CalibrationError(ffi.string(err).decode())
    return MEMCPY_BYTES / (out[0] / 1e9)


def _spin() -> tuple[float, float]:
    wall = ffi.new("uint64_t[]", 1)
    cpu = ffi.new("uint64_t[]", 1)
    err = ffi.new("char[]", 256)
    if lib.fb_calib_spin(SPIN_ITERATIONS, 1, wall, cpu, err, 256):
        raise CalibrationError(ffi.string(err).decode())
    return float(cpu[0]), cpu[0] / wall[0]


MEASURE = {
    "kvm_exit_fault_ns": lambda: _run_p50("exits"),
    "kvm_zero_fill_fault_ns": lambda: _run_p50("none"),
    "uffd_round_trip_ns": lambda: _run_p50("uffd"),
    "futex_wake_ns": _futex_wake_ns,
    "memcpy_bytes_per_s": _memcpy_bytes_per_s,
    ("cpu_loop_ns", "cpu_share"): _spin,
}
assert {n for key in MEASURE for n in (key if isinstance(key, tuple) else (key,))} == set(COMPONENTS)


def measure(samples: int = SAMPLES) -> dict:
    """Calibrate this host now: about 1.5 s for the 8 rounds here, up to about 6 s at its
    24-round cap in a slow spell (2026-12-07; longer under other load). Raises
    CalibrationError."""
    if lib.FB_CALIB_VERSION != FINGERPRINT_VERSION:
        raise CalibrationError(f"stale C core: calibration API {lib.FB_CALIB_VERSION}, "
                               f"expected {FINGERPRINT_VERSION}; rebuild")
    started = time.monotonic()
    values: dict[str, list[float]] = {name: [] for name in COMPONENTS}
    # Thread placement decides these figures on 2 CPUs (uffd: 63 or 92 us a fault
    # depending on whether vCPU and reader share a CPU). Every thread the
    # calibration starts inherits this thread's affinity, so pinning it to one
    # CPU makes the placement the same in every fingerprint.
    allowed = os.sched_getaffinity(0)
    cpu = min(allowed)
    os.sched_setaffinity(0, {cpu})
    probes = []

    def one_round():
        for name, fn in MEASURE.items():
            if isinstance(name, tuple):   # one measurement, several components
                for part, value in zip(name, fn()):
                    values[part].append(value)
            else:
                values[name].append(fn())
    def unslowed() -> int:
        return sum(r is not None and r <= cpustate.CONTENDED_RATIO for r in cpustate.contended(probes))
    try:
        # the CPU's own state around each round: comparisons leave out rounds taken
        # on a slowed CPU (bench/cpustate.py), so rounds go on until `samples` of
        # them sit within the ratio of the floor so far, up to MAX_ROUNDS_FACTOR x
        while len(probes) < samples or (unslowed() < samples
                                        and len(probes) < MAX_ROUNDS_FACTOR * samples):
            _, probe = cpustate.around([cpu], one_round)
            probes.append(probe)
    finally:
        os.sched_setaffinity(0, allowed)
    components = {}
    for name, vals in values.items():
        unit, better, what, tolerance = COMPONENTS[name]
        components[name] = {"values": vals, "median": statistics.median(vals),
                            "min": min(vals), "max": max(vals), "unit": unit,
                            "better": better, "what": what, "kind": kind(name)}
    return {"version": FINGERPRINT_VERSION, "samples": len(probes),
            "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.monotonic() - started, 3),
            "spread": "min..max of the samples, measured interleaved across components",
            "pinned_cpu": cpu,
            "cpu_probe": probes,
            "components": components}
