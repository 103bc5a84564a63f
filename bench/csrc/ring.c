/* Network worker and its command ring (the fetch side of post-copy).
 *
 * A separate process holds the source ("remote") guest memory and serves
 * CopyFromRemote(remote_off, local_off, length) requests posted by threads of
 * the benchmark process into a ring in a shared memfd, writing straight into
 * the target guest memory through its own MAP_SHARED mapping of the target
 * memfd. Both processes share the ring, so every futex is a shared one
 * (FUTEX_WAIT/FUTEX_WAKE without _PRIVATE) and every word is a C11 atomic.
 *
 * Slot life: FREE -> SUBMITTED (requester claims it with a CAS, fills it,
 * pushes its index on the submission queue) -> TAKEN (a service thread popped
 * it) -> DONE (copied; requester woken) -> FREE (requester read the result).
 * A requester that gives up (stop, dead worker) sets ABANDONED on the state;
 * whoever sees the other side's move last frees the slot, so no slot leaks
 * while the worker lives.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "fb_ring_api.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define RING_MAGIC     0x676e6972626656ULL   /* "Vfbring" */
#define PAGE           4096ULL
#define CL             64
#define NS_PER_S       1000000000ULL
#define CHECK_NS       (50ULL * 1000 * 1000)   /* requester liveness/stop checks */
#define DEAD_NS        NS_PER_S                /* heartbeat older than this: dead */
#define FULL_NS        (5ULL * NS_PER_S)       /* ring full this long: give up */
#define HEARTBEAT_NS   (100ULL * 1000 * 1000)
#define IDLE_NS        (100ULL * 1000 * 1000)  /* service thread rechecks shutdown */
#define SPIN_NS        (20ULL * 1000)          /* spin the last 20 us of a service wait */
#define MAX_SVC_NS     (60ULL * NS_PER_S)

#define S_FREE      0u
#define S_SUBMITTED 1u
#define S_TAKEN     2u
#define S_DONE      3u
#define S_ABANDONED 0x100u

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "shared-memory atomics must be lock-free");
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "shared-memory atomics must be lock-free");

struct ring_slot {
    _Atomic uint32_t state;     /* futex: requester sleeps on it */
    _Atomic uint32_t waiting;   /* requester may be asleep: worker must wake */
    int32_t result;
    uint32_t pad;
    uint64_t remote_off, local_off, length;
    uint64_t pad2[3];
};
_Static_assert(sizeof(struct ring_slot) == CL, "one slot per cache line");

struct ring_tstats {
    _Alignas(CL) _Atomic uint64_t requests;
    _Atomic uint64_t batches;
    _Atomic uint64_t service_ns;
    _Atomic uint64_t copied_bytes;
    _Atomic uint64_t model_ns;
    _Atomic int32_t tid;
};

/* Each group of words that different parties write sits on its own cache line. */
struct ring_hdr {
    uint64_t magic;
    uint32_t version, nslots;
    uint64_t size;              /* bytes of the whole memfd */
    int32_t owner_pid;          /* harness that created it: the worker's expected parent */
    _Atomic int32_t worker_pid;
    uint64_t src_size, dst_size;/* written by the worker before ready */
    _Atomic uint32_t nthreads;

    _Alignas(CL) _Atomic uint32_t ready;
    _Atomic uint32_t shutdown;  /* futex: worker main waits on it between heartbeats */
    _Atomic uint32_t exited;
    _Atomic uint64_t heartbeat_ns;

    /* submission queue and its spinlock; the stats are written only by the holder */
    _Alignas(CL) _Atomic uint32_t lock;
    uint64_t q_head, q_tail;    /* 64-bit: never wrap, so "% nslots" stays consistent */
    _Atomic uint64_t lock_acq, lock_cont, lock_spin_ns, lock_max_spin_ns;

    _Alignas(CL) _Atomic uint32_t q_seq;        /* futex: idle service threads */
    _Atomic uint32_t idle_workers;

    _Alignas(CL) _Atomic uint32_t free_seq;     /* futex: requesters waiting for a slot */
    _Atomic uint32_t free_waiters;
    _Atomic uint32_t alloc_hint;

    _Alignas(CL) _Atomic uint64_t req_waits;
    _Atomic uint64_t req_wait_ns;

    struct ring_tstats ts[FB_RING_MAX_THREADS];
};

#define HDR_BYTES  ((sizeof(struct ring_hdr) + PAGE - 1) & ~(PAGE - 1))

struct fb_ring {
    struct ring_hdr *h;
    uint32_t *queue;            /* nslots indices */
    struct ring_slot *slots;
    size_t size;
    int pidfd;                  /* caller's, not owned */
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

static inline void cpu_relax(void)
{
    __builtin_ia32_pause();
}

static int futex_wait(_Atomic uint32_t *addr, uint32_t val, uint64_t timeout_ns)
{
    struct timespec ts = { timeout_ns / NS_PER_S, timeout_ns % NS_PER_S };
    return syscall(SYS_futex, addr, FUTEX_WAIT, val, &ts, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *addr, int n)
{
    syscall(SYS_futex, addr, FUTEX_WAKE, n, NULL, NULL, 0);
}

static size_t ring_bytes(uint32_t nslots)
{
    size_t b = HDR_BYTES + (size_t)nslots * sizeof(uint32_t);
    b = (b + CL - 1) & ~(size_t)(CL - 1);
    b += (size_t)nslots * sizeof(struct ring_slot);
    return (b + PAGE - 1) & ~(PAGE - 1);
}

/* ---------- spinlock ----------
 * Test-and-test-and-set: waiters read the line until it looks free so they do
 * not bounce it with writes. Hundreds of requester threads share 2 CPUs, so a
 * holder is often preempted: spinners yield every few rounds to let it run. */
static void ring_lock(struct ring_hdr *h)
{
    uint64_t t0, d;
    unsigned spins = 0;

    if (!atomic_exchange_explicit(&h->lock, 1, memory_order_acquire)) {
        atomic_store_explicit(&h->lock_acq, atomic_load_explicit(&h->lock_acq, memory_order_relaxed) + 1,
                              memory_order_relaxed);
        return;
    }
    t0 = now_ns();
    for (;;) {
        while (atomic_load_explicit(&h->lock, memory_order_relaxed)) {
            if (++spins % 16 == 0)
                sched_yield();
            else
                cpu_relax();
        }
        if (!atomic_exchange_explicit(&h->lock, 1, memory_order_acquire))
            break;
    }
    d = now_ns() - t0;
    atomic_store_explicit(&h->lock_acq, atomic_load_explicit(&h->lock_acq, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    atomic_store_explicit(&h->lock_cont, atomic_load_explicit(&h->lock_cont, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    atomic_store_explicit(&h->lock_spin_ns, atomic_load_explicit(&h->lock_spin_ns, memory_order_relaxed) + d,
                          memory_order_relaxed);
    if (d > atomic_load_explicit(&h->lock_max_spin_ns, memory_order_relaxed))
        atomic_store_explicit(&h->lock_max_spin_ns, d, memory_order_relaxed);
}

static void ring_unlock(struct ring_hdr *h)
{
    atomic_store_explicit(&h->lock, 0, memory_order_release);
}

/* ---------- harness side ---------- */

int fb_ring_create(uint32_t nslots)
{
    size_t size;
    struct ring_hdr *h;
    int fd, err;

    if (nslots == 0 || nslots > FB_RING_MAX_SLOTS)
        return -EINVAL;
    size = ring_bytes(nslots);
    fd = memfd_create("fb-ring", MFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (ftruncate(fd, size) < 0)
        goto fail;
    h = mmap(NULL, HDR_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (h == MAP_FAILED)
        goto fail;
    /* the memfd is zero-filled: all slots FREE, queue empty, counters 0 */
    h->version = FB_RING_VERSION;
    h->nslots = nslots;
    h->size = size;
    h->owner_pid = getpid();
    atomic_thread_fence(memory_order_release);
    h->magic = RING_MAGIC;
    munmap(h, HDR_BYTES);
    return fd;
fail:
    err = errno;
    close(fd);
    return -err;
}

struct fb_ring *fb_ring_map(int ring_fd)
{
    struct stat st;
    struct ring_hdr *h;
    struct fb_ring *r;

    if (fstat(ring_fd, &st) < 0)
        return NULL;
    if ((size_t)st.st_size < HDR_BYTES) {
        errno = EINVAL;
        return NULL;
    }
    h = mmap(NULL, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, ring_fd, 0);
    if (h == MAP_FAILED)
        return NULL;
    if (h->magic != RING_MAGIC || h->version != FB_RING_VERSION || h->nslots == 0 ||
        h->nslots > FB_RING_MAX_SLOTS || h->size != (uint64_t)st.st_size ||
        ring_bytes(h->nslots) != (size_t)st.st_size) {
        munmap(h, st.st_size);
        errno = EINVAL;
        return NULL;
    }
    r = calloc(1, sizeof(*r));
    if (!r) {
        munmap(h, st.st_size);
        errno = ENOMEM;
        return NULL;
    }
    r->h = h;
    r->size = st.st_size;
    r->queue = (uint32_t *)((char *)h + HDR_BYTES);
    r->slots = (struct ring_slot *)((char *)h + ((HDR_BYTES + (size_t)h->nslots * 4 + CL - 1) & ~(size_t)(CL - 1)));
    r->pidfd = -1;
    return r;
}

void fb_ring_unmap(struct fb_ring *r)
{
    if (!r)
        return;
    munmap(r->h, r->size);
    free(r);
}

void fb_ring_set_worker_pidfd(struct fb_ring *r, int pidfd)
{
    r->pidfd = pidfd;
}

int32_t fb_ring_worker_pid(struct fb_ring *r)
{
    return atomic_load(&r->h->worker_pid);
}

int fb_ring_worker_ready(struct fb_ring *r)
{
    return atomic_load(&r->h->ready) == 1;
}

void fb_ring_shutdown(struct fb_ring *r)
{
    struct ring_hdr *h = r->h;

    atomic_store(&h->shutdown, 1);
    futex_wake(&h->shutdown, INT_MAX);
    atomic_fetch_add(&h->q_seq, 1);
    futex_wake(&h->q_seq, INT_MAX);
    atomic_fetch_add(&h->free_seq, 1);
    futex_wake(&h->free_seq, INT_MAX);
}

static int pidfd_exited(int pidfd)
{
    struct pollfd p = { .fd = pidfd, .events = POLLIN };
    return poll(&p, 1, 0) > 0;
}

static int heartbeat_fresh(struct ring_hdr *h)
{
    uint64_t hb = atomic_load(&h->heartbeat_ns), now = now_ns();
    return hb && (now < hb || now - hb < DEAD_NS);
}

int fb_ring_worker_alive(struct fb_ring *r)
{
    struct ring_hdr *h = r->h;

    if (!atomic_load(&h->ready) || atomic_load(&h->exited) || !heartbeat_fresh(h))
        return 0;
    return r->pidfd < 0 || !pidfd_exited(r->pidfd);
}

/* A pidfd, when given, is authoritative: exact and immediate, and a heartbeat
 * thread starved by hundreds of busy vCPU threads does not read as a death. */
static int worker_gone(struct fb_ring *r)
{
    struct ring_hdr *h = r->h;

    if (atomic_load(&h->shutdown) || atomic_load(&h->exited))
        return 1;
    if (r->pidfd >= 0)
        return pidfd_exited(r->pidfd);
    return !heartbeat_fresh(h);
}

void fb_ring_get_stats(struct fb_ring *r, struct fb_ring_stats *out)
{
    struct ring_hdr *h = r->h;
    uint32_t i, n = atomic_load(&h->nthreads);

    memset(out, 0, sizeof(*out));
    for (i = 0; i < n && i < FB_RING_MAX_THREADS; i++) {
        out->requests += atomic_load_explicit(&h->ts[i].requests, memory_order_relaxed);
        out->batches += atomic_load_explicit(&h->ts[i].batches, memory_order_relaxed);
        out->service_ns += atomic_load_explicit(&h->ts[i].service_ns, memory_order_relaxed);
        out->copied_bytes += atomic_load_explicit(&h->ts[i].copied_bytes, memory_order_relaxed);
        out->model_ns += atomic_load_explicit(&h->ts[i].model_ns, memory_order_relaxed);
    }
    out->lock_acquisitions = atomic_load_explicit(&h->lock_acq, memory_order_relaxed);
    out->lock_contended = atomic_load_explicit(&h->lock_cont, memory_order_relaxed);
    out->lock_spin_ns = atomic_load_explicit(&h->lock_spin_ns, memory_order_relaxed);
    out->lock_max_spin_ns = atomic_load_explicit(&h->lock_max_spin_ns, memory_order_relaxed);
    out->requester_waits = atomic_load_explicit(&h->req_waits, memory_order_relaxed);
    out->requester_wait_ns = atomic_load_explicit(&h->req_wait_ns, memory_order_relaxed);
}

int fb_ring_get_thread_stats(struct fb_ring *r, struct fb_ring_thread_stats *out, int max)
{
    struct ring_hdr *h = r->h;
    int i, n = (int)atomic_load(&h->nthreads);

    if (n > FB_RING_MAX_THREADS)
        n = FB_RING_MAX_THREADS;
    for (i = 0; i < n && i < max; i++) {
        out[i].requests = atomic_load_explicit(&h->ts[i].requests, memory_order_relaxed);
        out[i].batches = atomic_load_explicit(&h->ts[i].batches, memory_order_relaxed);
        out[i].service_ns = atomic_load_explicit(&h->ts[i].service_ns, memory_order_relaxed);
        out[i].copied_bytes = atomic_load_explicit(&h->ts[i].copied_bytes, memory_order_relaxed);
        out[i].model_ns = atomic_load_explicit(&h->ts[i].model_ns, memory_order_relaxed);
        out[i].tid = atomic_load_explicit(&h->ts[i].tid, memory_order_relaxed);
        out[i].pad = 0;
    }
    return n;
}

/* a slot went back to FREE: wake one requester waiting for a slot, if any */
static void slot_released(struct ring_hdr *h)
{
    atomic_fetch_add(&h->free_seq, 1);
    if (atomic_load(&h->free_waiters))
        futex_wake(&h->free_seq, 1);
}

/* give up on a submitted request; frees the slot if the worker already finished it */
static void abandon(struct fb_ring *r, struct ring_slot *s)
{
    uint32_t old = atomic_fetch_or(&s->state, S_ABANDONED);
    if (old == S_DONE) {
        atomic_store(&s->state, S_FREE);
        slot_released(r->h);
    }
}

static int check_wait(struct fb_ring *r, const volatile int *stop)
{
    if (stop && *stop)
        return FB_RING_STOPPED;
    if (worker_gone(r))
        return FB_RING_DEAD;
    return 0;
}

static int claim_slot(struct fb_ring *r, const volatile int *stop)
{
    struct ring_hdr *h = r->h;
    uint32_t n = h->nslots, i, idx, start, seq, expect;
    uint64_t t0 = 0, now;
    int rc;

    for (;;) {
        /* read the sequence before scanning: a slot freed after the scan changes it */
        seq = atomic_load(&h->free_seq);
        start = atomic_fetch_add_explicit(&h->alloc_hint, 1, memory_order_relaxed) % n;
        for (i = 0; i < n; i++) {
            idx = start + i < n ? start + i : start + i - n;
            expect = S_FREE;
            if (atomic_load_explicit(&r->slots[idx].state, memory_order_relaxed) == S_FREE &&
                atomic_compare_exchange_strong(&r->slots[idx].state, &expect, S_SUBMITTED))
                return (int)idx;
        }
        now = now_ns();
        if (!t0)
            t0 = now;
        else if (now - t0 > FULL_NS)
            return FB_RING_FULL;
        rc = check_wait(r, stop);
        if (rc)
            return rc;
        atomic_fetch_add(&h->free_waiters, 1);
        futex_wait(&h->free_seq, seq, CHECK_NS);
        atomic_fetch_sub(&h->free_waiters, 1);
    }
}

int fb_ring_copy(struct fb_ring *r, uint64_t remote_off, uint64_t local_off, uint64_t length,
                 const volatile int *stop)
{
    struct ring_hdr *h = r->h;
    struct ring_slot *s;
    uint64_t t0, last_check, now;
    uint32_t st;
    int idx, rc, slept = 0;

    if (stop && *stop)
        return FB_RING_STOPPED;
    if (!atomic_load(&h->ready) || worker_gone(r))
        return FB_RING_DEAD;
    if (remote_off > h->src_size || length > h->src_size - remote_off ||
        local_off > h->dst_size || length > h->dst_size - local_off)
        return FB_RING_BADRANGE;
    if (!length)
        return FB_RING_OK;

    idx = claim_slot(r, stop);
    if (idx < 0)
        return idx;
    s = &r->slots[idx];
    s->remote_off = remote_off;
    s->local_off = local_off;
    s->length = length;
    s->result = 0;
    atomic_store_explicit(&s->waiting, 0, memory_order_relaxed);

    t0 = now_ns();
    ring_lock(h);
    r->queue[h->q_tail % h->nslots] = (uint32_t)idx;
    h->q_tail++;
    ring_unlock(h);
    /* seq_cst pair with the service thread's idle_workers++ / q_seq read:
     * either it sees the new sequence or we see it idle and wake it */
    atomic_fetch_add(&h->q_seq, 1);
    if (atomic_load(&h->idle_workers))
        futex_wake(&h->q_seq, 1);

    last_check = t0;
    for (;;) {
        st = atomic_load(&s->state);
        if (st == S_DONE)
            break;
        atomic_store(&s->waiting, 1);
        st = atomic_load(&s->state);
        if (st == S_DONE)
            break;
        slept = 1;
        futex_wait(&s->state, st, CHECK_NS);
        now = now_ns();
        if (now - last_check >= CHECK_NS) {
            last_check = now;
            rc = check_wait(r, stop);
            if (rc) {
                if (atomic_load(&s->state) == S_DONE)
                    break;          /* finished just now: take the result */
                abandon(r, s);
                return rc;
            }
        }
    }
    rc = s->result;
    atomic_store(&s->state, S_FREE);
    slot_released(h);
    atomic_fetch_add_explicit(&h->req_wait_ns, now_ns() - t0, memory_order_relaxed);
    if (slept)
        atomic_fetch_add_explicit(&h->req_waits, 1, memory_order_relaxed);
    return rc;
}

/* ---------- worker side ---------- */

struct svc_model {
    uint32_t model;
    double a, b;
};

struct worker {
    struct fb_ring *r;
    uint8_t *src, *dst;
    uint64_t size;
    uint32_t batch;
    struct svc_model svc;
    uint64_t rng_seed;
};

struct svc_thread {
    struct worker *w;
    uint32_t index;
    pthread_t thread;
};

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double unit(uint64_t *rng)   /* [0, 1) */
{
    return (splitmix64(rng) >> 11) * 0x1.0p-53;
}

static uint64_t svc_sample_ns(const struct svc_model *m, uint64_t *rng)
{
    double us, u1, u2, z;

    switch (m->model) {
    case FB_SVC_UNIFORM:
        us = m->a + (m->b - m->a) * unit(rng);
        break;
    case FB_SVC_LOGNORMAL:
        u1 = 1.0 - unit(rng);   /* (0, 1]: log is finite */
        u2 = unit(rng);
        z = sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
        us = m->a * exp(m->b * z);
        break;
    default:
        us = m->a;
    }
    if (!(us > 0))
        return 0;
    if (us * 1000.0 >= (double)MAX_SVC_NS)
        return MAX_SVC_NS;
    return (uint64_t)(us * 1000.0);
}

/* Wait until deadline. The modelled network time must be accurate even on a
 * loaded 2-CPU box: a plain sleep overshoots by the timer slack (50 us by
 * default, set to 1 ns per thread) plus the wake-up latency, so sleep until
 * SPIN_NS before the deadline and spin the rest. Long waits sleep in slices so
 * a shutdown is noticed. */
static void wait_until(struct ring_hdr *h, uint64_t deadline)
{
    uint64_t now, target;
    struct timespec ts;

    for (;;) {
        now = now_ns();
        if (now >= deadline)
            return;
        if (deadline - now > SPIN_NS) {
            if (atomic_load_explicit(&h->shutdown, memory_order_relaxed))
                return;
            target = deadline - SPIN_NS;
            if (target - now > IDLE_NS)
                target = now + IDLE_NS;
            ts.tv_sec = target / NS_PER_S;
            ts.tv_nsec = target % NS_PER_S;
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
        } else {
            cpu_relax();
        }
    }
}

static void serve(struct worker *w, struct ring_tstats *ts, uint64_t *rng, uint32_t idx)
{
    struct ring_hdr *h = w->r->h;
    struct ring_slot *s = &w->r->slots[idx];
    uint32_t expect = S_SUBMITTED;
    uint64_t t0, ro, lo, len, model;
    int32_t result = 0;

    if (!atomic_compare_exchange_strong(&s->state, &expect, S_TAKEN)) {
        /* requester gave up before we got to it */
        atomic_store(&s->state, S_FREE);
        slot_released(h);
        return;
    }
    t0 = now_ns();
    ro = s->remote_off;
    lo = s->local_off;
    len = s->length;
    model = svc_sample_ns(&w->svc, rng);
    wait_until(h, t0 + model);
    /* the slot is in memory the other process writes: check again */
    if (ro > w->size || len > w->size - ro || lo > w->size || len > w->size - lo) {
        result = FB_RING_BADRANGE;
        len = 0;
    } else {
        memcpy(w->dst + lo, w->src + ro, len);
    }
    s->result = result;
    atomic_store_explicit(&ts->requests, atomic_load_explicit(&ts->requests, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    atomic_store_explicit(&ts->copied_bytes, atomic_load_explicit(&ts->copied_bytes, memory_order_relaxed) + len,
                          memory_order_relaxed);
    atomic_store_explicit(&ts->model_ns, atomic_load_explicit(&ts->model_ns, memory_order_relaxed) + model,
                          memory_order_relaxed);
    atomic_store_explicit(&ts->service_ns,
                          atomic_load_explicit(&ts->service_ns, memory_order_relaxed) + (now_ns() - t0),
                          memory_order_relaxed);
    expect = S_TAKEN;
    if (!atomic_compare_exchange_strong(&s->state, &expect, S_DONE)) {
        atomic_store(&s->state, S_FREE);   /* abandoned while we served it */
        slot_released(h);
        return;
    }
    /* seq_cst pair with the requester's waiting=1 / state read */
    if (atomic_load(&s->waiting))
        futex_wake(&s->state, 1);
}

static void *svc_main(void *arg)
{
    struct svc_thread *t = arg;
    struct worker *w = t->w;
    struct ring_hdr *h = w->r->h;
    struct ring_tstats *ts = &h->ts[t->index];
    uint64_t rng = w->rng_seed + t->index;
    uint32_t *take, n, i, seq;
    uint64_t avail;

    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    atomic_store(&ts->tid, (int32_t)syscall(SYS_gettid));
    take = malloc(sizeof(*take) * w->batch);
    if (!take)
        return NULL;
    while (!atomic_load(&h->shutdown)) {
        seq = atomic_load(&h->q_seq);   /* before looking: a later push changes it */
        ring_lock(h);
        avail = h->q_tail - h->q_head;
        n = avail > w->batch ? w->batch : (uint32_t)avail;
        for (i = 0; i < n; i++)
            take[i] = w->r->queue[(h->q_head + i) % h->nslots];
        h->q_head += n;
        ring_unlock(h);
        if (!n) {
            atomic_fetch_add(&h->idle_workers, 1);
            futex_wait(&h->q_seq, seq, IDLE_NS);
            atomic_fetch_sub(&h->idle_workers, 1);
            continue;
        }
        atomic_store_explicit(&ts->batches, atomic_load_explicit(&ts->batches, memory_order_relaxed) + 1,
                              memory_order_relaxed);
        for (i = 0; i < n; i++)
            serve(w, ts, &rng, take[i] < h->nslots ? take[i] : 0);
    }
    free(take);
    return NULL;
}

/* every page: (demand_gpa + off, seed) little-endian, then zeros (the memfd starts zeroed) */
static void fill_source(uint8_t *src, uint64_t size, uint64_t demand_gpa, uint64_t seed)
{
    uint64_t off;

    madvise(src, size, MADV_POPULATE_WRITE);   /* one call instead of a fault per page; optional */
    for (off = 0; off < size; off += PAGE) {
        uint64_t hdr[2] = { demand_gpa + off, seed };
        memcpy(src + off, hdr, sizeof(hdr));
    }
}

int fb_worker_main(int ring_fd, int target_fd, uint64_t target_size, uint64_t demand_gpa, uint64_t seed,
                   uint32_t threads, uint32_t batch, uint32_t svc_model, double svc_a, double svc_b,
                   uint64_t rng_seed)
{
    struct worker w = { 0 };
    struct svc_thread *th = NULL;
    struct ring_hdr *h;
    struct stat st;
    uint32_t started = 0, i;
    int src_fd = -1, rc = 0;

    /* a harness that dies must not leave the worker behind; the parent may
     * already be gone before prctl took effect, hence the getppid check */
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);

    if (threads == 0 || threads > FB_RING_MAX_THREADS || batch == 0 || svc_model > FB_SVC_LOGNORMAL ||
        target_size == 0 || target_size % PAGE)
        return -EINVAL;
    w.r = fb_ring_map(ring_fd);
    if (!w.r)
        return -errno;
    h = w.r->h;
    if (getppid() != h->owner_pid) {
        rc = -ESRCH;
        goto out;
    }
    if (batch > h->nslots)
        batch = h->nslots;
    if (fstat(target_fd, &st) < 0) {
        rc = -errno;
        goto out;
    }
    if ((uint64_t)st.st_size < target_size) {
        rc = -EINVAL;
        goto out;
    }
    w.size = target_size;
    w.batch = batch;
    w.svc = (struct svc_model){ svc_model, svc_a, svc_b };
    w.rng_seed = rng_seed;
    w.dst = mmap(NULL, target_size, PROT_READ | PROT_WRITE, MAP_SHARED, target_fd, 0);
    if (w.dst == MAP_FAILED) {
        w.dst = NULL;
        rc = -errno;
        goto out;
    }
    src_fd = memfd_create("fb-remote", MFD_CLOEXEC);
    if (src_fd < 0 || ftruncate(src_fd, target_size) < 0) {
        rc = -errno;
        goto out;
    }
    w.src = mmap(NULL, target_size, PROT_READ | PROT_WRITE, MAP_SHARED, src_fd, 0);
    if (w.src == MAP_FAILED) {
        w.src = NULL;
        rc = -errno;
        goto out;
    }
    fill_source(w.src, target_size, demand_gpa, seed);

    h->src_size = target_size;
    h->dst_size = target_size;
    atomic_store(&h->worker_pid, getpid());
    atomic_store(&h->nthreads, threads);
    atomic_store(&h->heartbeat_ns, now_ns());
    th = calloc(threads, sizeof(*th));
    if (!th) {
        rc = -ENOMEM;
        goto out;
    }
    for (i = 0; i < threads; i++) {
        th[i].w = &w;
        th[i].index = i;
        rc = pthread_create(&th[i].thread, NULL, svc_main, &th[i]);
        if (rc) {
            rc = -rc;
            break;
        }
        started++;
    }
    if (started == threads)
        atomic_store(&h->ready, 1);

    /* heartbeat from the main thread, which has nothing else to do */
    while (!rc && !atomic_load(&h->shutdown)) {
        atomic_store(&h->heartbeat_ns, now_ns());
        if (getppid() != h->owner_pid)
            break;
        futex_wait(&h->shutdown, 0, HEARTBEAT_NS);
    }
    atomic_store(&h->shutdown, 1);
    atomic_fetch_add(&h->q_seq, 1);
    futex_wake(&h->q_seq, INT_MAX);
    for (i = 0; i < started; i++)
        pthread_join(th[i].thread, NULL);
out:
    free(th);
    if (w.src)
        munmap(w.src, target_size);
    if (src_fd >= 0)
        close(src_fd);
    if (w.dst)
        munmap(w.dst, target_size);
    atomic_store(&h->exited, 1);
    fb_ring_unmap(w.r);
    return rc;
}
