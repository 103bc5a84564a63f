/* Results, read after a run stopped: per-vCPU and per-thread counters, latency
 * histograms, per-fault rows, blocktime and the totals. */
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
        const uint64_t *tab = (const uint64_t *)(run->sys_mem + v->table_gpa);
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
    return (struct touch_view){ (const uint64_t *)(run->sys_mem + v->table_gpa),
                                (const uint64_t *)(run->sys_mem + v->times_gpa),
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
            out[i].part_ns[p] = fb_tsc_to_ns(run, out[i].part_cycles[p]);
    }
    return run->nstats;
}

int fb_run_lock_stats(struct fb_run *run, struct fb_lock_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (run->ops->lock_stats)
        run->ops->lock_stats(run, out);
    out->spin_ns = fb_tsc_to_ns(run, out->spin_cycles);
    out->max_spin_ns = fb_tsc_to_ns(run, out->max_spin_cycles);
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
    out->pair_start_tsc = run->pair_tsc[0];
    out->pair_start_mono_ns = run->pair_mono[0];
    out->pair_start_width = run->pair_width[0];
    out->pair_end_tsc = run->pair_tsc[1];
    out->pair_end_mono_ns = run->pair_mono[1];
    out->pair_end_width = run->pair_width[1];
    return 0;
}
