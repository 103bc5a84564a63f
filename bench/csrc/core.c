/* faultbench core: a VM whose 64-bit CPL-3 vCPUs touch demand-paged memory,
 * the vCPU threads that run them, and the services mechanisms share
 * (fetch model, page install, locks, per-thread accounting).
 * Mechanism-specific code lives in mech_*.c.
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

#define FB_MECH_ENTRY(sym) &fb_mech_##sym,
static const struct fb_mech_ops *const mech_table[] = { FB_MECH_REGISTRY(FB_MECH_ENTRY) };
#define FB_MECH_COUNT_ONE(sym) + 1
enum { FB_MECHS = 0 FB_MECH_REGISTRY(FB_MECH_COUNT_ONE) };
_Static_assert(sizeof(mech_table) / sizeof(mech_table[0]) == FB_MECHS,
               "the mechanism table and the registry disagree");

int fb_mech_id(const char *name)
{
    for (int i = 0; i < FB_MECHS; i++)
        if (strcmp(mech_table[i]->name, name) == 0)
            return i;
    return -1;
}

int fb_mech_flags(uint32_t mech)
{
    return mech < FB_MECHS ? (int)mech_table[mech]->flags : -1;
}

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
    l->st.spin_ns += spin;          /* cycles during the run, converted at collection */
    if (spin > l->st.max_spin_ns)
        l->st.max_spin_ns = spin;
}

void fb_unlock(struct fb_spinlock *l)
{
    atomic_store_explicit(&l->locked, 0, memory_order_release);
}

static void fb_sigusr1(int sig)
{
    (void)sig;   /* only interrupts blocking calls (KVM_RUN, read) */
}

static void install_signal_handler(void)
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

/* the calling thread's on-CPU ns (CLOCK_THREAD_CPUTIME_ID: exact, where
 * schedstat's first field lags by up to a tick), run-queue wait ns and
 * timeslices (schedstat: wait is accounted at each switch-in, so it is current
 * while the thread runs), and se.nr_migrations (sched) */
static int read_sched(uint64_t *run_ns, uint64_t *wait_ns, uint64_t *slices, uint64_t *migrations)
{
    char buf[4096];
    int ok = 0;
    struct timespec ts;
    FILE *f = fopen("/proc/thread-self/schedstat", "r");
    if (f) {
        unsigned long long a, b, c;
        if (fscanf(f, "%llu %llu %llu", &a, &b, &c) == 3 &&
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0) {
            *run_ns = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
            *wait_ns = b; *slices = c;
            ok = 1;
        }
        fclose(f);
    }
    *migrations = UINT64_MAX;
    f = fopen("/proc/thread-self/sched", "r");
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
    /* baselines held in the fields; fb_thread_end turns them into deltas */
    ts->sched_ok = read_sched(&ts->sched_run_ns, &ts->sched_wait_ns, &ts->sched_timeslices,
                              &ts->migrations);
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
    }
    uint64_t r = 0, w = 0, sl = 0, m = UINT64_MAX;
    int ok = read_sched(&r, &w, &sl, &m);
    ts->sched_ok = ts->sched_ok && ok;
    ts->sched_run_ns = r - ts->sched_run_ns;
    ts->sched_wait_ns = w - ts->sched_wait_ns;
    ts->sched_timeslices = sl - ts->sched_timeslices;
    ts->migrations = (m == UINT64_MAX || ts->migrations == UINT64_MAX) ? UINT64_MAX : m - ts->migrations;
    fb_doing(ts, FB_DOING_EXITED, 0);
}

/* ---------- userfaultfd helpers ---------- */

int fb_uffd_open(struct fb_run *run, uint64_t features, int nonblock, char *err, int errlen)
{
    (void)run;
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | (nonblock ? O_NONBLOCK : 0));
    if (fd < 0) {
        fb_set_err(err, errlen, "userfaultfd(2): %s", strerror(errno));
        return -1;
    }
    struct uffdio_api api = { .api = UFFD_API, .features = features };
    if (ioctl(fd, UFFDIO_API, &api) < 0) {
        fb_set_err(err, errlen, "UFFDIO_API features 0x%llx: %s",
                   (unsigned long long)features, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int64_t fb_uffd_features(void)
{
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    struct uffdio_api api = { .api = UFFD_API, .features = 0 };
    int rc = ioctl(fd, UFFDIO_API, &api);
    int e = errno;
    close(fd);
    return rc < 0 ? -e : (int64_t)api.features;
}

/* CopyFromRemote through the network worker, one request per contiguous run
 * of pages that need content; the worker writes into the memfd directly */
static int ring_fetch(struct fb_run *run, uint64_t page, uint64_t n, const uint64_t *fetch)
{
    uint64_t i = 0;
    while (i < n) {
        if (!(fetch[i / 64] >> (i % 64) & 1)) {
            i++;
            continue;
        }
        uint64_t j = i;
        while (j < n && (fetch[j / 64] >> (j % 64) & 1))
            j++;
        uint64_t off = (page + i) * FB_PAGE;
        int rc = fb_ring_copy(run->ring, off, off, (j - i) * FB_PAGE, (const volatile int *)&run->stop);
        if (rc == FB_RING_STOPPED)
            return -1;
        if (rc != FB_RING_OK) {
            fb_fail(run, "network worker %s (CopyFromRemote at offset 0x%llx)",
                    rc == FB_RING_DEAD ? "died or stopped" : rc == FB_RING_FULL ? "ring stayed full for 5 s"
                                                                                  : "refused the range",
                    (unsigned long long)off);
            return -1;
        }
        i = j;
    }
    return 0;
}

static void fetch_delay(struct fb_run *run)
{
    uint64_t ns = run->cfg.fetch_delay_ns;
    if (!ns)
        return;
    if (run->cfg.delay_mode == FB_DELAY_SLEEP) {
        struct timespec ts = { .tv_sec = ns / 1000000000ULL, .tv_nsec = ns % 1000000000ULL };
        while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR)
            ;
    } else {
        uint64_t end = fb_now_ns() + ns;
        while (fb_now_ns() < end)
            __builtin_ia32_pause();
    }
}

static long futex(atomic_int *word, int op, int val)
{
    return syscall(SYS_futex, word, op, val, NULL, NULL, 0);
}

/* wait at the start gate until fb_run_start (or a failure) opens it */
static void gate_wait(struct fb_run *run)
{
    while (!atomic_load(&run->gate_go))
        futex(&run->gate_go, FUTEX_WAIT_PRIVATE, 0);
}

/* precopy-stale: faults before the final dirty bitmap wait for it */
static int wait_for_bitmap(struct fb_run *run)
{
    while (!atomic_load_explicit(&run->bitmap_arrived, memory_order_acquire)) {
        if (atomic_load_explicit(&run->stop, memory_order_relaxed))
            return -1;
        struct timespec ts = { 0, 50000 };
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* 1: this thread fetches page p; 0: its content is in place (precopy, clean);
 * -1: another thread is fetching it; -2: it is mapped already */
static int claim_fetch(struct fb_run *run, uint64_t p)
{
    if (__atomic_load_n(&run->page_installs[p], __ATOMIC_ACQUIRE))
        return -2;
    uint8_t expect = FB_PAGE_STALE;
    if (__atomic_compare_exchange_n(&run->pstate[p], &expect, FB_PAGE_FETCHING, 0,
                                    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return 1;
    return expect == FB_PAGE_CLEAN || expect == FB_PAGE_FETCHED ? 0 : -1;
}

/* a second fault on a page being fetched: wait until the fetcher mapped it
 * (or, precopy, until its content is in place); 1 mapped, 0 clean, -1 stop */
static int wait_fetched(struct fb_run *run, uint64_t p)
{
    for (;;) {
        if (__atomic_load_n(&run->page_installs[p], __ATOMIC_ACQUIRE))
            return 1;
        uint8_t st = __atomic_load_n(&run->pstate[p], __ATOMIC_ACQUIRE);
        if (run->precopy && (st == FB_PAGE_CLEAN || st == FB_PAGE_FETCHED))
            return 0;
        if (atomic_load_explicit(&run->stop, memory_order_relaxed))
            return -1;
        sched_yield();
    }
}

/* the page is there already (overlap, a re-queued async fault): nothing to fetch */
static int already_mapped(struct fb_run *run, struct fb_thread_stats *ts, uint64_t off, int dontwake,
                          struct fb_fault *f)
{
    f->fetch_start = f->fetched = f->done = fb_tsc();   /* nothing fetched or installed */
    ts->eexist++;
    if (!dontwake) {
        /* the fault may have raced the mapping: make sure its waiter is awake */
        struct uffdio_range r = { .start = (uint64_t)(uintptr_t)(run->demand + off), .len = FB_PAGE };
        ioctl(run->uffd[off / run->uffd_span], UFFDIO_WAKE, &r);
        ts->wakes++;
    }
    return 0;
}

void fb_fill_page(struct fb_run *run, uint8_t *dst, uint64_t p)
{
    uint64_t *w = (uint64_t *)dst;
    uint64_t gpa = run->demand_gpa + p * FB_PAGE, seed = fb_page_seed(run, p);
    w[0] = gpa;
    w[1] = seed;
    if (run->cfg.verify == FB_VERIFY_FULL)
        for (uint64_t o = 16; o < FB_PAGE; o += 8)
            w[o / 8] = gpa ^ seed ^ (o * FB_PATTERN_MUL);
    if (run->cfg.corrupt_tail_every && p % run->cfg.corrupt_tail_every == 0)
        w[FB_PAGE / 8 - 1] ^= 0xff;   /* a torn copy: the page's last bytes are wrong */
}

static void put_content(struct fb_run *run, uint8_t *src, uint64_t p)
{
    /* CONTINUE: the content goes in through the non-faulting mapping */
    fb_fill_page(run, run->cfg.resolve == FB_RESOLVE_CONTINUE ? run->alias + p * FB_PAGE : src, p);
}

/* one UFFDIO_COPY/CONTINUE over [first, first+n) pages; returns bytes mapped
 * (>= 0) or -errno. A partial result means the next page was in the way. */
static int64_t install_range(struct fb_run *run, int uffd, uint64_t first, uint64_t n,
                             uint8_t *src, int dontwake)
{
    uint64_t hva = (uint64_t)(uintptr_t)(run->demand + first * FB_PAGE);
    if (run->cfg.resolve == FB_RESOLVE_CONTINUE) {
        struct uffdio_continue c = {
            .range = { .start = hva, .len = n * FB_PAGE },
            .mode = dontwake ? UFFDIO_CONTINUE_MODE_DONTWAKE : 0,
        };
        if (ioctl(uffd, UFFDIO_CONTINUE, &c) == 0)
            return (int64_t)(n * FB_PAGE);
        return c.mapped > 0 ? c.mapped : -errno;
    }
    struct uffdio_copy c = {
        .dst = hva, .src = (uint64_t)(uintptr_t)src, .len = n * FB_PAGE,
        .mode = dontwake ? UFFDIO_COPY_MODE_DONTWAKE : 0,
    };
    if (ioctl(uffd, UFFDIO_COPY, &c) == 0)
        return (int64_t)(n * FB_PAGE);
    return c.copy > 0 ? c.copy : -errno;
}

/* the watchdog's test knob: this resolver stops answering until the run stops */
static int stall_here(struct fb_run *run, struct fb_thread_stats *ts, uint64_t gpa)
{
    fb_doing(ts, FB_DOING_STALLED, gpa & ~(FB_PAGE - 1));
    while (!atomic_load(&run->stop)) {
        struct timespec ts1 = { 0, 1000000 };
        nanosleep(&ts1, NULL);
    }
    return -1;
}

int fb_resolve_page(struct fb_run *run, struct fb_thread_stats *ts, uint8_t *src_page,
                    uint64_t gpa, int dontwake, struct fb_fault *f)
{
    f->claimed = fb_tsc();
    f->resolver_tid = ts->tid;
    fb_note_cpu(ts);
    fb_doing_at(ts, FB_DOING_WAIT, gpa & ~(FB_PAGE - 1), f->claimed);
    if (run->stall_after && atomic_fetch_add(&run->resolutions, 1) + 1 == run->stall_after)
        return stall_here(run, ts, gpa);
    if (gpa < run->demand_gpa || gpa - run->demand_gpa >= run->demand_size) {
        fb_fail(run, "fault at gpa 0x%llx outside guest memory", (unsigned long long)gpa);
        return -1;
    }
    uint64_t off = (gpa - run->demand_gpa) & ~(FB_PAGE - 1);
    uint64_t page = off / FB_PAGE;
    int ui = (int)(off / run->uffd_span);
    int uffd = run->uffd[ui];
    /* fault-around: a window of contiguous pages, inside this userfaultfd's range */
    uint64_t region_end = (uint64_t)(ui + 1) * run->uffd_span;
    if (region_end > run->demand_size)
        region_end = run->demand_size;
    uint64_t n = run->cfg.fault_around ? run->cfg.fault_around : 1;
    if (n > (region_end - off) / FB_PAGE)
        n = (region_end - off) / FB_PAGE;

    if (run->precopy && wait_for_bitmap(run))
        return -1;

    uint64_t fetch[FB_MAX_FAULT_AROUND / 64] = { 0 };
    int any = 0;
    for (uint64_t i = 0; i < n; i++) {
        int c = claim_fetch(run, page + i);
        if (c < 0 && i > 0) {
            n = i;   /* the window ends where another thread's work begins */
            break;
        }
        if (c == -2)
            return already_mapped(run, ts, off, dontwake, f);
        if (c == -1) {
            int w = wait_fetched(run, page);
            if (w < 0)
                return -1;
            if (w == 1)
                return already_mapped(run, ts, off, dontwake, f);
            c = 0;   /* precopy: content in place, map it */
        }
        if (c) {
            fetch[i / 64] |= 1ULL << (i % 64);
            any = 1;
        }
    }
    uint64_t m0 = fb_now_ns();
    uint64_t t0 = fb_tsc();
    f->fetch_start = t0;
    fb_doing_at(ts, run->ring ? FB_DOING_FETCH_WORKER : FB_DOING_FETCH, gpa & ~(FB_PAGE - 1), t0);
    ts->part_ns[FB_PART_WAIT] += t0 - f->claimed;
    ts->part_count[FB_PART_WAIT]++;
    if (any) {
        if (run->ring) {
            if (ring_fetch(run, page, n, fetch) < 0)
                return -1;
        } else {
            fetch_delay(run);
            for (uint64_t i = 0; i < n; i++)
                if (fetch[i / 64] >> (i % 64) & 1)
                    put_content(run, src_page + i * FB_PAGE, page + i);
        }
        for (uint64_t i = 0; i < n; i++)
            if (fetch[i / 64] >> (i % 64) & 1) {
                atomic_fetch_add(&run->pages_copied, 1);
                if (run->precopy)   /* content in place: another fault on it may map it */
                    __atomic_store_n(&run->pstate[page + i], FB_PAGE_FETCHED, __ATOMIC_RELEASE);
            }
    }
    uint64_t t1 = fb_tsc();
    uint64_t m1 = fb_now_ns();
    f->fetched = t1 + (uint64_t)(run->cfg.misstamp_fetched_ns * (int64_t)run->tsc_khz / 1000000);
    fb_doing_at(ts, FB_DOING_INSTALL, gpa & ~(FB_PAGE - 1), t1);
    ts->part_ns[FB_PART_FETCH] += t1 - t0;
    ts->part_count[FB_PART_FETCH]++;

    int installed_first = 0;
    uint64_t i = 0;
    while (i < n) {
        int64_t got = install_range(run, uffd, page + i, n - i, src_page + i * FB_PAGE, dontwake);
        if (got > 0) {
            uint64_t k = (uint64_t)got / FB_PAGE;
            for (uint64_t j = i; j < i + k; j++)
                __atomic_fetch_add(&run->page_installs[page + j], 1, __ATOMIC_RELAXED);
            if (i == 0)
                installed_first = 1;
            ts->pages_installed += k;
            atomic_fetch_add(&run->pages_installed, k);
            i += k;
            continue;
        }
        if (got == -EEXIST) {
            ts->eexist++;
            if (i == 0 && !dontwake) {
                /* another resolver won; make sure no waiter stays asleep */
                struct uffdio_range r = { .start = (uint64_t)(uintptr_t)(run->demand + off), .len = FB_PAGE };
                ioctl(uffd, UFFDIO_WAKE, &r);
                ts->wakes++;
            }
            i++;   /* skip the page in the way */
            continue;
        }
        if (got == -EAGAIN || got == -EINTR || got == 0)
            continue;   /* mapping changed under us; retry */
        fb_fail(run, "%s at gpa 0x%llx: %s",
                run->cfg.resolve == FB_RESOLVE_CONTINUE ? "UFFDIO_CONTINUE" : "UFFDIO_COPY",
                (unsigned long long)(gpa + i * FB_PAGE), strerror((int)-got));
        return -1;
    }
    uint64_t m2 = fb_now_ns();
    uint64_t t2 = fb_tsc();
    f->done = t2;
    ts->mono_fetch_ns += m1 - m0;
    ts->mono_install_ns += m2 - m1;
    ts->mono_count++;
    f->mono_fetch_ns = m1 - m0;
    f->mono_install_ns = m2 - m1;
    f->mono_timed = 1;
    ts->part_ns[FB_PART_INSTALL] += t2 - t1;
    ts->part_count[FB_PART_INSTALL]++;
    return installed_first;
}

/* precopy-stale: the final dirty bitmap arrives after bitmap_delay_ns; every
 * page it declares clean is mapped with UFFDIO_CONTINUE, no copy */
static void *bitmap_thread(void *arg)
{
    struct fb_run *run = arg;
    gate_wait(run);   /* the delay counts from the moment the vCPUs start */
    struct timespec ts = { .tv_sec = run->cfg.bitmap_delay_ns / 1000000000ULL,
                           .tv_nsec = run->cfg.bitmap_delay_ns % 1000000000ULL };
    while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR)
        if (atomic_load(&run->stop))
            return NULL;
    run->bitmap_arrived_ns = fb_now_ns();
    atomic_store_explicit(&run->bitmap_arrived, 1, memory_order_release);
    for (uint64_t p = 0; p < run->npages && !atomic_load(&run->stop); ) {
        if (__atomic_load_n(&run->pstate[p], __ATOMIC_ACQUIRE) != FB_PAGE_CLEAN || run->page_installs[p]) {
            p++;
            continue;
        }
        uint64_t q = p;   /* a run of clean pages, inside one userfaultfd's range */
        uint64_t end = ((p * FB_PAGE) / run->uffd_span + 1) * run->uffd_span / FB_PAGE;
        while (q < run->npages && q < end && !run->page_installs[q] &&
               __atomic_load_n(&run->pstate[q], __ATOMIC_ACQUIRE) == FB_PAGE_CLEAN)
            q++;
        int uffd = run->uffd[(p * FB_PAGE) / run->uffd_span];
        int64_t got = install_range(run, uffd, p, q - p, NULL, 0);
        if (got > 0) {
            for (uint64_t j = p; j < p + (uint64_t)got / FB_PAGE; j++)
                __atomic_fetch_add(&run->page_installs[j], 1, __ATOMIC_RELAXED);
            atomic_fetch_add(&run->pages_installed, (uint64_t)got / FB_PAGE);
            atomic_fetch_add(&run->pages_declared_clean, (uint64_t)got / FB_PAGE);
            p += (uint64_t)got / FB_PAGE;
        } else if (got == -EEXIST || got == -EAGAIN || got == 0) {
            p += got == -EEXIST;   /* a vCPU's fault mapped it first */
        } else {
            fb_fail(run, "bitmap: UFFDIO_CONTINUE at page %llu: %s", (unsigned long long)p,
                    strerror((int)-got));
            return NULL;
        }
    }
    return NULL;
}

/* the seed a page's content carries; corrupt_every lets tests prove the guest's check works */
uint64_t fb_page_seed(struct fb_run *run, uint64_t page)
{
    if (run->cfg.corrupt_every && page % run->cfg.corrupt_every == 0)
        return run->cfg.seed ^ 0x5a5a;
    return run->cfg.seed;
}

struct fb_fault *fb_note_fault(struct fb_run *run, int vcpu, uint64_t page, uint64_t notify,
                               struct fb_fault *scratch)
{
    struct fb_vcpu *v = &run->vcpus[vcpu];
    uint64_t k = atomic_fetch_add(&v->fault_log_n, 1);
    struct fb_fault *f = k < v->fault_log_cap ? &v->fault_log[k] : scratch;
    f->page = page;
    f->notify = notify;
    return f;
}

struct fb_fault *fb_note_fault_tid(struct fb_run *run, int32_t tid, uint64_t page, uint64_t notify,
                                   struct fb_fault *scratch)
{
    int64_t key = (int64_t)tid;
    uint32_t lo = 0, hi = run->cfg.vcpus;
    while (lo < hi) {   /* tid_map is sorted by tid (upper 32 bits) */
        uint32_t mid = (lo + hi) / 2;
        int64_t t = run->tid_map[mid] >> 32;
        if (t == key)
            return fb_note_fault(run, (int)(run->tid_map[mid] & 0xffffffff), page, notify, scratch);
        if (t < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    atomic_fetch_add(&run->unattributed_faults, 1);
    scratch->page = page;
    scratch->notify = notify;
    return scratch;
}

/* ---------- KVM probes ---------- */

int fb_kvm_check_extension(int cap)
{
    int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int r = ioctl(fd, KVM_CHECK_EXTENSION, cap);
    int e = errno;
    close(fd);
    return r < 0 ? -e : r;
}

/* Try a memslot with the given flag on a scratch VM: how a proposed uAPI such as
 * KVM_MEM_USERFAULT or KVM_MEM_EXIT_ON_MISSING is detected. */
int fb_kvm_memslot_flag_supported(uint32_t flag)
{
    int kfd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kfd < 0)
        return -errno;
    int vm = ioctl(kfd, KVM_CREATE_VM, 0);
    if (vm < 0) {
        int e = errno;
        close(kfd);
        return -e;
    }
    void *mem = mmap(NULL, 2 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct kvm_userspace_memory_region r = {
        .slot = 0, .flags = flag, .guest_phys_addr = 0, .memory_size = 2 << 20,
        .userspace_addr = (uint64_t)(uintptr_t)mem,
    };
    int rc = ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r);
    munmap(mem, 2 << 20);
    close(vm);
    close(kfd);
    return rc == 0 ? 1 : 0;
}

/* ---------- VM construction ---------- */

static int setup_cpuid(struct fb_run *run, int vcpu_fd, char *err, int errlen)
{
    static struct kvm_cpuid2 *cached;
    static int nent;
    if (!cached) {
        for (nent = 64; nent <= 4096; nent *= 2) {
            struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + nent * sizeof(struct kvm_cpuid_entry2));
            c->nent = nent;
            if (ioctl(run->kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0) {
                cached = c;
                break;
            }
            free(c);
            if (errno != E2BIG) {
                fb_set_err(err, errlen, "KVM_GET_SUPPORTED_CPUID: %s", strerror(errno));
                return -1;
            }
        }
        if (!cached) {
            fb_set_err(err, errlen, "KVM_GET_SUPPORTED_CPUID: too many entries");
            return -1;
        }
    }
    if (ioctl(vcpu_fd, KVM_SET_CPUID2, cached) < 0) {
        fb_set_err(err, errlen, "KVM_SET_CPUID2: %s", strerror(errno));
        return -1;
    }
    return 0;
}

static void build_page_tables(struct fb_run *run)
{
    uint64_t top = run->demand_gpa + run->demand_size;
    uint64_t n_pd = (top + (1ULL << 30) - 1) >> 30;
    uint64_t *pml4 = (uint64_t *)(run->sys_mem + FB_GPA_PML4);
    uint64_t *pdpt = (uint64_t *)(run->sys_mem + FB_GPA_PDPT);
    /* P|RW|US everywhere: the guest runs at CPL 3, the only mode that runs natively here */
    pml4[0] = FB_GPA_PDPT | 0x7;
    for (uint64_t i = 0; i < n_pd; i++) {
        uint64_t *pd = (uint64_t *)(run->sys_mem + FB_GPA_PD + i * FB_PAGE);
        pdpt[i] = (FB_GPA_PD + i * FB_PAGE) | 0x7;
        for (int j = 0; j < 512; j++)
            pd[j] = ((i << 30) + ((uint64_t)j << 21)) | 0x87;   /* 2 MiB page */
    }
}

static void seg(struct kvm_segment *s, uint16_t sel, uint8_t type, int code)
{
    memset(s, 0, sizeof(*s));
    s->base = 0;
    s->limit = 0xffffffff;
    s->selector = sel;
    s->type = type;
    s->present = 1;
    s->dpl = 3;
    s->s = 1;
    s->g = 1;
    s->l = code ? 1 : 0;
    s->db = code ? 0 : 1;
}

static int setup_vcpu(struct fb_run *run, struct fb_vcpu *v, char *err, int errlen)
{
    struct kvm_sregs sr;
    struct kvm_regs regs;
    uint64_t tpv = run->cfg.touches_per_vcpu;

    v->fd = ioctl(run->vm_fd, KVM_CREATE_VCPU, v->id);
    if (v->fd < 0) {
        fb_set_err(err, errlen, "KVM_CREATE_VCPU %d: %s", v->id, strerror(errno));
        return -1;
    }
    v->kr = mmap(NULL, run->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
    if (v->kr == MAP_FAILED) {
        v->kr = NULL;
        fb_set_err(err, errlen, "mmap kvm_run: %s", strerror(errno));
        return -1;
    }
    if (setup_cpuid(run, v->fd, err, errlen))
        return -1;
    if (ioctl(v->fd, KVM_GET_SREGS, &sr) < 0) {
        fb_set_err(err, errlen, "KVM_GET_SREGS: %s", strerror(errno));
        return -1;
    }
    seg(&sr.cs, 0x1b, 11, 1);
    seg(&sr.ds, 0x23, 3, 0);
    sr.es = sr.fs = sr.gs = sr.ss = sr.ds;
    memset(&sr.tr, 0, sizeof(sr.tr));
    sr.tr.selector = 0x28;
    sr.tr.type = 11;
    sr.tr.present = 1;
    sr.tr.limit = 0x67;
    sr.cr0 = 0x80050033;   /* PG|AM|WP|NE|ET|MP|PE */
    sr.cr3 = FB_GPA_PML4;
    sr.cr4 = 0x20 | 0x200 | 0x400;   /* PAE|OSFXSR|OSXMMEXCPT; TSD clear: rdtsc allowed at CPL 3 */
    sr.efer = 0x500;   /* LME|LMA */
    if (ioctl(v->fd, KVM_SET_SREGS, &sr) < 0) {
        fb_set_err(err, errlen, "KVM_SET_SREGS: %s", strerror(errno));
        return -1;
    }
    memset(&regs, 0, sizeof(regs));
    regs.rip = FB_GPA_CODE;
    regs.rflags = 0x3002;   /* IOPL 3: `out` at CPL 3 exits to us */
    regs.rsi = v->tsc_table;
    regs.rcx = tpv;
    regs.rdi = v->tsc_times;
    int zero_fill = (run->ops->flags & FB_MF_ZERO_FILL) != 0;   /* the kernel gives zeroed pages */
    regs.r8 = zero_fill ? 0 : run->cfg.seed;
    regs.r9 = zero_fill ? 0 : ~0ULL;
    regs.r10 = zero_fill ? 0 : FB_PATTERN_MUL;   /* --verify full: the pattern's step */
    regs.r12 = 0;
    regs.r13 = v->id;
    if (ioctl(v->fd, KVM_SET_REGS, &regs) < 0) {
        fb_set_err(err, errlen, "KVM_SET_REGS: %s", strerror(errno));
        return -1;
    }
    if (!run->tsc_khz) {
        long khz = ioctl(v->fd, KVM_GET_TSC_KHZ, 0);
        if (khz > 0)   /* the error knob lets tests prove the clock checks can fail */
            run->tsc_khz = (uint64_t)((double)khz * (1.0 + run->cfg.tsc_khz_error_ppm / 1e6));
    }
    return 0;
}

static int set_slot(struct fb_run *run, int slot, uint64_t gpa, void *hva, uint64_t size,
                    char *err, int errlen)
{
    struct kvm_userspace_memory_region r = {
        .slot = slot, .flags = 0, .guest_phys_addr = gpa, .memory_size = size,
        .userspace_addr = (uint64_t)(uintptr_t)hva,
    };
    if (ioctl(run->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0) {
        fb_set_err(err, errlen, "KVM_SET_USER_MEMORY_REGION slot %d: %s", slot, strerror(errno));
        return -1;
    }
    return 0;
}

static uint64_t round_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

struct fb_run *fb_run_create(const struct fb_config *cfg, char *err, int errlen)
{
    if (cfg->mech >= FB_MECHS) {
        fb_set_err(err, errlen, "unknown mechanism %u", cfg->mech);
        return NULL;
    }
    if (!cfg->vcpus || cfg->mem_per_vcpu == 0 || cfg->mem_per_vcpu % (2ULL << 20)) {
        fb_set_err(err, errlen, "vcpus must be >= 1 and mem_per_vcpu a multiple of 2 MiB");
        return NULL;
    }
    if (cfg->guest_code_len == 0 || cfg->guest_code_len > FB_GPA_DATA - FB_GPA_CODE) {
        fb_set_err(err, errlen, "guest code size %llu out of range",
                   (unsigned long long)cfg->guest_code_len);
        return NULL;
    }
    struct fb_run *run = calloc(1, sizeof(*run));
    run->cfg = *cfg;
    run->ops = mech_table[cfg->mech];
    run->kvm_fd = run->vm_fd = run->memfd = run->done_efd = run->stop_efd = -1;
    for (int i = 0; i < FB_MAX_UFFDS; i++)
        run->uffd[i] = -1;
    pthread_mutex_init(&run->err_lock, NULL);

    install_signal_handler();

    uint64_t tpv = cfg->touches_per_vcpu;
    uint64_t src_bytes = (cfg->fault_around ? cfg->fault_around : 1) * FB_PAGE;   /* COPY source */
    run->demand_size = cfg->demand_bytes ? cfg->demand_bytes : (uint64_t)cfg->vcpus * cfg->mem_per_vcpu;
    if (run->demand_size % (2ULL << 20)) {
        fb_set_err(err, errlen, "guest memory size must be a multiple of 2 MiB");
        goto fail;
    }
    run->npages = run->demand_size / FB_PAGE;
    run->sys_size = round_up(FB_GPA_DATA + (uint64_t)cfg->vcpus * tpv * 24, 2ULL << 20);
    run->demand_gpa = round_up(run->sys_size, 1ULL << 30);
    if ((run->demand_gpa + run->demand_size) >> 30 > (FB_GPA_CODE - FB_GPA_PD) / FB_PAGE) {
        fb_set_err(err, errlen, "guest memory too large for the page-table area");
        goto fail;
    }

    run->done_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    run->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    run->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (run->kvm_fd < 0) {
        fb_set_err(err, errlen, "/dev/kvm: %s", strerror(errno));
        goto fail;
    }
    run->vm_fd = ioctl(run->kvm_fd, KVM_CREATE_VM, 0);
    if (run->vm_fd < 0) {
        fb_set_err(err, errlen, "KVM_CREATE_VM: %s", strerror(errno));
        goto fail;
    }
    run->run_size = ioctl(run->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);

    run->sys_mem = mmap(NULL, run->sys_size, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (run->sys_mem == MAP_FAILED) {
        run->sys_mem = NULL;
        fb_set_err(err, errlen, "mmap system slot (%llu bytes): %s",
                   (unsigned long long)run->sys_size, strerror(errno));
        goto fail;
    }
    if (cfg->resolve == FB_RESOLVE_CONTINUE) {
        run->memfd = memfd_create("faultbench-guest", MFD_CLOEXEC);
        if (run->memfd < 0 || ftruncate(run->memfd, run->demand_size) < 0) {
            fb_set_err(err, errlen, "memfd for guest memory: %s", strerror(errno));
            goto fail;
        }
        run->demand = mmap(NULL, run->demand_size, PROT_READ | PROT_WRITE, MAP_SHARED, run->memfd, 0);
        run->alias = mmap(NULL, run->demand_size, PROT_READ | PROT_WRITE, MAP_SHARED, run->memfd, 0);
        if (run->demand == MAP_FAILED || run->alias == MAP_FAILED) {
            if (run->demand == MAP_FAILED) run->demand = NULL;
            if (run->alias == MAP_FAILED) run->alias = NULL;
            fb_set_err(err, errlen, "mmap shared guest memory: %s", strerror(errno));
            goto fail;
        }
        /* MINOR faults only happen for pages already in the page cache: put them
         * there through the non-faulting mapping, as pre-copy would */
        if (madvise(run->alias, run->demand_size, MADV_POPULATE_WRITE) < 0) {
            fb_set_err(err, errlen, "populating shared guest memory: %s", strerror(errno));
            goto fail;
        }
    } else {
        run->demand = mmap(NULL, run->demand_size, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (run->demand == MAP_FAILED) {
            run->demand = NULL;
            fb_set_err(err, errlen, "mmap guest memory (%llu bytes): %s",
                       (unsigned long long)run->demand_size, strerror(errno));
            goto fail;
        }
        madvise(run->demand, run->demand_size, MADV_NOHUGEPAGE);   /* 4 KiB faults */
    }
    if (cfg->fault_around > FB_MAX_FAULT_AROUND) {
        fb_set_err(err, errlen, "fault-around %u above %d pages", cfg->fault_around, FB_MAX_FAULT_AROUND);
        goto fail;
    }
    /* every page starts out needing its content; precopy-stale marks clean ones */
    run->pstate = malloc(run->npages);
    if (!run->pstate) {
        fb_set_err(err, errlen, "out of memory for page states");
        goto fail;
    }
    memset(run->pstate, FB_PAGE_STALE, run->npages);
    if (cfg->stale_map && (run->ops->flags & FB_MF_DELIVERS)) {
        if (cfg->resolve != FB_RESOLVE_CONTINUE) {
            fb_set_err(err, errlen, "precopy-stale needs shared memory (resolve continue)");
            goto fail;
        }
        run->precopy = 1;
        for (uint64_t p = 0; p < run->npages; p++)
            run->pstate[p] = cfg->stale_map[p] ? FB_PAGE_STALE : FB_PAGE_CLEAN;
        /* pre-copy left every page in the page cache: clean ones with the right
         * content, stale ones with an older version that must be fetched again */
        for (uint64_t p = 0; p < run->npages; p++) {
            uint64_t *w = (uint64_t *)(run->alias + p * FB_PAGE);
            fb_fill_page(run, run->alias + p * FB_PAGE, p);
            if (run->pstate[p] == FB_PAGE_STALE)
                w[1] = ~w[1];   /* an older version: its seed word is wrong */
        }
    }
    run->page_installs = calloc(run->npages, sizeof(uint32_t));
    if (!run->page_installs) {
        fb_set_err(err, errlen, "out of memory for per-page accounting");
        goto fail;
    }

    /* guest code, touch tables, timing buffers */
    memcpy(run->sys_mem + FB_GPA_CODE, cfg->guest_code, cfg->guest_code_len);
    build_page_tables(run);
    run->vcpus = calloc(cfg->vcpus, sizeof(struct fb_vcpu));
    run->tid_map = calloc(cfg->vcpus, sizeof(int64_t));
    if (!run->vcpus || !run->tid_map) {
        fb_set_err(err, errlen, "out of memory for %u vCPUs", cfg->vcpus);
        goto fail;
    }
    for (uint32_t i = 0; i < cfg->vcpus; i++)
        run->vcpus[i].fd = -1;   /* before any failure: destroy closes what is >= 0 */
    for (uint32_t i = 0; i < cfg->vcpus; i++) {
        struct fb_vcpu *v = &run->vcpus[i];
        v->run = run;
        v->id = i;
        /* a vCPU faults at most once per page it touches first; a few spare
         * records for a fault reported twice */
        uint64_t firsts = 0;
        for (uint64_t t = 0; t < tpv; t++)
            firsts += (cfg->touches[i * tpv + t] & FB_TOUCH_FIRST) != 0;
        v->fault_log_cap = firsts + 16;
        v->fault_log = calloc(v->fault_log_cap, sizeof(struct fb_fault));
        v->src_page = aligned_alloc(FB_PAGE, src_bytes);
        if (!v->fault_log || !v->src_page) {
            fb_set_err(err, errlen, "out of memory for vCPU %u", i);
            goto fail;
        }
        memset(v->src_page, 0, src_bytes);
        v->tsc_table = FB_GPA_DATA + (uint64_t)i * tpv * 8;
        v->tsc_times = FB_GPA_DATA + (uint64_t)cfg->vcpus * tpv * 8 + (uint64_t)i * tpv * 16;
        uint64_t *tab = (uint64_t *)(run->sys_mem + v->tsc_table);
        for (uint64_t t = 0; t < tpv; t++) {
            uint64_t e = cfg->touches[i * tpv + t];
            uint64_t off = e & ~(FB_PAGE - 1);
            if (off >= run->demand_size) {
                fb_set_err(err, errlen, "touch table entry %llu of vCPU %u outside guest memory",
                           (unsigned long long)t, i);
                goto fail;
            }
            tab[t] = (run->demand_gpa + off) | (e & (FB_PAGE - 1));   /* tables hold offsets */
        }
    }

    if (set_slot(run, 0, 0, run->sys_mem, run->sys_size, err, errlen) ||
        set_slot(run, 1, run->demand_gpa, run->demand, run->demand_size, err, errlen))
        goto fail;

    for (uint32_t i = 0; i < cfg->vcpus; i++)
        if (setup_vcpu(run, &run->vcpus[i], err, errlen))
            goto fail;
    if (!run->tsc_khz) {
        fb_set_err(err, errlen, "KVM_GET_TSC_KHZ gave no TSC frequency");
        goto fail;
    }

    /* thread stats: one slot per vCPU, then the mechanism's readers */
    run->nreaders = 0;
    if (run->ops->flags & FB_MF_READERS_PER_UFFD)
        run->nreaders = cfg->uffds * cfg->readers;
    else if (run->ops->flags & FB_MF_RESOLVERS)
        run->nreaders = cfg->readers;
    run->nstats = cfg->vcpus + run->nreaders;
    run->stats = calloc(run->nstats, sizeof(struct fb_thread_stats));
    if (!run->stats) {
        fb_set_err(err, errlen, "out of memory for thread statistics");
        goto fail;
    }
    for (uint32_t i = 0; i < cfg->vcpus; i++) {
        run->vcpus[i].ts = &run->stats[i];
        run->stats[i].role = FB_ROLE_VCPU;
        run->stats[i].index = i;
        run->stats[i].pinned_cpu = cfg->vcpu_cpu ? cfg->vcpu_cpu[i] : FB_CPU_FREE;
        run->stats[i].uffd_index = -1;
    }
    if (run->nreaders) {
        run->readers = calloc(run->nreaders, sizeof(struct fb_reader));
        if (!run->readers) {
            fb_set_err(err, errlen, "out of memory for %d readers", run->nreaders);
            goto fail;
        }
        for (int i = 0; i < run->nreaders; i++) {
            struct fb_reader *r = &run->readers[i];
            r->run = run;
            r->index = i;
            r->epfd = -1;
            r->ts = &run->stats[cfg->vcpus + i];
            r->ts->role = run->ops->flags & FB_MF_RESOLVERS ? FB_ROLE_RESOLVER : FB_ROLE_READER;
            r->ts->index = i;
            r->ts->pinned_cpu = (uint32_t)i < cfg->nreader_cpu ? cfg->reader_cpu[i] : FB_CPU_FREE;
            r->uffd_index = run->ops->flags & FB_MF_READERS_PER_UFFD ? i / cfg->readers : 0;
            r->ts->uffd_index = r->uffd_index;
            r->src_page = aligned_alloc(FB_PAGE, src_bytes);
            if (!r->src_page) {
                fb_set_err(err, errlen, "out of memory for reader %d", i);
                goto fail;
            }
            memset(r->src_page, 0, src_bytes);
        }
    }

    if (run->ops->setup && run->ops->setup(run, err, errlen))
        goto fail;
    return run;
fail:
    fb_run_destroy(run);
    return NULL;
}

/* ---------- vCPU threads ---------- */

static void *vcpu_thread(void *arg)
{
    struct fb_vcpu *v = arg;
    struct fb_run *run = v->run;
    struct kvm_run *kr = v->kr;
    struct fb_thread_stats *ts = v->ts;

    fb_thread_begin(ts);
    atomic_fetch_add(&run->gate_ready, 1);
    futex(&run->gate_ready, FUTEX_WAKE_PRIVATE, 1);
    gate_wait(run);
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
                ts->part_ns[FB_PART_KVM_RUN] += t1 - t0;
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
                ts->part_ns[FB_PART_LOOKUP] += fb_tsc() - t1;
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
            v->res.touches = (kr->s.regs.regs.rsi - v->tsc_table) / 8;
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
    futex(&run->gate_go, FUTEX_WAKE_PRIVATE, INT_MAX);
}

int fb_run_start(struct fb_run *run, char *err, int errlen)
{
    uint32_t n = run->cfg.vcpus;
    if (run->ops->start && run->ops->start(run, err, errlen))
        return -1;
    if (run->precopy) {
        if (fb_spawn(run, &run->bitmap_thread, bitmap_thread, run, err, errlen))
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
        futex(&run->gate_ready, FUTEX_WAIT_PRIVATE, r);
    for (uint32_t i = 0; i < n; i++)
        run->tid_map[i] = ((int64_t)run->vcpus[i].ts->tid << 32) | i;
    qsort(run->tid_map, n, sizeof(int64_t), tid_cmp);
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

/* ---------- results ---------- */

int fb_run_nthreads(struct fb_run *run)
{
    return run->nstats;
}

/* what the guest left of vCPU v's walk: its table entries and rdtsc pairs */
struct touch_view {
    const uint64_t *tab, *times;
    const int64_t *fault_idx;
    const struct fb_fault *log;
    uint64_t n;
};

static int fault_cmp(const void *a, const void *b)
{
    const struct fb_fault *x = a, *y = b;
    if (x->page != y->page)
        return x->page < y->page ? -1 : 1;
    return x->notify < y->notify ? -1 : x->notify > y->notify;
}

/* Which touches really faulted: a first touch of a page the vCPU logged a
 * fault for (a page installed by fault-around, by another vCPU or by the final
 * dirty bitmap is touched without one). A fault reported twice keeps its first
 * record. Computed once, after the run. */
static void compute_faulted(struct fb_run *run)
{
    if (run->faulted_ready)
        return;
    for (uint32_t i = 0; i < run->cfg.vcpus; i++) {
        struct fb_vcpu *v = &run->vcpus[i];
        uint64_t n = atomic_load(&v->fault_log_n);
        if (n > v->fault_log_cap)
            n = v->fault_log_cap;
        qsort(v->fault_log, n, sizeof(struct fb_fault), fault_cmp);
        const uint64_t *tab = (const uint64_t *)(run->sys_mem + v->tsc_table);
        v->fault_idx = malloc((v->res.touches ? v->res.touches : 1) * sizeof(int64_t));
        if (!v->fault_idx)
            continue;
        for (uint64_t t = 0; t < v->res.touches; t++) {
            v->fault_idx[t] = -1;
            if (!(tab[t] & FB_TOUCH_FIRST))
                continue;
            uint64_t page = ((tab[t] & ~(FB_PAGE - 1)) - run->demand_gpa) / FB_PAGE;
            uint64_t lo = 0, hi = n;   /* first record of this page */
            while (lo < hi) {
                uint64_t mid = (lo + hi) / 2;
                if (v->fault_log[mid].page < page)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            if (lo < n && v->fault_log[lo].page == page)
                v->fault_idx[t] = (int64_t)lo;
        }
    }
    run->faulted_ready = 1;
}

static struct touch_view touches_of(struct fb_run *run, struct fb_vcpu *v)
{
    compute_faulted(run);
    return (struct touch_view){ (const uint64_t *)(run->sys_mem + v->tsc_table),
                                (const uint64_t *)(run->sys_mem + v->tsc_times),
                                v->fault_idx, v->fault_log, v->fault_idx ? v->res.touches : 0 };
}

static int tv_first(const struct touch_view *tv, uint64_t t)
{
    return (tv->tab[t] & FB_TOUCH_FIRST) != 0;
}

static int tv_faulted(const struct touch_view *tv, uint64_t t)
{
    return tv->fault_idx[t] >= 0;
}

int fb_run_vcpu_results(struct fb_run *run, struct fb_vcpu_result *out)
{
    for (uint32_t i = 0; i < run->cfg.vcpus; i++) {
        out[i] = run->vcpus[i].res;
        /* blocked time: sum of the faults' latencies as the guest timed them */
        struct touch_view tv = touches_of(run, &run->vcpus[i]);
        uint64_t logged = atomic_load(&run->vcpus[i].fault_log_n);
        out[i].faults_logged = logged;
        out[i].faults_unlogged = logged > run->vcpus[i].fault_log_cap ? logged - run->vcpus[i].fault_log_cap : 0;
        uint64_t sum = 0;
        if (run->cfg.record_latency)
            for (uint64_t t = 0; t < tv.n; t++)
                if (tv_faulted(&tv, t))
                    sum += tv.times[2 * t + 1] - tv.times[2 * t];
        out[i].blocked_ns = fb_tsc_to_ns(run, sum);
        out[i].guest_loop_cycles = run->cfg.record_latency && tv.n
                                 ? tv.times[2 * (tv.n - 1) + 1] - tv.times[0] : 0;
        out[i].guest_first_tsc = run->cfg.record_latency && tv.n ? tv.times[0] : 0;
    }
    return run->cfg.vcpus;
}

int fb_run_thread_stats(struct fb_run *run, struct fb_thread_stats *out)
{
    for (int i = 0; i < run->nstats; i++) {
        out[i] = run->stats[i];
        for (int p = 0; p < FB_PARTS; p++)
            out[i].part_ns[p] = fb_tsc_to_ns(run, out[i].part_ns[p]);
    }
    return run->nstats;
}

int fb_run_lock_stats(struct fb_run *run, struct fb_lock_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (run->ops->lock_stats)
        run->ops->lock_stats(run, out);
    out->spin_ns = fb_tsc_to_ns(run, out->spin_ns);
    out->max_spin_ns = fb_tsc_to_ns(run, out->max_spin_ns);
    return 1;
}

int fb_run_thread_tids(struct fb_run *run, int32_t *out, int max)
{
    int n = 0;
    for (int i = 0; i < run->nstats && n < max; i++)
        if (run->stats[i].tid)
            out[n++] = run->stats[i].tid;
    return n;
}

/* ---------- latency histograms ---------- */

int fb_hist_index(uint64_t v)
{
    const int sub = 1 << FB_HIST_SUB_BITS;
    if (v < (uint64_t)sub)
        return (int)v;
    int e = 63 - __builtin_clzll(v);   /* >= FB_HIST_SUB_BITS */
    int idx = (e - FB_HIST_SUB_BITS + 1) * sub + (int)((v >> (e - FB_HIST_SUB_BITS)) & (sub - 1));
    return idx < FB_HIST_BUCKETS ? idx : FB_HIST_BUCKETS - 1;
}

uint64_t fb_hist_lower(int idx)
{
    const int sub = 1 << FB_HIST_SUB_BITS;
    if (idx < sub)
        return (uint64_t)idx;
    int e = idx / sub - 1 + FB_HIST_SUB_BITS;
    uint64_t m = (uint64_t)(sub + idx % sub);
    return m << (e - FB_HIST_SUB_BITS);
}

uint64_t fb_hist_upper(int idx)
{
    return fb_hist_lower(idx + 1);   /* exclusive */
}

int fb_run_latency_hist(struct fb_run *run, int vcpu, int which,
                        uint64_t *loglin, uint64_t *log2_us)
{
    if (vcpu < 0 || (uint32_t)vcpu >= run->cfg.vcpus || !run->cfg.record_latency)
        return -1;
    struct touch_view tv = touches_of(run, &run->vcpus[vcpu]);
    int n = 0;
    for (uint64_t t = 0; t < tv.n; t++) {
        int pick = which == FB_TOUCH_FAULTED ? tv_faulted(&tv, t)
                 : which == FB_TOUCH_FIRST ? tv_first(&tv, t) : !tv_first(&tv, t);
        if (!pick)
            continue;
        uint64_t ns = fb_tsc_to_ns(run, tv.times[2 * t + 1] - tv.times[2 * t]);
        loglin[fb_hist_index(ns)]++;
        uint64_t us = ns / 1000;
        int b = us ? 63 - __builtin_clzll(us) : 0;   /* QEMU: bucket N = [2^N, 2^(N+1)) us */
        log2_us[b < FB_LOG2_US_BUCKETS ? b : FB_LOG2_US_BUCKETS - 1]++;
        n++;
    }
    return n;
}

/* ---------- breakdown and blocktime ---------- */

static uint64_t fault_count(struct fb_run *run)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < run->cfg.vcpus; i++) {
        struct touch_view tv = touches_of(run, &run->vcpus[i]);
        for (uint64_t t = 0; t < tv.n; t++)
            n += tv_faulted(&tv, t);
    }
    return n;
}

uint64_t fb_run_fault_rows(struct fb_run *run, struct fb_fault_row *out, uint64_t max)
{
    uint64_t n = 0;
    if (!run->cfg.record_latency)
        return 0;
    for (uint32_t i = 0; i < run->cfg.vcpus && n < max; i++) {
        struct touch_view tv = touches_of(run, &run->vcpus[i]);
        for (uint64_t t = 0; t < tv.n && n < max; t++) {
            if (!tv_faulted(&tv, t))
                continue;
            const struct fb_fault *f = &tv.log[tv.fault_idx[t]];
            struct fb_fault_row *r = &out[n++];
            r->vcpu = (int32_t)i;
            r->vcpu_tid = run->vcpus[i].ts->tid;
            r->resolver_tid = f->resolver_tid;
            r->complete = f->notify && f->claimed && f->fetch_start && f->fetched && f->done;
            uint64_t st[FB_STAMPS] = { tv.times[2 * t], f->notify, f->enqueued, f->popped,
                                       f->claimed, f->fetch_start, f->fetched, f->done,
                                       f->resumed, tv.times[2 * t + 1], 0 };
            memcpy(r->stamp, st, sizeof(st));
            r->mono_fetch_ns = f->mono_timed ? f->mono_fetch_ns : 0;
            r->mono_install_ns = f->mono_timed ? f->mono_install_ns : 0;
        }
    }
    return n;
}

struct fb_event { uint64_t tsc; int64_t delta; };

static int event_cmp(const void *a, const void *b)
{
    const struct fb_event *x = a, *y = b;
    if (x->tsc != y->tsc)
        return x->tsc < y->tsc ? -1 : 1;
    return (int)(x->delta - y->delta);   /* ends before starts at the same instant */
}

static uint64_t blocktime_all(struct fb_run *run)
{
    if (!run->cfg.record_latency)
        return 0;
    uint64_t n = 0;
    for (uint32_t i = 0; i < run->cfg.vcpus; i++)
        n += 2 * run->vcpus[i].res.touches;
    struct fb_event *ev = malloc((n ? n : 1) * sizeof(*ev));
    if (!ev)
        return 0;
    uint64_t m = 0;
    for (uint32_t i = 0; i < run->cfg.vcpus; i++) {
        struct touch_view tv = touches_of(run, &run->vcpus[i]);
        for (uint64_t t = 0; t < tv.n; t++) {
            if (!tv_faulted(&tv, t))
                continue;
            ev[m++] = (struct fb_event){ tv.times[2 * t], +1 };
            ev[m++] = (struct fb_event){ tv.times[2 * t + 1], -1 };
        }
    }
    qsort(ev, m, sizeof(*ev), event_cmp);
    int64_t active = 0;
    uint64_t all = 0, since = 0;
    for (uint64_t k = 0; k < m; k++) {
        if (active == (int64_t)run->cfg.vcpus)
            all += ev[k].tsc - since;
        active += ev[k].delta;
        since = ev[k].tsc;
    }
    free(ev);
    return fb_tsc_to_ns(run, all);
}

int fb_run_page_installs(struct fb_run *run, uint32_t *out, uint64_t npages)
{
    if (npages != run->npages)
        return -1;
    memcpy(out, run->page_installs, npages * sizeof(uint32_t));
    return 0;
}

uint64_t fb_run_npages(struct fb_run *run)
{
    return run->npages;
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


int fb_run_totals(struct fb_run *run, struct fb_run_totals *out)
{
    memset(out, 0, sizeof(*out));
    out->tsc_khz = run->tsc_khz;
    out->pages_installed = atomic_load(&run->pages_installed);
    out->pages_copied = atomic_load(&run->pages_copied);
    out->pages_declared_clean = atomic_load(&run->pages_declared_clean);
    out->faults_unattributed = atomic_load(&run->unattributed_faults);
    out->bitmap_arrived_ns = run->bitmap_arrived_ns;
    out->blocktime_all_ns = blocktime_all(run);
    out->fault_rows = fault_count(run);
    out->exit_path = (uint64_t)run->exit_path;
    return 0;
}

/* ---------- watchdog (issue 10) ---------- */

/* touches vCPU v's guest finished, from its timing buffer: the guest writes
 * [2t] before touch t and [2t+1] after it, in order, into zeroed memory */
static uint64_t touches_done(struct fb_run *run, struct fb_vcpu *v, uint64_t *touch_gpa)
{
    const volatile uint64_t *times = (const volatile uint64_t *)(run->sys_mem + v->tsc_times);
    const volatile uint64_t *tab = (const volatile uint64_t *)(run->sys_mem + v->tsc_table);
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
