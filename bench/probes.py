"""What this kernel offers: KVM capabilities, userfaultfd features, proposed uAPIs.

Every result carries these, so a number is never read without knowing which
kernel paths produced it.
"""
import os

# numbers from the upstream uAPI (newer than the system's 6.1 headers)
KVM_CAPS = {
    "KVM_CAP_SYNC_REGS": 74,
    "KVM_CAP_NR_VCPUS": 9,
    "KVM_CAP_MAX_VCPUS": 66,
    "KVM_CAP_USER_MEMORY2": 231,
    "KVM_CAP_MEMORY_FAULT_INFO": 232,
    "KVM_CAP_MEMORY_ATTRIBUTES": 233,
    "KVM_CAP_GUEST_MEMFD": 234,
}
UFFD_FEATURES = {
    "PAGEFAULT_FLAG_WP": 1 << 0, "EVENT_FORK": 1 << 1, "EVENT_REMAP": 1 << 2,
    "EVENT_REMOVE": 1 << 3, "MISSING_HUGETLBFS": 1 << 4, "MISSING_SHMEM": 1 << 5,
    "EVENT_UNMAP": 1 << 6, "SIGBUS": 1 << 7, "THREAD_ID": 1 << 8,
    "MINOR_HUGETLBFS": 1 << 9, "MINOR_SHMEM": 1 << 10, "EXACT_ADDRESS": 1 << 11,
    "WP_HUGETLBFS_SHMEM": 1 << 12, "WP_UNPOPULATED": 1 << 13, "POISON": 1 << 14,
    "WP_ASYNC": 1 << 15, "MOVE": 1 << 16,
}
# bit 3 is KVM_MEM_EXIT_ON_MISSING in the memory-fault-exits series and
# KVM_MEM_USERFAULT in the KVM Userfault series; neither was merged
MEMSLOT_FLAG_PROPOSED = 1 << 3


class DeviceMissing(RuntimeError):
    """A device the benchmark needs is absent or unusable (one-line message)."""


def require_devices() -> None:
    if not os.path.exists("/dev/kvm"):
        raise DeviceMissing("/dev/kvm is missing: this benchmark needs KVM")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        raise DeviceMissing("/dev/kvm is not accessible (run as root or join the kvm group)")


def probe() -> dict:
    # deferred: the C core loads only where a run needs it; records are read without it
    from .native import lib
    caps = {name: lib.fb_kvm_check_extension(num) for name, num in KVM_CAPS.items()}
    feats = lib.fb_uffd_features()
    uffd = ({"error_errno": -feats} if feats < 0 else
            {"features": sorted(n for n, b in UFFD_FEATURES.items() if feats & b),
             "features_mask": feats})
    return {
        "kvm_caps": caps,
        "userfaultfd": uffd,
        "memslot_flag_userfault": bool(lib.fb_kvm_memslot_flag_supported(MEMSLOT_FLAG_PROPOSED) == 1),
        # nothing to probe: no kernel ever assigned KVM_READ_USERFAULT a capability
        # or ioctl number, so there is no answer a probe could get
        "kvm_read_userfault": "not provided by any kernel (RFC only, never merged; no "
                              "capability or ioctl number exists)",
    }
