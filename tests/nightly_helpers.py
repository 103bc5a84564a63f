"""Real records for the nightly tests: made once per session by real runs."""
import copy
import json
import os

from bench.invoke import run_benchmark

QUICK = ["--vcpus", "1", "--mech", "exits", "--mem-per-vcpu", "2", "--no-trace-locks", "--quiet"]


def run_record(path: str, repeat: int, extra: list[str] | None = None) -> dict:
    """One real invocation of the benchmark; returns its record."""
    status, _printed = run_benchmark(QUICK + ["--repeat", str(repeat), "--out", path] + (extra or []))
    assert status == 0, f"benchmark run failed (exit {status})"
    with open(path) as f:
        return json.load(f)


def write(record: dict, path: str) -> str:
    with open(path, "w") as f:
        json.dump(record, f)
    return path


def scaled(record: dict, factor: float) -> dict:
    """The record with one metric, the fault latency (every percentile of it, so
    the distribution shifts whole), multiplied in every run."""
    from bench import result as resultmod
    out = copy.deepcopy(record)
    for run in out["runs"]:
        latency = run["metrics"]["fault_latency_ns"]
        for key in latency:
            if key != "count":
                latency[key] *= factor
    out["summary"] = {}
    return resultmod.finalize(out)


def nights_from(record: dict, runs_per_night: int, first_night: str = "2026-01-01") -> list[dict]:
    """Split one record's real runs into consecutive nights of `runs_per_night`
    runs (in a shuffled order, so any drift of the host during the measurement is
    spread over all nights instead of making a step)."""
    import datetime
    import random
    runs = list(record["runs"])
    random.Random(7).shuffle(runs)
    day = datetime.date.fromisoformat(first_night)
    out = []
    for i in range(len(runs) // runs_per_night):
        night = copy.deepcopy(record)
        night["runs"] = copy.deepcopy(runs[i * runs_per_night:(i + 1) * runs_per_night])
        night["created"] = f"{day + datetime.timedelta(days=i)}T02:00:00+00:00"
        from bench import result as resultmod
        resultmod.finalize(night)
        out.append(night)
    return out


def hogs(n: int):
    """n busy-looping processes: a CPU hog for the calibration to notice."""
    import subprocess
    return [subprocess.Popen(["python3", "-c", "while True: pass"]) for _ in range(n)]


def stop(procs) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


def cpus() -> int:
    return len(os.sched_getaffinity(0))


def without_cpu_state(record: dict) -> dict:
    """The record as an older harness wrote it: no CPU-state probes, so every run
    and fingerprint round is kept. For tests whose case is something else (a
    hardware change) and must not depend on the CPU's state while they ran."""
    for run in record["runs"]:
        (run.get("raw") or {}).pop("cpu_probe", None)
    (record["machine"].get("fingerprint") or {}).pop("cpu_probe", None)
    return record
