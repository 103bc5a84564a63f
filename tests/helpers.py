"""Building runs for tests without going through the whole command line."""
from bench.cli import make_plan as _make_plan


def make_plan(mech: str, vcpus: int, mib: int = 2, workload: str = "sequential",
              extra: list[str] | None = None, **plan_kw):
    argv = ["--mech", mech, "--vcpus", str(vcpus), "--workload", workload,
            "--mem-per-vcpu", str(mib)] + (extra or [])
    return _make_plan(argv, **plan_kw)
