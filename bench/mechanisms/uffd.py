from .base import Mechanism


class Uffd(Mechanism):
    name = "uffd"
    summary = ("blocking userfaultfd, one for all guest memory: vCPUs sleep on its wait queue, "
               "--readers threads (--wait poll|epoll|read) resolve with UFFDIO_COPY or CONTINUE")
    c_name = "uffd"
    options = ("readers", "wait", "resolve")
    readers_per_uffd = True
    segment_names = {"notify": "fault_to_message_read", "dispatch": "message_to_resolver",
                     "wait": "wait_bitmap_or_other_fetch", "fetch": "fetch",
                     "install": "install_ioctl", "resume": "wake_to_vcpu_running"}
    kernel_path = (
        "shadow page fault (PVM) -> hva_to_pfn -> get_user_pages -> handle_userfault under "
        "mmap_lock (read): the vCPU thread is queued on the userfaultfd's pending wait queue "
        "and sleeps in KVM_RUN; a reader wakes from poll/epoll/read, reads the message, installs "
        "with UFFDIO_COPY (MISSING) or UFFDIO_CONTINUE (MINOR), and the install wakes the "
        "waiters on that address (a walk of the fault wait queue under its spinlock)")

    def readers_total(self):
        return self.uffds() * self.readers()
