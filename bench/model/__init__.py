"""A discrete-event scaling model of the fault-delivery mechanisms (see docs/MODEL.md)."""
