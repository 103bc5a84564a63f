"""What a result came from: the machine and kernel, and the harness itself.

Every probe here degrades to None instead of raising: a missing /sys file on
some kernel must not cost a benchmark run. KVM and userfaultfd probes live
elsewhere and come in through `extra`.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import os
import platform
import socket
import subprocess
import sys

from . import __version__

# Local outputs of the harness itself: writing them must not make a tree "dirty".
HARNESS_OUTPUT_DIRS = ("results/", "report/")

THP_DIR = "/sys/kernel/mm/transparent_hugepage"


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes."""
    text = _read("/proc/meminfo") or ""
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            scale = 1024 if len(fields) > 1 and fields[1] == "kB" else 1
            values[key] = int(fields[0]) * scale
    return values


def mem_available_bytes() -> int | None:
    """MemAvailable: what can be allocated without swapping, or None."""
    return _meminfo().get("MemAvailable")


def load_avg() -> list[float] | None:
    """The 1, 5 and 15-minute load averages now, or None."""
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def _bracketed(path: str) -> str | None:
    """The selected value of a sysfs choice file: "always [madvise] never"."""
    text = _read(path)
    if text is None:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else text


def _cpu_model() -> str | None:
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return platform.processor() or None


def _count_cpu_list(cpu_list: str) -> int:
    """Number of CPUs in a kernel CPU list such as "0-3,8,10-11"."""
    count = 0
    for part in cpu_list.split(","):
        if not part.strip():
            continue
        first, _, last = part.partition("-")
        count += int(last or first) - int(first) + 1
    return count


def _pyperf_metadata(machine: dict) -> None:
    # pyperf's collector is private API: a new pyperf may move or change it.
    try:
        from pyperf._collect_metadata import collect_metadata
        metadata = collect_metadata()
        machine["pyperf"] = {
            str(key): value if isinstance(value, (str, int, float)) else str(value)
            for key, value in metadata.items()
        }
    except Exception as exc:  # noqa: BLE001 - any failure is recorded, not fatal
        machine["pyperf_metadata_error"] = f"{type(exc).__name__}: {exc}"


def _machine_id() -> str | None:
    """An id of this OS installation for faultbench's records: tells apart hosts
    that share a hostname (CI runners, cloned nodes); None where the system has
    none. machine-id(5) asks that the id itself not be exposed, so the record holds
    an application-specific HMAC-SHA256 of it (as sd_id128_get_machine_app_specific
    does), not the id."""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        value = _read(path)
        if value and value != "uninitialized":
            return hmac.new(value.encode(), b"faultbench host identity v1", hashlib.sha256).hexdigest()[:32]
    return None


# KVM's vendor modules and what each means for the MMU a guest fault goes through
KVM_VENDORS = {"kvm_pvm": "PVM (pagetable-based virtualization)", "kvm_intel": "VMX",
               "kvm_amd": "SVM"}


def kvm_kind() -> dict:
    """Which KVM runs here and which MMU its faults take: on a shadow MMU (PVM, or
    VMX/SVM with EPT/NPT off) an install takes mmu_lock for write; on the TDP MMU for
    read. Decides how installs contend, so every record and report names it."""
    module = next((m for m in KVM_VENDORS if os.path.isdir(f"/sys/module/{m}")), None)
    tdp_mmu = _read("/sys/module/kvm/parameters/tdp_mmu")
    tdp_mmu = None if tdp_mmu is None else tdp_mmu in ("Y", "1")
    if module == "kvm_intel":
        hw = _read("/sys/module/kvm_intel/parameters/ept") in ("Y", "1")
    elif module == "kvm_amd":
        hw = _read("/sys/module/kvm_amd/parameters/npt") in ("Y", "1")
    else:   # PVM runs guests on shadow page tables only
        hw = False
    mmu = None if module is None else ("shadow" if not hw else "tdp" if tdp_mmu else "tdp-legacy")
    return {"kvm_module": module, "virtualization": KVM_VENDORS.get(module),
            "kvm_mmu": mmu, "kvm_tdp_mmu_param": tdp_mmu}


def sched_tick_hz() -> int | None:
    """CONFIG_HZ: an oversubscribed vCPU waits whole ticks for its CPU, so latency
    tails sit on multiples of 1/HZ; the report names them."""
    import gzip
    for path in ("/proc/config.gz", f"/boot/config-{os.uname().release}"):
        try:
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rt") as f:
                for line in f:
                    if line.startswith("CONFIG_HZ="):
                        return int(line.split("=", 1)[1])
        except (OSError, ValueError):
            continue
    return None


def collect_machine(extra: dict | None = None) -> dict:
    """Machine and kernel metadata; `extra` (KVM/uffd probes) is merged last."""
    uname = os.uname()
    online = _read("/sys/devices/system/cpu/online")
    try:
        online_cpus = _count_cpu_list(online) if online else os.cpu_count()
    except ValueError:
        online_cpus = os.cpu_count()
    meminfo = _meminfo()
    machine = {
        "hostname": socket.gethostname(),
        "machine_id": _machine_id(),
        "kernel_release": uname.release,
        "kernel_version": uname.version,
        "arch": uname.machine,
        "cpu_model": _cpu_model(),
        "online_cpus": online_cpus,
        "online_cpu_list": online,
        # CPUs this process may run on: fewer than online when pinned.
        "affinity_cpus": len(os.sched_getaffinity(0)),
        "mem_total_bytes": meminfo.get("MemTotal"),
        "mem_available_bytes": meminfo.get("MemAvailable"),
        "thp_enabled": _bracketed(f"{THP_DIR}/enabled"),
        "thp_defrag": _bracketed(f"{THP_DIR}/defrag"),
        "thp_shmem_enabled": _bracketed(f"{THP_DIR}/shmem_enabled"),
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "load_avg": load_avg(),
        "boot_id": _read("/proc/sys/kernel/random/boot_id"),
        **kvm_kind(),
        "sched_tick_hz": sched_tick_hz(),
    }
    _pyperf_metadata(machine)
    if extra:
        machine.update(copy.deepcopy(extra))
    return machine


def _git(repo_dir: str, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", repo_dir, *args], capture_output=True,
                              text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _dirty(porcelain: str) -> bool:
    # -z output: "XY path\0", renames and copies add "old path\0" after it.
    entries = porcelain.split("\0")
    index = 0
    while index < len(entries):
        entry = entries[index]
        index += 1
        if len(entry) < 4:
            continue
        status, path = entry[:2], entry[3:]
        if status[0] in "RC":
            index += 1
        if not path.startswith(HARNESS_OUTPUT_DIRS):
            return True
    return False


def collect_harness(repo_dir: str, version: str | None = None) -> dict:
    """Which harness produced a result: version, git commit, uncommitted changes.

    git_commit and git_dirty are None outside a git work tree; a repository
    without commits has no commit but can be dirty. Changes under results/
    and report/ do not count.
    """
    commit = _git(repo_dir, "rev-parse", "--verify", "--quiet", "HEAD")
    status = _git(repo_dir, "status", "--porcelain", "-z", "--untracked-files=normal")
    return {
        "version": version if version is not None else __version__,
        "git_commit": commit.strip() if commit else None,
        "git_dirty": _dirty(status) if status is not None else None,
        "python_executable": sys.executable,
    }
