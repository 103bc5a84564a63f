/* The KVM_READ_USERFAULT design (RFC, not in this kernel), emulated in
 * userspace over real fault exits. The kernel half: the faulting vCPU thread
 * appends the gfn to one per-VM list under a spinlock, signals an eventfd and
 * busy-waits until the gfn's userfault bit is cleared. The userspace half:
 * resolver threads read the eventfd, pop faults one at a time (the ioctl's
 * -ENOENT is an empty list), install the page and clear the bit with a
 * release store. */
#include "fb_core.h"
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>

/* what the RFC keeps in the kernel, per VM */
struct async_state {
    struct fb_spinlock list_lock;
    struct fb_fault **list;          /* ring of faults (their gfn inside) */
    uint64_t list_cap, list_head, list_tail;
    _Atomic uint64_t *uf_bitmap;     /* bit set: page missing */
    int list_efd;
};

static struct async_state *state_of(struct fb_run *run)
{
    return run->mech_state;
}

static int bit_set(struct async_state *st, uint64_t page)
{
    return (atomic_load_explicit(&st->uf_bitmap[page / 64], memory_order_acquire) >> (page % 64)) & 1;
}

static int async_setup(struct fb_run *run, char *err, int errlen)
{
    struct async_state *st = calloc(1, sizeof(*st));
    if (!st) {
        fb_set_err(err, errlen, "async: out of memory");
        return -1;
    }
    st->list_efd = -1;
    run->mech_state = st;   /* async_destroy frees it, whatever fails below */
    if (fb_uffd_register_all(run, 1, UFFD_FEATURE_SIGBUS, 1, err, errlen))
        return -1;
    st->list_cap = run->npages + run->cfg.vcpus;   /* one outstanding fault per vCPU at most */
    st->list = calloc(st->list_cap, sizeof(struct fb_fault *));
    uint64_t words = (run->npages + 63) / 64;
    st->uf_bitmap = calloc(words, sizeof(uint64_t));
    if (!st->list || !st->uf_bitmap) {
        fb_set_err(err, errlen, "async: out of memory for the fault list");
        return -1;
    }
    for (uint64_t w = 0; w < words; w++)
        st->uf_bitmap[w] = ~0ULL;   /* every page starts missing */
    st->list_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (st->list_efd < 0) {
        fb_set_err(err, errlen, "eventfd: %s", strerror(errno));
        return -1;
    }
    return 0;
}

static void async_destroy(struct fb_run *run)
{
    struct async_state *st = state_of(run);
    if (!st)
        return;
    if (st->list_efd >= 0)
        close(st->list_efd);
    free(st->list);
    free((void *)st->uf_bitmap);
    free(st);
    run->mech_state = NULL;
}

static void async_lock_stats(struct fb_run *run, struct fb_lock_stats *out)
{
    struct async_state *st = state_of(run);
    if (st)
        *out = st->list_lock.st;
}

static int async_on_fault(struct fb_run *run, struct fb_vcpu *v, uint64_t gpa, struct fb_fault *f)
{
    struct fb_thread_stats *ts = v->ts;
    struct async_state *st = state_of(run);
    uint64_t page = (gpa - run->demand_gpa) / FB_PAGE;
    uint64_t one = 1;
    if (page >= run->npages) {
        fb_fail(run, "vCPU %d: fault at gpa 0x%llx outside guest memory", v->id, (unsigned long long)gpa);
        return -1;
    }
    if (!bit_set(st, page)) {
        /* resolved since the exit: just re-enter */
        f->claimed = f->fetch_start = f->fetched = f->done = fb_tsc();
        return 0;
    }
    uint64_t t0 = fb_tsc();
    fb_doing_at(ts, FB_DOING_ENQUEUE, gpa & ~(FB_PAGE - 1), t0);
    fb_lock(&st->list_lock);
    f->enqueued = fb_tsc();   /* before a resolver can pop it */
    st->list[st->list_tail++ % st->list_cap] = f;
    fb_unlock(&st->list_lock);
    if (write(st->list_efd, &one, sizeof(one)) < 0) {
        fb_fail(run, "vCPU %d: eventfd write: %s", v->id, strerror(errno));
        return -1;
    }
    uint64_t t1 = fb_tsc();
    ts->part_cycles[FB_PART_ENQUEUE] += t1 - t0;
    ts->part_count[FB_PART_ENQUEUE]++;
    fb_doing_at(ts, FB_DOING_SPIN, gpa & ~(FB_PAGE - 1), t1);
    /* the busy-wait; yielding because hundreds of vCPU threads share 2 pCPUs */
    while (bit_set(st, page)) {
        if (atomic_load_explicit(&run->stop, memory_order_relaxed))
            return -1;
        sched_yield();
    }
    uint64_t t2 = fb_tsc();
    f->resumed = t2;
    ts->part_cycles[FB_PART_SPIN] += t2 - t1;
    ts->part_count[FB_PART_SPIN]++;
    uint64_t done = f->done;   /* written before the bit's release store */
    if (done && done < t2) {
        ts->part_cycles[FB_PART_WAKE] += t2 - done;
        ts->part_count[FB_PART_WAKE]++;
    }
    return 0;
}

static void *resolver_thread(void *arg)
{
    struct fb_reader *r = arg;
    struct fb_run *run = r->run;
    struct fb_thread_stats *ts = r->ts;
    struct async_state *st = state_of(run);
    struct pollfd pf[2] = { { .fd = st->list_efd, .events = POLLIN }, { .fd = run->stop_efd, .events = POLLIN } };

    fb_thread_begin(ts);
    while (!atomic_load_explicit(&run->stop, memory_order_relaxed)) {
        uint64_t cnt;
        fb_doing(ts, FB_DOING_WAIT_EVENTS, 0);
        if (poll(pf, 2, -1) < 0 || pf[1].revents)
            continue;
        if (read(st->list_efd, &cnt, sizeof(cnt)) < 0 && errno != EAGAIN)
            break;
        for (;;) {   /* KVM_READ_USERFAULT until -ENOENT */
            struct fb_fault *f;
            fb_lock(&st->list_lock);
            if (st->list_head == st->list_tail) {
                fb_unlock(&st->list_lock);
                break;
            }
            f = st->list[st->list_head++ % st->list_cap];
            fb_unlock(&st->list_lock);
            uint64_t page = f->page;
            uint64_t t = fb_tsc();
            f->popped = t;
            uint64_t enq = f->enqueued;
            if (enq && enq < t) {
                ts->part_cycles[FB_PART_QUEUE] += t - enq;
                ts->part_count[FB_PART_QUEUE]++;
            }
            ts->faults++;
            if (fb_resolve_page(run, ts, r->src_page, run->demand_gpa + page * FB_PAGE, 1, f) < 0)
                goto out;
            atomic_fetch_and_explicit(&st->uf_bitmap[page / 64], ~(1ULL << (page % 64)),
                                      memory_order_release);
        }
    }
out:
    fb_thread_end(ts);
    return NULL;
}

static int async_start(struct fb_run *run, char *err, int errlen)
{
    for (int i = 0; i < run->nreaders; i++) {
        if (fb_spawn(run, &run->readers[i].thread, resolver_thread, &run->readers[i], err, errlen))
            return -1;
        run->readers[i].started = 1;
    }
    return 0;
}

const struct fb_mech_ops fb_mech_async = {
    .name = "async",
    .version = 1,
    .flags = FB_MF_USES_UFFD | FB_MF_DELIVERS | FB_MF_RESOLVERS | FB_MF_ON_VCPU,
    .setup = async_setup,
    .start = async_start,
    .on_fault = async_on_fault,
    .destroy = async_destroy,
    .lock_stats = async_lock_stats,
};
