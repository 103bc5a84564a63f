from .base import Mechanism


class AsyncUserfault(Mechanism):
    name = "async"
    summary = ("the KVM_READ_USERFAULT design: faulting vCPUs append the gfn to one shared "
               "list under a spinlock, signal an eventfd and busy-wait on the gfn's userfault "
               "bit; --readers resolver threads pop, install and clear the bit")
    c_mech = 4
    options = ("readers", "resolve")

    def readers_total(self):
        return self.readers()

    def emulation(self):
        flag = self.probes.get("memslot_flag_userfault")
        return True, (
            "KVM_READ_USERFAULT is not in this kernel (RFC, never merged; memslot flag 1<<3 "
            f"probe: {'accepted' if flag else 'rejected'}): the kernel half (gfn list under a "
            "spinlock, eventfd, busy-wait on the userfault bit) runs in userspace, entered "
            "through real -EFAULT exits (UFFD_FEATURE_SIGBUS)")
