"""The result record's shape as a JSON Schema (Draft 2020-12), checked by jsonschema.

It covers every field that compare, ab, nightly, history, ingest, export-pyperf,
table and report read from a record: a field they need is required, a field
they read when it is there (the host fingerprint, the schedstat split, the
traced runs...) may be absent but has its type when present. Fields no reader
looks into (raw per-thread counters, checks, probes) are left open: any JSON.
Objects accept keys the schema does not name, so a newer harness's additions
do not make older tools refuse its records.

RECORD is what every record is (the harness checks it before writing one);
READABLE adds what the readers need of a record they load: the cell's identity,
the host's CPU count, at least one measured run.

What needs more than one field at a time (percentiles in order, the emulation
reason of an emulated record, a null latency only where none is recorded) is
checked in bench/result.py after this schema has passed.
"""
from __future__ import annotations

import datetime
import reprlib

import jsonschema

from . import metrics

LATENCY_KEYS = ("p50", "p90", "p99", "p99_9", "max")
SUMMARY_KEYS = ("median", "min", "max", "mean", "stdev", "cv", "n", "unit")

NUMBER = {"type": "number"}
NON_NEGATIVE = {"type": "number", "minimum": 0}
COUNT = {"type": "integer", "minimum": 0}
STRING = {"type": "string"}
STRING_OR_NULL = {"type": ["string", "null"]}
NUMBERS = {"type": "array", "items": NUMBER}


def _object(properties: dict, required: tuple = (), **more) -> dict:
    return {"type": "object", "properties": properties, "required": list(required), **more}


LATENCY = _object({k: NON_NEGATIVE for k in (*LATENCY_KEYS, "mean")} | {"count": COUNT},
                  LATENCY_KEYS)

# metrics.sched: per thread role, schedstat's on-CPU time and run-queue wait
# (verdict.cpu_wait_share sums both over the roles)
SCHED_ROLE = _object({"on_cpu_ns": NON_NEGATIVE, "run_queue_wait_ns": NON_NEGATIVE,
                      "timeslices": COUNT,
                      "on_cpu_ns_per_fault": {"type": ["number", "null"]},
                      "run_queue_wait_ns_per_fault": {"type": ["number", "null"]}},
                     ("on_cpu_ns", "run_queue_wait_ns"))

# metrics.cpu_by_role: thread CPU times and context switches per role
CPU_ROLE = _object({"threads": COUNT, "user_ns": NON_NEGATIVE, "system_ns": NON_NEGATIVE,
                    "voluntary_ctxt_switches": NON_NEGATIVE,
                    "involuntary_ctxt_switches": NON_NEGATIVE})

# metrics.kernel_locks (traced runs): the table sums count and wait per call site
LOCK_SITE = _object({"call_site": STRING_OR_NULL, "lock": STRING_OR_NULL, "symbol": STRING_OR_NULL,
                     "stack": {"type": "array", "items": STRING}, "type": STRING,
                     "count": NON_NEGATIVE, "wait_ns_total": NON_NEGATIVE,
                     "wait_ns_max": NON_NEGATIVE},
                    ("count", "wait_ns_total"))
KERNEL_LOCKS = _object({"contentions": NON_NEGATIVE, "wait_ns_total": NON_NEGATIVE,
                        "wait_ns_max": NON_NEGATIVE, "events_lost": NON_NEGATIVE,
                        "top_locks": {"type": ["array", "null"], "items": LOCK_SITE}})

METRICS = _object(
    {**{path: NON_NEGATIVE for path in metrics.REQUIRED},
     "pages": COUNT, "content_errors": COUNT, "faults": COUNT,
     "fault_latency_ns": {**LATENCY, "type": ["object", "null"]},
     "first_touch_latency_ns": {**LATENCY, "type": ["object", "null"]},
     "blocktime_ns": {"type": ["object", "null"],
                      "additionalProperties": {"type": ["number", "null"]}},
     "fault_breakdown_ns": {"type": ["object", "null"],
                            "properties": {"parts": {"type": "object",
                                                     "additionalProperties": NUMBER}}},
     "sched": {"type": ["object", "null"], "additionalProperties": SCHED_ROLE},
     "cpu_by_role": {"type": ["object", "null"], "additionalProperties": CPU_ROLE},
     "kernel_locks": KERNEL_LOCKS},
    (*metrics.REQUIRED, "fault_latency_ns"))

# raw.fault_latency_hist: bucket index -> faults; the report sums these histograms
HISTOGRAM = {"type": ["object", "null"], "propertyNames": {"pattern": "^[0-9]+$"},
             "additionalProperties": COUNT}

# raw.cpu_probe (bench/cpustate.py): the verdicts leave out runs it says were slowed
CPU_PROBE = _object({"cpus": {"type": "array", "items": COUNT, "minItems": 1},
                     "before_ns_per_call": {**NUMBERS, "minItems": 1,
                                            "items": {"type": "number", "exclusiveMinimum": 0}},
                     "after_ns_per_call": {**NUMBERS, "minItems": 1,
                                           "items": {"type": "number", "exclusiveMinimum": 0}}},
                    ("cpus", "before_ns_per_call", "after_ns_per_call"))

RUN = _object({"metrics": METRICS,
               "raw": _object({"fault_latency_hist": HISTOGRAM, "cpu_probe": CPU_PROBE})},
              ("metrics",))

# machine.fingerprint (bench/nightly/fingerprint.py): each component's samples
# are rank-tested against the other side's
FINGERPRINT_COMPONENT = _object(
    {"values": {**NUMBERS, "minItems": 1}, "median": NUMBER, "min": NUMBER, "max": NUMBER,
     "unit": STRING, "better": {"enum": ["lower", "higher"]}, "what": STRING},
    ("values", "median", "min", "max", "unit"))
FINGERPRINT = _object(
    {"version": COUNT, "samples": COUNT, "measured": STRING, "seconds": NON_NEGATIVE,
     "spread": STRING, "pinned_cpu": {"type": ["integer", "null"]},
     "cpu_probe": {"type": "array", "items": CPU_PROBE},
     "components": {"type": "object", "additionalProperties": FINGERPRINT_COMPONENT}},
    ("components",))

MACHINE = _object(
    {**{k: STRING_OR_NULL for k in ("hostname", "machine_id", "boot_id", "kernel_release", "kernel_version",
                                    "arch", "cpu_model", "online_cpu_list")},
     **{k: {"type": ["integer", "null"], "minimum": 0}
        for k in ("online_cpus", "affinity_cpus", "mem_total_bytes", "mem_available_bytes")},
     "load_avg": {"type": ["array", "null"], "items": NON_NEGATIVE},
     "fingerprint": FINGERPRINT})

CONFIG = _object(
    {"mech": STRING, "workload": STRING, "vcpus": {"type": "integer", "minimum": 1},
     "mem_per_vcpu_mib": NON_NEGATIVE, "readers_per_uffd": COUNT, "resolvers": COUNT,
     "resolve": STRING_OR_NULL, "fetch": STRING_OR_NULL, "fetch_delay_us": NON_NEGATIVE,
     "fetch_delay_mode": STRING_OR_NULL, "record_latency": {"type": "boolean"},
     "workload_params": {"type": "object"}},
    # compare prints config keys: a control character would break its lines
    propertyNames={"format": "printable"})

SUMMARY_ENTRY = _object(
    {"median": NUMBER, "min": NUMBER, "max": NUMBER, "mean": NUMBER, "stdev": NUMBER,
     "cv": {"type": ["number", "null"]}, "n": {"type": "integer", "minimum": 1},
     "unit": STRING_OR_NULL},
    SUMMARY_KEYS)

HOST_NOISE = _object(
    {"interval_s": NON_NEGATIVE, "cpus": COUNT, "other_cpu_s": NON_NEGATIVE,
     "other_cpu_share": NON_NEGATIVE, "kernel_threads_cpu_s": NON_NEGATIVE, "note": STRING,
     "top_processes": {"type": "array",
                       "items": _object({"pid": COUNT, "comm": STRING, "cpu_s": NON_NEGATIVE},
                                        ("pid", "comm", "cpu_s"))}})

TRACING = _object({"traced_pages_per_s": NUMBERS, "untraced_pages_per_s_median": NUMBER,
                   "overhead_ratio": {"type": ["number", "null"]}, "events_lost": NON_NEGATIVE,
                   "lock_tracing": {"type": "boolean"},
                   "tracer": {"enum": ["bpf", "tracefs"]},
                   "every_measured_run": {"type": "boolean"},
                   # the share of each vCPU's touches a traced run walked (--trace-share)
                   "touch_share": {"type": "number", "exclusiveMinimum": 0, "maximum": 1}})

RECORD = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "faultbench result record",
    **_object(
        {"schema_version": {"type": "integer", "minimum": 1},
         # the history store parses it with datetime.fromisoformat, then in UTC
         "created": {"type": "string", "format": "isoformat"},
         "command": _object({"argv": {"type": "array", "items": STRING}, "cwd": STRING,
                             "rerun": STRING}, ("argv", "cwd", "rerun")),
         "config": CONFIG,
         "machine": MACHINE,
         "harness": _object({"version": STRING_OR_NULL, "git_commit": STRING_OR_NULL,
                             "git_dirty": {"type": ["boolean", "null"]},
                             "python_executable": STRING_OR_NULL}),
         "emulated": {"type": "boolean"},
         "emulation_reason": STRING_OR_NULL,
         "runs": {"type": "array", "items": RUN},
         "warmups": {"type": "array", "items": RUN},
         "traced_runs": {"type": "array", "items": RUN},
         "tracing": TRACING,
         "summary": {"type": "object", "additionalProperties": SUMMARY_ENTRY},
         "warnings": {"type": "array", "items": STRING},
         "host_noise": HOST_NOISE,
         "incomplete": {"type": "boolean"}},
        ("schema_version", "created", "command", "config", "machine", "harness", "emulated",
         "emulation_reason", "runs", "warmups", "summary", "warnings")),
}


# checked once a record matches RECORD
READABLE = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "faultbench result record, as its readers need it",
    "properties": {
        "config": {"required": ["mech", "workload", "vcpus"]},
        # the report's captions print it as a number
        "machine": {"required": ["online_cpus"],
                    "properties": {"online_cpus": {"type": "integer", "minimum": 1}}},
        "runs": {"minItems": 1},
        # every run has pages_per_s, so its summary must be there
        "summary": {"required": ["pages_per_s"]}},
}


# Records imported from the kernel selftest's output (bench/selftest_import.py): the
# same shape where they have a field, but their runs hold only what the selftest
# prints (no content check, no latency), and their machine is as stated by whoever
# ran it, so its CPU count may be unknown (null). Told apart by `source.kind`.
SELFTEST_KIND = "demand_paging_test"

SELFTEST_NUMBERS = _object({k: NON_NEGATIVE for k in (
    "total_guest_execution_time_s", "per_vcpu_demand_paging_rate", "overall_demand_paging_rate",
    "pages_per_vcpu")}, ("total_guest_execution_time_s", "per_vcpu_demand_paging_rate",
                         "overall_demand_paging_rate"))
IMPORTED_METRICS = {**METRICS,
                    "properties": {**METRICS["properties"], "selftest": SELFTEST_NUMBERS},
                    "required": ["pages_per_s", "pages_per_s_per_vcpu", "guest_seconds", "pages",
                                 "selftest"]}
IMPORTED_RUN = _object({"metrics": IMPORTED_METRICS, "raw": {"type": "object"}}, ("metrics",))
SOURCE = _object({"kind": {"const": SELFTEST_KIND}, "args": STRING,
                  "argv": {"type": "array", "items": STRING}, "label": STRING_OR_NULL,
                  "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                  "files": {"type": "array", "minItems": 1,
                            "items": _object({"path": STRING, "sha256": STRING, "bytes": COUNT},
                                             ("path", "sha256"))}},
                 ("kind", "args", "files", "sha256"))
IMPORTED = {
    **RECORD, "title": "faultbench result record imported from demand_paging_test output",
    "properties": {**RECORD["properties"], "source": SOURCE,
                   "runs": {"type": "array", "items": IMPORTED_RUN},
                   "machine": {**MACHINE, "properties": {**MACHINE["properties"],
                                                         "as_stated": {"type": "boolean"}}}},
    "required": [*RECORD["required"], "source"],
}
IMPORTED_READABLE = {
    **READABLE, "title": "imported faultbench result record, as its readers need it",
    "properties": {**READABLE["properties"],
                   "machine": {"properties": {"online_cpus": {"type": ["integer", "null"], "minimum": 1}}}},
}


def is_imported(record) -> bool:
    """True for a record imported from the selftest's output (its `source.kind`)."""
    return (isinstance(record, dict) and isinstance(record.get("source"), dict)
            and record["source"].get("kind") == SELFTEST_KIND)


def _isoformat(value) -> bool:
    if not isinstance(value, str):
        return True   # format applies to strings only; "type" says the rest
    try:   # as the history store reads it (year 9999 at -14:00 is beyond datetime in UTC)
        datetime.datetime.fromisoformat(value).astimezone(datetime.timezone.utc)
    except (ValueError, OverflowError):
        return False
    return True


FORMATS = jsonschema.FormatChecker(formats=())
FORMATS.checks("isoformat")(_isoformat)
FORMATS.checks("printable")(lambda value: not isinstance(value, str) or value.isprintable())

# that these are valid Draft 2020-12 schemas is tests/test_schema.py's to check: checking
# them here cost every process about 0.2 s of start-up
VALIDATOR = jsonschema.Draft202012Validator(RECORD, format_checker=FORMATS)
READABLE_VALIDATOR = jsonschema.Draft202012Validator(READABLE, format_checker=FORMATS)
IMPORTED_VALIDATOR = jsonschema.Draft202012Validator(IMPORTED, format_checker=FORMATS)
IMPORTED_READABLE_VALIDATOR = jsonschema.Draft202012Validator(IMPORTED_READABLE, format_checker=FORMATS)


def json_path(parts) -> str:
    """runs[0].metrics.sched.vcpu: how a problem's place is named."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def _describe(error: jsonschema.ValidationError) -> str:
    message = error.message
    # jsonschema quotes the whole offending value: a 100 kB object would drown the line
    if len(message) > 200:
        message = message.replace(repr(error.instance), reprlib.repr(error.instance))
    where = json_path(error.absolute_path)
    return f"{where}: {message}" if where else message


class _Compiled:
    """A schema compiled to Python by fastjsonschema: it says whether a record is valid
    much faster than jsonschema walks it (the committed example's 45 records, both
    schemas: 0.27 s with the compiling, against 1.67 s), but stops at the first problem,
    so jsonschema still lists the problems of a record that has any. Compiling costs
    about 0.1 s for the record schemas (600 kB of code), about three jsonschema checks,
    so a process compiles a schema only at its third check against it: a command that
    reads one record pays nothing. It answers only True (valid) or None (ask jsonschema),
    and None for a record holding a tuple, which fastjsonschema takes for an array and
    jsonschema does not. tests/test_untrusted.py holds the two to the same answer."""

    AFTER = 2   # checks before compiling

    def __init__(self, schema: dict):
        self.schema = {k: v for k, v in schema.items() if k != "$schema"}   # Draft 7 keywords only
        self.seen = 0
        self.check = None

    def valid(self, record) -> bool | None:
        """True where the record is valid; None where not compiled yet or not valid."""
        if self.check is None:
            self.seen += 1
            if self.seen <= self.AFTER:
                return None
            try:
                import fastjsonschema
            except ImportError:   # an install from before the dependency: jsonschema answers alone
                return None
            self.check = fastjsonschema.compile(self.schema, formats={
                name: check for name, (check, _raises) in FORMATS.checkers.items()})
            self.invalid = fastjsonschema.JsonSchemaException
        if _holds_tuple(record):
            return None
        try:
            self.check(record)
        except self.invalid:
            return None
        return True


def _holds_tuple(node) -> bool:
    stack = [node]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
        elif isinstance(x, tuple):
            return True
    return False


_COMPILED = {id(v): _Compiled(v.schema) for v in (VALIDATOR, READABLE_VALIDATOR, IMPORTED_VALIDATOR,
                                                   IMPORTED_READABLE_VALIDATOR)}


def problems(record, validator=None) -> list[str]:
    """Every place where `record` breaks the schema (the imported records' own where
    `source` says it is one), the shallowest first (a missing or wrong-typed object
    before what is wrong inside another one); [] when none."""
    if validator is None:
        validator = IMPORTED_VALIDATOR if is_imported(record) else VALIDATOR
    compiled = _COMPILED.get(id(validator))
    if compiled is not None and compiled.valid(record):
        return []
    errors = list(validator.iter_errors(record))
    # stable sort: among equally deep problems, the schema's own order
    errors.sort(key=lambda e: len(e.absolute_path))
    return [_describe(e) for e in errors]


def reader_problems(record) -> list[str]:
    """What a record that matches RECORD lacks for its readers (READABLE)."""
    return problems(record, IMPORTED_READABLE_VALIDATOR if is_imported(record) else READABLE_VALIDATOR)
