"""Sweeps people can leave running: progress, one directory, an index, resume.

`run_bench.py --vcpus 1,2,...,256 --mech ... --out DIR` writes every cell's record
into DIR under a fixed name (<mech>-<workload>-v<vcpus>.json) and keeps
DIR/index.json up to date after every cell: each cell's status (pending, running,
done, failed, interrupted), its record, its wall time, and where the sweep's wall
time went (guest, VM and vCPU set-up, vCPU start/stop, collection, teardown,
tracing, writing the record). Records are written atomically, so Ctrl-C leaves
every finished cell usable; `run_bench.py --resume DIR` reruns the sweep's own
command for the cells that have no complete record.

On a terminal, a status line says cell i of n, elapsed and estimated time left;
nothing is printed there when stderr is not a terminal.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import sys
import threading
import time

from . import result as resultmod
from .table import INDEX_KIND

INDEX_NAME = "index.json"
# wall-time accounts, in the order the index lists them
ACCOUNTS = ("guest", "guest_traced", "setup", "vcpu_start_stop", "collect", "teardown",
            "tracing", "record", "startup")
ACCOUNT_MEANING = {
    "guest": "vCPUs in the guest, measured runs (guest_seconds)",
    "guest_traced": "vCPUs in the guest, traced runs (lock data)",
    "setup": "touch tables, VM, memory, vCPU and thread creation",
    "vcpu_start_stop": "between the start gate and the first vCPU in the guest, and after the "
                       "last one left it until every thread reported",
    "collect": "reading counters and histograms out of the core into metrics",
    "teardown": "joining threads, closing the VM, unmapping memory",
    "tracing": "traced runs outside the guest: the tracer's set-up, reading and summarizing its data",
    "record": "writing the record",
    "startup": "probing the machine before the first cell (the tracer's trial load and the host "
               "fingerprint among it), and anything not listed above",
}


ORDER_MEANING = {
    "blocked": "every run of a cell back to back, then the next cell",
    "interleaved": "round-robin: run 1 of every cell, then run 2 of every cell, ...; host "
                   "drift is spread over the cells instead of confounded with one of them",
}


class SweepError(Exception):
    """Bad --out/--resume directory: one line, exit 2."""


def cell_file(mech: str, workload: str, vcpus: int) -> str:
    return f"{mech}-{workload}-v{vcpus}.json"


def resume_argv(directory: str) -> list[str]:
    """The sweep's own command-line words, from its index."""
    index = load_index(directory)
    argv = index.get("argv")
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise SweepError(f"{os.path.join(directory, INDEX_NAME)}: no usable argv")
    return argv


def load_index(directory: str) -> dict:
    path = os.path.join(directory, INDEX_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
    except FileNotFoundError:
        raise SweepError(f"{directory}: no sweep index ({INDEX_NAME}) here") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise SweepError(f"{path}: unreadable sweep index: {str(exc)[:120]}") from None
    if not isinstance(index, dict) or index.get("kind") != INDEX_KIND:
        raise SweepError(f"{path}: not a faultbench sweep index")
    return index


def check_directory(directory: str, argv: list[str]) -> None:
    """A sweep directory is new, empty, or holds this same command's sweep: records of
    another command must never be taken for this one's finished cells."""
    if not os.path.exists(directory):
        return
    if not os.path.isdir(directory):
        raise SweepError(f"--out {directory} is not a directory")
    if not os.path.exists(os.path.join(directory, INDEX_NAME)):
        if any(name.endswith(".json") for name in os.listdir(directory)):
            raise SweepError(f"--out {directory} holds records but no sweep index: "
                             "give a new directory")
        return
    old = resume_argv(directory)
    if old != list(argv):
        raise SweepError(f"--out {directory} holds the sweep of another command "
                         f"({' '.join(old)}): give a new directory, or --resume {directory}")


def record_complete(path: str, repeat: int) -> bool:
    """A record that loads, validates, and holds every measured run asked for."""
    try:
        rec = resultmod.load(path)
    except (OSError, ValueError, RecursionError):
        return False
    if rec.get("incomplete") or resultmod.validate(rec):
        return False
    return len(rec["runs"]) >= repeat


def _fmt_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """One status line on a terminal, redrawn every second while a cell runs (a
    256-vCPU cell takes a minute); silent when stderr is not a terminal."""

    def __init__(self, stream=None, every_s: float = 1.0):
        self.stream = stream or sys.stderr
        self.enabled = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.width = 0
        self.every_s = every_s
        self.text_of = None          # callable giving the current line
        self._lock = threading.Lock()
        self._ticker = None

    def follow(self, text_of) -> None:
        """Show text_of() now and every second until clear()."""
        if not self.enabled:
            return
        self.text_of = text_of
        self._draw()
        if self._ticker is None:
            self._stop = threading.Event()
            self._ticker = threading.Thread(target=self._tick, name="sweep-progress", daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(self.every_s):
            self._draw()

    def _draw(self) -> None:
        with self._lock:
            if self.text_of is None:
                return
            text = self.text_of()
            pad = max(0, self.width - len(text))
            self.stream.write("\r" + text + " " * pad)
            self.stream.flush()
            self.width = len(text)

    def clear(self) -> None:
        if not self.enabled:
            return
        with self._lock:
            self.text_of = None
            if self.width:
                self.stream.write("\r" + " " * self.width + "\r")
                self.stream.flush()
                self.width = 0

    def close(self) -> None:
        self.clear()
        if self._ticker is not None:
            self._stop.set()
            self._ticker.join()
            self._ticker = None


def accounts(phases: dict) -> dict:
    """Runner phases (bench.runner.execute) in the sweep index's accounts."""
    out = {k: phases.get(k, 0.0) for k in ("guest", "setup", "vcpu_start_stop", "collect",
                                           "teardown", "record")}
    out["guest_traced"] = phases.get("traced.guest", 0.0)
    out["tracing"] = sum(v for k, v in phases.items() if k.startswith("traced.")
                         and k != "traced.guest") + phases.get("trace", 0.0)
    return out


class Sweep:
    """The cells of one invocation, their progress, and (with a directory) the index."""

    def __init__(self, cells: list[tuple[str, int]], workload: str, repeat: int,
                 directory: str | None = None, argv: list[str] | None = None,
                 cost: dict | None = None, stream=None, order: str = "blocked",
                 started: float | None = None):
        # `started`: when the invocation's own work began (time.monotonic), so that
        # "startup" holds what ran before the sweep object existed (the host fingerprint)
        now = time.monotonic()
        self.started = now if started is None else started
        # the wall-clock start that goes with it, for the index's started_at
        self._started_at = (datetime.datetime.now(datetime.timezone.utc)
                            - datetime.timedelta(seconds=now - self.started)).isoformat(timespec="seconds")
        # the time-left estimate scales by the time the cells have taken, not startup's
        self.cells_started = now
        # blocked: a cell's runs back to back; interleaved: round-robin, run by run
        self.order = order
        self.directory = directory
        self.argv = list(argv or [])
        self.repeat = repeat
        self.progress = Progress(stream)
        # expected cost of a cell, for the time-left estimate: pages x (repeat + traced)
        self.cost = cost or {}
        self.cells = [{"mech": m, "vcpus": v, "status": "pending",
                       "record": cell_file(m, workload, v), "wall_s": None, "time_s": {},
                       "error": None} for m, v in cells]
        self.totals = {k: 0.0 for k in ACCOUNTS}
        if directory:
            self._adopt_previous()
            self.write_index()

    # -- cells
    def _find(self, mech: str, vcpus: int) -> dict:
        for c in self.cells:
            if c["mech"] == mech and c["vcpus"] == vcpus:
                return c
        raise KeyError((mech, vcpus))

    def _adopt_previous(self) -> None:
        """Cells a previous invocation finished keep their status and timings."""
        try:
            old = load_index(self.directory)
        except SweepError:
            old = {}
        previous = {(c.get("mech"), c.get("vcpus")): c for c in old.get("cells", [])
                    if isinstance(c, dict)}
        for c in self.cells:
            path = os.path.join(self.directory, c["record"])
            if record_complete(path, self.repeat):
                before = previous.get((c["mech"], c["vcpus"]), {})
                c.update(status="done", wall_s=before.get("wall_s"),
                         time_s=before.get("time_s") or {}, reused=True)
        self.previous_runs = old.get("invocations", [])

    def is_done(self, mech: str, vcpus: int) -> bool:
        return self._find(mech, vcpus)["status"] == "done"

    def record_path(self, mech: str, vcpus: int) -> str:
        return os.path.join(self.directory, self._find(mech, vcpus)["record"])

    def begin(self, mech: str, vcpus: int, phases: dict) -> None:
        """`phases`: the dict the runner fills with this cell's wall-time phases, so that
        a cell left running when the sweep stops still has its time accounted."""
        cell = self._find(mech, vcpus)
        cell.update(status="running", error=None)
        cell["_t0"] = time.monotonic()
        cell["_phases"] = phases
        self._show(cell)
        if self.directory:
            self.write_index()

    @contextlib.contextmanager
    def timing(self, mech: str, vcpus: int):
        """Wall time spent on one cell, summed over the stretches of an interleaved
        sweep (its cells' runs alternate, so begin-to-end would count the others')."""
        cell = self._find(mech, vcpus)
        cell["_in"] = time.monotonic()
        try:
            yield
        finally:
            cell["_spent"] = cell.get("_spent", 0.0) + time.monotonic() - cell.pop("_in")

    def show_round(self, mech: str, vcpus: int, round_no: int, rounds: int) -> None:
        cell = self._find(mech, vcpus)
        cell["_round"] = (round_no, rounds)
        self._show(cell)

    def runs_done(self, mech: str, vcpus: int, runs: int, total: int) -> None:
        """An interleaved cell's progress: `runs` of its `total` (warm-ups included) made."""
        self._find(mech, vcpus).update(runs_done=runs, runs_total=total)
        if self.directory:
            self.write_index()

    def _wall(self, cell: dict) -> float:
        if self.order == "interleaved":
            return cell.get("_spent", 0.0) + (time.monotonic() - cell["_in"] if "_in" in cell else 0.0)
        return time.monotonic() - cell.get("_t0", time.monotonic())

    def end(self, mech: str, vcpus: int, status: str, phases: dict, error: str | None = None) -> None:
        """`phases`: the runner's wall-time phases (bench.runner.execute) of this cell."""
        self._close(self._find(mech, vcpus), status, phases, error)
        self.progress.clear()
        if self.directory:
            self.write_index()

    def _close(self, cell: dict, status: str, phases: dict, error: str | None) -> None:
        wall = self._wall(cell)
        cell.pop("_t0", None)
        cell.pop("_phases", None)
        accounted = accounts(phases)
        cell.update(status=status, wall_s=round(wall, 3), error=error,
                    time_s={k: round(v, 3) for k, v in accounted.items()})
        for k, v in accounted.items():
            self.totals[k] += v

    def interrupt(self) -> None:
        self._stop_running(None)

    def finish(self) -> None:
        # cells still running: an interleaved sweep stopped by another cell's failure
        self._stop_running("the sweep stopped at another cell's failure")

    def _stop_running(self, error: str | None) -> None:
        # a cell left running keeps the phases its runs completed in the accounts (else
        # "startup", the remainder, would hold them)
        for c in self.cells:
            if c["status"] == "running":
                self._close(c, "interrupted", c["_phases"], error)
        self.progress.close()
        if self.directory:
            self.write_index()

    # -- progress
    def _show(self, cell: dict) -> None:
        self.progress.follow(lambda: self._line(cell))

    def _round_line(self, cell: dict) -> str:
        round_no, rounds = cell["_round"]
        elapsed = time.monotonic() - self.started
        in_cells = time.monotonic() - self.cells_started
        running = [c for c in self.cells if c["status"] == "running"]
        made = sum(c.get("runs_done", 0) for c in running)
        # runs cost unequally (a 256-vCPU run is long): weigh them by the cells' cost
        def cost(c):
            return self.cost.get((c["mech"], c["vcpus"]), 1)
        spent = sum(c.get("runs_done", 0) * cost(c) for c in running)
        left = sum((c.get("runs_total", self.repeat) - c.get("runs_done", 0)) * cost(c) for c in running)
        eta = ""
        if made and spent:
            eta = f", about {_fmt_duration(in_cells / spent * left)} left"
        return (f"round {round_no} of {rounds}: {cell['mech']} at {cell['vcpus']} vCPUs; "
                f"elapsed {_fmt_duration(elapsed)}{eta}")

    def _line(self, cell: dict) -> str:
        if "_round" in cell:
            return self._round_line(cell)
        n = len(self.cells)
        i = self.cells.index(cell) + 1
        elapsed = time.monotonic() - self.started
        done_now = [c for c in self.cells if c["status"] == "done" and not c.get("reused")]
        left = [c for c in self.cells if c["status"] in ("pending", "running")]
        eta = ""
        spent_cost = sum(self.cost.get((c["mech"], c["vcpus"]), 1) for c in done_now)
        if done_now and spent_cost:
            per = sum(c["wall_s"] or 0 for c in done_now) / spent_cost
            remaining = per * sum(self.cost.get((c["mech"], c["vcpus"]), 1) for c in left)
            # the running cell's share of its estimate already spent
            remaining -= min(time.monotonic() - cell.get("_t0", time.monotonic()),
                             per * self.cost.get((cell["mech"], cell["vcpus"]), 1))
            eta = f", about {_fmt_duration(max(0.0, remaining))} left"
        return (f"cell {i} of {n}: {cell['mech']} at {cell['vcpus']} vCPUs; "
                f"elapsed {_fmt_duration(elapsed)}{eta}")

    # -- index
    def summary(self) -> dict:
        wall = time.monotonic() - self.started
        totals = dict(self.totals)
        totals["startup"] = max(0.0, wall - sum(v for k, v in totals.items() if k != "startup"))
        guest = totals["guest"] + totals["guest_traced"]
        return {"wall_s": round(wall, 3),
                "accounts_s": {k: round(v, 3) for k, v in totals.items()},
                "guest_share": round(guest / wall, 4) if wall else None,
                "outside_guest_share": round(1 - guest / wall, 4) if wall else None,
                "meaning": ACCOUNT_MEANING}

    def write_index(self) -> None:
        counts: dict[str, int] = {}
        for c in self.cells:
            counts[c["status"]] = counts.get(c["status"], 0) + 1
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        this = {"started_at": self._started_at, "updated_at": now, **self.summary()}
        index = {
            "kind": INDEX_KIND, "version": 1, "argv": self.argv,
            "order": self.order,
            "order_meaning": ORDER_MEANING[self.order],
            "rerun": "python run_bench.py " + " ".join(self.argv),
            "resume": f"python run_bench.py --resume {self.directory}",
            "status": "complete" if counts.get("done", 0) == len(self.cells) else "incomplete",
            "counts": counts,
            "cells": [{k: v for k, v in c.items() if not k.startswith("_")} for c in self.cells],
            "time": this,
            "invocations": list(getattr(self, "previous_runs", [])) + [this],
        }
        os.makedirs(self.directory, exist_ok=True)
        resultmod.write_atomic(index, os.path.join(self.directory, INDEX_NAME))


def time_text(summary: dict) -> str:
    """The index's wall-time split as a few lines for the terminal."""
    acc = summary["accounts_s"]
    wall = summary["wall_s"] or 1
    parts = ", ".join(f"{k} {v:.1f} s ({v / wall * 100:.0f}%)" for k, v in acc.items() if v >= 0.05)
    return (f"sweep wall time {wall:.1f} s: {parts}; outside the guest: "
            f"{summary['outside_guest_share'] * 100:.0f}%")
