"""The command line: argument validation (one line, exit 2), the ranges table and
the rerun line stored in every result. No KVM needed."""
import os
import subprocess
import sys

import pytest

from bench import options

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse(*argv):
    args = options.build_parser().parse_args(list(argv))
    options.validate_args(args)
    return args


def test_defaults_validate():
    args = parse()
    assert args.vcpus == [1] and args.mech == ["uffd"] and args.placement == "free"


@pytest.mark.parametrize("flag,lo,hi", options.RANGES)
def test_every_range_is_enforced_with_its_bounds_in_the_message(flag, lo, hi):
    extra = ["--mech", "uffd-many"] if flag == "--uffds" else []
    for bad in (lo - 1, hi + 1):
        with pytest.raises(options.UsageError) as e:
            parse(*extra, flag, str(bad))
        assert f"{lo}..{hi}" in str(e.value) and "\n" not in str(e.value)
    parse(*extra, flag, str(lo))
    parse(*extra, flag, str(hi))


@pytest.mark.parametrize("argv,words", [
    (["--vcpus", "0"], "out of range 1..1024"),
    (["--vcpus", "1,1"], "more than once"),
    (["--mem-per-vcpu", "3"], "even number"),
    (["--readers", "2", "--mech", "exits"], "--readers applies to none"),
    (["--uffds", "4"], "--uffds applies to uffd-many only"),
    (["--out", "x.json", "--vcpus", "1,2"], "--out FILE.json names one result"),
    (["--fetch", "worker", "--verify", "full"], "--verify full"),
    (["--trace-share", "0"], "--trace-share 0 is out of range (0, 1]"),
    (["--trace-share", "1.01"], "--trace-share 1.01 is out of range (0, 1]"),
    (["--trace-every-run", "--tracer", "tracefs"], "--trace-every-run needs the in-kernel tracer"),
    (["--trace-every-run", "--no-trace-locks"], "--trace-every-run needs the in-kernel tracer"),
    (["--trace-share", "0.5", "--workload", "phased"], "a part of the phased workload's walk"),
    (["--trace-share", "0.5", "--workload", "precopy-stale", "--mech", "uffd"],
     "a part of the precopy-stale workload's walk"),
])
def test_bad_combinations_are_refused(argv, words):
    with pytest.raises(options.UsageError) as e:
        parse(*argv)
    assert words in str(e.value)


@pytest.mark.parametrize("argv", [["--vcpus", "0"], ["--mech", "nope"], ["--placement", "x"],
                                  ["--vcpus", "a,b"]])
def test_bad_input_is_one_line_and_exit_2(argv):
    p = subprocess.run([sys.executable, "run_bench.py", *argv], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert p.stdout == ""


def test_trace_share_auto_walks_a_second_of_guest_time_and_at_least_a_quarter():
    assert options.trace_share_for("auto", 10.0) == options.TRACE_MIN_SHARE == 0.25
    assert options.trace_share_for("auto", 2.0) == 0.5
    assert options.trace_share_for("auto", 0.5) == 1.0
    assert options.trace_share_for(0.3, 0.5) == 0.3    # asked: as asked
    # a workload whose prefix is not the workload (phases) is traced whole
    assert options.trace_share_for("auto", 10.0, prefix_ok=False) == 1.0
    assert parse("--trace-share", "0.5").trace_share == 0.5
    with pytest.raises(SystemExit):
        parse("--trace-share", "half")


def test_rerun_line_names_exactly_one_point():
    argv = ["--vcpus", "1,8", "--mech=uffd,exits", "--readers", "2", "--out", "x",
            "--results-dir", "/tmp/r", "--mem-per-vcpu", "4"]
    assert options.rerun_argv(argv, "exits", 8) == ["--readers", "2", "--mem-per-vcpu", "4",
                                                "--vcpus", "8", "--mech", "exits"]
    # a size chosen by --min-guest-ms replaces the asked one, and the rerun does not size again
    sized = options.rerun_argv(argv + ["--min-guest-ms", "200"], "uffd", 1, mem_per_vcpu=24)
    assert sized == ["--readers", "2", "--mem-per-vcpu", "24", "--vcpus", "1", "--mech", "uffd"]


def test_help_lists_shown_mechanisms_only():
    text = options.build_parser().format_help()
    assert "exits:" in text and "exits-pair" not in text
