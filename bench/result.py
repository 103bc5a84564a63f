"""The result record: one JSON file per invocation, versioned and self-describing.

Layout (SCHEMA_VERSION 2; bench/schema.py is its JSON Schema, checked on every load):
  schema_version, created (ISO 8601 UTC),
  command {argv, cwd, rerun}, config, machine, harness,
  emulated, emulation_reason,
  runs [{metrics, raw}], warmups [{metrics, raw}],
  summary {metric path: {median, min, max, mean, stdev, cv, n, unit}},
  warnings [plain-words strings];
  when measured: traced_runs [{metrics, raw}], tracing, host_noise.

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

from . import metrics, schema, stats
from .mechanisms import REGISTRY

SCHEMA_VERSION = 2

# Metrics that decide whether a result can be trusted: their spread is checked.
MAIN_METRICS = metrics.HEADLINE

REQUIRED_RUN_METRICS = metrics.REQUIRED
LATENCY_KEYS = schema.LATENCY_KEYS
SUMMARY_KEYS = schema.SUMMARY_KEYS



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


def metric_values(record: dict, path: str, warmups: bool = False,
                  keep: list[bool] | None = None) -> list[float]:
    """The value of metric `path` in each run that has it as a number; `keep`, one
    flag per run, leaves out the runs flagged False."""
    values = []
    runs = record["warmups" if warmups else "runs"]
    for i, run in enumerate(runs):
        if keep is not None and not keep[i]:
            continue
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


def _relation_problems(record: dict) -> list[str]:
    """What the schema cannot say, each needing more than one field: run on a
    record that already matches the schema (bench/schema.py)."""
    problems = []
    if record["schema_version"] != SCHEMA_VERSION:
        problems.append(f"schema_version is {record['schema_version']}, expected {SCHEMA_VERSION}")
    if record["emulated"] and not record["emulation_reason"]:
        problems.append("emulated is true but emulation_reason is empty")
    config = record["config"]
    # baselines deliver no faults: their latency lives in first_touch_latency_ns
    mech = REGISTRY.get(config.get("mech"))
    latency_optional = (not config.get("record_latency", True)
                        or (mech is not None and not mech.delivers_faults()))
    for kind in ("runs", "warmups"):
        for index, run in enumerate(record[kind]):
            latency = run["metrics"]["fault_latency_ns"]
            where = f"{kind}[{index}].metrics.fault_latency_ns"
            # a failed clock bracket leaves latency out of metrics, saying so (bench/runner.py)
            set_aside = "fault_latency_ns" in ((run["metrics"].get("unusable") or {}).get("metrics") or [])
            if latency is None and not latency_optional and not set_aside:
                problems.append(f"{where} is null but config.record_latency is on")
            elif latency is not None:
                ordered = [latency[key] for key in LATENCY_KEYS]
                if ordered != sorted(ordered):
                    problems.append(f"{where}: percentiles are not in increasing order: {ordered}")
    fingerprint = (record.get("machine") or {}).get("fingerprint") or {}
    probes = [(f"runs[{i}].raw.cpu_probe", (run.get("raw") or {}).get("cpu_probe"))
              for i, run in enumerate(record["runs"])]
    probes += [(f"machine.fingerprint.cpu_probe[{i}]", p) for i, p in enumerate(fingerprint.get("cpu_probe") or [])]
    for where, probe in probes:
        if probe and not len(probe["cpus"]) == len(probe["before_ns_per_call"]) == len(probe["after_ns_per_call"]):
            problems.append(f"{where}: cpus, before_ns_per_call and after_ns_per_call differ in length")
    for path, entry in record["summary"].items():
        if not entry["min"] <= entry["median"] <= entry["max"]:
            problems.append(f"summary.{path}: min <= median <= max does not hold")
    return problems


def validate(record) -> list[str]:
    """Problems found in `record`, in plain words, each naming its place; an
    empty list means valid. The shape is checked against bench/schema.py first;
    the relations between fields only once the shape is right."""
    return schema.problems(record) or _relation_problems(record)


def usable_problems(record) -> list[str]:
    """validate(), then what readers need beyond a valid record (schema.READABLE):
    the cell's identity, a measured run; and a record whose run finished."""
    problems = validate(record) or schema.reader_problems(record)
    if not problems and record.get("incomplete"):
        problems.append("it is marked incomplete (the run that wrote it did not finish)")
    return problems


def write_text_atomic(text: str, path: str) -> None:
    """`text` into `path` through a hidden temporary file beside it (same file
    system, so os.replace is atomic), fsynced, then renamed over it; on any failure
    the temporary file is removed and `path` is left as it was."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(
        dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as tmp:
            os.fchmod(tmp.fileno(), 0o644)  # mkstemp's 0600 would hide results
            tmp.write(text)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        try:
            os.unlink(tmp_path)
        except FileNotFoundError:
            pass
        raise


def write_atomic(record: dict, path: str) -> str:
    """Write `record` as JSON to `path` so readers never see a partial file.

    The JSON goes to a hidden temp file in the same directory (same file
    system, so os.replace is atomic), is fsynced, then renamed over `path`.
    On any failure the temp file is removed and `path` is left as it was.
    NaN and infinity are refused: the file must be standard JSON.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    try:
        text = json.dumps(record, indent=1, sort_keys=False, allow_nan=False) + "\n"
    except ValueError as exc:   # name the field, so the bug that made it can be found
        # (_check_tree: the reader's own walk, iterative and depth-bounded)
        raise ValueError(f"{exc} ({_check_tree(record) or 'field not found'})") from None
    write_text_atomic(text, path)
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
    # an old file is not checked before it is migrated: every step tolerates any shape
    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    for kind in ("runs", "warmups", "traced_runs"):
        runs = record.get(kind)
        for run in runs if isinstance(runs, list) else []:
            m = run.get("metrics") if isinstance(run, dict) else None
            if not isinstance(m, dict):
                continue
            if "pages_per_s_per_vcpu" in m:
                m["pages_per_s_per_vcpu_own_window"] = m.pop("pages_per_s_per_vcpu")
                vcpus = config.get("vcpus")
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
    runs = record.get("runs")
    if (isinstance(runs, list) and isinstance(record.get("warnings"), list)
            and all(isinstance(r, dict) and isinstance(r.get("metrics"), dict) for r in runs)):
        finalize(record)
    return record


MIGRATIONS: dict[int, Callable[[dict], dict]] = {1: update_to_1, 2: update_to_2}


def migrate(record: dict) -> dict:
    """Bring a record of any known older version up to SCHEMA_VERSION."""
    if "schema_version" not in record:
        raise ValueError("not a result record (no schema_version)")
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
    stack = [(value, 1, "")]
    while stack:
        node, depth, where = stack.pop()
        if depth > MAX_DEPTH:
            return f"nested more than {MAX_DEPTH} levels deep (at {where})"
        if isinstance(node, dict):
            stack.extend((v, depth + 1, f"{where}.{k}"[:200] if where else str(k)[:200])
                         for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, depth + 1, f"{where}[{i}]"[:200]) for i, v in enumerate(node))
        elif isinstance(node, float) and not math.isfinite(node):
            return f"{where or 'the top level'} is {node} (out of range)"
        elif isinstance(node, int) and not isinstance(node, bool) and abs(node) > MAX_ABS_INT:
            return f"{where or 'the top level'} is an integer too large for any counter"
    return None


def parse(data: bytes, source: str = "<data>"):
    """The JSON value in `data`, checked for what would hurt any reader (bytes
    that are not UTF-8, NaN, huge numbers, deep nesting); RecordError otherwise.
    Not yet known to be a record: see check()."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecordError as exc:
        raise RecordError(f"{source}: {exc}") from None
    except json.JSONDecodeError as exc:
        what = ("empty" if not text.strip() else
                "truncated" if exc.pos >= len(text.rstrip()) else "malformed")
        raise RecordError(f"{source}: {what} (not JSON: {exc.msg} at line {exc.lineno} "
                          f"column {exc.colno})") from None
    except RecursionError:
        raise RecordError(f"{source}: not a result record: nested too deeply to parse") from None
    except ValueError as exc:   # e.g. an integer with thousands of digits
        raise RecordError(f"{source}: {str(exc).splitlines()[0][:200]}") from None
    problem = _check_tree(value)
    if problem:
        raise RecordError(f"{source}: not a result record: {problem}")
    return value


def check(value, source: str = "<data>") -> dict:
    """A parsed JSON value migrated to the current schema version and validated;
    RecordError naming `source` and the first problem's place otherwise."""
    if not isinstance(value, dict):
        raise RecordError(f"{source}: not a result record (top level is {type(value).__name__})")
    migrated = value.get("schema_version") != SCHEMA_VERSION
    try:
        record = migrate(value)
    except (ValueError, KeyError, TypeError) as exc:
        raise RecordError(f"{source}: {exc}") from None
    if migrated:   # a migration computed new numbers: they must be as sane
        problem = _check_tree(record)
        if problem:
            raise RecordError(f"{source}: not a result record after migration: {problem}")
    problems = usable_problems(record)
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise RecordError(f"{source}: not a usable result record: {problems[0][:300]}{more}")
    return record


def loads(data: bytes, source: str = "<data>") -> dict:
    """Parse, migrate and validate one record from bytes; RecordError otherwise."""
    return check(parse(data, source), source)


def read_bytes(path: str) -> bytes:
    """A file's bytes, refused (RecordError, one line) when unreadable or larger
    than any result file."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_FILE_BYTES:
                raise RecordError(f"{path}: {size} bytes, larger than any result file "
                                  f"({MAX_FILE_BYTES >> 20} MiB)")
            return f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise RecordError(f"{path}: {exc.strerror or exc}") from None


def load(path: str) -> dict:
    """Read a result file, migrate it to the current schema version and check it
    against the schema. Any unusable file (missing, unreadable, not UTF-8,
    truncated, hostile, or not a complete record) raises RecordError with one
    line naming the file and the first problem."""
    return loads(read_bytes(path), path)
