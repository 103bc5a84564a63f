"""`run_bench.py import-selftest` (bench/selftest_import.py): real demand_paging_test
outputs (tests/data/selftest/, captured on this machine kind) into result records
that table, report and compare read beside the harness's own; and, where Debian's
linux-source-6.12 can be had, the real selftest built, run and imported."""
import glob
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

import pytest

from bench import metrics, result as resultmod, selftest_import as si, table as tablemod
from bench.nightly import compare as comparemod

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "tests", "data", "selftest")
EXAMPLE = os.path.join(REPO, "report", "example", "records")


def out_file(name: str) -> str:
    return os.path.join(DATA, f"{name}.out")


def args_of(name: str) -> str:
    with open(os.path.join(DATA, f"{name}.cmd")) as f:
        return f.readline().strip()


def printed(path: str) -> dict:
    """The three lines' numbers, read here independently of the importer."""
    text = open(path).read()
    return {"time": float(re.search(r"Total guest execution time:\s*([0-9.]+)s", text).group(1)),
            "per_vcpu": float(re.search(r"Per-vcpu demand paging rate:\s*([0-9.]+)", text).group(1)),
            "overall": float(re.search(r"Overall demand paging rate:\s*([0-9.]+)", text).group(1))}


def run_import(capsys, files, args, out, *extra) -> tuple[int, str, str]:
    rc = si.main([*files, "--args", args, "--out", str(out), *extra])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def imported(capsys, tmp_path, name, *extra, files=None) -> dict:
    out = tmp_path / f"{name}.json"
    rc, _out, err = run_import(capsys, files or [out_file(name)], args_of(name), out, *extra)
    assert rc == 0, err
    return resultmod.load(str(out))   # the one loader every reader uses accepts it


# -- records from real outputs

def test_partitioned_record_has_the_printed_rates_and_the_args_config(capsys, tmp_path):
    rec = imported(capsys, tmp_path, "v4-missing")
    p = printed(out_file("v4-missing"))
    m = rec["runs"][0]["metrics"]
    assert m["pages_per_s"] == p["overall"]   # partitioned: distinct rate = Overall
    assert m["selftest"]["overall_demand_paging_rate"] == p["overall"]
    assert m["selftest"]["per_vcpu_demand_paging_rate"] == m["pages_per_s_per_vcpu"] == p["per_vcpu"]
    assert m["guest_seconds"] == p["time"] == m["selftest"]["total_guest_execution_time_s"]
    c = rec["config"]
    assert (c["vcpus"], c["mem_per_vcpu_mib"], c["memory_pages"]) == (4, 16.0, 4 * 4096)
    assert (c["mechanism"], c["uffd_mode"], c["uffds"], c["readers_per_uffd"]) == ("uffd", "MISSING", 4, 1)
    assert m["pages"] == 16384 and m["touches"] == 16384
    assert c["workload"] == "selftest-partitioned" and c["placement"] == "free"
    src = rec["source"]
    digest = hashlib.sha256(open(out_file("v4-missing"), "rb").read()).hexdigest()
    assert src["kind"] == "demand_paging_test" and src["args"] == args_of("v4-missing")
    assert src["files"][0]["sha256"] == digest == rec["runs"][0]["raw"]["sha256"]
    assert src["sha256"] == hashlib.sha256(digest.encode()).hexdigest()
    # the machine is what was stated: nothing, here; nothing of this host crept in
    mach = rec["machine"]
    assert mach["as_stated"] is True and "fingerprint" not in mach
    assert all(mach[k] is None for k in ("hostname", "online_cpus", "cpu_model", "kernel_release", "arch"))
    assert rec["command"]["rerun"] == args_of("v4-missing") and rec["command"]["cwd"] == ""


def test_stated_machine_is_kept_as_stated(capsys, tmp_path):
    rec = imported(capsys, tmp_path, "v1-none", "--cpus", "2", "--host", "bighost",
                   "--cpu-model", "AMD EPYC", "--kernel", "6.18.44-fc-v1045")
    mach = rec["machine"]
    assert (mach["online_cpus"], mach["hostname"], mach["cpu_model"], mach["kernel_release"]) == (
        2, "bighost", "AMD EPYC", "6.18.44-fc-v1045")
    assert mach["not_stated"] == ["arch"]


def test_machine_from_this_host_only_when_asked_and_said_so(capsys, tmp_path):
    import socket
    rec = imported(capsys, tmp_path, "v1-none", "--machine-from-this-host")
    mach = rec["machine"]
    assert mach["as_stated"] is False and "--machine-from-this-host" in mach["stated_by"]
    assert mach["hostname"] == socket.gethostname() and mach["online_cpus"] == os.cpu_count()
    assert "fingerprint" not in mach   # nothing was measured while the selftest ran
    out = tmp_path / "both.json"
    rc, _o, err = run_import(capsys, [out_file("v1-none")], args_of("v1-none"), out,
                             "--machine-from-this-host", "--cpus", "2")
    assert rc == 2 and "one or the other" in err and not out.exists()


def test_several_files_are_repetitions_of_one_cell(capsys, tmp_path):
    names = [f"v1-missing-r{i}" for i in range(1, 6)]
    rec = imported(capsys, tmp_path, "v1-missing-r1", files=[out_file(n) for n in names])
    rates = [printed(out_file(n))["overall"] for n in names]
    assert [r["metrics"]["pages_per_s"] for r in rec["runs"]] == rates
    assert rec["summary"]["pages_per_s"]["median"] == statistics.median(rates)
    assert rec["summary"]["pages_per_s"]["n"] == 5
    assert len(rec["source"]["files"]) == 5


def test_overlap_keeps_both_definitions(capsys, tmp_path):
    """-o -v 4 -b 16M: every vCPU walks all 16,384 pages; the selftest counts each
    once per vCPU (Overall = 4 x per-vCPU), the harness's rate counts them once."""
    rec = imported(capsys, tmp_path, "v4-missing-o")
    p = printed(out_file("v4-missing-o"))
    m = rec["runs"][0]["metrics"]
    assert m["selftest"]["overall_demand_paging_rate"] == p["overall"]
    assert m["selftest"]["per_vcpu_demand_paging_rate"] == p["per_vcpu"]
    assert m["pages"] == 16384 and m["selftest"]["pages_per_vcpu"] == 16384 and m["touches"] == 4 * 16384
    assert m["pages_per_s"] == p["per_vcpu"] == pytest.approx(16384 / p["time"], rel=1e-6)
    assert m["pages_per_s"] == pytest.approx(p["overall"] / 4, rel=1e-6)
    c = rec["config"]
    assert c["workload"] == "selftest-overlap" and c["uffds"] == 1 and c["memory_pages"] == 16384


@pytest.mark.parametrize("name,expect", [
    ("v4-missing-a-r2", {"uffds": 1, "readers_per_uffd": 2, "mechanism": "uffd"}),
    ("v1-missing-d10", {"fetch_delay_us": 10.0, "fetch_delay_mode": "usleep"}),
    ("v2-missing-c01", {"placement": "pinned", "cpu_map": {"vcpus": [0, 1], "main": None}}),
    ("v1-minor-shmem", {"uffd_mode": "MINOR", "resolve": "continue", "backing": "shmem"}),
    ("v1-none", {"mechanism": "none", "uffds": 0, "readers_per_uffd": 0, "resolve": None}),
    ("v4-none-o", {"mechanism": "none", "workload": "selftest-overlap", "vcpus": 4}),
])
def test_config_comes_from_the_args(capsys, tmp_path, name, expect):
    c = imported(capsys, tmp_path, name)["config"]
    assert {k: c[k] for k in expect} == expect


def test_the_unmerged_options_name_their_mechanism():
    def mech(text):
        return si.mechanism_of(si.parse_args(text))
    assert mech("demand_paging_test -u MISSING -w") == "exits"
    assert mech("demand_paging_test -u MINOR -s shmem -k") == "kvm-userfault"
    assert mech("demand_paging_test -k") == "kvm-userfault"
    assert mech("demand_paging_test -w") == "none"   # -w acts only with -u
    assert mech("./demand_paging_test -v 2") == "none"
    p = si.parse_args("demand_paging_test -k")
    assert si.config_of(p, 4096)["resolve"] == "memcpy"
    with pytest.raises(si.SelftestError, match="two different unmerged series"):
        si.parse_args("demand_paging_test -u MISSING -w -k")


def test_options_parse_as_the_selftest_parses_them():
    p = si.parse_args("/x/demand_paging_test -b 0x100000 -v 010 -o -u MISSING")
    assert (p["mem_bytes"], p["vcpus"], p["partitioned"], p["single_uffd"]) == (1 << 20, 8, False, True)
    assert si.parse_size("3G") == 3 << 30 and si.parse_size("10m") == 10 << 20 and si.parse_size("4096") == 4096
    assert si.parse_args("demand_paging_test")["mem_bytes"] == 1 << 30   # the default, 1G
    assert si.parse_args("demand_paging_test -m 1 -m 3")["guest_modes"] == [1, 3]


def test_w_without_u_is_the_baseline_with_a_warning(capsys, tmp_path):
    out = tmp_path / "w.json"
    rc, _o, err = run_import(capsys, [out_file("v1-none")], "demand_paging_test -v 1 -b 16M -w -r 3", out)
    assert rc == 0, err
    rec = resultmod.load(str(out))
    assert rec["config"]["mechanism"] == "none" and rec["config"]["selftest_options"]["w"] is True
    assert any("-w without -u" in w for w in rec["warnings"])
    assert any("-r without -u" in w for w in rec["warnings"])


def test_every_imported_number_has_a_definition(capsys, tmp_path):
    rec = imported(capsys, tmp_path, "v4-missing-o")
    leaves = resultmod._numeric_leaves(rec["runs"][0]["metrics"])
    assert [p for p in leaves if metrics.lookup(p) is None] == []


# -- bad input: one line, exit 2, nothing at --out

def _truncated(tmp_path, name, drop):
    path = tmp_path / f"{name}-cut.out"
    path.write_text("".join(ln for ln in open(out_file(name)) if drop not in ln))
    return str(path)


def _two_results(tmp_path):
    path = tmp_path / "two.out"
    path.write_text(open(out_file("v1-missing-r1")).read() + open(out_file("v1-missing-r1")).read())
    return str(path)


@pytest.mark.parametrize("case,files,args,message", [
    ("no overall line", lambda t: [_truncated(t, "v4-missing", "Overall")], "v4-missing",
     'without its "Overall demand paging rate" line'),
    ("the run failed", lambda t: [out_file("v1-minor-anon-fails")],
     "demand_paging_test -v 1 -b 16M -u MINOR -s shmem",
     "the selftest failed (userfaultfd MINOR mode requires shared memory"),
    ("MINOR on anonymous memory", lambda t: [out_file("v1-minor-shmem")],
     "demand_paging_test -v 1 -b 16M -u MINOR", "-u MINOR without shared memory"),
    ("fewer vCPUs than the output", lambda t: [out_file("v4-missing")],
     "demand_paging_test -v 2 -b 16M -u MISSING", "the output is of 4 vCPUs"),
    ("less memory than the output", lambda t: [out_file("v4-missing")],
     "demand_paging_test -v 4 -b 8M -u MISSING", "not the args of this output"),
    ("-o left out", lambda t: [out_file("v4-missing-o")],
     "demand_paging_test -v 4 -b 16M -u MISSING", "not the args of this output"),
    ("another cell's output", lambda t: [out_file("v1-missing-r1"), out_file("v4-missing")],
     "v1-missing-r1", "the output is of 4 vCPUs"),
    ("one run twice", lambda t: [out_file("v1-missing-r1"), out_file("v1-missing-r1")],
     "v1-missing-r1", "each FILE must be its own run"),
    ("two results in one file", lambda t: [_two_results(t)], "v1-missing-r1", "2 results in one file"),
    ("an unknown option", lambda t: [out_file("v1-none")], "demand_paging_test -v 1 -x",
     "option -x not recognized"),
    ("another program", lambda t: [out_file("v1-none")], "dirty_log_perf_test -v 1",
     "--args must start with the program"),
    ("an empty file", lambda t: [str((t / "e.out").write_text("") or t / "e.out")], "v1-none",
     "the file is empty"),
    ("a missing file", lambda t: [str(t / "nope.out")], "v1-none", "No such file"),
])
def test_bad_input_is_one_line_and_writes_nothing(capsys, tmp_path, case, files, args, message):
    inputs = files(tmp_path)
    out = tmp_path / "out" / "rec.json"
    os.makedirs(out.parent)
    rc, stdout, err = run_import(capsys, inputs, args if " " in args else args_of(args), out)
    assert rc == 2, case
    assert err.count("\n") == 1 and err.startswith("run_bench.py import-selftest: error: "), err
    assert message in err, err
    assert os.listdir(out.parent) == [] and stdout == ""


def test_an_existing_record_is_not_replaced_unasked(capsys, tmp_path):
    out = tmp_path / "rec.json"
    out.write_text("keep")
    rc, _o, err = run_import(capsys, [out_file("v1-none")], args_of("v1-none"), out)
    assert rc == 2 and "exists" in err and out.read_text() == "keep"
    rc, _o, err = run_import(capsys, [out_file("v1-none")], args_of("v1-none"), out, "--force")
    assert rc == 0 and resultmod.load(str(out))["config"]["mechanism"] == "none"


def test_the_subcommand_runs_from_run_bench(tmp_path):
    out = tmp_path / "rec.json"
    done = subprocess.run([sys.executable, os.path.join(REPO, "run_bench.py"), "import-selftest",
                           out_file("v4-missing-o"), "--args", args_of("v4-missing-o"), "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "overall 30144 pgs/sec (selftest), 7536 distinct pages/s" in done.stdout


# -- beside the harness's records: table, compare, report

def test_table_labels_imported_records_demand_paging_test(capsys, tmp_path):
    rec = tmp_path / "r.json"
    assert run_import(capsys, [out_file("v1-minor-shmem")], args_of("v1-minor-shmem"), rec,
                      "--label", "stock-6.12")[0] == 0
    df = tablemod.load_table([str(rec), os.path.join(REPO, "tests", "data", "uffd-v1.json")])
    labels = dict(zip(df["origin"], df["label"]))
    assert labels == {"demand_paging_test": "demand_paging_test uffd/continue stock-6.12",
                      "faultbench": "uffd"}
    row = df[df["origin"] == "demand_paging_test"].iloc[0]
    assert row["selftest.overall_demand_paging_rate"] == printed(out_file("v1-minor-shmem"))["overall"]
    assert df.attrs["units"]["selftest.overall_demand_paging_rate"] == "pages/s"


def _import_runs(capsys, tmp_path, name, reps):
    out = tmp_path / f"{name}.json"
    files = [out_file(f"v1-missing-r{i}") for i in reps]
    assert run_import(capsys, files, args_of("v1-missing-r1"), out)[0] == 0
    return str(out)


def test_compare_judges_imported_against_imported_and_says_what_it_did_not_check(capsys, tmp_path):
    base = _import_runs(capsys, tmp_path, "base", range(1, 6))
    new = _import_runs(capsys, tmp_path, "new", range(6, 11))
    rc = comparemod.main([base, new])
    out = capsys.readouterr().out
    assert rc in (0, 1, 2)
    lines = [ln for ln in out.splitlines() if ln.startswith("demand_paging_test/uffd")]
    assert len(lines) == 1 and "selftest Overall demand paging rate" in lines[0] and "n=5/5" in lines[0]
    assert "NOT checked for them: host fingerprint (none was measured)" in out


def test_compare_refuses_an_imported_record_against_the_harness(capsys, tmp_path):
    new = _import_runs(capsys, tmp_path, "new", range(1, 4))
    rc = comparemod.main([os.path.join(EXAMPLE, "uffd-sequential-v1.json"), new])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "compare only with imported records of the same cell" in err


def _harness_dir(tmp_path):
    d = tmp_path / "harness"
    d.mkdir()
    for f in ("uffd-sequential-v1.json", "uffd-sequential-v2.json", "exits-sequential-v1.json",
              "exits-sequential-v2.json"):
        shutil.copy(os.path.join(EXAMPLE, f), d)
    return str(d)


def test_report_over_imported_and_harness_records_shows_both(capsys, tmp_path):
    from bench.reporting.build import main as report_main
    rec = tmp_path / "imp.json"
    assert run_import(capsys, [out_file(f"v1-missing-r{i}") for i in (1, 2, 3)], args_of("v1-missing-r1"),
                      rec, "--cpus", "2", "--label", "6.12")[0] == 0
    rc = report_main([_harness_dir(tmp_path), str(rec), "--out", str(tmp_path / "report")])
    capsys.readouterr()
    assert rc == 0
    text = open(tmp_path / "report" / "report.txt").read()
    assert "demand_paging_test uffd 6.12" in text and "exits" in text
    manifest = json.load(open(tmp_path / "report" / "manifest.json"))
    assert any(s.startswith("demand_paging_test uffd 6.12") for s in manifest["series"])


def test_report_over_an_imported_record_with_no_stated_cpus(capsys, tmp_path):
    from bench.reporting.build import generate
    rec = tmp_path / "imp.json"
    assert run_import(capsys, [out_file("v1-missing-r1")], args_of("v1-missing-r1"), rec)[0] == 0
    generate([_harness_dir(tmp_path), str(rec)], str(tmp_path / "report"))
    text = open(tmp_path / "report" / "report.txt").read()
    assert "unknown-host: (not stated) CPUs" in " ".join(text.split())
    assert "demand_paging_test uffd" in text


# -- the real selftest, built from Debian's linux-source-6.12 and run here

SOURCE_PACKAGE = "linux-source-6.12"
TARBALL = f"/usr/src/{SOURCE_PACKAGE}.tar.xz"
# what make headers_install and the kvm selftests' Makefile read: extracting only
# these took 16 s here (xz decompresses the whole archive either way)
SOURCE_PARTS = ("Makefile", "Kbuild", "Kconfig", "scripts", "include", "arch/x86", "tools", "usr")


def _cache_dir(request) -> str:
    """Built once per machine: /var/cache/faultbench for root, else pytest's cache."""
    override = os.environ.get("FAULTBENCH_SELFTEST_CACHE")
    if override:
        return override
    if os.geteuid() == 0:
        return "/var/cache/faultbench/selftest-6.12"
    return str(request.config.cache.mkdir("selftest-6.12"))


def _package_version() -> str | None:
    done = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", SOURCE_PACKAGE],
                          capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def _install(packages: list[str]) -> bool:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    cmd = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-qq", "--no-install-recommends",
           *packages]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(cmd, capture_output=True, env=env).returncode == 0:
        return True
    subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env)
    return subprocess.run(cmd, capture_output=True, env=env).returncode == 0


def build_selftest(cache: str) -> tuple[str, float | None]:
    """(path of demand_paging_test, seconds the build took, None when cached)."""
    binary = os.path.join(cache, "demand_paging_test")
    stamp = os.path.join(cache, "built-from")
    if not os.path.exists(TARBALL) and not _install([SOURCE_PACKAGE]):
        pytest.skip(f"Debian's {SOURCE_PACKAGE} is not installed and could not be "
                    f"(apt-get install {SOURCE_PACKAGE} as root)")
    version = _package_version() or str(os.stat(TARBALL).st_mtime)
    if os.path.exists(binary) and os.path.exists(stamp) and open(stamp).read() == version:
        return binary, None
    for tool in ("make", "gcc", "rsync", "tar", "xz"):   # headers_install needs rsync
        if not shutil.which(tool) and not _install([tool if tool != "xz" else "xz-utils"]):
            pytest.skip(f"{tool} is missing and could not be installed: the selftest cannot be built")
    t0 = time.monotonic()
    src = os.path.join(cache, "src")
    shutil.rmtree(src, ignore_errors=True)
    os.makedirs(src)
    top = f"{SOURCE_PACKAGE}/"
    subprocess.run(["tar", "xf", TARBALL, "-C", src, "--strip-components=1",
                    *[top + part for part in SOURCE_PARTS]], check=True)
    subprocess.run(["make", "headers_install"], cwd=src, check=True, capture_output=True)
    kvm = os.path.join(src, "tools", "testing", "selftests", "kvm")
    done = subprocess.run(["make", f"-j{os.cpu_count() or 1}", "-C", kvm, os.path.join(kvm, "demand_paging_test")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    shutil.copy2(os.path.join(kvm, "demand_paging_test"), binary)
    shutil.rmtree(src, ignore_errors=True)   # 0.7 MB kept, not the tree
    with open(stamp, "w") as f:
        f.write(version)
    return binary, time.monotonic() - t0


@pytest.mark.parametrize("argv", [["-v", "1", "-b", "16M", "-u", "MISSING"],
                                  ["-o", "-v", "2", "-b", "8M", "-u", "MISSING"]])
def test_the_real_selftest_built_run_and_imported(request, capsys, tmp_path, argv):
    if not os.path.exists("/dev/kvm") or os.geteuid() != 0:
        pytest.skip("the selftest needs /dev/kvm and root (userfaultfd for root only here)")
    cache = _cache_dir(request)
    os.makedirs(cache, exist_ok=True)
    binary, seconds = build_selftest(cache)
    if seconds is not None:
        print(f"built demand_paging_test from {SOURCE_PACKAGE} in {seconds:.0f} s")
    done = subprocess.run([binary, *argv], capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(binary))
    assert done.returncode == 0, done.stdout + done.stderr
    output = tmp_path / "run.out"
    output.write_text(done.stdout + done.stderr)
    rec = tmp_path / "run.json"
    args = "demand_paging_test " + " ".join(argv)
    rc, _o, err = run_import(capsys, [str(output)], args, rec)
    assert rc == 0, err
    r = resultmod.load(str(rec))
    p = printed(str(output))
    m = r["runs"][0]["metrics"]
    v = int(argv[argv.index("-v") + 1])
    assert m["selftest"]["overall_demand_paging_rate"] == p["overall"]
    assert m["selftest"]["per_vcpu_demand_paging_rate"] == p["per_vcpu"]
    assert p["overall"] == pytest.approx(v * p["per_vcpu"], rel=1e-6)
    overlap = "-o" in argv
    assert m["pages_per_s"] == (p["per_vcpu"] if overlap else p["overall"])
    assert r["config"]["vcpus"] == v and r["config"]["mem_per_vcpu_mib"] == int(argv[argv.index("-b") + 1][:-1])
    assert glob.glob(str(tmp_path / ".*.tmp")) == []


def test_the_compiled_imported_schemas_agree_with_jsonschema(capsys, tmp_path):
    """bench.schema's compiled form of the imported records' schemas says valid exactly
    where jsonschema does (the record schemas: tests/test_untrusted.py)."""
    from bench import schema
    from test_untrusted import _agree, mutated
    rec = imported(capsys, tmp_path, "v4-missing")
    validators = (schema.IMPORTED_VALIDATOR, schema.IMPORTED_READABLE_VALIDATOR)
    _agree(rec, validators)
    for path, value in [(("source", "kind"), "other"), (("source", "sha256"), "xyz"),
                        (("config", "vcpus"), 0), (("runs", 0, "metrics", "pages_per_s"), "fast"),
                        (("runs",), []), (("created",), "yesterday")]:
        _agree(mutated(rec, path, value, False), validators)
