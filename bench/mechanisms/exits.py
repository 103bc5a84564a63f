from .base import Mechanism


class Exits(Mechanism):
    name = "exits"
    summary = ("memory-fault exits: KVM_RUN returns the fault to the vCPU thread, which "
               "fetches, installs with DONTWAKE and re-enters (no shared wait queue)")
    c_mech = 3
    options = ("resolve",)

    def config(self):
        cfg = super().config()
        # how the kernel reports the exit on this machine: decided by probes, recorded
        cfg["exit_info"] = ("kvm_run.memory_fault when filled, else -EFAULT from "
                            "UFFD_FEATURE_SIGBUS with the address from the guest's rbx")
        return cfg
