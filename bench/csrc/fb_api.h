/* faultbench C core: the whole interface between Python and C.
 *
 * This file is read twice: by the C compiler (through fb_core.h) and by cffi's
 * cdef parser, so it holds only plain declarations and integer #defines.
 * Bump FB_API_VERSION whenever a struct below changes: bench/native.py
 * compares it with bench.API_VERSION so a stale build is refused at import.
 */
#define FB_API_VERSION 13

/* mechanisms: bench/csrc/mech_*.c, listed once in FB_MECH_REGISTRY (fb_core.h);
 * Python finds one by its C name (fb_mech_id) and puts the id in fb_config.mech */

/* what a mechanism is, for the core (struct fb_mech_ops.flags): the core asks
 * these, never a mechanism's id; fb_mech_flags() shows them to Python */
#define FB_MF_USES_UFFD        1   /* registers guest memory with userfaultfds */
#define FB_MF_DELIVERS         2   /* faults reach userspace (else a baseline) */
#define FB_MF_READERS_PER_UFFD 4   /* `readers` reader threads per userfaultfd */
#define FB_MF_RESOLVERS        8   /* `readers` resolver threads in all, fed by the mechanism */
#define FB_MF_ZERO_FILL        16  /* guest pages are the kernel's zero-filled ones */
#define FB_MF_ON_VCPU          32  /* faults come back to the vCPU thread (KVM_RUN returns) */

#define FB_WAIT_POLL  0
#define FB_WAIT_EPOLL 1
#define FB_WAIT_READ  2

#define FB_RESOLVE_COPY     0
#define FB_RESOLVE_CONTINUE 1

/* thread placement (the CPUs themselves are planned in Python: fb_config.*_cpu) */
#define FB_CPU_FREE -1          /* no affinity: the scheduler decides */

/* content verification by the guest on every check */
#define FB_VERIFY_HEADER 0      /* the first 16 bytes: gpa and seed */
#define FB_VERIFY_FULL   1      /* every 8-byte word but offset 64 (the guest's own write) */
/* the pattern word at byte offset o of a page: (gpa & mask) ^ seed ^ (o * FB_PATTERN_MUL) */
#define FB_PATTERN_MUL 0x9E3779B97F4A7C15

#define FB_DELAY_SPIN  0
#define FB_DELAY_SLEEP 1

/* I/O ports the guest's `out` uses to talk to the host (bench/guest.py) */
#define FB_PORT_DONE 0x10   /* the touch loop is over */
#define FB_PORT_TSC  0x11   /* the guest reports one rdtsc at start */

/* touch-table entry flags: entry = page gpa | flags */
#define FB_TOUCH_READ  1
#define FB_TOUCH_FIRST 2
/* latency selection only (not in tables): first touches that really faulted */
#define FB_TOUCH_FAULTED 4

/* thread roles in fb_thread_stats */
#define FB_ROLE_VCPU     0
#define FB_ROLE_READER   1
#define FB_ROLE_RESOLVER 2

/* how an exit-based mechanism learned the faulting address */
#define FB_EXITINFO_NONE       0
#define FB_EXITINFO_KVM        1   /* kvm_run.memory_fault filled by the kernel */
#define FB_EXITINFO_GUEST_REG  2   /* -EFAULT, address from the guest's rbx     */

/* log-linear latency histogram: 2^FB_HIST_SUB_BITS linear sub-buckets per
 * power of two, so a bucket spans at most 1/128 of its value (<0.8%). */
#define FB_HIST_SUB_BITS 7
#define FB_HIST_BUCKETS  4608   /* values 0..127 exact, then 128 per octave up to 2^42 ns */
#define FB_LOG2_US_BUCKETS 32   /* QEMU postcopy-latency-dist buckets */

/* parts of a fault's cost, filled per thread (nanoseconds, summed) */
#define FB_PART_KVM_RUN    0   /* exits: KVM_RUN round trip (re-entry, guest, exit) */
#define FB_PART_LOOKUP     1   /* exits: turning the exit into a page address       */
#define FB_PART_FETCH      2   /* all: fetch model (delay + content fill)           */
#define FB_PART_INSTALL    3   /* all: UFFDIO_COPY/CONTINUE ioctl                   */
#define FB_PART_QUEUE      4   /* uffd: fault to message read; async: enqueue to pop */
#define FB_PART_WAKE       5   /* uffd/async: install done to vCPU running again     */
#define FB_PART_ENQUEUE    6   /* async: list lock + push + eventfd signal           */
#define FB_PART_SPIN       7   /* async vCPU: busy-wait until the bit is clear       */
#define FB_PART_WAIT       8   /* all: waiting on the bitmap or another thread's fetch */
#define FB_PARTS           9

/* segments of a fault's latency, from the guest's rdtsc before the touch
 * to its rdtsc after; consecutive stamps, so they partition the interval */
#define FB_BD_NOTIFY   0   /* guest touch -> userspace knows (exit / uffd message read) */
#define FB_BD_ENQUEUE  1   /* async: exit -> gfn on the shared list */
#define FB_BD_QUEUE    2   /* async: on the list -> popped by a resolver */
#define FB_BD_DISPATCH 3   /* known -> the resolver has the address (lookup, hand-off) */
#define FB_BD_WAIT     4   /* waiting on the final dirty bitmap or on another thread's fetch */
#define FB_BD_FETCH    5   /* fetch model */
#define FB_BD_INSTALL  6   /* UFFDIO_COPY / CONTINUE */
#define FB_BD_WAKE     7   /* async: installed -> vCPU sees the bit clear */
#define FB_BD_RESUME   8   /* -> guest runs again (wake-up or KVM_RUN re-entry) */
#define FB_BD_SEGMENTS 9

struct fb_config {
    uint32_t vcpus;
    uint32_t mech;
    uint64_t mem_per_vcpu;      /* bytes, multiple of 2 MiB */
    uint64_t demand_bytes;      /* guest memory; 0: vcpus * mem_per_vcpu (shared workloads set less) */
    uint64_t corrupt_every;     /* test knob: every Nth page gets a wrong seed (0: never) */
    uint32_t uffds;             /* userfaultfds the demand region is split into */
    uint32_t readers;           /* reader threads per uffd; async: resolver threads */
    uint32_t wait_mode;         /* FB_WAIT_* (uffd readers) */
    uint32_t resolve;           /* FB_RESOLVE_* */
    uint32_t delay_mode;        /* FB_DELAY_* */
    uint32_t record_latency;    /* guest times each touch with rdtsc */
    uint64_t fetch_delay_ns;    /* modelled fetch time before each resolution */
    uint64_t seed;              /* content seed, stored in every page */
    const uint8_t *guest_code;  /* generated by bench/guest.py */
    uint64_t guest_code_len;
    const uint64_t *touches;    /* vcpus * touches_per_vcpu entries */
    uint64_t touches_per_vcpu;
    uint32_t fault_around;      /* pages installed per resolved fault (1..FB_MAX_FAULT_AROUND) */
    uint32_t fail_spawn_at;     /* test knob: the Nth thread creation fails (0: never) */
    const uint8_t *stale_map;   /* precopy-stale: 1 per page to fetch; NULL: every page */
    uint64_t bitmap_delay_ns;   /* precopy-stale: when the final dirty bitmap arrives */
    const int32_t *vcpu_cpu;    /* per vCPU: the CPU it is pinned to, or FB_CPU_FREE; NULL: all free */
    const int32_t *reader_cpu;  /* per reader/resolver thread, the same */
    uint32_t nreader_cpu;
    uint32_t verify;            /* FB_VERIFY_* */
    uint64_t corrupt_tail_every;/* test knob: every Nth page gets its last 8 bytes wrong (a torn copy) */
    int64_t misstamp_fetched_ns;/* test knob: the `fetched` stamp is off by this much (signed) */
    int32_t tsc_khz_error_ppm;  /* test knob: the TSC frequency used for conversion is off by this */
};

#define FB_MAX_FAULT_AROUND 512
#define FB_MAX_UFFDS 1024           /* userfaultfds one run may split its memory over */

struct fb_vcpu_result {
    uint64_t start_ns;          /* CLOCK_MONOTONIC, after the start barrier */
    uint64_t end_ns;            /* guest reported completion */
    uint64_t touches;           /* guest loop iterations done */
    uint64_t content_errors;    /* pages whose content did not match */
    uint64_t kvm_runs;          /* KVM_RUN calls */
    uint64_t fault_exits;       /* KVM_RUN -EFAULT returns handled */
    uint64_t exitinfo_kvm;      /* of which the kernel gave the address */
    uint64_t exitinfo_guest_reg;/* of which the guest register gave it */
    uint64_t blocked_ns;        /* time in faults as the guest saw it */
    uint64_t faults_logged;     /* faults attributed to this vCPU */
    uint64_t faults_unlogged;   /* attributed, but the log was full */
    /* the guest's rdtsc at start, bracketed by the host's: do they share a clock? */
    uint64_t tsc_host_before, tsc_guest, tsc_host_after;
    /* host clock (CLOCK_MONOTONIC, not the TSC stamps): from the return of the
     * guest's start-up exit to its completion exit, which brackets its touch loop */
    uint64_t host_loop_ns;
    uint64_t guest_loop_cycles; /* the guest's own stamps: first touch start to last touch end */
    uint64_t guest_first_tsc;   /* the guest's stamp at its first touch (0 without timing) */
    uint64_t exits_by_path[3];  /* FB_EXITINFO_*: how each fault exit's address was learned */
};

struct fb_thread_stats {
    int32_t role;               /* FB_ROLE_* */
    int32_t index;              /* vCPU id or reader number */
    int32_t uffd_index;         /* which userfaultfd (readers) */
    int32_t tid;
    uint64_t faults;            /* fault notifications handled */
    uint64_t pages_installed;   /* successful COPY/CONTINUE */
    uint64_t eexist;            /* install found the page present */
    uint64_t wakes;             /* explicit UFFDIO_WAKE after EEXIST */
    uint64_t part_cycles[FB_PARTS]; /* FB_PART_* sums in TSC cycles, as the run accumulates them */
    uint64_t part_ns[FB_PARTS];     /* the same in ns: filled by fb_run_thread_stats */
    uint64_t part_count[FB_PARTS];
    uint64_t utime_ns;
    uint64_t stime_ns;
    uint64_t nvcsw;
    uint64_t nivcsw;
    uint64_t sleeps_in_window;  /* voluntary switches (the thread blocked) in the measured window */
    /* the scheduler's view over the thread's measured window (vCPUs: from the
     * start gate), /proc/thread-self/schedstat and .../sched before and after */
    uint64_t sched_run_ns;      /* on a CPU */
    uint64_t sched_wait_ns;     /* runnable, waiting on a run queue */
    uint64_t sched_timeslices;
    uint64_t migrations;        /* se.nr_migrations; UINT64_MAX when unreadable */
    uint64_t cpus_seen;         /* bit c: seen on CPU c (sampled per fault); bit 63: CPU 63 or above */
    int32_t pinned_cpu;         /* FB_CPU_FREE or the CPU its affinity holds it to */
    int32_t sched_ok;           /* 1: the schedstat fields are valid */
    /* CLOCK_MONOTONIC sums around the fetch and the install ioctl: the same work
     * as the fetch/install segments, timed by a clock that shares no stamp with them */
    uint64_t mono_fetch_ns;
    uint64_t mono_install_ns;
    uint64_t mono_count;
    /* CLOCK_MONOTONIC read right beside the schedstat/thread-CPU-clock reads of
     * fb_thread_mark and fb_thread_end: the window sched_run_ns/sched_wait_ns cover,
     * on the clock the in-kernel tracer stamps with (its cross-check needs it) */
    uint64_t mono_mark_ns;
    uint64_t mono_end_ns;
    /* live state for the watchdog, written by the thread with relaxed atomic
     * stores and read by fb_run_thread_states while the run goes on */
    int32_t doing;              /* FB_DOING_* */
    int32_t doing_reserved;
    uint64_t doing_since_tsc;   /* when it began doing it */
    uint64_t doing_gpa;         /* the page it handles or waits on (0: none) */
};

/* a userspace lock of the harness: counts what contention it sees */
struct fb_lock_stats {
    uint64_t acquisitions;
    uint64_t contended;
    uint64_t spin_cycles;       /* TSC cycles, as the run accumulates them */
    uint64_t max_spin_cycles;
    uint64_t spin_ns;           /* the same in ns: filled by fb_run_lock_stats */
    uint64_t max_spin_ns;
};

struct fb_run;

/* probes, independent of a run */
int fb_mech_id(const char *name);            /* a mechanism's id by its C name, -1 if none */
int fb_mech_flags(uint32_t mech);             /* FB_MF_* of a mechanism, -1 if unknown */
int fb_kvm_check_extension(int cap);          /* -errno on failure */
int64_t fb_uffd_features(void);              /* UFFDIO_API features, -errno */
int fb_kvm_memslot_flag_supported(uint32_t flag);  /* 1 yes, 0 no, -errno */
uint64_t fb_now_ns(void);

/* a run: create (allocate, build VM), start threads, wait, collect, destroy */
struct fb_run *fb_run_create(const struct fb_config *cfg, char *err, int errlen);
int fb_run_start(struct fb_run *run, char *err, int errlen);
/* 1: all vCPUs done, 0: still running after timeout_ms, -1: failed (err) */
int fb_run_wait(struct fb_run *run, int timeout_ms, char *err, int errlen);
void fb_run_stop(struct fb_run *run);          /* interrupt and join everything */
void fb_run_destroy(struct fb_run *run);

int fb_run_nthreads(struct fb_run *run);

/* a run's totals once it stopped, filled by one call: a new counter is a field
 * here, its increment, and one line in fb_run_totals (Python reads every field) */
struct fb_run_totals {
    uint64_t tsc_khz;
    uint64_t pages_installed;       /* successful installs, fault-around pages included */
    uint64_t pages_copied;          /* page contents fetched */
    uint64_t pages_declared_clean;  /* precopy-stale: mapped by the bitmap, no copy */
    uint64_t faults_unattributed;   /* uffd messages from no vCPU thread */
    uint64_t bitmap_arrived_ns;     /* CLOCK_MONOTONIC, 0 if never */
    uint64_t blocktime_all_ns;      /* every vCPU blocked in a fault at once */
    uint64_t fault_rows;            /* faulted touches: what fb_run_fault_rows gives */
    uint64_t exit_path;             /* FB_EXITINFO_* of the last fault exit that said */
    /* (TSC, CLOCK_MONOTONIC) pairs at the start gate and after the last vCPU: the
     * TSC's rate measured against the kernel's clock, independent of tsc_khz (which
     * the conversion uses), and the map from stamps to the kernel tracer's clock.
     * Each pair is the tightest of a few tries: tsc is the midpoint of two rdtsc
     * around one clock_gettime, width their distance (the pair's uncertainty). */
    uint64_t pair_start_tsc, pair_start_mono_ns, pair_start_width;
    uint64_t pair_end_tsc, pair_end_mono_ns, pair_end_width;
};
int fb_run_totals(struct fb_run *run, struct fb_run_totals *out);
int fb_run_vcpu_results(struct fb_run *run, struct fb_vcpu_result *out);
int fb_run_thread_stats(struct fb_run *run, struct fb_thread_stats *out);
int fb_run_lock_stats(struct fb_run *run, struct fb_lock_stats *out);
int fb_run_thread_tids(struct fb_run *run, int32_t *out, int max);

/* latency: fill histograms from the guest's per-touch timings.
 * which: FB_TOUCH_FIRST selects first touches, 0 selects re-touches. */
int fb_run_latency_hist(struct fb_run *run, int vcpu, int which,
                        uint64_t *loglin, uint64_t *log2_us);
/* one fault as its vCPU took it: the guest's stamps around the touch and the
 * host's stamps on its way (raw TSC, 0 where the mechanism sets none); the
 * breakdown, its medians and its CPU-wait shares are computed from these rows */
#define FB_STAMPS 11            /* g0, notify, enqueued, popped, claimed, fetch_start,
                                   fetched, done, resumed, g1 (and one spare: 0) */
struct fb_fault_row {
    int32_t vcpu;
    int32_t vcpu_tid;
    int32_t resolver_tid;       /* the thread that fetched and installed it (0: unknown) */
    int32_t complete;           /* every stamp the chain needs is set */
    uint64_t stamp[FB_STAMPS];
    /* CLOCK_MONOTONIC around the fetch and the install of this fault (0, 0 when
     * the fault found its page mapped): the independent clock of the per-fault check */
    uint64_t mono_fetch_ns, mono_install_ns;
};
uint64_t fb_run_fault_rows(struct fb_run *run, struct fb_fault_row *out, uint64_t max);
/* how often each page of guest memory was installed */
int fb_run_page_installs(struct fb_run *run, uint32_t *out, uint64_t npages);
uint64_t fb_run_npages(struct fb_run *run);
/* --fetch worker: the memfd the worker writes guest memory through, and the
 * ring it serves (attach before fb_run_start; the run keeps its own mapping) */
int fb_run_memfd(struct fb_run *run);
uint64_t fb_run_demand_gpa(struct fb_run *run);
int fb_run_attach_ring(struct fb_run *run, int ring_fd, int worker_pidfd, char *err, int errlen);
/* histogram helpers, exposed for tests */
int fb_hist_index(uint64_t value_ns);
uint64_t fb_hist_lower(int index);
uint64_t fb_hist_upper(int index);

/* ---------- watchdog (issue 10): what each thread is doing, read live ---------- */
#define FB_DOING_START        0   /* started, not yet at work (vCPUs: at the start gate) */
#define FB_DOING_GUEST        1   /* vCPU in KVM_RUN: the guest runs or sleeps in a fault */
#define FB_DOING_FAULT_EXIT   2   /* vCPU handling a fault exit (address lookup)          */
#define FB_DOING_WAIT_EVENTS  3   /* reader/resolver waiting for fault notifications      */
#define FB_DOING_WAIT         4   /* waiting on the final bitmap or another thread's fetch */
#define FB_DOING_FETCH        5   /* fetching page content (delay model + fill)            */
#define FB_DOING_FETCH_WORKER 6   /* waiting for the network worker's CopyFromRemote       */
#define FB_DOING_INSTALL      7   /* UFFDIO_COPY / UFFDIO_CONTINUE                         */
#define FB_DOING_ENQUEUE      8   /* async vCPU: pushing its fault on the list              */
#define FB_DOING_SPIN         9   /* async vCPU: busy-waiting for its page's bit           */
#define FB_DOING_EXITED      10   /* the thread has returned                               */
#define FB_DOING_STALLED     11   /* test knob: stopped answering on purpose               */
#define FB_DOING_STATES      12

struct fb_thread_state {
    int32_t role;               /* FB_ROLE_* */
    int32_t index;
    int32_t tid;
    int32_t doing;              /* FB_DOING_* */
    uint64_t doing_for_ns;      /* how long it has been doing it */
    uint64_t gpa;               /* the page it handles or waits on (0: none) */
    uint64_t touches_done;      /* vCPUs with timing on: touches the guest finished; else ~0 */
    uint64_t touch_gpa;         /* vCPUs with timing on: page of the touch under way (0: none) */
    uint64_t touches_total;     /* vCPUs: entries in its touch table */
};

/* live, callable from another thread while the run goes on */
int fb_run_thread_states(struct fb_run *run, struct fb_thread_state *out, int max);
/* a number that grows while the run makes progress: pages installed, touches the
 * guests finished (timing on) and vCPUs done */
uint64_t fb_run_progress(struct fb_run *run);
int fb_run_vcpus_running(struct fb_run *run);
/* test knob: the thread that starts the Nth page resolution stops answering
 * (sleeps until the run is stopped); set before fb_run_start; 0: never */
void fb_run_inject_stall(struct fb_run *run, uint64_t nth_resolution);
