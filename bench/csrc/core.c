/* faultbench core: the services mechanisms share (clocks, errors, locks, thread
 * spawning and per-thread accounting), the vCPU threads and a run's life
 * (start, wait, stop, destroy), the worker attachment and the watchdog's live view.
 * VM set-up is in vm.c, fault resolution in resolve.c, results in collect.c,
 * userfaultfd helpers in uffd_common.c, mechanisms in mech_*.c.
 */
#include "fb_core.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <linux/futex.h>
#include <limits.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* ---------- small services ---------- */

uint64_t fb_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

uint64_t fb_tsc(void)
{
    return __builtin_ia32_rdtsc();
}

/* the tightest of 8 (rdtsc, CLOCK_MONOTONIC, rdtsc) reads: a preemption or an
 * interrupt between them only widens that try */
static void clock_pair(uint64_t *tsc, uint64_t *mono, uint64_t *width)
{
    *width = UINT64_MAX;
    for (int i = 0; i < 8; i++) {
        uint64_t a = fb_tsc(), m = fb_now_ns(), b = fb_tsc();
        if (b - a < *width) {
            *width = b - a;
            *tsc = a + (b - a) / 2;
            *mono = m;
        }
    }
}

uint64_t fb_tsc_to_ns(struct fb_run *run, uint64_t cycles)
{
    if (!run->tsc_khz)
        return 0;
    return (uint64_t)((unsigned __int128)cycles * 1000000ULL / run->tsc_khz);
}

void fb_set_err(char *err, int errlen, const char *fmt, ...)
{
    va_list ap;
    if (!err || errlen <= 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* first failure wins; it stops the run and wakes fb_run_wait */
void fb_fail(struct fb_run *run, const char *fmt, ...)
{
    va_list ap;
    uint64_t one = 1;
    pthread_mutex_lock(&run->err_lock);
    if (!atomic_load(&run->failed)) {
        va_start(ap, fmt);
        vsnprintf(run->err, sizeof(run->err), fmt, ap);
        va_end(ap);
        atomic_store(&run->failed, 1);
    }
    pthread_mutex_unlock(&run->err_lock);
    atomic_store(&run->stop, 1);
    if (write(run->done_efd, &one, sizeof(one)) < 0) { /* counter saturated: already signalled */ }
    if (write(run->stop_efd, &one, sizeof(one)) < 0) { }
}

void fb_lock(struct fb_spinlock *l)
{
    int expected = 0;
    if (atomic_compare_exchange_strong_explicit(&l->locked, &expected, 1,
                                                memory_order_acquire, memory_order_relaxed)) {
        l->st.acquisitions++;   /* counters are only written with the lock held */
        return;
    }
    uint64_t t0 = fb_tsc();
    for (;;) {
        while (atomic_load_explicit(&l->locked, memory_order_relaxed))
            sched_yield();   /* 2 pCPUs, hundreds of threads: let the holder run */
        expected = 0;
        if (atomic_compare_exchange_weak_explicit(&l->locked, &expected, 1,
                                                  memory_order_acquire, memory_order_relaxed))
            break;
    }
    uint64_t spin = fb_tsc() - t0;
    l->st.acquisitions++;
    l->st.contended++;
    l->st.spin_cycles += spin;
    if (spin > l->st.max_spin_cycles)
        l->st.max_spin_cycles = spin;
}

void fb_unlock(struct fb_spinlock *l)
{
    atomic_store_explicit(&l->locked, 0, memory_order_release);
}

static void fb_sigusr1(int sig)
{
    (void)sig;   /* only interrupts blocking calls (KVM_RUN, read) */
}

void fb_install_signal_handler(void)
{
    static int installed;
    if (installed)
        return;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = fb_sigusr1;   /* no SA_RESTART: blocking calls return EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    installed = 1;
}

/* Threads block every signal but SIGUSR1, so that Ctrl-C reaches Python's
 * main thread and our stop path stays the only way in. */
int fb_spawn(struct fb_run *run, pthread_t *t, void *(*fn)(void *), void *arg,
             char *err, int errlen)
{
    sigset_t all, old;
    if (run->cfg.fail_spawn_at && ++run->spawned == run->cfg.fail_spawn_at) {
        fb_set_err(err, errlen, "pthread_create: injected failure (thread %u)", run->spawned);
        return -1;
    }
    pthread_attr_t attr;
    sigfillset(&all);
    sigdelset(&all, SIGUSR1);
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(t, &attr, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rc) {
        fb_set_err(err, errlen, "pthread_create: %s", strerror(rc));
        return -1;
    }
    return 0;
}

static int parse_schedstat(int fd, unsigned long long *a, unsigned long long *b,
                           unsigned long long *c)
{
    char buf[128];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    return sscanf(buf, "%llu %llu %llu", a, b, c) == 3;
}

/* A thread preempted between reading its schedstat and reading the clocks would
 * count one run-queue wait (milliseconds with 64 vCPUs on 2 CPUs) on one side of
 * the window's end and not the other. schedstat is read on both sides of the clock
 * reads; a changed run delay or timeslice count means a switch fell between them,
 * and the reads are made again. */
#define SCHED_READ_TRIES 16

/* the calling thread's on-CPU ns (CLOCK_THREAD_CPUTIME_ID: exact, where
 * schedstat's first field lags by up to a tick), run-queue wait ns and
 * timeslices (schedstat: wait is accounted at each switch-in, so it is current
 * while the thread runs), and se.nr_migrations (sched) */
static int read_sched(uint64_t *run_ns, uint64_t *wait_ns, uint64_t *slices, uint64_t *migrations,
                      uint64_t *mono_ns)
{
    char buf[4096];
    int ok = 0;
    struct timespec ts;
    int fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        for (int i = 0; i < SCHED_READ_TRIES && !ok; i++) {
            unsigned long long a, b, c, a2, b2, c2;
            uint64_t mono;
            /* mono_ns beside the CPU clock: the window both figures cover, on the
             * clock of the in-kernel tracer's stamps */
            if (!parse_schedstat(fd, &a, &b, &c))
                break;
            mono = fb_now_ns();
            if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0 ||
                !parse_schedstat(fd, &a2, &b2, &c2))
                break;
            if (b2 != b || c2 != c)
                continue;
            *mono_ns = mono;
            *run_ns = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
            *wait_ns = b; *slices = c;
            ok = 1;
        }
        close(fd);
    }
    *migrations = UINT64_MAX;
    FILE *f = fopen("/proc/thread-self/sched", "r");
    if (f) {
        while (fgets(buf, sizeof(buf), f)) {
            unsigned long long m;
            if (sscanf(buf, "se.nr_migrations : %llu", &m) == 1) {
                *migrations = m;
                break;
            }
        }
        fclose(f);
    }
    return ok;
}

void fb_thread_mark(struct fb_thread_stats *ts)
{
    struct rusage ru;
    /* baseline, made a delta at the end: the start gate's own sleep is not counted */
    ts->sleeps_in_window = getrusage(RUSAGE_THREAD, &ru) == 0 ? (uint64_t)ru.ru_nvcsw : 0;
    /* baselines held in the fields; fb_thread_end turns them into deltas */
    ts->sched_ok = read_sched(&ts->sched_run_ns, &ts->sched_wait_ns, &ts->sched_timeslices,
                              &ts->migrations, &ts->mono_mark_ns);
    ts->cpus_seen = 0;
    fb_note_cpu(ts);
}

void fb_thread_begin(struct fb_thread_stats *ts)
{
    ts->tid = (int32_t)syscall(SYS_gettid);
    prctl(PR_SET_TIMERSLACK, 1UL);   /* sleeping fetch delays stay close to asked */
    if (ts->pinned_cpu >= CPU_SETSIZE)
        ts->pinned_cpu = -2;   /* refused, recorded: never silently free */
    else if (ts->pinned_cpu != FB_CPU_FREE) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(ts->pinned_cpu, &set);
        /* a refused CPU would silently turn a placement into `free`: record it */
        if (sched_setaffinity(0, sizeof(set), &set) != 0)
            ts->pinned_cpu = -2;
    }
    /* A new thread's first stretch on a CPU is charged erratically here: a reader that
     * read its own CPU clock 56 us into its first stretch already had 1.56 ms of the
     * 1.60 ms that stretch ended with, while the tracer's log can only interpolate
     * inside it (uffd-many, 8 vCPUs: 2 of 12 runs withheld their split). A short sleep
     * ends that stretch, so every thread's window (the mark) begins in a later one; the
     * vCPUs mark again after the start gate anyway. A sleep whose timer fired before it
     * blocked does not switch out: at most 3 sleeps in all, until one did. */
    struct timespec nap = {0, 1000};
    struct rusage before, after;
    int have = getrusage(RUSAGE_THREAD, &before) == 0;
    for (int i = 0; i < 3; i++) {
        nanosleep(&nap, NULL);
        if (!have || getrusage(RUSAGE_THREAD, &after) != 0 || after.ru_nvcsw > before.ru_nvcsw)
            break;
    }
    fb_thread_mark(ts);
    fb_doing(ts, FB_DOING_START, 0);
}

void fb_thread_end(struct fb_thread_stats *ts)
{
    struct rusage ru;
    fb_note_cpu(ts);
    if (getrusage(RUSAGE_THREAD, &ru) == 0) {
        ts->utime_ns = ru.ru_utime.tv_sec * 1000000000ULL + ru.ru_utime.tv_usec * 1000ULL;
        ts->stime_ns = ru.ru_stime.tv_sec * 1000000000ULL + ru.ru_stime.tv_usec * 1000ULL;
        ts->nvcsw = ru.ru_nvcsw;
        ts->nivcsw = ru.ru_nivcsw;
        ts->sleeps_in_window = (uint64_t)ru.ru_nvcsw - ts->sleeps_in_window;
    }
    uint64_t r = 0, w = 0, sl = 0, m = UINT64_MAX;
    int ok = read_sched(&r, &w, &sl, &m, &ts->mono_end_ns);
    ts->sched_ok = ts->sched_ok && ok;
    ts->sched_run_ns = r - ts->sched_run_ns;
    ts->sched_wait_ns = w - ts->sched_wait_ns;
    ts->sched_timeslices = sl - ts->sched_timeslices;
    ts->migrations = (m == UINT64_MAX || ts->migrations == UINT64_MAX) ? UINT64_MAX : m - ts->migrations;
    fb_doing(ts, FB_DOING_EXITED, 0);
}

long fb_futex(atomic_int *word, int op, int val)
{
    return syscall(SYS_futex, word, op, val, NULL, NULL, 0);
}

/* wait at the start gate until fb_run_start (or a failure) opens it */
void fb_gate_wait(struct fb_run *run)
{
    while (!atomic_load(&run->gate_go))
        fb_futex(&run->gate_go, FUTEX_WAIT_PRIVATE, 0);
}

/* precopy-stale: faults before the final dirty bitmap wait for it */

/* ---------- vCPU threads ---------- */

static void *vcpu_thread(void *arg)
{
    struct fb_vcpu *v = arg;
    struct fb_run *run = v->run;
    struct kvm_run *kr = v->kr;
    struct fb_thread_stats *ts = v->ts;

    fb_thread_begin(ts);
    atomic_fetch_add(&run->gate_ready, 1);
    fb_futex(&run->gate_ready, FUTEX_WAKE_PRIVATE, 1);
    fb_gate_wait(run);
    fb_thread_mark(ts);
    v->res.start_ns = fb_now_ns();
    while (!atomic_load_explicit(&run->stop, memory_order_relaxed)) {
        kr->kvm_valid_regs = KVM_SYNC_X86_REGS;
        kr->exit_reason = KVM_EXIT_UNKNOWN;
        uint64_t t0 = fb_tsc();
        fb_doing_at(ts, FB_DOING_GUEST, 0, t0);
        int rc = ioctl(v->fd, KVM_RUN, 0);
        int e = errno;
        uint64_t t1 = fb_tsc();
        v->res.kvm_runs++;
        fb_note_cpu(ts);
        if (rc < 0) {
            if (e == EINTR || e == EAGAIN)
                continue;
            if (e == EFAULT && run->ops->on_fault) {
                uint64_t gpa;
                ts->part_cycles[FB_PART_KVM_RUN] += t1 - t0;
                ts->part_count[FB_PART_KVM_RUN]++;
                if (kr->exit_reason == FB_KVM_EXIT_MEMORY_FAULT) {
                    /* the kernel filled kvm_run.memory_fault {flags, gpa, size} */
                    gpa = *(uint64_t *)((uint8_t *)kr + FB_KVM_RUN_MEMFAULT_OFFSET + 8);
                    v->res.exitinfo_kvm++;
                    v->res.exits_by_path[FB_EXITINFO_KVM]++;
                    run->exit_path = FB_EXITINFO_KVM;
                } else {
                    /* the guest's touch instructions address the page through rbx */
                    gpa = kr->s.regs.regs.rbx & ~(FB_PAGE - 1);
                    v->res.exitinfo_guest_reg++;
                    v->res.exits_by_path[FB_EXITINFO_GUEST_REG]++;
                    if (run->exit_path != FB_EXITINFO_KVM)
                        run->exit_path = FB_EXITINFO_GUEST_REG;
                }
                fb_doing_at(ts, FB_DOING_FAULT_EXIT, gpa, t1);
                struct fb_fault scratch = { 0 }, *f = &scratch;
                if (gpa >= run->demand_gpa && gpa - run->demand_gpa < run->demand_size)
                    f = fb_note_fault(run, v->id, (gpa - run->demand_gpa) / FB_PAGE, t1, &scratch);
                ts->part_cycles[FB_PART_LOOKUP] += fb_tsc() - t1;
                ts->part_count[FB_PART_LOOKUP]++;
                v->res.fault_exits++;
                ts->faults++;
                if (run->ops->on_fault(run, v, gpa, f))
                    break;
                continue;
            }
            fb_fail(run, "vCPU %d: KVM_RUN: %s (rip 0x%llx)", v->id, strerror(e),
                    (unsigned long long)kr->s.regs.regs.rip);
            break;
        }
        if (kr->exit_reason == KVM_EXIT_IO && kr->io.port == FB_PORT_TSC) {
            v->res.tsc_host_before = t0;
            v->res.tsc_guest = kr->s.regs.regs.rax;
            v->res.tsc_host_after = t1;
            v->loop_start_ns = fb_now_ns();
            continue;
        }
        if (kr->exit_reason == KVM_EXIT_IO && kr->io.port == FB_PORT_DONE) {
            v->res.end_ns = fb_now_ns();
            if (v->loop_start_ns)
                v->res.host_loop_ns = v->res.end_ns - v->loop_start_ns;
            v->res.content_errors = kr->s.regs.regs.r12;
            v->res.touches = (kr->s.regs.regs.rsi - v->table_gpa) / 8;
            break;
        }
        if (kr->exit_reason == KVM_EXIT_SHUTDOWN) {
            fb_fail(run, "vCPU %d: guest shut down (triple fault) at rip 0x%llx rbx 0x%llx",
                    v->id, (unsigned long long)kr->s.regs.regs.rip,
                    (unsigned long long)kr->s.regs.regs.rbx);
            break;
        }
        fb_fail(run, "vCPU %d: unexpected exit reason %u at rip 0x%llx", v->id,
                kr->exit_reason, (unsigned long long)kr->s.regs.regs.rip);
        break;
    }
    fb_thread_end(ts);
    if (atomic_fetch_sub(&run->vcpus_running, 1) == 1) {
        uint64_t one = 1;
        if (write(run->done_efd, &one, sizeof(one)) < 0) { }
    }
    return NULL;
}

static int tid_cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a >> 32, y = *(const int64_t *)b >> 32;
    return x < y ? -1 : x > y;
}

/* release the vCPU threads that checked in; on failure they see stop and leave */
static void open_gate(struct fb_run *run)
{
    atomic_store(&run->gate_go, 1);
    fb_futex(&run->gate_go, FUTEX_WAKE_PRIVATE, INT_MAX);
}

int fb_run_start(struct fb_run *run, char *err, int errlen)
{
    uint32_t n = run->cfg.vcpus;
    if (run->ops->start && run->ops->start(run, err, errlen))
        return -1;
    if (run->precopy) {
        if (fb_spawn(run, &run->bitmap_thread, fb_bitmap_thread, run, err, errlen))
            return -1;
        run->bitmap_started = 1;
    }
    atomic_store(&run->vcpus_running, n);
    for (uint32_t i = 0; i < n; i++) {
        if (fb_spawn(run, &run->vcpus[i].thread, vcpu_thread, &run->vcpus[i], err, errlen)) {
            atomic_store(&run->stop, 1);
            atomic_fetch_sub(&run->vcpus_running, n - i);
            open_gate(run);   /* fb_run_stop joins the ones that started */
            return -1;
        }
        run->vcpus[i].started = 1;
    }
    /* every vCPU thread has its tid: build the map uffd readers attribute faults with */
    for (int r; (r = atomic_load(&run->gate_ready)) < (int)n; )
        fb_futex(&run->gate_ready, FUTEX_WAIT_PRIVATE, r);
    for (uint32_t i = 0; i < n; i++)
        run->tid_map[i] = ((int64_t)run->vcpus[i].ts->tid << 32) | i;
    qsort(run->tid_map, n, sizeof(int64_t), tid_cmp);
    clock_pair(&run->pair_tsc[0], &run->pair_mono[0], &run->pair_width[0]);
    open_gate(run);
    return 0;
}

int fb_run_wait(struct fb_run *run, int timeout_ms, char *err, int errlen)
{
    struct pollfd p = { .fd = run->done_efd, .events = POLLIN };
    if (atomic_load(&run->vcpus_running) > 0 && !atomic_load(&run->failed))
        poll(&p, 1, timeout_ms);
    if (atomic_load(&run->failed)) {
        pthread_mutex_lock(&run->err_lock);
        fb_set_err(err, errlen, "%s", run->err);
        pthread_mutex_unlock(&run->err_lock);
        return -1;
    }
    return atomic_load(&run->vcpus_running) == 0 ? 1 : 0;
}

struct joinee {
    pthread_t t;
    int *joined;
};

/* Join threads, interrupting their blocking calls (KVM_RUN, read, poll) with
 * SIGUSR1 until each has left; all of them at once, not one after another. */
static void join_all(struct joinee *j, int n)
{
    for (;;) {
        int left = 0;
        for (int i = 0; i < n; i++) {
            if (*j[i].joined)
                continue;
            if (pthread_tryjoin_np(j[i].t, NULL) == 0) {
                *j[i].joined = 1;
                continue;
            }
            pthread_kill(j[i].t, SIGUSR1);
            left++;
        }
        if (!left)
            return;
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
}

void fb_run_stop(struct fb_run *run)
{
    uint64_t one = 1;
    if (!run->pair_tsc[1])   /* after the last vCPU finished (or at the stop) */
        clock_pair(&run->pair_tsc[1], &run->pair_mono[1], &run->pair_width[1]);
    atomic_store(&run->stop, 1);
    if (write(run->stop_efd, &one, sizeof(one)) < 0) { }
    open_gate(run);   /* threads still at the gate see stop and leave */
    struct joinee *j = calloc(run->cfg.vcpus + (run->readers ? run->nreaders : 0) + 1, sizeof(*j));
    if (!j)
        abort();   /* cannot stop the run's threads safely without it */
    int n = 0;
    /* vCPUs first: a vCPU asleep in the kernel may still need a reader */
    for (uint32_t i = 0; i < run->cfg.vcpus; i++)
        if (run->vcpus[i].started)
            j[n++] = (struct joinee){ run->vcpus[i].thread, &run->vcpus[i].joined };
    join_all(j, n);
    if (run->ops->stop)
        run->ops->stop(run);
    n = 0;
    for (int i = 0; run->readers && i < run->nreaders; i++)
        if (run->readers[i].started)
            j[n++] = (struct joinee){ run->readers[i].thread, &run->readers[i].joined };
    if (run->bitmap_started)
        j[n++] = (struct joinee){ run->bitmap_thread, &run->bitmap_joined };
    join_all(j, n);
    free(j);
}

void fb_run_destroy(struct fb_run *run)
{
    if (!run)
        return;
    if (run->vcpus)
        fb_run_stop(run);
    if (run->ops && run->ops->destroy)
        run->ops->destroy(run);
    for (int i = 0; i < FB_MAX_UFFDS; i++)
        if (run->uffd[i] >= 0)
            close(run->uffd[i]);
    if (run->vcpus) {
        for (uint32_t i = 0; i < run->cfg.vcpus; i++) {
            if (run->vcpus[i].kr)
                munmap(run->vcpus[i].kr, run->run_size);
            if (run->vcpus[i].fd >= 0)
                close(run->vcpus[i].fd);
            free(run->vcpus[i].src_page);
            free(run->vcpus[i].fault_log);
            free(run->vcpus[i].fault_idx);
        }
        free(run->vcpus);
    }
    if (run->readers) {
        for (int i = 0; i < run->nreaders; i++) {
            if (run->readers[i].epfd >= 0)
                close(run->readers[i].epfd);
            free(run->readers[i].src_page);
        }
        free(run->readers);
    }
    if (run->vm_fd >= 0)
        close(run->vm_fd);
    if (run->kvm_fd >= 0)
        close(run->kvm_fd);
    if (run->demand)
        munmap(run->demand, run->demand_size);
    if (run->alias)
        munmap(run->alias, run->demand_size);
    if (run->memfd >= 0)
        close(run->memfd);
    if (run->sys_mem)
        munmap(run->sys_mem, run->sys_size);
    if (run->done_efd >= 0)
        close(run->done_efd);
    if (run->stop_efd >= 0)
        close(run->stop_efd);
    free(run->tid_map);
    free(run->pstate);
    if (run->ring)
        fb_ring_unmap(run->ring);

    free(run->page_installs);
    free(run->stats);
    pthread_mutex_destroy(&run->err_lock);
    free(run);
}

int fb_run_memfd(struct fb_run *run)
{
    return run->memfd;
}

int fb_run_attach_ring(struct fb_run *run, int ring_fd, int worker_pidfd, char *err, int errlen)
{
    if (run->cfg.resolve != FB_RESOLVE_CONTINUE || run->memfd < 0) {
        fb_set_err(err, errlen, "the network worker writes through shared memory: needs resolve continue");
        return -1;
    }
    run->ring = fb_ring_map(ring_fd);
    if (!run->ring) {
        fb_set_err(err, errlen, "mapping the worker's ring: %s", strerror(errno));
        return -1;
    }
    if (worker_pidfd >= 0)
        fb_ring_set_worker_pidfd(run->ring, worker_pidfd);
    return 0;
}

uint64_t fb_run_demand_gpa(struct fb_run *run)
{
    return run->demand_gpa;
}

/* ---------- watchdog (issue 10) ---------- */

/* touches vCPU v's guest finished, from its timing buffer: the guest writes
 * [2t] before touch t and [2t+1] after it, in order, into zeroed memory */
static uint64_t touches_done(struct fb_run *run, struct fb_vcpu *v, uint64_t *touch_gpa)
{
    const volatile uint64_t *times = (const volatile uint64_t *)(run->sys_mem + v->times_gpa);
    const volatile uint64_t *tab = (const volatile uint64_t *)(run->sys_mem + v->table_gpa);
    uint64_t lo = 0, hi = run->cfg.touches_per_vcpu;
    while (lo < hi) {   /* first touch without its end stamp */
        uint64_t mid = lo + (hi - lo) / 2;
        if (times[2 * mid + 1])
            lo = mid + 1;
        else
            hi = mid;
    }
    if (touch_gpa)
        *touch_gpa = lo < run->cfg.touches_per_vcpu && times[2 * lo] ? tab[lo] & ~(FB_PAGE - 1) : 0;
    return lo;
}

int fb_run_thread_states(struct fb_run *run, struct fb_thread_state *out, int max)
{
    uint64_t now = fb_tsc();
    int n = 0;
    for (int i = 0; i < run->nstats && n < max; i++, n++) {
        struct fb_thread_stats *ts = &run->stats[i];
        struct fb_thread_state *o = &out[n];
        uint64_t since = __atomic_load_n(&ts->doing_since_tsc, __ATOMIC_RELAXED);
        o->role = ts->role;
        o->index = ts->index;
        o->tid = __atomic_load_n(&ts->tid, __ATOMIC_RELAXED);
        o->doing = __atomic_load_n(&ts->doing, __ATOMIC_RELAXED);
        o->doing_for_ns = since && now > since ? fb_tsc_to_ns(run, now - since) : 0;
        o->gpa = __atomic_load_n(&ts->doing_gpa, __ATOMIC_RELAXED);
        o->touches_done = UINT64_MAX;
        o->touch_gpa = 0;
        o->touches_total = 0;
        if (ts->role == FB_ROLE_VCPU) {
            o->touches_total = run->cfg.touches_per_vcpu;
            if (run->cfg.record_latency)
                o->touches_done = touches_done(run, &run->vcpus[ts->index], &o->touch_gpa);
        }
    }
    return n;
}

uint64_t fb_run_progress(struct fb_run *run)
{
    uint64_t p = atomic_load(&run->pages_installed);
    for (uint32_t i = 0; run->cfg.record_latency && i < run->cfg.vcpus; i++)
        p += touches_done(run, &run->vcpus[i], NULL);
    return p + run->cfg.vcpus - (uint64_t)atomic_load(&run->vcpus_running);
}

int fb_run_vcpus_running(struct fb_run *run)
{
    return atomic_load(&run->vcpus_running);
}

void fb_run_inject_stall(struct fb_run *run, uint64_t nth_resolution)
{
    run->stall_after = nth_resolution;
}
