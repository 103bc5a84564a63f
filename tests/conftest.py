import os
import signal

import pytest

# A suite started where SIGINT is ignored (a background job of a script, some CI
# runners) hands that on to every process it starts, and the tests that interrupt a
# benchmark with SIGINT would find it deaf: the tests' own processes get the default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _kvm_problem() -> str | None:
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm is missing"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is not accessible to this user"
    return None


def _native_problem() -> str | None:
    try:
        import bench.native  # noqa: F401
    except ImportError as exc:
        return f"C core not built ({exc})"
    return None


@pytest.fixture(scope="session")
def kvm():
    """Skip, naming the device, where real KVM + userfaultfd are unavailable."""
    problem = _kvm_problem() or _native_problem()
    if problem:
        pytest.skip(problem)
    from bench.native import lib
    if lib.fb_uffd_features() < 0:
        pytest.skip("userfaultfd(2) is not available (needs root, CAP_SYS_PTRACE or "
                    "vm.unprivileged_userfaultfd=1)")
    return lib


def process_resources() -> tuple[int, int]:
    """(open fds, threads) of this process; objects an earlier test left to the
    garbage collector (a file, a tracer) are collected first, so they close now."""
    import gc
    gc.collect()
    return len(os.listdir("/proc/self/fd")), len(os.listdir("/proc/self/task"))
