"""Every Python table that restates a C constant (where importing the native core
would be wrong: --help, guest code, pure statistics) agrees with the built library."""
import numpy as np
import pytest

from bench import breakdown, guest, placement, stats
from bench.mechanisms import REGISTRY
from bench.mechanisms.base import RESOLVE_MODES, WAIT_MODES


def test_mechanism_classes_match_their_c_contract(kvm):
    lib = kvm
    for cls in REGISTRY.values():
        flags = lib.fb_mech_flags(cls.c_mech())
        assert flags >= 0, cls.name
        assert bool(flags & lib.FB_MF_USES_UFFD) == cls.uses_uffd, cls.name
        assert bool(flags & lib.FB_MF_DELIVERS) == cls.delivers_faults(), cls.name
        assert bool(flags & lib.FB_MF_READERS_PER_UFFD) == cls.readers_per_uffd, cls.name
        assert bool(flags & lib.FB_MF_ON_VCPU) == cls.handles_faults_on_vcpu, cls.name
        has_threads = bool(flags & (lib.FB_MF_READERS_PER_UFFD | lib.FB_MF_RESOLVERS))
        assert has_threads == ("readers" in cls.options), cls.name
    assert lib.fb_mech_id(b"no-such-mechanism") == -1


def test_mode_maps_match(kvm):
    lib = kvm
    assert WAIT_MODES == {"poll": lib.FB_WAIT_POLL, "epoll": lib.FB_WAIT_EPOLL, "read": lib.FB_WAIT_READ}
    assert RESOLVE_MODES == {"copy": lib.FB_RESOLVE_COPY, "continue": lib.FB_RESOLVE_CONTINUE}
    assert placement.FREE == lib.FB_CPU_FREE


def test_histogram_agrees_with_c(kvm):
    lib = kvm
    assert stats.HIST_SUB_BITS == lib.FB_HIST_SUB_BITS
    assert stats.HIST_BUCKETS == lib.FB_HIST_BUCKETS
    rng = np.random.default_rng(7)
    values = [0, 1, 127, 128, 129, 255, 256, 1000, 4095, 4096, 10**6, 10**9, 2**41, 2**42 + 5]
    values += [int(v) for v in rng.integers(0, 2**40, 500)]
    for v in values:
        i = lib.fb_hist_index(v)
        assert stats.loglin_bucket_index(v) == i, v
        assert stats.loglin_bucket_bounds(i) == (lib.fb_hist_lower(i), lib.fb_hist_upper(i)), v


def test_fault_row_layout_matches(kvm):
    from bench.native import ffi
    lib = kvm
    assert breakdown.ROW_DTYPE.itemsize == ffi.sizeof("struct fb_fault_row")
    assert breakdown.ROW_DTYPE["stamp"].shape == (lib.FB_STAMPS,)
    # the chain's segment names are C's FB_BD_* in order
    from bench.runner import SEGMENTS
    assert [breakdown.SEGMENT_ENDING_AT[s] for s in breakdown.STAMPS[1:]] == SEGMENTS
    for cls in REGISTRY.values():
        assert set(cls.segment_names) <= set(SEGMENTS), cls.name


def test_guest_ports_and_pattern(kvm):
    lib = kvm
    assert guest.DONE_PORT == lib.FB_PORT_DONE and guest.TSC_PORT == lib.FB_PORT_TSC
    assert lib.FB_PATTERN_MUL == 0x9E3779B97F4A7C15


def test_limits_and_touch_flags_match(kvm):
    lib = kvm
    from bench import options
    from bench.workloads import base as workload_base
    assert workload_base.TOUCH_READ == lib.FB_TOUCH_READ
    assert workload_base.TOUCH_FIRST == lib.FB_TOUCH_FIRST
    ranges = {flag: (lo, hi) for flag, lo, hi in options.RANGES}
    assert ranges["--uffds"] == (0, lib.FB_MAX_UFFDS)
    args = options.build_parser().parse_args(["--fault-around", str(lib.FB_MAX_FAULT_AROUND + 1)])
    with pytest.raises(options.UsageError, match=f"1..{lib.FB_MAX_FAULT_AROUND}"):
        options.validate_args(args)
