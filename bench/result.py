"""The result record: one JSON file per invocation, versioned and self-describing.

Layout (SCHEMA_VERSION 1):
  schema_version, created (ISO 8601 UTC),
  command {argv, cwd, rerun}, config, machine, harness,
  emulated, emulation_reason,
  runs [{metrics, raw}], warmups [{metrics, raw}],
  summary {metric path: {median, min, max, mean, stdev, cv, n, unit}},
  warnings [plain-words strings].

`metrics` holds the numbers that are summarized across runs; `raw` holds what
they were computed from (histograms, per-thread counters), kept so every
statistic can be recomputed from the file alone.
"""

from __future__ import annotations

import copy
import datetime
import json
import math
import os
import re
import shlex
import tempfile
from typing import Callable

from . import metrics, stats
from .mechanisms import REGISTRY

SCHEMA_VERSION = 2

# Metrics that decide whether a result can be trusted: their spread is checked.
MAIN_METRICS = metrics.HEADLINE

REQUIRED_RUN_METRICS = metrics.REQUIRED
LATENCY_KEYS = ("p50", "p90", "p99", "p99_9", "max")
SUMMARY_KEYS = ("median", "min", "max", "mean", "stdev", "cv", "n", "unit")



def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def new_record(command: list[str], config: dict, machine: dict, harness: dict,
               emulated: bool, emulation_reason: str | None) -> dict:
    """An empty record for one invocation; `command` is the argv that ran it."""
    argv = [str(arg) for arg in command]
    return {
        "schema_version": SCHEMA_VERSION,
        "created": _utc_now().isoformat(timespec="seconds"),
        "command": {
            "argv": argv,
            "cwd": os.getcwd(),
            # Pasteable into a shell from `cwd` to run the same thing again.
            "rerun": shlex.join(["python", *argv]),
        },
        "config": copy.deepcopy(config),
        "machine": copy.deepcopy(machine),
        "harness": copy.deepcopy(harness),
        "emulated": bool(emulated),
        "emulation_reason": emulation_reason,
        "runs": [],
        "warmups": [],
        "summary": {},
        "warnings": [],
    }


def add_run(record: dict, metrics: dict, warmup: bool = False,
            *, raw: dict | None = None) -> dict:
    """Append a run (or a warmup, kept out of the summary); returns the run.

    `raw` is stored beside the metrics but never summarized: put histograms
    and per-thread counters there, not in `metrics`.
    """
    run = {"metrics": copy.deepcopy(metrics), "raw": copy.deepcopy(raw or {})}
    record["warmups" if warmup else "runs"].append(run)
    return run


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numeric_leaves(metrics: dict, prefix: str = "") -> dict[str, float]:
    """{"a.b": number} for every numeric leaf, in insertion order."""
    leaves: dict[str, float] = {}
    for key, value in metrics.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            leaves.update(_numeric_leaves(value, path + "."))
        elif _is_number(value) and math.isfinite(value):
            leaves[path] = value
    return leaves


def metric_unit(path: str) -> str | None:
    """The metric's unit, from the metrics table (bench/metrics.py)."""
    return metrics.unit(path)


def metric_values(record: dict, path: str, warmups: bool = False) -> list[float]:
    """The value of metric `path` in each run that has it as a number."""
    values = []
    for run in record["warmups" if warmups else "runs"]:
        leaves = _numeric_leaves(run.get("metrics") or {})
        if path in leaves:
            values.append(leaves[path])
    return values


def finalize(record: dict) -> dict:
    """Fill record["summary"] from the runs and add spread warnings.

    Only metrics present as numbers in every run are summarized. Safe to call
    again after more runs: the summary is rebuilt and warnings are not repeated.
    """
    runs = record["runs"]
    leaves = [_numeric_leaves(run.get("metrics") or {}) for run in runs]
    summary = {}
    if leaves:
        common = [p for p in leaves[0] if all(p in other for other in leaves[1:])]
        for path in common:
            entry = stats.summarize([run[path] for run in leaves])
            entry["unit"] = metric_unit(path)
            summary[path] = entry
    record["summary"] = summary

    new_warnings = []
    if not runs:
        new_warnings.append("no measured runs")
    elif len(runs) < stats.MIN_RUNS:
        new_warnings.append(f"only {len(runs)} run{'s' if len(runs) != 1 else ''}: "
                            "spread unknown")
    for path in MAIN_METRICS:
        if path in summary:
            new_warnings += stats.instability_warnings(
                path, [run[path] for run in leaves], summary[path]["unit"],
                min_runs=0)
    for warning in new_warnings:
        if warning not in record["warnings"]:
            record["warnings"].append(warning)
    return record


def _check_type(problems: list[str], where: str, value, types, what: str) -> bool:
    allowed = types if isinstance(types, tuple) else (types,)
    # bool is an int subclass; True is not a schema version.
    if isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed):
        return True
    problems.append(f"{where} should be {what}, got {type(value).__name__}")
    return False


def _check_number(problems: list[str], where: str, value) -> bool:
    if not _is_number(value):
        problems.append(f"{where} should be a number, got {type(value).__name__}")
        return False
    if not math.isfinite(value):
        problems.append(f"{where} is {value}")
        return False
    if value < 0:
        problems.append(f"{where} is negative ({value})")
        return False
    return True


def _validate_run(problems: list[str], where: str, run, latency_optional: bool) -> None:
    if not _check_type(problems, where, run, dict, "an object"):
        return
    metrics = run.get("metrics")
    if not _check_type(problems, f"{where}.metrics", metrics, dict, "an object"):
        return
    for name in REQUIRED_RUN_METRICS:
        if name not in metrics:
            problems.append(f"{where}.metrics.{name} is missing")
        else:
            _check_number(problems, f"{where}.metrics.{name}", metrics[name])
    for name in ("pages", "content_errors"):
        if _is_number(metrics.get(name)) and not isinstance(metrics[name], int):
            problems.append(f"{where}.metrics.{name} should be an integer")
    if "fault_latency_ns" not in metrics:
        problems.append(f"{where}.metrics.fault_latency_ns is missing")
        return
    latency = metrics["fault_latency_ns"]
    if latency is None:
        if not latency_optional:
            problems.append(f"{where}.metrics.fault_latency_ns is null but "
                            "config.record_latency is on")
        return
    if not _check_type(problems, f"{where}.metrics.fault_latency_ns", latency,
                       dict, "an object or null"):
        return
    ok = True
    for key in LATENCY_KEYS:
        if key not in latency:
            problems.append(f"{where}.metrics.fault_latency_ns.{key} is missing")
            ok = False
        else:
            ok &= _check_number(problems, f"{where}.metrics.fault_latency_ns.{key}",
                                latency[key])
    if ok:
        ordered = [latency[key] for key in LATENCY_KEYS]
        if ordered != sorted(ordered):
            problems.append(f"{where}.metrics.fault_latency_ns percentiles are not "
                            f"in increasing order: {ordered}")


def validate(record) -> list[str]:
    """Problems found in `record`, in plain words; an empty list means valid."""
    problems: list[str] = []
    if not _check_type(problems, "record", record, dict, "an object"):
        return problems
    required = {
        "schema_version": (int, "an integer"),
        "created": (str, "a string"),
        "command": (dict, "an object"),
        "config": (dict, "an object"),
        "machine": (dict, "an object"),
        "harness": (dict, "an object"),
        "emulated": (bool, "a boolean"),
        "emulation_reason": ((str, type(None)), "a string or null"),
        "runs": (list, "a list"),
        "warmups": (list, "a list"),
        "summary": (dict, "an object"),
        "warnings": (list, "a list"),
    }
    present = {}
    for key, (types, what) in required.items():
        if key not in record:
            problems.append(f"{key} is missing")
        elif _check_type(problems, key, record[key], types, what):
            present[key] = record[key]

    if "schema_version" in present and present["schema_version"] != SCHEMA_VERSION:
        problems.append(f"schema_version is {present['schema_version']}, "
                        f"expected {SCHEMA_VERSION}")
    if "created" in present:
        try:
            datetime.datetime.fromisoformat(present["created"])
        except ValueError:
            problems.append(f"created is not an ISO 8601 time: {present['created']!r}")
    if "command" in present:
        command = present["command"]
        argv = command.get("argv")
        if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
            problems.append("command.argv should be a list of strings")
        for key in ("cwd", "rerun"):
            if not isinstance(command.get(key), str):
                problems.append(f"command.{key} should be a string")
    if present.get("emulated") and not record.get("emulation_reason"):
        problems.append("emulated is true but emulation_reason is empty")
    if "warnings" in present and not all(isinstance(w, str) for w in present["warnings"]):
        problems.append("warnings should all be strings")

    config = present.get("config", {})
    # baselines deliver no faults: their latency lives in first_touch_latency_ns
    name = config.get("mech")
    mech = REGISTRY.get(name) if isinstance(name, str) else None
    latency_optional = (not config.get("record_latency", True)
                        or (mech is not None and not mech.delivers_faults()))
    for key in ("runs", "warmups"):
        for index, run in enumerate(present.get(key, [])):
            _validate_run(problems, f"{key}[{index}]", run, latency_optional)

    for path, entry in present.get("summary", {}).items():
        if not isinstance(entry, dict):
            problems.append(f"summary.{path} should be an object")
            continue
        missing = [k for k in SUMMARY_KEYS if k not in entry]
        if missing:
            problems.append(f"summary.{path} lacks {', '.join(missing)}")
    return problems


def write_atomic(record: dict, path: str) -> str:
    """Write `record` as JSON to `path` so readers never see a partial file.

    The JSON goes to a hidden temp file in the same directory (same file
    system, so os.replace is atomic), is fsynced, then renamed over `path`.
    On any failure the temp file is removed and `path` is left as it was.
    NaN and infinity are refused: the file must be standard JSON.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(
        dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as tmp:
            os.fchmod(tmp.fileno(), 0o644)  # mkstemp's 0600 would hide results
            json.dump(record, tmp, indent=1, sort_keys=False, allow_nan=False)
            tmp.write("\n")
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        try:
            os.unlink(tmp_path)
        except FileNotFoundError:
            pass
        raise
    # Make the rename itself durable.
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def _name_part(value) -> str:
    return re.sub(r"[^A-Za-z0-9_.+=]+", "_", str(value)) or "unknown"


def default_path(results_dir: str, config: dict, *,
                 now: datetime.datetime | None = None, pid: int | None = None) -> str:
    """results/<mech>-<workload>-v<vcpus>-<YYYYmmddTHHMMSSZ>-<pid>.json"""
    when = (now or _utc_now()).astimezone(datetime.timezone.utc)
    name = "-".join([
        _name_part(config.get("mech", "unknown")),
        _name_part(config.get("workload", "unknown")),
        "v" + _name_part(config.get("vcpus", "unknown")),
        when.strftime("%Y%m%dT%H%M%SZ"),
        str(os.getpid() if pid is None else pid),
    ])
    return os.path.join(results_dir, name + ".json")


def update_to_1(record: dict) -> dict:
    """Version 1 is the first format: nothing older exists, nothing to change.

    The pattern for later formats: update_to_N takes a version N-1 record,
    returns it in version N's layout and sets schema_version to N.
    """
    return record


def update_to_2(record: dict) -> dict:
    """Version 2 (issue 7): `pages_per_s_per_vcpu` takes the KVM selftest's
    definition (a vCPU's pages over the whole run's time); the old per-vCPU-window
    mean keeps its value as `pages_per_s_per_vcpu_own_window`. The tautological
    breakdown self-checks (`sum_vs_mean`, `host_clock_check`) are dropped, and
    `vcpus_running_at_once_max`, which only counted overlapping start-end windows,
    is renamed to what it measured."""
    for kind in ("runs", "warmups", "traced_runs"):
        for run in record.get(kind) or []:
            m = run.get("metrics") if isinstance(run, dict) else None
            if not isinstance(m, dict):
                continue
            if "pages_per_s_per_vcpu" in m:
                m["pages_per_s_per_vcpu_own_window"] = m.pop("pages_per_s_per_vcpu")
                vcpus = (record.get("config") or {}).get("vcpus")
                secs, pages = m.get("guest_seconds"), m.get("pages")
                if _is_number(vcpus) and _is_number(secs) and _is_number(pages) and vcpus and secs:
                    m["pages_per_s_per_vcpu"] = pages / vcpus / secs
            if "vcpus_running_at_once_max" in m:
                m["vcpu_windows_overlapping_max"] = m.pop("vcpus_running_at_once_max")
            bd = m.get("fault_breakdown_ns")
            if isinstance(bd, dict):
                for key in ("sum_of_parts", "sum_vs_mean", "host_clock_check"):
                    bd.pop(key, None)
    if isinstance(record.get("warnings"), list):   # warnings from the dropped checks
        record["warnings"] = [w for w in record["warnings"] if not (
            isinstance(w, str) and ("breakdown parts sum to" in w or "host clocks account for" in w))]
    if isinstance(record.get("runs"), list) and isinstance(record.get("warnings"), list):
        finalize(record)
    return record


MIGRATIONS: dict[int, Callable[[dict], dict]] = {1: update_to_1, 2: update_to_2}


def migrate(record: dict) -> dict:
    """Bring a record of any known older version up to SCHEMA_VERSION."""
    version = record.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"not a result record: schema_version is {version!r}")
    if version > SCHEMA_VERSION:
        raise ValueError(f"schema_version {version} is newer than this harness "
                         f"understands ({SCHEMA_VERSION}): update the harness")
    for target in range(version + 1, SCHEMA_VERSION + 1):
        record = MIGRATIONS[target](record)
        record["schema_version"] = target
    return record


# Untrusted files (issue 10): a result file may be truncated, foreign or hostile.
# Anything that is not a well-formed record becomes one RecordError line.
MAX_FILE_BYTES = 256 << 20   # far above a 1024-vCPU record with its raw histograms
MAX_DEPTH = 32               # a record nests about 7 levels deep
MAX_ABS_INT = 2**64          # counters are 64-bit in the C core


class RecordError(ValueError):
    """A file is not a usable result record; str() is one line."""

    def __init__(self, message: str):
        # keys and paths come from the file: control characters would break the line
        super().__init__("".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                                 for c in message))


def _reject_constant(name: str):
    raise RecordError(f"{name} is not a number in standard JSON")


def _check_tree(value) -> str | None:
    """Depth, numbers and keys of a parsed JSON tree, without recursion (a
    hostile file must not exhaust the stack of whatever reads it next)."""
    stack = [(value, 1, "record")]
    while stack:
        node, depth, where = stack.pop()
        if depth > MAX_DEPTH:
            return f"nested more than {MAX_DEPTH} levels deep (at {where})"
        if isinstance(node, dict):
            stack.extend((v, depth + 1, f"{where}.{k}"[:200]) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, depth + 1, f"{where}[{i}]"[:200]) for i, v in enumerate(node))
        elif isinstance(node, float) and not math.isfinite(node):
            return f"{where} is {node} (out of range)"
        elif isinstance(node, int) and not isinstance(node, bool) and abs(node) > MAX_ABS_INT:
            return f"{where} is an integer too large for any counter"
    return None


def _is_count(value, least: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def readable_problems(record: dict) -> list[str]:
    """What readers of records (reports, compare, ingest) rely on beyond
    validate(): names and counts in config, and summaries that are numbers."""
    problems = []
    config = record.get("config") or {}
    for key in ("mech", "workload"):
        if not isinstance(config.get(key), str):
            problems.append(f"config.{key} should be a string")
    if not _is_count(config.get("vcpus"), 1):
        problems.append("config.vcpus should be an integer >= 1")
    for key in ("mem_per_vcpu_mib", "readers_per_uffd", "resolvers"):
        if key in config and not (_is_number(config[key]) and config[key] >= 0):
            problems.append(f"config.{key} should be a number >= 0")
    for key in ("resolve", "fetch"):
        if config.get(key) is not None and not isinstance(config[key], str):
            problems.append(f"config.{key} should be a string or null")
    odd = [k for k in config if not k.isprintable()]
    if odd:   # config keys are printed when two records are compared
        problems.append(f"config has a key with control characters: {odd[0]!r}")
    if not record.get("runs"):
        problems.append("runs is empty: no measured run")
    summary = record.get("summary") or {}
    if record.get("runs") and "pages_per_s" not in summary:
        problems.append("summary.pages_per_s is missing")
    for path, entry in summary.items():
        if not isinstance(entry, dict):
            continue   # validate() says so
        for key in ("median", "min", "max", "mean"):
            if not _is_number(entry.get(key)):
                problems.append(f"summary.{path}.{key} should be a number")
        if all(_is_number(entry.get(k)) for k in ("min", "median", "max")) and \
                not entry["min"] <= entry["median"] <= entry["max"]:
            problems.append(f"summary.{path}: min <= median <= max does not hold")
        if not _is_count(entry.get("n"), 1):
            problems.append(f"summary.{path}.n should be an integer >= 1")
    if record.get("incomplete"):
        problems.append("it is marked incomplete (the run that wrote it did not finish)")
    return problems


def loads(data: bytes, source: str = "<data>") -> dict:
    """Parse, check and migrate one record from bytes; RecordError otherwise."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    try:
        record = json.loads(text, parse_constant=_reject_constant)
    except RecordError as exc:
        raise RecordError(f"{source}: {exc}") from None
    except json.JSONDecodeError as exc:
        what = "empty" if not text.strip() else "truncated" if exc.pos >= len(text.rstrip()) else "not valid JSON"
        raise RecordError(f"{source}: {what} ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise RecordError(f"{source}: nested too deeply to be a result record") from None
    except ValueError as exc:   # e.g. an integer with thousands of digits
        raise RecordError(f"{source}: {str(exc).splitlines()[0][:200]}") from None
    if not isinstance(record, dict):
        raise RecordError(f"{source}: not a result record (top level is {type(record).__name__})")
    problem = _check_tree(record)
    if problem:
        raise RecordError(f"{source}: {problem}")
    try:
        record = migrate(record)
    except (ValueError, KeyError, TypeError) as exc:
        raise RecordError(f"{source}: {exc}") from None
    problems = validate(record) or readable_problems(record)
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise RecordError(f"{source}: not a usable result record: {problems[0][:300]}{more}")
    return record


def load(path: str) -> dict:
    """Read a result file, check it and migrate it to the current schema
    version. Any unusable file (missing, unreadable, not UTF-8, truncated,
    hostile, or not a complete record) raises RecordError with one line."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_FILE_BYTES:
                raise RecordError(f"{path}: {size} bytes, larger than any result file "
                                  f"({MAX_FILE_BYTES >> 20} MiB)")
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise RecordError(f"{path}: {exc.strerror or exc}") from None
    return loads(data, path)
