"""The structure of each mechanism as SimPy processes (docs/MODEL.md).

Everything numeric comes in through a `Params` (bench/model/params.py): this file
holds only structure: which thread does what, on which CPU pool, under which
lock, and who wakes whom. Times are in nanoseconds.

Scheduler approximation (stated in MODEL.md): P CPUs behind one run queue. A thread
keeps its CPU across its bursts until it blocks, or until it has run `quantum_ns`
while others wait (preemption at burst boundaries only). The queue's order is
"wakecredit" (the default): a thread woken from a sleep, or asking for its first CPU,
queues as if it had come one slice (`quantum_ns`) earlier than it did; a thread that
gives its CPU up without sleeping (a slice used up, or an async spinner's sched_yield,
after which it is parked and comes back when its bit clears) queues when it comes. That is EEVDF's order at equal weights in the one respect that
moves these cells: a woken sleeper is placed at the queue's average virtual time
(its deadline one slice later), while a thread that used its slice or yielded has
its deadline pushed a slice on, so the sleeper goes first; as in EEVDF, it goes
ahead of nobody who has waited a slice or more. Among sleepers, and among the rest,
the order is arrival (FIFO). A thread woken while a CPU is idle pays the idle-wake
cost (measured at 1 vCPU) before it runs. Other orders are opt-ins for comparison,
not defaults (`Params.run_queue_order`, `crosscheck --run-queue`): "fifo" (arrival
order for everyone: the model before 2026-12-08), "random" and "eevdf" (EevdfCpus).
"""
from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field

import simpy

from .params import CPU_TIMES

RUN_QUEUE_ORDERS = ("wakecredit", "fifo", "random", "eevdf")


def check_run_queue_order(order: str) -> None:
    """A ValueError for an order the simulation does not have (it would not fall back)."""
    if order not in RUN_QUEUE_ORDERS:
        raise ValueError(f"no run queue order {order!r} (one of {', '.join(RUN_QUEUE_ORDERS)})")


@dataclass
class Stats:
    """What one simulated cell measures over its steady window."""
    latencies: list = field(default_factory=list)
    faults: int = 0
    lock_wait: dict = field(default_factory=dict)
    busy: dict = field(default_factory=dict)       # resource name -> busy ns in window
    window_start: float = 0.0
    measuring: bool = False
    per_vcpu_limit: int | None = None   # finite run: faults each vCPU makes, then stops

    def more(self, done):
        return self.per_vcpu_limit is None or done < self.per_vcpu_limit

    def add_wait(self, name, ns):
        if self.measuring:
            self.lock_wait[name] = self.lock_wait.get(name, 0.0) + ns

    def add_busy(self, name, ns):
        if self.measuring:
            self.busy[name] = self.busy.get(name, 0.0) + ns


class Cpus:
    """P CPUs behind one run queue: "wakecredit" (the module's docstring), FIFO, or
    random order (`order="random"`: the next thread to run is any waiting one)."""

    def __init__(self, env, pcpus, quantum_ns, stats, order="wakecredit", seed=1):
        self.env = env
        self.order = order
        self.rng = random.Random(seed)
        self.res = (simpy.PriorityResource(env, capacity=pcpus) if order in ("random", "wakecredit")
                    else simpy.Resource(env, capacity=pcpus))
        self.pcpus = pcpus
        self.threads = 0            # threads of the cell (set by build)
        self.spinners = {}          # kick event -> None, of vCPUs spinning in place
        self.quantum_ns = quantum_ns
        self.stats = stats

    def idle(self) -> bool:
        return self.res.count < self.res.capacity and not self.res.queue

    def request(self, thread=None, woken=False, slept=None):
        """A CPU request. `woken`: the thread comes back from being off the queue (a
        sleep, or a spinner's park); `slept`: it slept (default: as `woken`), which
        alone earns the wake credit."""
        if self.order == "random":
            req = self.res.request(priority=self.rng.random())
        elif self.order == "wakecredit":
            credit = self.quantum_ns if (woken if slept is None else slept) else 0.0
            req = self.res.request(priority=self.env.now - credit)
        else:
            req = self.res.request()
        if not req.triggered:
            self.kick_spinner()
        return req

    def kick_spinner(self):
        if self.spinners:
            # a thread now waits for a CPU: the spinner on the CPU it would be
            # queued on (one, as run queues are per CPU) sees it and yields
            kick = next(iter(self.spinners))
            del self.spinners[kick]
            kick.succeed()

    def should_yield(self, thread) -> bool:
        """At a burst boundary: has `thread` used its slice while others wait?"""
        return self.env.now - thread.slice_start >= self.quantum_ns and bool(self.res.queue)


class _EevdfQueue:
    """The face of EevdfCpus that Thread and the async spinners read: queue, count,
    capacity, release."""

    def __init__(self, cpus):
        self.cpus = cpus
        self.capacity = cpus.pcpus

    @property
    def queue(self):
        return self.cpus.ready

    @property
    def count(self):
        return len(self.cpus.running)

    def release(self, req):
        self.cpus.release(req)


class EevdfCpus(Cpus):
    """P CPUs behind one queue ordered as EEVDF orders a run queue (order="eevdf"; an
    opt-in, not the default: docs/MODEL.md, "What the model leaves out", the real
    scheduler). Every thread has a virtual runtime v (its time on a CPU; every thread
    has the same weight) and a deadline v + slice (the slice: quantum_ns). A free CPU
    takes the waiting thread with the earliest deadline among the eligible ones (v at
    most the mean v of the runnable threads, waiting and running), else the earliest of
    all. A thread that stops being runnable (a sleep, or an async spinner parked off
    the queue) keeps its lag (the mean v of the other runnable threads - its v, within
    two slices, the kernel's bound) and comes back at that mean - lag, with a new
    deadline. A running thread whose v has passed its deadline yields at its next burst
    boundary if others wait, and gets a new deadline when it queues again. Left out:
    per-CPU queues, wake-up preemption, weights, the kernel's correction of the lag
    for the thread's own share of the mean."""

    def __init__(self, env, pcpus, quantum_ns, stats, seed=1):
        super().__init__(env, pcpus, quantum_ns, stats, order="fifo", seed=seed)   # a plain Resource, replaced below
        self.order = "eevdf"
        self.ready = []             # [request event], each with .thread
        self.running = {}           # thread -> when it took its CPU
        self.res = _EevdfQueue(self)
        self.last_mean = 0.0        # the zero point while nothing is runnable

    def _v(self, t):
        return t.v + (self.env.now - self.running[t] if t in self.running else 0.0)

    def mean_v(self) -> float:
        vs = [self._v(t) for t in self.running] + [r.thread.v for r in self.ready]
        if vs:
            self.last_mean = sum(vs) / len(vs)
        return self.last_mean

    def idle(self) -> bool:
        return len(self.running) < self.pcpus and not self.ready

    def request(self, thread, woken=False, slept=None):
        req = self.env.event()
        req.thread = thread
        if woken:
            bound = 2 * self.quantum_ns
            thread.v = self.mean_v() - max(-bound, min(bound, thread.lag))
            thread.deadline = thread.v + self.quantum_ns
        elif thread.v >= thread.deadline:
            thread.deadline = thread.v + self.quantum_ns
        if self.idle():
            self.running[thread] = self.env.now
            req.succeed()
        else:
            self.ready.append(req)
            self.kick_spinner()
        return req

    def release(self, req):
        t = req.thread
        since = self.running.pop(t, None)
        if since is None:       # still waiting: leaves the queue
            if req in self.ready:
                self.ready.remove(req)
            return
        t.v += self.env.now - since
        t.lag = self.mean_v() - t.v if (self.running or self.ready) else 0.0
        while len(self.running) < self.pcpus and self.ready:
            mean = self.mean_v()
            eligible = [r for r in self.ready if r.thread.v <= mean] or self.ready
            nxt = min(eligible, key=lambda r: r.thread.deadline)
            self.ready.remove(nxt)
            self.running[nxt.thread] = self.env.now
            nxt.succeed()

    def should_yield(self, thread) -> bool:
        return bool(self.ready) and thread in self.running and self._v(thread) >= thread.deadline


class Thread:
    """A schedulable thread: holds at most one CPU request at a time."""

    def __init__(self, cpus: Cpus, role: str, idle_cpu_ns=0.0, idle_wake_ns=0.0):
        self.cpus = cpus
        self.env = cpus.env
        self.role = role
        self.req = None
        self.slice_start = 0.0
        self.idle_cpu_ns = idle_cpu_ns      # extra CPU when woken onto an idle CPU
        self.idle_wake_ns = idle_wake_ns    # idle-exit delay before it runs
        self.started = False                # has it asked for a CPU before
        self.v = 0.0                        # EevdfCpus: virtual runtime, deadline, lag
        self.deadline = 0.0
        self.lag = 0.0

    def acquire(self, woken=False, placed=None):
        """Take a CPU. `woken`: back from a sleep (the idle-wake cost where a CPU was
        idle, and an EEVDF queue's wake-up placement); `placed`: the placement alone
        (default: as `woken`), for a thread that was off the queue without sleeping."""
        was_idle = self.cpus.idle()
        # a new thread queues as a woken one does (EEVDF places both at the queue's
        # average): without that, threads still waiting for their first CPU would let
        # every woken thread pass them for a whole slice, longer than some windows
        self.req = self.cpus.request(self, woken if placed is None else placed,
                                     slept=woken or not self.started)
        self.started = True
        yield self.req
        self.slice_start = self.env.now
        if woken and was_idle and (self.idle_cpu_ns or self.idle_wake_ns):
            yield self.env.timeout(self.idle_wake_ns + self.idle_cpu_ns)
            self.cpus.stats.add_busy("cpu:" + self.role, self.idle_cpu_ns)

    def release(self):
        if self.req is not None:
            self.cpus.res.release(self.req)
            self.req = None

    def run(self, cost_ns):
        """Burn `cost_ns` of CPU, taking a CPU first if the thread has none and
        going to the back of the queue first if its slice is used up."""
        if self.req is None:
            yield from self.acquire()
        elif self.cpus.should_yield(self):
            self.release()
            yield from self.acquire()
        if cost_ns > 0:
            yield self.env.timeout(cost_ns)
            self.cpus.stats.add_busy("cpu:" + self.role, cost_ns)

    def sleep_on(self, event):
        """Block (giving the CPU up) until `event`; then wait for a CPU."""
        self.release()
        value = yield event
        yield from self.acquire(woken=True)
        return value

    def sleep_for(self, ns):
        self.release()
        yield self.env.timeout(ns)
        yield from self.acquire(woken=True)


class SpinLock:
    """A lock whose waiters spin on their CPU (kernel spinlock, the emulation's
    TTAS lock, an rwlock's write side). `handoff_ns` is added to a hold when the
    previous holder was another thread: the lock word and the data it guards move
    between CPUs (a cited parameter, zero at the calibration host's distance)."""

    def __init__(self, env, name, stats, handoff_ns=0.0):
        self.env = env
        self.name = name
        self.res = simpy.Resource(env, capacity=1)
        self.stats = stats
        self.handoff_ns = handoff_ns
        self.last = None

    def hold(self, thread: Thread, hold_ns):
        t0 = self.env.now
        with self.res.request() as req:
            yield req
            self.stats.add_wait(self.name, self.env.now - t0)
            extra = self.handoff_ns if (self.last is not None and self.last is not thread) else 0.0
            self.last = thread
            total = hold_ns + extra
            if total > 0:
                yield self.env.timeout(total)
            self.stats.add_busy("lock:" + self.name, total)
            thread.cpus.stats.add_busy("cpu:" + thread.role, self.env.now - t0)


class SharedLock:
    """The read side of an rwlock or rwsem with no writer (mmap_lock here, a TDP
    MMU's mmu_lock): readers never wait for each other, but each acquisition is an
    atomic on one cache line, which serialises for `line_ns` per acquisition."""

    def __init__(self, env, name, stats, line_ns=0.0):
        self.line = SpinLock(env, name, stats, 0.0)
        self.line_ns = line_ns

    def hold(self, thread: Thread, hold_ns):
        if self.line_ns > 0:
            yield from self.line.hold(thread, self.line_ns)
        if hold_ns > 0:
            yield from thread.run(hold_ns)


def _mmu_lock(env, p, stats, mmu):
    if mmu == "shadow":
        return SpinLock(env, "mmu_lock", stats, p.handoff_ns)
    return SharedLock(env, "mmu_lock", stats, p.handoff_ns)


class Uffd:
    """One userfaultfd: its fault wait queue (a spinlock and the list of waiting
    vCPUs), the readable messages, and its reader threads."""

    def __init__(self, env, idx, p, stats, cpus):
        self.env = env
        self.p = p
        self.lock = SpinLock(env, "uffd_wq", stats, p.handoff_ns)
        self.waiters = 0                    # vCPUs asleep on the fault wait queue
        self.messages = simpy.Store(env)    # readable UFFD_EVENT_PAGEFAULT messages
        self.stats = stats
        for r in range(p.readers):
            t = Thread(cpus, "reader", p.reader_idle_cpu_ns, p.reader_idle_wake_ns)
            env.process(self.reader(t))

    def reader(self, t: Thread):
        p = self.p
        yield from t.acquire()
        while True:
            if not self.messages.items:
                # poll/epoll/read blocks: the reader sleeps until a fault is queued
                done = yield from t.sleep_on(self.messages.get())
                yield from t.run(p.reader_wake_ns)
            else:
                done = yield self.messages.get()
            yield from t.run(p.reader_msg_ns)         # read, copy, UFFDIO_COPY
            if p.fetch_delay_ns > 0:
                yield from t.sleep_for(p.fetch_delay_ns)
            # the wake walks every waiter on the queue under its spinlock
            yield from self.lock.hold(t, p.wake_base_ns + p.wake_per_waiter_ns * self.waiters)
            self.waiters -= 1
            done.succeed()


def vcpu_uffd(env, t: Thread, uffd: Uffd, mmap_lock, mmu_lock, p, stats):
    yield from t.acquire()
    done_faults = 0
    while stats.more(done_faults):
        done_faults += 1
        start = env.now
        yield from t.run(p.vcpu_pre_ns)
        yield from mmap_lock.hold(t, 0.0)
        yield from uffd.lock.hold(t, p.enqueue_ns)     # handle_userfault queues itself
        uffd.waiters += 1
        done = env.event()
        uffd.messages.put(done)
        yield from t.sleep_on(done)
        yield from mmu_lock.hold(t, p.mmu_hold_ns)      # the retried fault installs the spte
        yield from t.run(p.vcpu_post_ns)
        _count(stats, env, start)
    t.release()                                         # a finished vCPU leaves its CPU


def vcpu_exits(env, t: Thread, mmap_lock, mmu_lock, p, stats):
    yield from t.acquire()
    done_faults = 0
    while stats.more(done_faults):
        done_faults += 1
        start = env.now
        yield from t.run(p.vcpu_pre_ns)                 # exit, address lookup
        if p.fetch_delay_ns > 0:
            yield from t.sleep_for(p.fetch_delay_ns)
        yield from mmap_lock.hold(t, 0.0)
        yield from mmu_lock.hold(t, p.mmu_hold_ns)
        yield from t.run(p.vcpu_post_ns)                # install, re-entry
        _count(stats, env, start)
    t.release()                                         # a finished vCPU leaves its CPU


class AsyncList:
    """The RFC's per-VM list of faulting gfns, its lock, the eventfd and the
    resolver threads."""

    def __init__(self, env, p, stats, cpus):
        self.env = env
        self.p = p
        self.lock = SpinLock(env, "async_list", stats, p.handoff_ns)
        self.items = simpy.Store(env)
        for r in range(p.readers):
            t = Thread(cpus, "resolver", p.reader_idle_cpu_ns, p.reader_idle_wake_ns)
            env.process(self.resolver(t))

    def resolver(self, t: Thread):
        p = self.p
        yield from t.acquire()
        while True:
            if not self.items.items:
                done = yield from t.sleep_on(self.items.get())  # read(eventfd)
                yield from t.run(p.reader_wake_ns)
            else:
                done = yield self.items.get()
            yield from self.lock.hold(t, p.list_hold_ns)   # pop
            yield from t.run(p.reader_msg_ns)              # install, clear the bit
            if p.fetch_delay_ns > 0:
                yield from t.sleep_for(p.fetch_delay_ns)
            done.succeed()


def vcpu_async(env, t: Thread, alist: AsyncList, mmap_lock, mmu_lock, p, stats):
    yield from t.acquire()
    cpus = t.cpus
    done_faults = 0
    while stats.more(done_faults):
        done_faults += 1
        start = env.now
        yield from t.run(p.vcpu_pre_ns)
        yield from mmap_lock.hold(t, 0.0)
        yield from alist.lock.hold(t, p.list_hold_ns)  # push
        done = env.event()
        alist.items.put(done)                           # + eventfd write
        # busy-wait on the gfn's bit: spin in place while no other thread wants a CPU
        # (the CPU is burnt either way); sched_yield to one that does. Run queues are
        # per CPU: a yield hands the CPU to the thread queued there, and the spinner,
        # its bit still set, then takes turns with it, which matters only once its bit
        # clears. So a spinner that yielded is parked off the queue until then (it then
        # needs a CPU, and a spinner on one yields it); it does not queue behind every
        # thread and make each spinner on a CPU yield in turn, which is the global queue's
        # artefact (every spinner yielding while any thread waited: 946k yields for
        # 2,000 faults of async at 256 vCPUs on 256 CPUs, 54 s to simulate).
        while not done.triggered:
            if cpus.res.queue:
                yield from t.run(p.yield_ns)
                t.release()
                yield done
                yield from t.acquire(placed=True)   # off the queue while parked
                break
            # spin in place until the bit clears or another thread wants a CPU
            t0 = env.now
            kick = env.event()
            cpus.spinners[kick] = None
            yield done | kick
            cpus.spinners.pop(kick, None)
            stats.add_busy("cpu:vcpu", env.now - t0)
        yield from mmu_lock.hold(t, p.mmu_hold_ns)
        yield from t.run(p.vcpu_post_ns)
        _count(stats, env, start)
    t.release()                                         # a finished vCPU leaves its CPU


def _count(stats, env, start):
    if stats.measuring:
        stats.faults += 1
        stats.latencies.append(env.now - start)



def vcpu_pressure(q, d):
    """The vCPU's extra CPU a fault at d doublings of threads per CPU: s*d + s2*d^2 within
    the calibrated range; past its end (`pressure_doublings_max`, where a square term is
    fitted) it goes on along the tangent there, not along a parabola fitted to what it
    never saw."""
    s, s2, top = q.vcpu_pressure_ns_per_doubling, q.vcpu_pressure_ns_per_doubling_sq, q.pressure_doublings_max
    if s2 == 0 or top <= 0 or d <= top:
        return s * d + s2 * d * d
    return s * top + s2 * top * top + (s + 2 * s2 * top) * (d - top)


def cell_threads(mech, vcpus, readers, uffds):
    """A cell's threads: its vCPUs and their readers or resolvers (`uffd-many`: `readers`
    on each of min(uffds, vCPUs) userfaultfds, uffds 0 meaning one a vCPU; `uffd`,
    `async`: `readers`; `exits`: none)."""
    if mech == "exits":
        return vcpus
    if mech == "uffd-many":
        return vcpus + readers * min(uffds or vcpus, vcpus)
    return vcpus + readers


def with_pressure(p, mech, vcpus, pcpus):
    """Costs at this cell's threads per CPU: the fitted per-doubling slopes
    applied to log2(threads / P), zero when every thread has a CPU."""
    threads = cell_threads(mech, vcpus, p.readers, p.uffds)
    doublings = math.log2(max(1.0, threads / pcpus))
    q = dataclasses.replace(p)
    # the rest of a CPU's time goes to other work only where threads queue for CPUs
    if 0 < q.cpu_share < 1 and threads > pcpus:
        for name in CPU_TIMES:
            setattr(q, name, getattr(q, name) / q.cpu_share)
    if doublings > 0:
        tot = q.vcpu_pre_ns + q.vcpu_post_ns
        add = vcpu_pressure(q, doublings)
        share = q.vcpu_pre_ns / tot if tot > 0 else 0.5
        q.vcpu_pre_ns = max(0.0, q.vcpu_pre_ns + add * share)
        q.vcpu_post_ns = max(0.0, q.vcpu_post_ns + add * (1 - share))
        q.reader_msg_ns = max(0.0, q.reader_msg_ns + q.reader_pressure_ns_per_doubling * doublings)
    return q


def build(env, mech, vcpus, pcpus, p, mmu, stats):
    """The cell's threads as SimPy processes; returns the vCPU processes."""
    p = with_pressure(p, mech, vcpus, pcpus)
    check_run_queue_order(p.run_queue_order)
    cpus = (EevdfCpus(env, pcpus, p.quantum_ns, stats) if p.run_queue_order == "eevdf"
            else Cpus(env, pcpus, p.quantum_ns, stats, order=p.run_queue_order))
    mmap_lock = SharedLock(env, "mmap_lock", stats, p.handoff_ns)
    mmu_lock = _mmu_lock(env, p, stats, mmu)
    threads = []
    if mech in ("uffd", "uffd-many"):
        n = 1 if mech == "uffd" else (p.uffds or vcpus)
        fds = [Uffd(env, i, p, stats, cpus) for i in range(min(n, vcpus))]
        for v in range(vcpus):
            t = Thread(cpus, "vcpu", p.vcpu_idle_cpu_ns, p.vcpu_idle_wake_ns)
            threads.append(env.process(vcpu_uffd(env, t, fds[v % len(fds)], mmap_lock, mmu_lock, p, stats)))
    elif mech == "exits":
        for v in range(vcpus):
            t = Thread(cpus, "vcpu")
            threads.append(env.process(vcpu_exits(env, t, mmap_lock, mmu_lock, p, stats)))
    elif mech == "async":
        alist = AsyncList(env, p, stats, cpus)
        for v in range(vcpus):
            t = Thread(cpus, "vcpu", p.vcpu_idle_cpu_ns, p.vcpu_idle_wake_ns)
            threads.append(env.process(vcpu_async(env, t, alist, mmap_lock, mmu_lock, p, stats)))
    else:
        raise ValueError(f"no model of mechanism {mech!r}")
    cpus.threads = cell_threads(mech, vcpus, p.readers, p.uffds)
    return threads


def simulate(mech, vcpus, pcpus, p, mmu="shadow", faults=4000, warmup_share=0.25,
             max_sim_ns=None):
    """Run one cell to a steady state: warm up until `warmup_share` of `faults`
    have completed, then measure until `faults` more complete. Returns Stats and
    the measured window in ns."""
    env = simpy.Environment()
    stats = Stats()
    build(env, mech, vcpus, pcpus, p, mmu, stats)
    warm = max(int(faults * warmup_share), vcpus)
    # warm-up: count completions with a cheap probe on the stats object
    stats.measuring = True
    while stats.faults < warm:
        env.step()
    stats.latencies.clear()
    stats.faults = 0
    stats.lock_wait.clear()
    stats.busy.clear()
    stats.window_start = env.now
    while stats.faults < faults:
        env.step()
        if max_sim_ns is not None and env.now - stats.window_start > max_sim_ns:
            break
    return stats, env.now - stats.window_start


def simulate_run(mech, vcpus, pcpus, p, mmu="shadow", faults_per_vcpu=1024):
    """A whole run as the harness makes one: every vCPU makes `faults_per_vcpu`
    faults from a common start; the paging rate is all faults over the time to
    the last vCPU's end (the records' pages_per_s), latency over every fault."""
    env = simpy.Environment()
    stats = Stats(per_vcpu_limit=faults_per_vcpu)
    stats.measuring = True
    procs = build(env, mech, vcpus, pcpus, p, mmu, stats)
    env.run(until=simpy.AllOf(env, procs))
    return stats, env.now
