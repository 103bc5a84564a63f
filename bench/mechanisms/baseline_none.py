from .base import Mechanism


class NoneBaseline(Mechanism):
    name = "none"
    summary = "no userfaultfd: the kernel zero-fills each page (the floor of the fault path)"
    c_mech = 0
    uses_uffd = False
