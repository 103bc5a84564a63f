/* Internal declarations shared by the C core's files. */
#ifndef FB_CORE_H
#define FB_CORE_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdint.h>
#include <stddef.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <linux/kvm.h>
#include <linux/userfaultfd.h>

#include "fb_api.h"
#include "fb_ring_api.h"

#define FB_PAGE 4096ULL

/* precopy-stale page states */
#define FB_PAGE_CLEAN    0   /* pre-copied and clean: the bitmap may declare it */
#define FB_PAGE_STALE    1   /* content must be fetched */
#define FB_PAGE_FETCHING 2   /* a resolver is fetching it */
#define FB_PAGE_FETCHED  3   /* fetched content in place, its fetcher maps it */

/* guest-physical layout: the system slot (page tables, code, touch tables,
 * timing buffers) at 0; the demand-paged region at demand_gpa (1 GiB aligned). */
#define FB_GPA_PML4  0x1000ULL
#define FB_GPA_PDPT  0x2000ULL
#define FB_GPA_PD    0x3000ULL
#define FB_GPA_CODE  0x200000ULL
#define FB_GPA_DATA  0x400000ULL

/* kvm_run.memory_fault is newer than the system's 6.1 headers */
#define FB_KVM_EXIT_MEMORY_FAULT 39
#define FB_KVM_RUN_MEMFAULT_OFFSET 32

struct fb_run;

/* one fault delivered to userspace and its way through it: each stamp is the
 * TSC when it happened (same clock as the guest's rdtsc, checked at start) */
struct fb_fault {
    uint64_t page;
    uint64_t notify;      /* userspace learns of it: vCPU exit, or uffd message read */
    uint64_t enqueued;    /* async: gfn on the list */
    uint64_t popped;      /* async: resolver popped it */
    uint64_t claimed;     /* the resolver has the address */
    uint64_t fetch_start; /* after any wait (bitmap, another thread's fetch) */
    uint64_t fetched;     /* content in place, install ioctl starts */
    uint64_t done;        /* install ioctl returned (or the page was found mapped) */
    uint64_t resumed;     /* async: vCPU saw the bit clear */
    int32_t resolver_tid; /* who fetched and installed it */
    int32_t mono_timed;   /* the two below were taken (this thread fetched and installed) */
    uint64_t mono_fetch_ns, mono_install_ns;   /* CLOCK_MONOTONIC around the same work */
};

struct fb_vcpu {
    struct fb_run *run;
    int id;
    int fd;
    struct kvm_run *kr;
    pthread_t thread;
    int started, joined;
    struct fb_vcpu_result res;
    struct fb_thread_stats *ts;
    uint8_t *src_page;          /* fetch buffer for UFFDIO_COPY */
    uint64_t table_gpa;         /* gpa of this vCPU's touch table */
    uint64_t times_gpa;         /* gpa of this vCPU's timing buffer */
    struct fb_fault *fault_log; /* the faults this vCPU really took */
    uint64_t fault_log_cap;
    atomic_uint_fast64_t fault_log_n;
    int64_t *fault_idx;         /* per touch: its fault in the log, or -1 (after the run) */
    uint64_t loop_start_ns;     /* CLOCK_MONOTONIC when the start-up exit returned */
};

struct fb_reader {
    struct fb_run *run;
    int index;
    int uffd_index;
    pthread_t thread;
    int started, joined;
    int epfd;
    struct fb_thread_stats *ts;
    uint8_t *src_page;
};

/* test-and-test-and-set lock that counts its own contention */
struct fb_spinlock {
    atomic_int locked;
    struct fb_lock_stats st;
};

/* A mechanism, as fio's ioengine_ops: the whole contract between it and the core.
 * It keeps its own state behind run->mech_state (allocated in setup, freed in destroy). */
struct fb_mech_ops {
    const char *name;
    int version;                 /* bumped when the mechanism's behaviour changes */
    unsigned flags;              /* FB_MF_* */
    int (*setup)(struct fb_run *run, char *err, int errlen);
    int (*start)(struct fb_run *run, char *err, int errlen);
    /* a vCPU thread got -EFAULT for gpa (logged as f); returns 0 to re-enter KVM_RUN */
    int (*on_fault)(struct fb_run *run, struct fb_vcpu *v, uint64_t gpa, struct fb_fault *f);
    void (*stop)(struct fb_run *run);
    void (*destroy)(struct fb_run *run);
    /* the harness lock it owns, if any (fb_run_lock_stats) */
    void (*lock_stats)(struct fb_run *run, struct fb_lock_stats *out);
};

struct fb_run {
    struct fb_config cfg;
    const struct fb_mech_ops *ops;
    int kvm_fd, vm_fd;
    int run_size;
    uint64_t tsc_khz;
    uint64_t pair_tsc[2], pair_mono[2], pair_width[2];   /* fb_clock_pair: start, end */

    uint8_t *sys_mem;    uint64_t sys_size;
    uint8_t *demand;     uint64_t demand_size;   uint64_t demand_gpa;
    uint8_t *alias;      int memfd;              /* CONTINUE: second mapping */
    uint64_t npages;

    int nuffds;
    int uffd[FB_MAX_UFFDS];
    uint64_t uffd_span;

    struct fb_vcpu *vcpus;
    struct fb_reader *readers;
    int nreaders;
    struct fb_thread_stats *stats;   /* vcpus first, then readers */
    int nstats;

    atomic_int stop;
    atomic_int vcpus_running;
    atomic_int failed;
    int done_efd;                    /* written when the last vCPU ends or on failure */
    int stop_efd;                    /* readable once stop is requested */
    pthread_mutex_t err_lock;
    char err[256];
    /* start gate: vCPU threads check in, then all leave at once on `go`
     * (futex words: no lock to re-take on the way out) */
    atomic_int gate_ready, gate_go;
    uint32_t spawned;                /* thread creations so far (fail_spawn_at) */
    /* tid -> vCPU, sorted by tid, for uffd messages (UFFD_FEATURE_THREAD_ID) */
    int64_t *tid_map;
    atomic_uint_fast64_t unattributed_faults;
    int faulted_ready;

    atomic_uint_fast64_t pages_installed;
    int exit_path;

    uint32_t *page_installs;         /* how often each page was installed */

    /* precopy-stale */
    int precopy;                     /* a precopy-stale run: bitmap thread, clean pages */
    uint8_t *pstate;                 /* FB_PAGE_* per page: who fetches what, once */
    atomic_int bitmap_arrived;
    uint64_t bitmap_arrived_ns;
    pthread_t bitmap_thread;
    int bitmap_started, bitmap_joined;
    atomic_uint_fast64_t pages_copied, pages_declared_clean;

    /* --fetch worker */
    struct fb_ring *ring;

    void *mech_state;                /* the mechanism's own, behind its ops */
    /* watchdog test knob: the Nth resolution stalls (0: never) */
    uint64_t stall_after;
    atomic_uint_fast64_t resolutions;
};

/* core services for mechanisms */
void fb_fail(struct fb_run *run, const char *fmt, ...);
uint64_t fb_tsc(void);
uint64_t fb_tsc_to_ns(struct fb_run *run, uint64_t cycles);
void fb_set_err(char *err, int errlen, const char *fmt, ...);
int fb_spawn(struct fb_run *run, pthread_t *t, void *(*fn)(void *), void *arg,
             char *err, int errlen);
void fb_thread_begin(struct fb_thread_stats *ts);
void fb_thread_end(struct fb_thread_stats *ts);
/* the start gate and its futex (core.c); the precopy bitmap thread (resolve.c) */
long fb_futex(atomic_int *word, int op, int val);
void fb_gate_wait(struct fb_run *run);
void *fb_bitmap_thread(void *arg);
/* a SIGUSR1 handler that does nothing: it interrupts blocking calls at stop */
void fb_install_signal_handler(void);
/* restart the thread's scheduler window (vCPUs: once through the start gate) */
void fb_thread_mark(struct fb_thread_stats *ts);
/* note the CPU the calling thread is on (cheap: vDSO getcpu) */
static inline void fb_note_cpu(struct fb_thread_stats *ts)
{
    int c = sched_getcpu();
    if (c >= 0)
        ts->cpus_seen |= 1ULL << (c < 63 ? c : 63);   /* bit 63: CPU 63 or above */
}
/* write page p's content (header, and the full pattern with --verify full) to dst */
void fb_fill_page(struct fb_run *run, uint8_t *dst, uint64_t p);
int fb_uffd_open(struct fb_run *run, uint64_t features, int nonblock, char *err, int errlen);
int fb_uffd_register_all(struct fb_run *run, int nuffds, uint64_t features, int nonblock,
                         char *err, int errlen);
/* fetch (delay + content) and install one page; returns 1 installed,
 * 0 page was already present, -1 failure (run failed). */
int fb_resolve_page(struct fb_run *run, struct fb_thread_stats *ts, uint8_t *src_page,
                    uint64_t gpa, int dontwake, struct fb_fault *f);
uint64_t fb_page_seed(struct fb_run *run, uint64_t page);
/* log a fault by vCPU `vcpu` (or by thread `tid`, for uffd readers) on `page`,
 * noticed at TSC `notify`; returns its record (`scratch` if it cannot be logged) */
struct fb_fault *fb_note_fault(struct fb_run *run, int vcpu, uint64_t page, uint64_t notify,
                               struct fb_fault *scratch);
struct fb_fault *fb_note_fault_tid(struct fb_run *run, int32_t tid, uint64_t page, uint64_t notify,
                                   struct fb_fault *scratch);
void fb_lock(struct fb_spinlock *l);

/* what a thread is doing, for the watchdog: relaxed stores, a few cycles each */
static inline void fb_doing_at(struct fb_thread_stats *ts, int what, uint64_t gpa, uint64_t tsc)
{
    __atomic_store_n(&ts->doing_gpa, gpa, __ATOMIC_RELAXED);
    __atomic_store_n(&ts->doing_since_tsc, tsc, __ATOMIC_RELAXED);
    __atomic_store_n(&ts->doing, what, __ATOMIC_RELAXED);
}

static inline void fb_doing(struct fb_thread_stats *ts, int what, uint64_t gpa)
{
    fb_doing_at(ts, what, gpa, __builtin_ia32_rdtsc());
}
void fb_unlock(struct fb_spinlock *l);

/* The registry: one line per mechanism, its C name; mech_<name>.c defines
 * `const struct fb_mech_ops fb_mech_<name>`. Ids are positions in this list. */
#define FB_MECH_REGISTRY(X) \
    X(none)                 \
    X(prefault)             \
    X(uffd)                 \
    X(exits)                \
    X(async)                \
    X(exits_pair)

#define FB_MECH_DECLARE(sym) extern const struct fb_mech_ops fb_mech_##sym;
FB_MECH_REGISTRY(FB_MECH_DECLARE)
#undef FB_MECH_DECLARE

#endif
