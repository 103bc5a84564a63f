"""Loads the cffi-built C core and refuses a stale build."""
from . import API_VERSION, PROBE_VERSION

try:
    from ._native import ffi, lib
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "faultbench's C core is not built: run `pip install .` in the project root "
        f"({exc})") from exc

if lib.FB_API_VERSION != API_VERSION:
    raise ImportError(
        f"stale C core: built with API {lib.FB_API_VERSION}, package expects {API_VERSION}; "
        "run `pip install .` again")
if getattr(lib, "FB_PROBE_VERSION", None) != PROBE_VERSION:
    raise ImportError(
        f"stale C core: CPU-state probe {getattr(lib, 'FB_PROBE_VERSION', 'missing')}, package "
        f"expects {PROBE_VERSION}; run `pip install .` again")

__all__ = ["ffi", "lib"]
