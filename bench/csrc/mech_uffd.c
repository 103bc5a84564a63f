/* Blocking userfaultfd: vCPUs sleep in handle_userfault; reader threads wait
 * for messages (poll, epoll with EPOLLEXCLUSIVE, or blocking read), fetch, and
 * resolve with UFFDIO_COPY/CONTINUE, whose wake walks the fault wait queue.
 * `uffds` > 1 splits guest memory into that many userfaultfds (uffd-many). */
#include "fb_core.h"
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>

static void *reader_thread(void *arg)
{
    struct fb_reader *r = arg;
    struct fb_run *run = r->run;
    struct fb_thread_stats *ts = r->ts;
    int uffd = run->uffd[r->uffd_index];
    struct pollfd pf[2] = { { .fd = uffd, .events = POLLIN }, { .fd = run->stop_efd, .events = POLLIN } };
    struct epoll_event ev[2];

    fb_thread_begin(ts);
    while (!atomic_load_explicit(&run->stop, memory_order_relaxed)) {
        fb_doing(ts, FB_DOING_WAIT_EVENTS, 0);
        if (run->cfg.wait_mode == FB_WAIT_POLL) {
            if (poll(pf, 2, -1) < 0 || pf[1].revents)
                continue;   /* EINTR, or stop: the loop test decides */
        } else if (run->cfg.wait_mode == FB_WAIT_EPOLL) {
            if (epoll_wait(r->epfd, ev, 2, -1) <= 0)
                continue;
        }
        struct uffd_msg msg;
        ssize_t n = read(uffd, &msg, sizeof(msg));
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;   /* another reader took it, or we are being stopped */
            fb_fail(run, "reader %d: read(userfaultfd): %s", r->index, strerror(errno));
            break;
        }
        uint64_t t = fb_tsc();
        if (n != sizeof(msg) || msg.event != UFFD_EVENT_PAGEFAULT) {
            fb_fail(run, "reader %d: unexpected userfaultfd event %u", r->index, msg.event);
            break;
        }
        uint64_t off = msg.arg.pagefault.address - (uint64_t)(uintptr_t)run->demand;
        struct fb_fault scratch = { 0 };
        struct fb_fault *f = fb_note_fault_tid(run, (int32_t)msg.arg.pagefault.feat.ptid,
                                               off / FB_PAGE, t, &scratch);
        ts->faults++;
        if (fb_resolve_page(run, ts, r->src_page, run->demand_gpa + off, 0, f) < 0)
            break;
    }
    fb_thread_end(ts);
    return NULL;
}

static int uffd_setup(struct fb_run *run, char *err, int errlen)
{
    /* THREAD_ID: each message names the faulting vCPU thread */
    return fb_uffd_register_all(run, run->cfg.uffds, UFFD_FEATURE_THREAD_ID,
                                run->cfg.wait_mode != FB_WAIT_READ,
                                err, errlen);
}

static int uffd_start(struct fb_run *run, char *err, int errlen)
{
    for (int i = 0; i < run->nreaders; i++) {
        struct fb_reader *r = &run->readers[i];
        if (run->cfg.wait_mode == FB_WAIT_EPOLL) {
            /* one epoll instance per reader, as the selftest does: EPOLLEXCLUSIVE
             * wakes one of them per message instead of all */
            struct epoll_event e1 = { .events = EPOLLIN | EPOLLEXCLUSIVE, .data.u32 = 0 };
            struct epoll_event e2 = { .events = EPOLLIN, .data.u32 = 1 };
            r->epfd = epoll_create1(EPOLL_CLOEXEC);
            if (r->epfd < 0 || epoll_ctl(r->epfd, EPOLL_CTL_ADD, run->uffd[r->uffd_index], &e1) ||
                epoll_ctl(r->epfd, EPOLL_CTL_ADD, run->stop_efd, &e2)) {
                fb_set_err(err, errlen, "epoll setup: %s", strerror(errno));
                return -1;
            }
        }
        if (fb_spawn(run, &r->thread, reader_thread, r, err, errlen))
            return -1;
        r->started = 1;
    }
    return 0;
}

const struct fb_mech_ops fb_mech_uffd = {
    .name = "uffd",
    .version = 1,
    .flags = FB_MF_USES_UFFD | FB_MF_DELIVERS | FB_MF_READERS_PER_UFFD,
    .setup = uffd_setup,
    .start = uffd_start,
};
