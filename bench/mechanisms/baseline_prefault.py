from .base import Mechanism


class Prefault(Mechanism):
    name = "prefault"
    summary = "every page written before the guest starts: no faults, the guest loop alone"
    c_mech = 1
    uses_uffd = False
