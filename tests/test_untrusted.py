"""Untrusted result files: the loader and the report CLIs never crash on
malformed, truncated, foreign or hostile JSON; they say what is wrong in one
line and exit 2. Property-based: hypothesis generates the files, from a record
built here and from a real one (host fingerprint, schedstat split, CPU time by
role, a traced run), and compare, table and report run in-process through their
main(). No KVM needed."""
import copy
import json
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from bench import report
from bench import result as resultmod
from bench import schema
from bench import table
from bench.nightly import compare
from bench.reporting import build

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                       HealthCheck.too_slow])


def _metrics(rate: float) -> dict:
    return {"pages": 1024, "touches": 1024, "faults": 1024, "guest_seconds": 1024 / rate,
            "pages_per_s": rate, "pages_per_s_per_vcpu": rate / 2, "content_errors": 0,
            "fault_latency_ns": {"p50": 90_000.0, "p90": 150_000.0, "p99": 210_000.0,
                                 "p99_9": 900_000.0, "max": 1_400_000.0, "mean": 100_000.0,
                                 "count": 1024},
            "blocktime_ns": {"all_vcpus": 1000, "per_vcpu_mean": 2.0e7}}


def valid_record() -> dict:
    """A record as run_bench.py writes it (the fields readers use), built without KVM."""
    config = {"mech": "uffd", "uffds": 1, "readers": 1, "readers_per_uffd": 1, "wait": "poll",
              "resolve": "copy", "workload": "sequential", "workload_params": {}, "vcpus": 2,
              "mem_per_vcpu_mib": 2, "memory_pages": 1024, "fetch": "inline", "worker": None,
              "record_latency": True, "seed": 1, "repeat": 3, "warmup": 0}
    machine = {"kernel_release": "6.18", "cpu_model": "x", "online_cpus": 2, "arch": "x86_64"}
    rec = resultmod.new_record(["run_bench.py", "--vcpus", "2"], config, machine,
                               {"version": "0.1.0"}, False, None)
    for rate in (17000.0, 17500.0, 18000.0):
        resultmod.add_run(rec, _metrics(rate), raw={"threads": [{"role": "vcpu", "tid": 1}]})
    return resultmod.finalize(rec)


VALID = valid_record()
VALID_TEXT = json.dumps(VALID)


def test_the_valid_record_loads_and_compares(tmp_path, capsys):
    path = tmp_path / "ok.json"
    path.write_text(VALID_TEXT)
    assert resultmod.load(str(path)) == VALID
    # compare gives the nightly verdict (bench/nightly/verdict.py): 3 runs a side are
    # too few for any rank test, so UNKNOWN, exit 2, saying why in one line
    assert report.main(["compare", str(path), str(path)]) == 2


def check_file(tmp_path, data: bytes, capsys):
    """The properties every file must satisfy, whatever it holds."""
    bad, good = tmp_path / "bad.json", tmp_path / "good.json"
    bad.write_bytes(data)
    good.write_text(VALID_TEXT)
    try:
        rec = resultmod.load(str(bad))
    except resultmod.RecordError as exc:
        assert "\n" not in str(exc) and str(bad) in str(exc)
        loaded = False
    else:
        assert resultmod.validate(rec) == []
        loaded = True
    capsys.readouterr()
    status = report.main(["compare", str(good), str(bad)])
    out, err = capsys.readouterr()
    assert status in (0, 1, 2)
    if not loaded:
        assert status == 2
    if status == 2:
        assert len(err.splitlines()) == 1 and err.startswith("bench.report: error:"), err
    return loaded


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)


def _paths(node, prefix=()):
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,))
    return out


PATHS = _paths(VALID)


@settings(max_examples=150, **SETTINGS)
@given(path=st.sampled_from(PATHS), value=json_values, delete=st.booleans())
def test_wrong_types_anywhere(tmp_path, capsys, path, value, delete):
    check_file(tmp_path, json.dumps(mutated(VALID, path, value, delete)).encode(), capsys)


@settings(max_examples=60, **SETTINGS)
@given(value=json_values)
def test_foreign_json(tmp_path, capsys, value):
    assert not check_file(tmp_path, json.dumps(value).encode(), capsys) or isinstance(value, dict)


@settings(max_examples=80, **SETTINGS)
@given(cut=st.integers(0, len(VALID_TEXT) - 1), junk=st.binary(max_size=8),
       at=st.integers(0, len(VALID_TEXT)))
def test_truncated_and_corrupted_bytes(tmp_path, capsys, cut, junk, at):
    data = VALID_TEXT.encode()
    assert not check_file(tmp_path, data[:cut], capsys)          # every prefix is refused
    check_file(tmp_path, data[:at] + junk + data[at:], capsys)   # junk may still be valid JSON


@settings(max_examples=40, **SETTINGS)
@given(depth=st.integers(33, 200_000), kind=st.sampled_from(["[", '{"a":']),
       inside=st.booleans())
def test_deep_nesting(tmp_path, capsys, depth, kind, inside):
    close = "]" if kind == "[" else "}"
    nest = kind * depth + "1" + close * depth
    text = (VALID_TEXT.replace('"workload_params": {}', f'"workload_params": {nest}')
            if inside else nest)
    assert not check_file(tmp_path, text.encode(), capsys)


@settings(max_examples=40, **SETTINGS)
@given(number=st.one_of(
    st.integers(21, 100_000).map(lambda n: "9" * n),                  # beyond 64 bits, up to huge
    st.sampled_from(["1e999", "-1e999", "NaN", "Infinity", "-Infinity", "1e-999999"]),
    st.integers(-400, 400).map(lambda e: f"1.5e{e}")),
    where=st.sampled_from(['"pages": 1024', '"vcpus": 2', '"median": 17500.0', '"seed": 1']))
def test_huge_and_odd_numbers(tmp_path, capsys, number, where):
    key = where.split(":")[0]
    text = VALID_TEXT.replace(where, f"{key}: {number}", 1)
    check_file(tmp_path, text.encode(), capsys)


@pytest.mark.parametrize("name,data", [
    ("not_utf8", b'{"schema_version": 1, "created": "\xff\xfe"}'),
    ("truncated", VALID_TEXT.encode()[:len(VALID_TEXT) // 2]),
    ("deep", b"[" * 100_000 + b"]" * 100_000),
    ("huge_int", VALID_TEXT.replace('"pages": 1024', '"pages": ' + "9" * 5000, 1).encode()),
    ("incomplete", json.dumps({**VALID, "incomplete": True}).encode()),
    ("empty", b""),
], ids=lambda v: v if isinstance(v, str) else "data")   # short ids: the node id goes into the environment
def test_report_cli_exits_2_with_one_line(tmp_path, name, data):
    bad, good = tmp_path / f"{name}.json", tmp_path / "good.json"
    bad.write_bytes(data)
    good.write_text(VALID_TEXT)
    for argv in (["compare", str(good), str(bad)], ["scaling", str(bad), "--out", str(tmp_path / "r")]):
        p = subprocess.run([sys.executable, "-m", "bench.report", *argv], cwd=REPO,
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 2, (argv, p.stdout, p.stderr)
        assert len(p.stderr.splitlines()) == 1 and str(bad) in p.stderr, p.stderr
    assert not (tmp_path / "r").exists()   # nothing written for a refused input


@settings(max_examples=12, **SETTINGS)
@given(path=st.sampled_from([p for p in PATHS if p[0] in ("summary", "config", "runs")]),
       value=json_values)
def test_scaling_never_crashes(tmp_path, capsys, path, value):
    rec = copy.deepcopy(VALID)
    parent = rec
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(rec))
    status = report.main(["scaling", str(bad), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status in (0, 2)
    if status == 2:
        assert len(err.splitlines()) == 1, err


# --- a real record, mutated where compare, table and report look -------------------

REAL_PATH = os.path.join(REPO, "report", "example", "records", "uffd-sequential-v1.json")
DATA = os.path.join(REPO, "tests", "data")


def real_record() -> dict:
    """The example sweep's uffd cell at 1 vCPU, a real record that holds every
    optional part readers look into: the host fingerprint, the schedstat split, CPU
    time by role, a traced run with lock contention. Its 3 measured runs are kept
    twice, so compare has the 5 a side its rank test needs and reaches verdicts."""
    rec = resultmod.load(REAL_PATH)
    rec["runs"] = rec["runs"] + copy.deepcopy(rec["runs"])
    return resultmod.finalize(rec)


REAL = real_record()
REAL_TEXT = json.dumps(REAL)
REAL_PATHS = _paths(REAL)
# where the mutations are aimed: the parts the verdicts, the table and the report
# read beyond the headline numbers (every one is in the real record: checked below)
FOCUS_PREFIXES = [("machine", "fingerprint"), ("machine", "load_avg"), ("machine", "online_cpus"),
                  ("runs", 0, "metrics", "sched"), ("runs", 1, "metrics", "cpu_by_role"),
                  ("runs", 2, "metrics", "fault_latency_ns"), ("runs", 0, "raw", "fault_latency_hist"),
                  ("traced_runs", 0, "metrics", "kernel_locks"), ("traced_runs", 0, "metrics", "sched"),
                  ("config",), ("host_noise",), ("tracing",), ("summary", "pages_per_s"),
                  ("warnings",), ("emulated",), ("emulation_reason",), ("harness",)]
FOCUS = [p for p in REAL_PATHS if any(p[:len(f)] == f for f in FOCUS_PREFIXES)]


def test_the_real_base_record_has_what_the_fuzz_aims_at():
    m = REAL["runs"][0]["metrics"]
    assert REAL["machine"]["fingerprint"]["components"] and m["sched"] and m["cpu_by_role"]
    assert REAL["traced_runs"] and REAL["traced_runs"][0]["metrics"]["kernel_locks"]["top_locks"]
    for prefix in FOCUS_PREFIXES:
        assert any(p[:len(prefix)] == prefix for p in FOCUS), prefix
    assert len(REAL["runs"]) >= 5


def mutated(base: dict, path: tuple, value, delete: bool) -> dict:
    rec = copy.deepcopy(base)
    parent = rec
    for key in path[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return rec


def loads_or_one_line(path) -> bool:
    try:
        rec = resultmod.load(str(path))
    except resultmod.RecordError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
        return False
    assert resultmod.validate(rec) == []
    return True


def run_main(capsys, main, argv: list[str], loaded: bool, prog: str, bad) -> tuple[int, str]:
    """Exit 0..2; on 2 one stderr line (naming the file where it was refused);
    otherwise nothing on stderr. An exception fails the test: no traceback allowed."""
    capsys.readouterr()
    status = main(argv)
    out, err = capsys.readouterr()
    assert status in (0, 1, 2), (status, out, err)
    if not loaded:
        assert status == 2 and str(bad) in err, err
    if status == 2:
        assert len(err.splitlines()) == 1 and err.startswith(f"{prog}: error:"), err
    else:
        assert err == "", err
    return status, out


@settings(max_examples=80, **SETTINGS)   # 150 took about 30 s of the suite
@given(path=st.sampled_from(FOCUS) | st.sampled_from(REAL_PATHS), value=json_values,
       delete=st.booleans())
def test_real_record_mutated_compare_and_table(tmp_path, capsys, path, value, delete):
    bad, good = tmp_path / "bad.json", tmp_path / "good.json"
    bad.write_text(json.dumps(mutated(REAL, path, value, delete)))
    good.write_text(REAL_TEXT)
    loaded = loads_or_one_line(bad)
    status, out = run_main(capsys, compare.main, [str(good), str(bad)], loaded,
                           "run_bench.py compare", bad)
    if out:   # the verdicts, the last line saying the exit status
        assert loaded and out.splitlines()[-1].startswith("verdict: "), out
        assert out.endswith(f"(exit {status})\n"), out
    else:     # refused, or no cell in common
        assert status == 2
    csv = tmp_path / "t.csv"
    csv.unlink(missing_ok=True)
    status, out = run_main(capsys, table.main, [str(bad), "--csv", str(csv)], loaded,
                           "run_bench.py table", bad)
    assert (status == 0) == csv.exists()


@settings(max_examples=12, **SETTINGS)
@given(path=st.sampled_from(FOCUS), value=json_values, delete=st.booleans())
def test_real_record_mutated_report(tmp_path, capsys, monkeypatch, path, value, delete):
    import matplotlib.figure
    # every figure is still drawn and laid out; only encoding PNG and SVG files is
    # skipped (two thirds of a report's time, and it reads the figures, not the
    # records): each file is written empty, for the HTML page to embed
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda self, path, **kw: open(path, "wb").close())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(mutated(REAL, path, value, delete)))
    loaded = loads_or_one_line(bad)
    status, out = run_main(capsys, build.main, [str(bad), "--out", str(tmp_path / "r")], loaded,
                           "run_bench.py report", bad)
    if status == 0:
        assert os.path.exists(tmp_path / "r" / "report.html")


@settings(max_examples=40, **SETTINGS)
@given(data=st.data(), value=json_values, delete=st.booleans())
def test_schema_1_record_mutated_before_migration(tmp_path, capsys, data, value, delete):
    """An old record is migrated before it is checked: the migration must take any shape."""
    old = json.load(open(os.path.join(DATA, "schema1-uffd-v1.json")))
    path = data.draw(st.sampled_from(_paths(old)))
    bad = tmp_path / "old.json"
    bad.write_text(json.dumps(mutated(old, path, value, delete)))
    loaded = loads_or_one_line(bad)
    run_main(capsys, table.main, [str(bad), "--csv", str(tmp_path / "t.csv")], loaded,
             "run_bench.py table", bad)


# the known bad inputs, each refused at the door in one line naming its place
KNOWN_BAD = [
    (("machine", "fingerprint"), "hello", "machine.fingerprint: 'hello' is not of type 'object'"),
    (("machine", "fingerprint", "components", "futex_wake_ns", "values"), "1, 2, 3",
     "machine.fingerprint.components.futex_wake_ns.values: '1, 2, 3' is not of type 'array'"),
    (("runs", 0, "metrics", "sched"), {"vcpu": 5},
     "runs[0].metrics.sched.vcpu: 5 is not of type 'object'"),
]


@pytest.mark.parametrize("path,value,problem", KNOWN_BAD, ids=["fingerprint", "values", "sched"])
def test_known_bad_inputs_are_refused_at_the_door(tmp_path, path, value, problem):
    bad, good = tmp_path / "bad.json", tmp_path / "good.json"
    bad.write_text(json.dumps(mutated(REAL, path, value, False)))
    good.write_text(REAL_TEXT)
    with pytest.raises(resultmod.RecordError) as caught:
        resultmod.load(str(bad))
    assert str(caught.value) == f"{bad}: not a usable result record: {problem}"
    p = subprocess.run([sys.executable, "run_bench.py", "compare", str(good), str(bad)], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == "", (p.stdout, p.stderr)
    assert p.stderr == f"run_bench.py compare: error: {bad}: not a usable result record: {problem}\n"


# --- the compiled schema (fastjsonschema) says valid exactly where jsonschema does ----

_COMPILED = {}


def compiled(validator):
    """The schema's compiled form, compiled now (bench.schema waits for a third use)."""
    if id(validator) not in _COMPILED:
        c = schema._Compiled(validator.schema)
        c.AFTER = 0
        _COMPILED[id(validator)] = c
    return _COMPILED[id(validator)]


def _constrained(node_schema, node, prefix=()):
    """The paths in `node` that the schema says something about (most of a record's
    5,900 paths are in objects the schema leaves open)."""
    out = []
    if not isinstance(node_schema, dict):
        return out
    if isinstance(node, dict):
        props = node_schema.get("properties", {})
        extra = node_schema.get("additionalProperties")
        for k, v in node.items():
            sub = props.get(k, extra if isinstance(extra, dict) else None)
            if sub is not None:
                out += [prefix + (k,)] + _constrained(sub, v, prefix + (k,))
    elif isinstance(node, list) and isinstance(node_schema.get("items"), dict):
        for i, v in enumerate(node):
            out += [prefix + (i,)] + _constrained(node_schema["items"], v, prefix + (i,))
    return out


def _agree(rec, validators):
    for validator in validators:
        valid = not any(True for _ in validator.iter_errors(rec))
        got = compiled(validator).valid(rec)
        # a record holding a tuple is always left to jsonschema (None)
        assert got is (True if valid else None) or (got is None and schema._holds_tuple(rec)), \
            validator.schema.get("title")


def _record_validators():
    return schema.VALIDATOR, schema.READABLE_VALIDATOR


CONSTRAINED = _constrained(schema.RECORD, REAL)
# integer-valued floats (integer in the schema's sense), bools (never a number),
# control characters (not printable), dates (isoformat) beside the general values
edge_values = (st.integers(-3, 3).map(float) | st.booleans() | st.sampled_from(
    ["2026-12-07T10:00:00+00:00", "2026-13-07", "a\x01b", "", "ok"]) | json_values)


@settings(max_examples=150, **SETTINGS)
@given(path=st.sampled_from(CONSTRAINED), value=edge_values, delete=st.booleans())
def test_the_compiled_schema_agrees_with_jsonschema(path, value, delete):
    """bench.schema answers "valid" from the compiled schema and lists problems with
    jsonschema: the two must agree on every record, or a record jsonschema refuses
    would pass."""
    _agree(mutated(REAL, path, value, delete), _record_validators())


# one mutation for each keyword the schemas use, valid and not
KEYWORD_CASES = [
    (("created",), "2026-13-07"), (("created",), "2026-12-07T10:00:00+00:00"),   # format isoformat
    (("config", "a\x01b"), 1), (("config", "ab"), 1),                            # propertyNames printable
    (("config", "vcpus"), 0), (("config", "vcpus"), 1.0), (("config", "vcpus"), True),   # minimum, integer
    (("config", "vcpus"), 2.5),
    (("tracing", "tracer"), "perf"), (("tracing", "tracer"), "tracefs"),       # enum
    (("tracing", "touch_share"), 0), (("tracing", "touch_share"), 1.5),        # exclusiveMinimum, maximum
    (("tracing", "touch_share"), 1),
    (("runs", 0, "raw", "fault_latency_hist"), {"x": 1}),                       # propertyNames pattern
    (("runs", 0, "raw", "fault_latency_hist"), {"12": 1}),
    (("runs", 0, "raw", "cpu_probe", "cpus"), []),                              # minItems
    (("runs", 0, "raw", "cpu_probe", "cpus"), [0]),
    (("machine", "fingerprint", "components", "cpu_loop_ns"), {"values": [1]}),   # additionalProperties
    (("machine", "fingerprint", "components", "cpu_loop_ns"),
     {"values": [1], "median": 1, "min": 1, "max": 1, "unit": "ns"}),
    (("warnings",), ["ok", 3]), (("warnings",), ["ok"]),                        # items
    (("warnings",), ("ok",)), (("command", "argv"), ("a", "b")),                # a tuple is no JSON array
    (("runs",), None), (("runs", 0, "metrics", "fault_latency_ns", "p50"), -1),
]
# required: each deleted
DELETED = [("runs",), ("config", "mech"), ("runs", 0, "metrics"), ("command",)]


@pytest.mark.parametrize("path,value", KEYWORD_CASES)
def test_the_compiled_schema_agrees_on_every_keyword(path, value):
    _agree(mutated(REAL, path, value, False), _record_validators())


@pytest.mark.parametrize("path", DELETED)
def test_the_compiled_schema_agrees_on_a_required_field_deleted(path):
    _agree(mutated(REAL, path, None, True), _record_validators())


def test_problems_lists_the_same_with_the_compiled_schema_in_use():
    """Through bench.schema.problems itself, past the third check (the compiled form in
    use): what it lists is what jsonschema alone lists."""
    cases = [REAL] + [mutated(REAL, p, v, False) for p, v in KEYWORD_CASES]
    for _ in range(3):
        schema.problems(REAL)
    assert schema._COMPILED[id(schema.VALIDATOR)].check is not None
    for rec in cases:
        alone = sorted(schema._describe(e) for e in schema.VALIDATOR.iter_errors(rec))
        assert sorted(schema.problems(rec)) == alone


def test_the_agreement_check_catches_a_compiled_schema_that_drops_a_format():
    """The check above can fail: a compiled form that accepts any date is caught."""
    import fastjsonschema
    loose = schema._Compiled(schema.RECORD)
    loose.check = fastjsonschema.compile(loose.schema, formats={"isoformat": lambda v: True,
                                                                "printable": lambda v: True})
    loose.invalid = fastjsonschema.JsonSchemaException
    kept = _COMPILED.pop(id(schema.VALIDATOR), None)
    _COMPILED[id(schema.VALIDATOR)] = loose
    try:
        with pytest.raises(AssertionError):
            _agree(mutated(REAL, ("created",), "2026-13-07", False), [schema.VALIDATOR])
        _agree(mutated(REAL, ("created",), "2026-12-07T10:00:00+00:00", False), [schema.VALIDATOR])
    finally:
        del _COMPILED[id(schema.VALIDATOR)]
        if kept is not None:
            _COMPILED[id(schema.VALIDATOR)] = kept


def test_the_compiled_schema_is_used_from_the_third_record_on():
    c = schema._Compiled(schema.RECORD)
    assert [c.valid(REAL) for _ in range(3)] == [None, None, True] and c.check is not None
    assert c.valid(mutated(REAL, ("config", "vcpus"), "eight", False)) is None


def test_the_schemas_use_only_keywords_the_compiled_form_reads_alike():
    """fastjsonschema compiles Draft 7; a 2020-12 keyword it does not know (prefixItems,
    unevaluatedProperties, dependentRequired, $defs under another name...) would be
    skipped there and not in jsonschema, so a new keyword must be added here knowingly."""
    same_in_draft7 = {"type", "properties", "required", "additionalProperties", "items", "enum",
                      "const", "minimum", "maximum", "exclusiveMinimum", "minItems", "pattern",
                      "format", "propertyNames", "title", "$schema"}
    used = set()

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                used.add(k)
                if k == "properties":
                    for sub in v.values():
                        walk(sub)
                elif k not in ("enum", "const", "required"):
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    for s in (schema.RECORD, schema.READABLE, schema.IMPORTED, schema.IMPORTED_READABLE):
        walk(s)
    assert used <= same_in_draft7, used - same_in_draft7
