/* Fault resolution, shared by every mechanism: the fetch model (delay, or the
 * network worker's ring), claiming pages so each is fetched once, writing the
 * content, installing with UFFDIO_COPY/CONTINUE, the precopy bitmap thread,
 * and the per-vCPU fault log. */
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
    ts->part_cycles[FB_PART_WAIT] += t0 - f->claimed;
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
    ts->part_cycles[FB_PART_FETCH] += t1 - t0;
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
    ts->part_cycles[FB_PART_INSTALL] += t2 - t1;
    ts->part_count[FB_PART_INSTALL]++;
    return installed_first;
}

/* precopy-stale: the final dirty bitmap arrives after bitmap_delay_ns; every
 * page it declares clean is mapped with UFFDIO_CONTINUE, no copy */
void *fb_bitmap_thread(void *arg)
{
    struct fb_run *run = arg;
    fb_gate_wait(run);   /* the delay counts from the moment the vCPUs start */
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
