"""The README's "Extending" steps hold: `exits-pair` was added as one C file
(bench/csrc/mech_exits_pair.c), one Python file (bench/mechanisms/exits_pair.py)
and one registry line on each side (FB_MECH_REGISTRY, mechanisms.REGISTRY), and it
runs on real KVM like any other mechanism."""
import os
import subprocess

from bench.mechanisms import REGISTRY
from bench.runner import execute
from helpers import make_plan

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_toy_mechanism_runs_on_real_kvm(kvm):
    metrics, raw = execute(make_plan("exits-pair", 2, mib=2))
    assert metrics["content_errors"] == 0
    assert metrics["pages_installed"] == metrics["pages"] == 1024
    # each fault installs its page and the next: half the pages fault
    assert metrics["faults"] == 512
    assert metrics["fault_breakdown_ns"]["faults_used"] == 512
    assert raw["exit_path"] in ("kvm_memory_fault", "sigbus_guest_register")


def test_toy_mechanism_touches_nothing_else():
    """Its name appears in no file but its own two, the C registry line and the
    Python registry (two lines: import and entry), and the tests that use it."""
    out = subprocess.run(["git", "grep", "-l", "-i", "exits.pair", "--", "bench"], cwd=REPO,
                         capture_output=True, text=True).stdout.split()
    assert sorted(out) == ["bench/csrc/fb_core.h", "bench/csrc/mech_exits_pair.c",
                           "bench/mechanisms/__init__.py", "bench/mechanisms/exits_pair.py"]
    assert REGISTRY["exits-pair"].hidden   # kept out of --help
