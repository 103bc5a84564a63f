"""faultbench: how guest page faults reach userspace, measured on real KVM vCPUs."""

__version__ = "0.1.0"
# must equal FB_API_VERSION in csrc/fb_api.h; checked when the native core loads
API_VERSION = 13
# must equal FB_PROBE_VERSION in csrc/fb_calib_api.h (the CPU-state probe, bench/cpustate.py)
PROBE_VERSION = 1
