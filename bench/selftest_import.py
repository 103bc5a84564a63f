"""`run_bench.py import-selftest FILE... --args "demand_paging_test ARGS" --out RECORD.json`

Reads the output of the kernel's own `demand_paging_test`
(tools/testing/selftests/kvm) and the command line that produced it into a
faultbench result record, so that `table`, `report` and `compare` can put the
selftest's numbers beside the harness's. Each FILE is one run of the same
command line (a repetition of one cell).

What the record holds, and what it does not (docs/selftest.md):
- the selftest's three lines, under the selftest's names (`selftest.*`), with the
  selftest's definitions: "Per-vcpu demand paging rate" is vCPU 0's pages over the
  whole run's time and "Overall demand paging rate" is that times the vCPU count,
  so with -o (every vCPU walks all of memory) each page counts once per vCPU;
- under the harness's own names: `pages` (distinct pages of guest memory),
  `pages_per_s` (distinct pages per second: the Overall rate when partitioned,
  Overall / vCPUs with -o), `pages_per_s_per_vcpu` (the selftest's per-vCPU rate,
  which is the harness's definition too), `guest_seconds`;
- the configuration parsed from ARGS exactly as the selftest parses it;
- where it came from (`source`: the files, their sha256, the args);
- a machine "as stated by whoever ran it": only what --host/--cpus/... say, never
  this host's values unless --machine-from-this-host asks for them.

Nothing is written unless every file parses, agrees with ARGS and with the others.
"""
from __future__ import annotations

import datetime
import getopt
import hashlib
import os
import re
import shlex
import sys

from . import __version__
from . import result as resultmod
from . import schema
from .cmdline import OneLineParser
from .machine import collect_harness, collect_machine

PROG = "run_bench.py import-selftest"
KIND = schema.SELFTEST_KIND   # "demand_paging_test"

# the 6.12 option string ("ahom:u:d:b:s:v:c:r:") plus the unmerged series' -w
# (memory-fault exits, Anish Moorthy's KVM_MEM_EXIT_ON_MISSING series) and -k (KVM
# Userfault, James Houghton's KVM_MEM_USERFAULT series): neither takes an argument
OPTSTRING = "ahom:u:d:b:s:v:c:r:wk"

# lib/test_util.c's backing source names; the shared ones allow -u MINOR
BACKINGS = ("anonymous", "anonymous_thp", "anonymous_hugetlb", "anonymous_hugetlb_16kb",
            "anonymous_hugetlb_64kb", "anonymous_hugetlb_512kb", "anonymous_hugetlb_1mb",
            "anonymous_hugetlb_2mb", "anonymous_hugetlb_8mb", "anonymous_hugetlb_16mb",
            "anonymous_hugetlb_32mb", "anonymous_hugetlb_256mb", "anonymous_hugetlb_512mb",
            "anonymous_hugetlb_1gb", "anonymous_hugetlb_2gb", "anonymous_hugetlb_16gb",
            "shmem", "shared_hugetlb")
SHARED_BACKINGS = ("shmem", "shared_hugetlb")
DEFAULT_MEM_BYTES = 1 << 30   # DEFAULT_PER_VCPU_MEM_SIZE

# The lines of one result (demand_paging_test.c run_test() and memstress.c). Searched
# anywhere in a line: a CI log may put a timestamp in front.
TIME_RE = re.compile(r"Total guest execution time:\s*(\d+)\.(\d{9})s")
PER_VCPU_RE = re.compile(r"Per-vcpu demand paging rate:\s*(\S+)\s+pgs/sec/vcpu")
OVERALL_RE = re.compile(r"Overall demand paging rate:\s*(\S+)\s+pgs/sec(?!/)")
MODE_RE = re.compile(r"Testing guest mode:\s*(.*?)\s*$")
PAGE_SIZE_RE = re.compile(r"(\d+)K pages")
MEMORY_RE = re.compile(r"guest physical test memory: \[0x([0-9a-fA-F]+), 0x([0-9a-fA-F]+)\)")
SEED_RE = re.compile(r"Random seed: (0x[0-9a-fA-F]+)")
ASSERT_MARK = "==== Test Assertion Failure ===="

# The printed rate has 6 decimals and the time 9: pages recomputed from them agree
# with the args far inside this; a wrong -b or -v is off by a whole factor.
REL_TOLERANCE = 1e-6

STATED_KEYS = (("hostname", "host"), ("online_cpus", "cpus"), ("cpu_model", "cpu_model"),
               ("kernel_release", "kernel"), ("arch", "arch"))


class SelftestError(Exception):
    """Input that cannot become a record: one line, exit 2."""


# -- the command line, parsed as the selftest parses it

def _c_integer(text: str, what: str) -> int:
    """strtol(text, &end, 0) with the whole string consumed: 0x.. hex, 0.. octal."""
    t = text.strip()
    sign = -1 if t.startswith("-") else 1
    body = t.lstrip("+-")
    try:
        if body.lower().startswith("0x"):
            value = int(body[2:], 16)
        elif len(body) > 1 and body.startswith("0"):
            value = int(body[1:], 8)
        else:
            value = int(body, 10)
    except ValueError:
        raise SelftestError(f"--args: {what} {text!r} is not an integer") from None
    return sign * value


def parse_size(text: str) -> int:
    """lib/test_util.c parse_size(): digits (base 0), then t/g/m/k/b or nothing."""
    m = re.fullmatch(r"(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)([tTgGmMkKbB]?)", text)
    if not m:
        raise SelftestError(f"--args: -b {text!r} is not a size the selftest accepts "
                            "(digits, then T, G, M, K or B)")
    shift = {"t": 40, "g": 30, "m": 20, "k": 10, "b": 0, "": 0}[m.group(2).lower()]
    return _c_integer(m.group(1), "-b") << shift


def parse_args(text: str) -> dict:
    """The selftest's parameters from its command line ("demand_paging_test -v 4 ...").
    getopt's GNU rules (as glibc's getopt): options may follow operands; a later
    option overrides an earlier one, -m accumulates."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise SelftestError(f"--args: {exc}") from None
    if not words or os.path.basename(words[0]) != KIND:
        raise SelftestError(f"--args must start with the program, {KIND} "
                            f"(e.g. --args \"{KIND} -v 4 -b 16M -u MISSING\"), got {text!r}")
    try:
        opts, operands = getopt.gnu_getopt(words[1:], OPTSTRING)
    except getopt.GetoptError as exc:
        raise SelftestError(f"--args: {exc} (the selftest then prints its help and runs nothing)") from None
    if operands:
        raise SelftestError(f"--args: {KIND} takes no operands, got {' '.join(operands)!r}")
    p = {"argv": words, "vcpus": 1, "mem_bytes": DEFAULT_MEM_BYTES, "uffd_mode": None,
         "single_uffd": False, "delay_us": 0, "readers": 1, "backing": "anonymous",
         "partitioned": True, "cpu_list": None, "guest_modes": [], "w": False, "k": False,
         "given": []}
    for opt, value in opts:
        p["given"].append(opt)
        if opt == "-v":
            p["vcpus"] = _c_integer(value, "-v")
            if p["vcpus"] < 1:
                raise SelftestError(f"--args: -v {value}: the number of vCPUs must be positive")
        elif opt == "-b":
            p["mem_bytes"] = parse_size(value)
        elif opt == "-u":
            if value not in ("MISSING", "MINOR"):
                raise SelftestError(f"--args: -u {value}: the mode must be MISSING or MINOR")
            p["uffd_mode"] = value
        elif opt == "-a":
            p["single_uffd"] = True
        elif opt == "-o":   # overlapped memory; implies one uffd for all of it
            p["partitioned"] = False
            p["single_uffd"] = True
        elif opt == "-d":
            p["delay_us"] = _c_integer(value, "-d")
            if p["delay_us"] < 0:
                raise SelftestError(f"--args: -d {value}: a negative delay is not supported")
        elif opt == "-r":
            p["readers"] = _c_integer(value, "-r")
            if p["readers"] < 1:
                raise SelftestError(f"--args: -r {value}: readers per uffd must be >= 1")
        elif opt == "-s":
            if value not in BACKINGS:
                raise SelftestError(f"--args: -s {value}: not a backing source of the selftest "
                                    f"({', '.join(BACKINGS)})")
            p["backing"] = value
        elif opt == "-c":
            p["cpu_list"] = value
        elif opt == "-m":
            p["guest_modes"].append(_c_integer(value, "-m"))
        elif opt == "-w":
            p["w"] = True
        elif opt == "-k":
            p["k"] = True
    if p["uffd_mode"] == "MINOR" and p["backing"] not in SHARED_BACKINGS:
        raise SelftestError("--args: -u MINOR without shared memory (-s shmem or shared_hugetlb): "
                            "the selftest refuses this and prints no result")
    if p["w"] and p["k"]:
        raise SelftestError("--args: -w and -k come from two different unmerged series "
                            "(memory-fault exits, KVM Userfault); no one build has both")
    if p["cpu_list"] is not None:
        cpus = p["cpu_list"].split(",")
        if len(cpus) not in (p["vcpus"], p["vcpus"] + 1):
            raise SelftestError(f"--args: -c {p['cpu_list']}: the selftest wants one pCPU per "
                                f"vCPU ({p['vcpus']}), plus optionally one for the main task")
        p["pinning"] = {"vcpus": [_c_integer(c, "-c") for c in cpus[:p["vcpus"]]],
                        "main": _c_integer(cpus[p["vcpus"]], "-c") if len(cpus) > p["vcpus"] else None}
    return p


def mechanism_of(p: dict) -> str:
    """uffd (plain blocking userfaultfd), exits (-w with -u: memory-fault exits),
    kvm-userfault (-k, with or without -u), none (no -u: the kernel fills pages)."""
    if p["k"]:
        return "kvm-userfault"
    if p["uffd_mode"]:
        return "exits" if p["w"] else "uffd"
    return "none"


def config_of(p: dict, page_size: int) -> dict:
    """The record's config: the cell's identity. Options the selftest ignores (-a, -d,
    -r without -u; -w without -u) are in selftest_options as given, and the effective
    values in the keys the harness uses."""
    uffd = p["uffd_mode"] is not None
    distinct_pages = p["vcpus"] * p["mem_bytes"] // page_size
    mech = mechanism_of(p)
    resolve = ({"MISSING": "copy", "MINOR": "continue"}[p["uffd_mode"]] if uffd
               else "memcpy" if mech == "kvm-userfault" else None)
    return {
        "mech": f"{KIND}/{mech}",
        "mechanism": mech,
        "workload": "selftest-partitioned" if p["partitioned"] else "selftest-overlap",
        "workload_params": {"write_percent": 100, "random_access": False,
                            "partitioned": p["partitioned"]},
        "vcpus": p["vcpus"],
        "mem_per_vcpu_mib": p["mem_bytes"] / (1 << 20),
        "memory_pages": distinct_pages,
        "guest_page_size": page_size,
        "uffd_mode": p["uffd_mode"],
        "uffds": (1 if p["single_uffd"] else p["vcpus"]) if uffd else 0,
        "readers_per_uffd": p["readers"] if uffd else 0,
        "resolve": resolve,
        "fetch": None,
        "fetch_delay_us": float(p["delay_us"]) if uffd else 0.0,
        "fetch_delay_mode": "usleep" if uffd and p["delay_us"] else None,
        "backing": p["backing"],
        "placement": "pinned" if p["cpu_list"] is not None else "free",
        "cpu_map": p.get("pinning"),
        "guest_modes": p["guest_modes"] or None,
        "record_latency": False,   # the selftest times no single fault
        "selftest_options": {
            "v": p["vcpus"], "b": p["mem_bytes"], "u": p["uffd_mode"], "a": p["single_uffd"],
            "d": p["delay_us"], "r": p["readers"], "s": p["backing"], "o": not p["partitioned"],
            "c": p["cpu_list"], "m": p["guest_modes"] or None, "w": p["w"], "k": p["k"]},
    }


# -- the output

def _rate(text: str, line: str, source: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value == value and value not in (float("inf"), float("-inf")) and value >= 0):
        raise SelftestError(f"{source}: not a rate in {line.strip()!r}")
    return value


def parse_output(data: bytes, source: str) -> dict:
    """One result of one file: the three lines' numbers and what surrounds them."""
    text = data.decode("utf-8", errors="replace")
    lines = text.splitlines()
    found: dict[str, list] = {"time": [], "per_vcpu": [], "overall": [], "mode": [], "memory": [], "seed": []}
    for i, line in enumerate(lines):
        for key, rx in (("time", TIME_RE), ("per_vcpu", PER_VCPU_RE), ("overall", OVERALL_RE),
                        ("mode", MODE_RE), ("memory", MEMORY_RE), ("seed", SEED_RE)):
            m = rx.search(line)
            if m:
                found[key].append((i, m, line))
    names = {"time": "Total guest execution time", "per_vcpu": "Per-vcpu demand paging rate",
             "overall": "Overall demand paging rate"}
    if not found["time"] and not found["per_vcpu"] and not found["overall"]:
        why = ""
        if ASSERT_MARK in text:   # the selftest's own reason, its last line
            tail = [ln.strip() for ln in text.split(ASSERT_MARK, 1)[1].splitlines() if ln.strip()]
            why = f": the selftest failed ({tail[-1] if tail else 'assertion'})"
        elif not text.strip():
            why = ": the file is empty"
        raise SelftestError(f"{source}: no {KIND} result in it (no \"{names['time']}\" line){why}")
    counts = {k: len(found[k]) for k in names}
    if len(set(counts.values())) != 1:
        missing = [names[k] for k, n in counts.items() if n < max(counts.values())]
        raise SelftestError(f"{source}: a result without its \"{missing[0]}\" line "
                            "(truncated or interleaved output?)")
    if counts["time"] > 1:
        raise SelftestError(f"{source}: {counts['time']} results in one file (several guest modes?); "
                            "give one result per file (run it with one -m, or split the output)")
    (ti, tm, tline), (pi, pm, pline), (oi, om, oline) = found["time"][0], found["per_vcpu"][0], found["overall"][0]
    if not ti < pi < oi:
        raise SelftestError(f"{source}: the three result lines are out of order")
    out = {
        "guest_seconds": int(tm.group(1)) + int(tm.group(2)) / 1e9,
        "per_vcpu_rate": _rate(pm.group(1), pline, source),
        "overall_rate": _rate(om.group(1), oline, source),
        "lines": {"time": tline.strip(), "per_vcpu": pline.strip(), "overall": oline.strip()},
        "guest_mode": found["mode"][-1][1].group(1) if found["mode"] else None,
        "memory": None, "seed": found["seed"][0][1].group(1) if found["seed"] else None,
    }
    if out["guest_seconds"] <= 0:
        raise SelftestError(f"{source}: a total guest execution time of 0 s")
    if found["memory"]:
        m = found["memory"][-1][1]
        out["memory"] = int(m.group(2), 16) - int(m.group(1), 16)
    return out


def page_size_of(mode: str | None, source: str) -> int:
    """The guest page size the selftest counts pages in, from its "Testing guest mode"
    line ("... 4K pages"); 4 KiB when the line is absent (x86's only mode)."""
    if mode is None:
        return 4096
    m = PAGE_SIZE_RE.search(mode)
    if not m:
        raise SelftestError(f"{source}: no page size in \"Testing guest mode: {mode}\"")
    return int(m.group(1)) * 1024


def check_against_args(res: dict, p: dict, page_size: int, source: str) -> int:
    """The output agrees with the args: the vCPU count (overall / per-vCPU), the pages
    per vCPU (rate x time), the memory range. Returns the pages per vCPU."""
    v = p["vcpus"]
    if p["mem_bytes"] % page_size:
        raise SelftestError(f"--args: -b {p['mem_bytes']} bytes is not a multiple of the guest "
                            f"page size {page_size} (the selftest refuses it)")
    per_vcpu_pages = p["mem_bytes"] // page_size * (1 if p["partitioned"] else v)
    if res["per_vcpu_rate"] > 0:
        ratio = res["overall_rate"] / res["per_vcpu_rate"]
        if abs(ratio - v) > REL_TOLERANCE * v + 1e-9:
            raise SelftestError(f"{source}: the output is of {ratio:.4g} vCPUs (overall / per-vCPU "
                                f"rate), --args say -v {v}")
    seen_pages = res["per_vcpu_rate"] * res["guest_seconds"]
    if abs(seen_pages - per_vcpu_pages) > REL_TOLERANCE * per_vcpu_pages + 0.01:
        how = f"-b {p['mem_bytes'] >> 20} MiB / {page_size >> 10} KiB pages" + (
            "" if p["partitioned"] else f" x {v} vCPUs (-o)")
        raise SelftestError(f"{source}: the output's rate x time gives {seen_pages:.1f} pages per vCPU, "
                            f"--args give {per_vcpu_pages} ({how}): not the args of this output")
    if res["memory"] is not None and res["memory"] != v * p["mem_bytes"]:
        raise SelftestError(f"{source}: the output's guest test memory is {res['memory']} bytes, "
                            f"--args give {v} x {p['mem_bytes']}")
    return per_vcpu_pages


def run_metrics(res: dict, p: dict, per_vcpu_pages: int, page_size: int) -> dict:
    v = p["vcpus"]
    distinct = v * p["mem_bytes"] // page_size
    # the distinct-page rate from the selftest's own printed numbers: the Overall rate
    # when partitioned (every page belongs to one vCPU); with -o every vCPU walks all
    # pages, so vCPU 0's rate (the per-vCPU line) is the distinct rate
    pages_per_s = res["overall_rate"] if p["partitioned"] else res["per_vcpu_rate"]
    return {
        "pages": distinct,
        "touches": v * per_vcpu_pages,
        "guest_seconds": res["guest_seconds"],
        "pages_per_s": pages_per_s,
        "pages_per_s_per_vcpu": res["per_vcpu_rate"],
        "fault_latency_ns": None,
        "selftest": {
            "total_guest_execution_time_s": res["guest_seconds"],
            "per_vcpu_demand_paging_rate": res["per_vcpu_rate"],
            "overall_demand_paging_rate": res["overall_rate"],
            "pages_per_vcpu": per_vcpu_pages,
        },
    }


def stated_machine(args) -> dict:
    """The machine as the user states it; every field not stated is null and listed."""
    machine = {"as_stated": True,
               "stated_by": "whoever ran demand_paging_test (given to import-selftest)"}
    for key, flag in STATED_KEYS:
        machine[key] = getattr(args, flag)
    machine["not_stated"] = [k for k, _f in STATED_KEYS if machine[k] is None]
    machine["not_measured"] = ("faultbench measured nothing of this machine: no fingerprint, "
                               "no probes, no load, no boot or machine id")
    return machine


def this_host_machine() -> dict:
    """--machine-from-this-host: the importing host's identity, said to be where the
    selftest ran (the user's word); still no fingerprint (not measured during the runs)."""
    machine = collect_machine()
    machine["as_stated"] = False
    machine["stated_by"] = ("this host at import time (--machine-from-this-host: the user said the "
                            "selftest ran here); not measured while it ran, no fingerprint")
    return machine


def build_record(files: list[str], args) -> dict:
    p = parse_args(args.args)
    outputs, seen = [], {}
    for path in files:
        try:
            data = resultmod.read_bytes(path)
        except resultmod.RecordError as exc:
            raise SelftestError(str(exc)) from None
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:   # the same output twice would count one run as two
            raise SelftestError(f"{path}: the same output as {seen[digest]} (sha256 {digest[:12]}); "
                                "each FILE must be its own run")
        seen[digest] = path
        outputs.append((path, digest, len(data), parse_output(data, path)))
    modes = {res["guest_mode"] for *_x, res in outputs}
    if len(modes) > 1:
        raise SelftestError(f"the files ran different guest modes ({'; '.join(sorted(map(str, modes)))}): "
                            "not one cell")
    page_size = page_size_of(outputs[0][3]["guest_mode"], outputs[0][0])
    config = config_of(p, page_size)
    warnings = []
    if p["w"] and not p["uffd_mode"]:
        warnings.append("-w without -u: the selftest enables memory-fault exits only with "
                        "userfaultfd, so this is the no-uffd baseline")
    ignored = [o for o in ("-a", "-d", "-r") if o in p["given"] and not p["uffd_mode"]]
    if ignored:
        warnings.append(f"{', '.join(ignored)} without -u: ignored by the selftest")
    rec = resultmod.new_record(p["argv"], config, {}, {}, False, None)
    rec["command"]["cwd"] = ""   # where the selftest ran is not in its output
    rec["command"]["rerun"] = shlex.join(p["argv"])
    rec["machine"] = this_host_machine() if args.machine_from_this_host else stated_machine(args)
    rec["harness"] = _importer()
    for path, digest, size, res in outputs:
        per_vcpu_pages = check_against_args(res, p, page_size, path)
        resultmod.add_run(rec, run_metrics(res, p, per_vcpu_pages, page_size),
                          raw={"file": path, "sha256": digest, "bytes": size, "lines": res["lines"],
                               "guest_mode": res["guest_mode"], "random_seed": res["seed"],
                               "guest_test_memory_bytes": res["memory"]})
    rec["warnings"] = warnings
    resultmod.finalize(rec)
    rec["source"] = {
        "kind": KIND,
        "args": args.args,
        "argv": p["argv"],
        "label": args.label,
        "files": [{"path": path, "sha256": digest, "bytes": size} for path, digest, size, _r in outputs],
        # one checksum for the set, in the order given: sha256 of the files' digests
        "sha256": hashlib.sha256("".join(d for _p, d, _s, _r in outputs).encode()).hexdigest(),
        "imported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "imported_by": ["run_bench.py", "import-selftest", *args.argv],
        "definitions": {
            "selftest.per_vcpu_demand_paging_rate": "vCPU 0's pages / total guest execution time "
                "(the selftest's; with -o a vCPU's pages are all of memory)",
            "selftest.overall_demand_paging_rate": "per-vCPU rate x vCPUs (the selftest's; with -o "
                "each page counts once per vCPU)",
            "pages_per_s": "distinct pages of guest memory / total guest execution time",
            "pages_per_s_per_vcpu": "the selftest's per-vCPU rate",
        },
        "not_measured": ["fault latency", "host fingerprint", "host noise", "CPU-state probes",
                         "machine (as stated)", "command.cwd", "content checks"],
    }
    problems = resultmod.usable_problems(rec)
    if problems:   # our own bug, not the input's: say so, write nothing
        raise RuntimeError(f"the imported record does not validate: {problems[0]}")
    return rec


def _importer() -> dict:
    harness = collect_harness(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), __version__)
    harness["role"] = "imported this record; did not measure it"
    return harness


def build_parser() -> OneLineParser:
    p = OneLineParser(prog=PROG, description="Import demand_paging_test output as a result record "
                      "(one FILE per run of one command line).")
    p.add_argument("files", nargs="+", metavar="FILE", help="the selftest's output (stdout+stderr), one run each")
    p.add_argument("--args", required=True, metavar="\"demand_paging_test ARGS\"",
                   help="the command line that produced every FILE")
    p.add_argument("--label", help="added to the series name (default: none)")
    p.add_argument("--out", required=True, metavar="RECORD.json", help="where the record goes")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    g = p.add_argument_group("the machine, as stated by whoever ran it (never measured)")
    g.add_argument("--host", help="host name")
    g.add_argument("--cpus", type=int, help="online CPUs")
    g.add_argument("--cpu-model", dest="cpu_model", help="CPU model")
    g.add_argument("--kernel", help="kernel release")
    g.add_argument("--arch", help="architecture")
    g.add_argument("--machine-from-this-host", action="store_true",
                   help="take this host's identity instead (say so only if the selftest ran here)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        if not args.out.endswith(".json"):
            raise SelftestError(f"--out {args.out}: a record file ends in .json")
        if os.path.exists(args.out) and not args.force:
            raise SelftestError(f"--out {args.out} exists (--force replaces it)")
        if args.cpus is not None and args.cpus < 1:
            raise SelftestError(f"--cpus {args.cpus}: at least 1")
        if args.machine_from_this_host and any(getattr(args, f) is not None for _k, f in STATED_KEYS):
            raise SelftestError("--machine-from-this-host and a stated machine field: give one or the other")
        rec = build_record(args.files, args)
    except SelftestError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    try:
        resultmod.write_atomic(rec, args.out)
    except (OSError, ValueError) as exc:
        print(f"{PROG}: error: writing {args.out}: {exc}", file=sys.stderr)
        return 2
    r = rec["summary"]
    print(f"{args.out}: {len(rec['runs'])} run(s) of {shlex.join(rec['source']['argv'])}: "
          f"overall {r['selftest.overall_demand_paging_rate']['median']:.0f} pgs/sec (selftest), "
          f"{r['pages_per_s']['median']:.0f} distinct pages/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
