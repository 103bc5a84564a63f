"""Fault-delivery mechanisms.

A mechanism is one file here (its Python description) plus one line in
REGISTRY; its hot path is the matching bench/csrc/mech_*.c vtable. The contract
(bench.mechanisms.base.Mechanism): which common options apply, how they become
the C core's configuration, and whether (and why) the mechanism is emulated.
"""
from .base import Mechanism
from .baseline_none import NoneBaseline
from .baseline_prefault import Prefault
from .uffd import Uffd
from .uffd_many import UffdMany
from .exits import Exits
from .async_userfault import AsyncUserfault
from .exits_pair import ExitsPair

REGISTRY: dict[str, type[Mechanism]] = {
    NoneBaseline.name: NoneBaseline,
    Prefault.name: Prefault,
    Uffd.name: Uffd,
    UffdMany.name: UffdMany,
    Exits.name: Exits,
    AsyncUserfault.name: AsyncUserfault,
    ExitsPair.name: ExitsPair,
}

__all__ = ["REGISTRY", "Mechanism"]
