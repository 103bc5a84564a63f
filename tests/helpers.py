"""Building runs for tests without going through the whole command line."""
from bench.point import make_plan as _make_plan


def make_plan(mech: str, vcpus: int, mib: int = 2, workload: str = "sequential",
              extra: list[str] | None = None, **plan_kw):
    argv = ["--mech", mech, "--vcpus", str(vcpus), "--workload", workload,
            "--mem-per-vcpu", str(mib)] + (extra or [])
    return _make_plan(argv, **plan_kw)


def mech_names(delivers: bool | None = None, one_per_c_mechanism: bool = False) -> list[str]:
    """Mechanism names from the registry (never a hand-kept list): the shown ones,
    those that deliver faults (or not), and at most one per C mechanism."""
    from bench.mechanisms import REGISTRY
    names, c_seen = [], set()
    for name, cls in REGISTRY.items():
        if cls.hidden or (delivers is not None and cls.delivers_faults() != delivers):
            continue
        if one_per_c_mechanism and cls.c_name in c_seen:
            continue
        c_seen.add(cls.c_name)
        names.append(name)
    return names
