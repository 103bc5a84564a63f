/* Network-worker command ring: the fetch side's CopyFromRemote over shared memory.
 *
 * Read both by cffi's cdef parser (concatenated after fb_api.h) and by the C
 * compiler, so: plain declarations and integer #defines only, no include guard.
 * Include it once per translation unit.
 */
#define FB_RING_VERSION 1

#define FB_SVC_FIXED     0
#define FB_SVC_UNIFORM   1
#define FB_SVC_LOGNORMAL 2

#define FB_RING_MAX_THREADS 64      /* worker service threads */
#define FB_RING_MAX_SLOTS   65536

/* fb_ring_copy results */
#define FB_RING_OK        0
#define FB_RING_STOPPED  -1         /* *stop became nonzero */
#define FB_RING_DEAD     -2         /* worker dead or shut down */
#define FB_RING_FULL     -3         /* no free slot for more than 5 s */
#define FB_RING_BADRANGE -4         /* offsets/length outside the worker's memory */

struct fb_ring_stats {
    uint64_t requests;          /* requests served (copied and marked done) */
    uint64_t batches;           /* queue takes that got at least one request */
    uint64_t service_ns;        /* sum over requests: taken -> done (model wait + copy) */
    uint64_t copied_bytes;
    uint64_t lock_acquisitions; /* submission-queue spinlock, requesters and workers */
    uint64_t lock_contended;    /* acquisitions that found it held */
    uint64_t lock_spin_ns;      /* time spent waiting for it */
    uint64_t lock_max_spin_ns;
    uint64_t requester_waits;   /* fb_ring_copy calls that slept on the futex at least once */
    uint64_t requester_wait_ns; /* sum over fb_ring_copy calls: submitted -> saw done */
    uint64_t model_ns;          /* sum of the sampled service times; service_ns exceeds it by
                                 * the copy and by the worker's scheduling delays */
};

struct fb_ring_thread_stats {
    uint64_t requests;
    uint64_t batches;
    uint64_t service_ns;
    uint64_t copied_bytes;
    uint64_t model_ns;
    int32_t tid;
    int32_t pad;
};

struct fb_ring;   /* a process's handle on a mapped ring; opaque to Python */

/* harness side */
int fb_ring_create(uint32_t nslots);                 /* memfd (O_CLOEXEC) with header + slots, or -errno */
struct fb_ring *fb_ring_map(int ring_fd);            /* NULL on failure (errno set); both processes map it */
void fb_ring_unmap(struct fb_ring *r);
int fb_ring_worker_ready(struct fb_ring *r);         /* 1 once the worker mapped everything and started threads */
void fb_ring_shutdown(struct fb_ring *r);            /* ask the worker to exit; wakes its threads */
int fb_ring_worker_alive(struct fb_ring *r);         /* heartbeat younger than 1 s (and pidfd, if set, not exited) */
/* optional: a pidfd of the worker, owned by the caller and kept open while r is
 * mapped; lets requesters see the worker's death at once instead of after the
 * 1 s heartbeat timeout, and without false alarms when the heartbeat thread is starved */
void fb_ring_set_worker_pidfd(struct fb_ring *r, int pidfd);
int32_t fb_ring_worker_pid(struct fb_ring *r);       /* as the worker wrote it, 0 before */
void fb_ring_get_stats(struct fb_ring *r, struct fb_ring_stats *out);
/* per service thread; returns the number of threads (fills at most max) */
int fb_ring_get_thread_stats(struct fb_ring *r, struct fb_ring_thread_stats *out, int max);

/* requester: copy length bytes from source offset remote_off to target offset local_off;
 * blocks (futex) until done. stop may be NULL. Returns FB_RING_* above (0 done). */
int fb_ring_copy(struct fb_ring *r, uint64_t remote_off, uint64_t local_off, uint64_t length,
                 const volatile int *stop);

/* worker process main: maps ring and target memfd (MAP_SHARED, its own mapping),
 * creates the source memfd of target_size bytes with the deterministic content,
 * starts `threads` service threads, serves until shutdown; 0 or -errno. */
int fb_worker_main(int ring_fd, int target_fd, uint64_t target_size, uint64_t demand_gpa, uint64_t seed,
                   uint32_t threads, uint32_t batch, uint32_t svc_model, double svc_a, double svc_b,
                   uint64_t rng_seed);
