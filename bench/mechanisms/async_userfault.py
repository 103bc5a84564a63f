from .base import Mechanism


class AsyncUserfault(Mechanism):
    name = "async"
    summary = ("the KVM_READ_USERFAULT design: faulting vCPUs append the gfn to one shared "
               "list under a spinlock, signal an eventfd and busy-wait on the gfn's userfault "
               "bit; --readers resolver threads pop, install and clear the bit")
    c_name = "async"
    options = ("readers", "resolve")
    handles_faults_on_vcpu = True
    segment_names = {"notify": "exit_to_userspace", "enqueue": "list_lock_and_push",
                     "queue": "list_to_pop", "dispatch": "pop_to_resolver",
                     "wait": "wait_bitmap_or_other_fetch", "fetch": "fetch",
                     "install": "install_ioctl", "wake": "bit_clear_to_vcpu_sees_it",
                     "resume": "reentry_to_guest_touch"}
    harness_locks = {"async_list": "the emulated per-VM gfn list (the RFC's kernel spinlock)"}
    kernel_path = (
        "EMULATED. The real part: the `exits` path (shadow page fault -> get_user_pages -> "
        "handle_userfault under mmap_lock -> VM_FAULT_SIGBUS -> KVM_RUN returns -EFAULT, one "
        "real exit per fault). Then in userspace on the vCPU thread: the gfn is pushed on one "
        "list under a userspace test-and-test-and-set lock, an eventfd is written, and the "
        "thread busy-waits on the gfn's bit; resolvers pop, install (UFFDIO_COPY/CONTINUE + "
        "DONTWAKE) and clear the bit. Costs the emulation adds over the RFC: a real KVM_RUN "
        "exit and re-entry per fault (the RFC waits inside the kernel), and a userspace lock "
        "where the RFC takes a kernel spinlock")

    def readers_total(self):
        return self.readers()

    def emulation(self):
        flag = self.probes.get("memslot_flag_userfault")
        return True, (
            "KVM_READ_USERFAULT is not in this kernel (RFC, never merged; memslot flag 1<<3 "
            f"probe: {'accepted' if flag else 'rejected'}): the kernel half (gfn list under a "
            "spinlock, eventfd, busy-wait on the userfault bit) runs in userspace, entered "
            "through real -EFAULT exits (UFFD_FEATURE_SIGBUS)")
