"""Sweeps spread over hosts by an existing scheduler: `plan` and `run-job`."""
