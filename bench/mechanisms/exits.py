from .base import Mechanism


class Exits(Mechanism):
    name = "exits"
    summary = ("memory-fault exits: KVM_RUN returns the fault to the vCPU thread, which "
               "fetches, installs with DONTWAKE and re-enters (no shared wait queue)")
    c_name = "exits"
    options = ("resolve",)
    handles_faults_on_vcpu = True
    segment_names = {"notify": "exit_to_userspace", "dispatch": "address_lookup",
                     "wait": "wait_bitmap_or_other_fetch", "fetch": "fetch",
                     "install": "install_ioctl", "resume": "reentry_to_guest_touch"}
    kernel_path = (
        "shadow page fault (PVM) -> hva_to_pfn -> get_user_pages -> handle_userfault under "
        "mmap_lock (read), which with UFFD_FEATURE_SIGBUS returns VM_FAULT_SIGBUS at once (no "
        "wait queue): KVM_RUN returns -EFAULT; the address comes from kvm_run.memory_fault "
        "when the kernel fills it, else from the guest's rbx; the vCPU thread installs with "
        "UFFDIO_COPY/CONTINUE + MODE_DONTWAKE and re-enters KVM_RUN. A kernel with a KVM-side "
        "userfault bitmap (KVM_MEM_USERFAULT) or KVM_MEM_EXIT_ON_MISSING would exit before "
        "get_user_pages and skip handle_userfault and mmap_lock: that work is in these numbers "
        "and would not be there")

    def config(self):
        cfg = super().config()
        # how the kernel reports the exit on this machine: decided by probes, recorded
        cfg["exit_info"] = ("kvm_run.memory_fault when filled, else -EFAULT from "
                            "UFFD_FEATURE_SIGBUS with the address from the guest's rbx")
        return cfg
