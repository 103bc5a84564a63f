from .base import Mechanism


class Uffd(Mechanism):
    name = "uffd"
    summary = ("blocking userfaultfd, one for all guest memory: vCPUs sleep on its wait queue, "
               "--readers threads (--wait poll|epoll|read) resolve with UFFDIO_COPY or CONTINUE")
    c_mech = 2
    options = ("readers", "wait", "resolve")

    def readers_total(self):
        return self.uffds() * self.readers()
