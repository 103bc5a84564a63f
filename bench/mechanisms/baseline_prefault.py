from .base import Mechanism


class Prefault(Mechanism):
    name = "prefault"
    summary = "every page written before the guest starts: no faults, the guest loop alone"
    c_name = "prefault"
    uses_uffd = False
    kernel_path = ("no fault on guest memory: every page is present before the guest starts; "
                   "on this PVM host each first touch still fills the shadow MMU from the "
                   "present host page")
