"""The network worker: a separate process that holds the source ("remote") guest
memory and serves CopyFromRemote(remote_offset, local_offset, length) requests
from a shared-memory command ring, writing straight into the target guest memory
through its own mapping of the target's memfd (bench/csrc/ring.c).

`python -m bench.worker ...` is the worker process; `WorkerProcess` starts,
watches and stops it from the harness. Requests are posted from C with
`lib.fb_ring_copy(wp.ring, remote_off, local_off, length, stop_ptr)`.
"""
import argparse
import math
import os
import signal
import subprocess
import sys
import tempfile
import time

from .native import ffi, lib

READY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
MAX_SERVICE_US = 60e6       # the C side clamps there too
PAGE = 4096

_MODELS = {
    "fixed": (lib.FB_SVC_FIXED, ("us",)),
    "uniform": (lib.FB_SVC_UNIFORM, ("min_us", "max_us")),
    "lognormal": (lib.FB_SVC_LOGNORMAL, ("median_us", "sigma")),
}


class WorkerError(RuntimeError):
    """The worker could not be started or failed; the message is one line."""


def _number(service, key):
    v = service[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"service {key} must be a number, got {v!r}")
    v = float(v)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"service {key} must be finite and >= 0, got {v!r}")
    return v


def service_params(service):
    """Validate a service-time model; returns (FB_SVC_* model, a, b) for fb_worker_main."""
    if not isinstance(service, dict):
        raise ValueError(f"service must be a dict with a 'model' key, got {service!r}")
    name = service.get("model")
    if name not in _MODELS:
        raise ValueError(f"service model must be one of {', '.join(_MODELS)}, got {name!r}")
    model, keys = _MODELS[name]
    extra = set(service) - set(keys) - {"model"}
    if extra:
        raise ValueError(f"service model {name} takes {', '.join(keys)}; unexpected {', '.join(sorted(extra))}")
    missing = [k for k in keys if k not in service]
    if missing:
        raise ValueError(f"service model {name} needs {', '.join(missing)}")
    values = [_number(service, k) for k in keys]
    a, b = values if len(values) == 2 else (values[0], 0.0)
    if name == "uniform" and a > b:
        raise ValueError(f"service uniform needs min_us <= max_us, got {a} > {b}")
    if name == "lognormal":
        if a <= 0:
            raise ValueError(f"service lognormal needs median_us > 0, got {a}")
        if b > 10:
            raise ValueError(f"service lognormal sigma must be <= 10, got {b}")
    if a > MAX_SERVICE_US or (name == "uniform" and b > MAX_SERVICE_US):
        raise ValueError(f"service time must be <= {MAX_SERVICE_US:.0f} us")
    return model, a, b


def describe_exit(pid, returncode):
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        return f"network worker (pid {pid}) died: killed by signal {-returncode} ({name})"
    return f"network worker (pid {pid}) exited with status {returncode}"


class WorkerProcess:
    """One network-worker process and the harness's mapping of its ring.

    The harness keeps `target_memfd` open while the worker runs (the worker gets
    its own copy through pass_fds and maps it itself). `ring` is this process's
    `struct fb_ring *`, valid from start() until stop(): every fb_ring_copy on it
    must have returned before stop() unmaps it (call request_shutdown() first to
    make blocked requesters return -2 promptly, join them, then stop()).
    """

    def __init__(self, target_memfd, target_size, demand_gpa, seed, threads, batch, service,
                 nslots=1024, rng_seed=None, ready_timeout=READY_TIMEOUT_S):
        self.svc_model, self.svc_a, self.svc_b = service_params(service)
        if not 1 <= nslots <= lib.FB_RING_MAX_SLOTS:
            raise ValueError(f"nslots must be in 1..{lib.FB_RING_MAX_SLOTS}, got {nslots}")
        if not 1 <= threads <= lib.FB_RING_MAX_THREADS:
            raise ValueError(f"threads must be in 1..{lib.FB_RING_MAX_THREADS}, got {threads}")
        if not 1 <= batch <= nslots:
            raise ValueError(f"batch must be in 1..nslots ({nslots}), got {batch}")
        if target_size <= 0 or target_size % PAGE:
            raise ValueError(f"target_size must be a positive multiple of {PAGE}, got {target_size}")
        if demand_gpa < 0 or demand_gpa % PAGE:
            raise ValueError(f"demand_gpa must be a page-aligned address, got {demand_gpa:#x}")
        if not 0 <= seed < 1 << 64:
            raise ValueError(f"seed must fit in 64 bits, got {seed}")
        try:
            st = os.fstat(target_memfd)
        except OSError as e:
            raise ValueError(f"target_memfd {target_memfd} is not an open file: {e.strerror}") from None
        if st.st_size < target_size:
            raise ValueError(f"target memfd holds {st.st_size} bytes, less than target_size {target_size}")
        self.target_memfd = target_memfd
        self.target_size = target_size
        self.demand_gpa = demand_gpa
        self.seed = seed
        self.threads = threads
        self.batch = batch
        self.service = dict(service)
        self.nslots = nslots
        self.rng_seed = seed if rng_seed is None else rng_seed & ((1 << 64) - 1)
        self.ready_timeout = ready_timeout
        self.ring_fd = -1
        self.ring = ffi.NULL
        self.pid = None
        self._proc = None
        self._pidfd = -1
        self._errfile = None
        self._err_tail = ""
        self._final_stats = None
        self._stopped = False

    # ---- lifecycle ----

    def start(self):
        if self._proc is not None or self._stopped:
            raise WorkerError("network worker: start() called twice")
        try:
            self._start()
        except BaseException:
            self._cleanup(kill=True)
            raise
        return self

    def _start(self):
        fd = lib.fb_ring_create(self.nslots)
        if fd < 0:
            raise WorkerError(f"network worker: cannot create ring: {os.strerror(-fd)}")
        self.ring_fd = fd
        self.ring = lib.fb_ring_map(fd)
        if self.ring == ffi.NULL:
            raise WorkerError(f"network worker: cannot map ring: {os.strerror(ffi.errno)}")
        self._errfile = tempfile.TemporaryFile(prefix="fb-worker-stderr-")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        cmd = [sys.executable, "-m", "bench.worker",
               "--ring-fd", str(self.ring_fd), "--target-fd", str(self.target_memfd),
               "--target-size", str(self.target_size), "--demand-gpa", str(self.demand_gpa),
               "--seed", str(self.seed), "--threads", str(self.threads), "--batch", str(self.batch),
               "--svc-model", str(self.svc_model), "--svc-a", repr(self.svc_a), "--svc-b", repr(self.svc_b),
               "--rng-seed", str(self.rng_seed)]
        self._proc = subprocess.Popen(cmd, pass_fds=(self.ring_fd, self.target_memfd), env=env,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=self._errfile)
        self.pid = self._proc.pid
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (OSError, AttributeError):
            self._pidfd = -1        # requesters fall back to the 1 s heartbeat
        lib.fb_ring_set_worker_pidfd(self.ring, self._pidfd)
        deadline = time.monotonic() + self.ready_timeout
        while not lib.fb_ring_worker_ready(self.ring):
            if self._proc.poll() is not None:
                raise WorkerError(self._death_line())
            if time.monotonic() > deadline:
                raise WorkerError(f"network worker (pid {self.pid}) not ready after "
                                  f"{self.ready_timeout:g} s")
            time.sleep(0.002)

    def request_shutdown(self):
        """Ask the worker to exit without waiting; blocked requesters return -2."""
        if self.ring != ffi.NULL:
            lib.fb_ring_shutdown(self.ring)

    def stop(self):
        """Shut the worker down (SIGKILL after 5 s), keep its stats, release everything. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._proc is not None and self._proc.poll() is None:
            self.request_shutdown()
            try:
                self._proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._cleanup(kill=True)

    def _cleanup(self, kill):
        self._stopped = True
        if self._proc is not None and self._proc.poll() is None and kill:
            self._proc.kill()
            self._proc.wait()
        if self.ring != ffi.NULL:
            if self._final_stats is None and lib.fb_ring_worker_pid(self.ring):
                self._final_stats = self._read_stats()
            lib.fb_ring_unmap(self.ring)
            self.ring = ffi.NULL
        for attr in ("ring_fd", "_pidfd"):
            fd = getattr(self, attr)
            if fd >= 0:
                os.close(fd)
                setattr(self, attr, -1)
        if self._errfile is not None:
            self._err_tail = self._stderr_tail()
            self._errfile.close()
            self._errfile = None

    def _stderr_tail(self):
        if self._errfile is None:
            return self._err_tail
        try:
            self._errfile.seek(0)
            lines = [ln.strip() for ln in self._errfile.read().decode(errors="replace").splitlines()]
        except (OSError, ValueError):
            return ""
        lines = [ln for ln in lines if ln]
        return lines[-1] if lines else ""

    def _death_line(self):
        line = describe_exit(self.pid, self._proc.returncode)
        tail = self._stderr_tail()
        return f"{line}: {tail}" if tail else line

    def poll(self):
        """None while the worker runs, else one line saying how it ended."""
        if self._proc is None:
            return "network worker not started"
        if self._proc.poll() is None:
            return None
        return self._death_line()

    close = stop

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # ---- statistics ----

    def _read_stats(self):
        s = ffi.new("struct fb_ring_stats *")
        lib.fb_ring_get_stats(self.ring, s)
        per = ffi.new("struct fb_ring_thread_stats[]", lib.FB_RING_MAX_THREADS)
        n = lib.fb_ring_get_thread_stats(self.ring, per, lib.FB_RING_MAX_THREADS)
        return {
            "requests": s.requests,
            "batches": s.batches,
            "copied_bytes": s.copied_bytes,
            "service_ns": s.service_ns,
            "service_mean_ns": s.service_ns / s.requests if s.requests else 0.0,
            "model_ns": s.model_ns,
            "mean_batch": s.requests / s.batches if s.batches else 0.0,
            "requester_waits": s.requester_waits,
            "requester_wait_ns": s.requester_wait_ns,
            "lock": {"acquisitions": s.lock_acquisitions, "contended": s.lock_contended,
                     "spin_ns": s.lock_spin_ns, "max_spin_ns": s.lock_max_spin_ns},
            "threads": [{"index": i, "tid": per[i].tid, "requests": per[i].requests,
                         "batches": per[i].batches, "service_ns": per[i].service_ns,
                         "model_ns": per[i].model_ns,
                         "copied_bytes": per[i].copied_bytes} for i in range(n)],
            "config": {"threads": self.threads, "batch": self.batch, "service": dict(self.service),
                       "nslots": self.nslots},
        }

    def stats(self):
        """Ring lock and service statistics: live while running, as they were at stop() after."""
        if self.ring != ffi.NULL:
            return self._read_stats()
        if self._final_stats is not None:
            return self._final_stats
        raise WorkerError("network worker: no statistics (never started)")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.worker",
                                description="faultbench network worker (started by WorkerProcess)")
    for name in ("ring-fd", "target-fd", "target-size", "demand-gpa", "seed", "threads", "batch",
                 "svc-model", "rng-seed"):
        p.add_argument("--" + name, type=int, required=True)
    p.add_argument("--svc-a", type=float, required=True)
    p.add_argument("--svc-b", type=float, required=True)
    a = p.parse_args(argv)
    # the harness decides when the worker ends (ring shutdown); a terminal's ^C goes to it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    rc = lib.fb_worker_main(a.ring_fd, a.target_fd, a.target_size, a.demand_gpa, a.seed,
                            a.threads, a.batch, a.svc_model, a.svc_a, a.svc_b, a.rng_seed)
    if rc < 0:
        print(f"network worker: {os.strerror(-rc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
