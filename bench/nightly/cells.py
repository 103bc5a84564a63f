"""Cells: what identifies one benchmark point across nights, and loading records.

A cell is a configuration with the keys that do not change what is measured
left out (how many repetitions, whether locks were traced). Two records of the
same cell compare; a record's identity in the store is the hash of its content.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os

from bench import result as resultmod

# config keys that may differ without changing the benchmark
VOLATILE_CONFIG = frozenset({"repeat", "warmup", "trace_locks", "lock_stacks", "trace_mmap_lock"})
# machine keys that, when they differ, make two records come from different hosts
HOST_KEYS = ("cpu_model", "online_cpus", "arch")


class BadInput(Exception):
    """A file or argument that cannot be used: one line, exit status 2."""


def canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def content_hash(record: dict) -> str:
    """The record's identity: sha256 of its canonical JSON (ingest is keyed by it)."""
    return hashlib.sha256(canonical(record).encode()).hexdigest()


def cell_config(config: dict, ignore: frozenset = frozenset()) -> dict:
    return {k: v for k, v in config.items() if k not in VOLATILE_CONFIG and k not in ignore}


def cell_key(config: dict, ignore: frozenset = frozenset()) -> str:
    """A short stable id of a cell: the first 16 hex digits of its config's hash."""
    return hashlib.sha256(canonical(cell_config(config, ignore)).encode()).hexdigest()[:16]


def cell_name(config: dict) -> str:
    """Readable: mech/workload/vCPUs/memory, plus the options that most often differ."""
    name = f"{config.get('mech')}/{config.get('workload')}/v{config.get('vcpus')}/{config.get('mem_per_vcpu_mib')}MiB"
    if config.get("resolve") == "continue":
        name += "/continue"
    if config.get("fetch") == "worker":
        name += "/worker"
    if config.get("fetch_delay_us"):
        name += f"/delay{config['fetch_delay_us']:g}us"
    return name


def load_records(paths: list[str]) -> list[tuple[str, dict]]:
    """(path, record) for each file, or each *.json in a directory; BadInput if unusable."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(glob.glob(os.path.join(path, "*.json")))
            if not found:
                raise BadInput(f"{path}: directory holds no *.json result")
            files += found
        else:
            files.append(path)
    out = []
    for path in files:
        try:   # read, checked and migrated by the record's own loader: one line on failure
            out.append((path, resultmod.load(path)))
        except resultmod.RecordError as exc:
            raise BadInput(str(exc)) from None
    return out
