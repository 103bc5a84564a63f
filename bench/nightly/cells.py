"""Cells: what identifies one benchmark point across nights, and loading records.

A cell is a configuration with the keys that do not change what is measured
left out (how many repetitions, whether locks were traced). Two records of the
same cell compare; a record's identity in the store is the hash of its content.

load_records is the one way files and directories of records are read, by
compare, ab, nightly --records, ingest, export-pyperf, table and report.
"""
from __future__ import annotations

import hashlib
import json
import os

from bench import result as resultmod

# config keys that may differ without changing the benchmark
VOLATILE_CONFIG = frozenset({"repeat", "warmup", "trace_locks", "lock_stacks", "trace_mmap_lock", "trace_share"})
# machine keys that, when they differ, make two records come from different hosts
HOST_KEYS = ("cpu_model", "online_cpus", "arch")
# Which host a record came from: its hostname and the OS installation's machine id
# (machine-id(5)), so two CI runners that share a name stay apart, and a host keeps
# its identity across reboots (boot_id changes every boot). Records made before
# machine_id was recorded have the hostname alone.
IDENTITY_KEYS = ("hostname", "machine_id")
# A sweep directory's index (bench/sweep.py writes it beside the records): its
# file name and the marker inside it. sweep.py cannot be imported from here
# (it imports bench.table, which loads through this module).
INDEX_NAME = "index.json"
INDEX_KIND = "faultbench-sweep-index"


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


def host_labels(machines: list[dict]) -> list[str]:
    """One label per machine, the same for every machine of one host: its hostname,
    with the first 8 digits of the machine id where hosts share a hostname. A
    machine without an id belongs to the one host of its hostname that has one;
    where there are several, it is a host of its own ("name#no-id"): unknown which."""
    names = [m.get("hostname") or "unknown-host" for m in machines]
    ids_of: dict[str, set] = {}
    for name, m in zip(names, machines):
        if m.get("machine_id"):
            ids_of.setdefault(name, set()).add(m["machine_id"])
    keys = []
    for name, m in zip(names, machines):
        mid = m.get("machine_id")
        if not mid and len(ids_of.get(name, ())) == 1:
            (mid,) = ids_of[name]
        keys.append((name, mid))
    hosts_named: dict[str, set] = {}
    for name, mid in keys:
        hosts_named.setdefault(name, set()).add(mid)
    return [name if len(hosts_named[name]) == 1 else f"{name}#{(mid or 'no-id')[:8]}"
            for name, mid in keys]


def record_hosts(records: list[dict]) -> list[str]:
    """host_labels of the records' machines, in their order."""
    return host_labels([r["machine"] for r in records])


def _json_files(directory: str) -> list[str]:
    """Every *.json below `directory`, sorted; hidden files and directories left
    out (write_atomic's temporary files are hidden)."""
    out = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [os.path.join(root, f) for f in sorted(files)
                if f.endswith(".json") and not f.startswith(".")]
    return out


def _is_sweep_index(value) -> bool:
    return isinstance(value, dict) and value.get("kind") == INDEX_KIND


def load_records(paths: list[str]) -> list[tuple[str, dict]]:
    """(path, record) for every record in `paths`, each read, migrated and checked
    against the schema (bench.result); BadInput, one line naming the file and the
    first problem, for anything else. Every file is read before this returns.

    A path is a record file or a directory. In a directory every *.json below
    it must be a record, except a sweep's index (index.json marked as one) and a
    record marked incomplete (its run did not finish): both are skipped there,
    and refused when named directly. A directory without any record is refused.
    """
    out = []
    for path in paths:
        if not os.path.exists(path):
            raise BadInput(f"{path}: no such file or directory")
        in_directory = os.path.isdir(path)
        found = 0
        for file in _json_files(path) if in_directory else [path]:
            try:
                value = resultmod.parse(resultmod.read_bytes(file), file)
                if _is_sweep_index(value):
                    if in_directory and os.path.basename(file) == INDEX_NAME:
                        continue
                    raise BadInput(f"{file}: a sweep index, not a result record "
                                   "(name the sweep directory instead)")
                if in_directory and isinstance(value, dict) and value.get("incomplete") is True:
                    continue
                out.append((file, resultmod.check(value, file)))
                found += 1
            except resultmod.RecordError as exc:
                raise BadInput(str(exc)) from None
        if in_directory and not found:
            raise BadInput(f"{path}: no result record in this directory")
    return out
