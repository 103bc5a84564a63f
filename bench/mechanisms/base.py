"""The mechanism contract shared by every entry of the registry."""
import argparse

WAIT_MODES = {"poll": 0, "epoll": 1, "read": 2}   # FB_WAIT_*
RESOLVE_MODES = {"copy": 0, "continue": 1}        # FB_RESOLVE_*


class Mechanism:
    name = ""
    summary = ""
    c_name = ""                  # its C side: `fb_mech_<c_name>` in a bench/csrc/mech_*.c file
    uses_uffd = True
    #: kept for the tests: accepted by --mech, left out of --help
    hidden = False
    #: what this mechanism calls each segment of a fault's breakdown (C's FB_BD_*
    #: names -> result names); empty: it delivers no fault to userspace
    segment_names: dict[str, str] = {}
    #: the harness's own locks it reports (result key -> what it guards)
    harness_locks: dict[str, str] = {}
    #: its reader threads serve one userfaultfd each (config says readers_per_uffd)
    readers_per_uffd = False
    #: faults come back to the vCPU thread (KVM_RUN returns), which handles them itself
    handles_faults_on_vcpu = False
    #: the kernel path one fault takes on this kernel, exactly (recorded in every result)
    kernel_path = ""
    #: common options that mean something for this mechanism
    options: tuple[str, ...] = ()

    def __init__(self, args: argparse.Namespace, vcpus: int, probes: dict):
        self.args = args
        self.vcpus = vcpus
        self.probes = probes

    MAX_THREADS = 4096   # vCPU plus reader threads in one process

    def validate(self) -> None:
        """Raise ValueError (one line) when options do not fit this mechanism."""
        threads = self.vcpus + self.readers_total()
        if threads > self.MAX_THREADS:
            raise ValueError(f"{self.name} at {self.vcpus} vCPUs needs {threads} threads "
                             f"(limit {self.MAX_THREADS}): use fewer --readers or --uffds")
        if self.args.resolve == "continue" and "resolve" not in self.options:
            raise ValueError(f"--resolve continue does not apply to mechanism {self.name}")
        if self.args.resolve == "copy" and self.uses_uffd and self.args.needs_shared_memory:
            raise ValueError(f"{self.args.shared_memory_reason} needs --resolve continue (shared memory)")

    def resolve(self) -> str:
        """copy (private memory, MISSING) or continue (memfd, MINOR); shared memory
        is chosen when the workload or the fetch path writes through a second mapping."""
        if not self.uses_uffd:
            return "copy"
        if self.args.resolve:
            return self.args.resolve
        return "continue" if self.args.needs_shared_memory else "copy"

    def uffds(self) -> int:
        return 1

    def readers(self) -> int:
        return self.args.readers or 1

    def wait(self) -> str:
        return self.args.wait or "poll"

    def readers_total(self) -> int:
        return 0

    @classmethod
    def c_mech(cls) -> int:
        """The C core's id of this mechanism, looked up by name (never restated)."""
        # deferred: the C core loads only where a run needs it; records are read without it
        from ..native import lib
        mech = lib.fb_mech_id(cls.c_name.encode())
        if mech < 0:
            raise RuntimeError(f"the C core has no mechanism {cls.c_name!r} (stale build?)")
        return mech

    @classmethod
    def delivers_faults(cls) -> bool:
        """Faults reach userspace (the baselines' latency is first-touch latency instead)."""
        return bool(cls.segment_names)

    def emulation(self) -> tuple[bool, str | None]:
        """(emulated, reason): whether a kernel part is replaced by userspace code."""
        return False, None

    def config(self) -> dict:
        """What the result record stores about this mechanism."""
        cfg = {"mech": self.name, "uffds": self.uffds() if self.uses_uffd else 0,
               "readers": self.readers_total()}
        if "readers" in self.options:
            cfg["readers_per_uffd" if self.readers_per_uffd else "resolvers"] = self.readers()
        if "wait" in self.options:
            cfg["wait"] = self.wait()
        cfg["resolve"] = self.resolve() if self.uses_uffd else None
        cfg["kernel_path"] = self.kernel_path
        return cfg

    def c_fields(self) -> dict:
        """Fields of struct fb_config this mechanism sets."""
        return {
            "mech": self.c_mech(),
            "uffds": self.uffds(),
            "readers": self.readers(),
            "wait_mode": WAIT_MODES[self.wait()],
            "resolve": RESOLVE_MODES[self.resolve()],
        }
