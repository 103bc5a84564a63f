/* Layouts shared by the BPF object (fb_trace.bpf.c), its loader (fb_bpf_loader.c) and
 * Python (bench/kerneltrace.py restates them as numpy dtypes; a test checks sizes). */
#ifndef FB_TRACE_SHARED_H
#define FB_TRACE_SHARED_H

#define FB_BPF_MAX_THREADS 4096
#define FB_BPF_MAX_STACKS 4096
#define FB_BPF_STACK_DEPTH 24
#define FB_BPF_MAX_LOCKS 16384
#define FB_BPF_RQ_CPUS 10000    /* run-queue locks are named by CPU below this */

/* thread states in the counters and the transition log */
#define FB_BPF_UNKNOWN 0
#define FB_BPF_ON_CPU 1
#define FB_BPF_WAITING 2   /* runnable, not on a CPU (woken, or preempted) */
#define FB_BPF_ASLEEP 3
/* or-ed into a log entry's state (never the thread's): switched out preempted while
 * going to sleep (a non-zero state word). It waits on a run queue, yet the kernel's
 * run_delay does not count that wait (sched_info_depart requeues only TASK_RUNNING). */
#define FB_BPF_SLEEPING_PREEMPTED 0x100

/* how a lock's name was found in the kernel */
#define FB_BPF_NAME_NONE 0
#define FB_BPF_NAME_MMAP_LOCK 1   /* &current->mm->mmap_lock */

struct fb_bpf_cfg {
    __s32 tgid;          /* the harness process; 0: record nothing */
    __s32 tgid2;         /* a second process (the network worker), or 0 */
    __u64 log_cap;       /* entries in `translog` */
    __u32 stacks;        /* 1: a kernel stack per contention */
    __u32 pad;
};

struct fb_bpf_thread {   /* 80 bytes */
    __u32 tid;
    __u32 state;
    __u64 since;         /* CLOCK_MONOTONIC ns of the last change of state */
    __u64 on_ns;         /* cumulative wall ns on a CPU, up to `since` */
    __u64 wait_ns;
    __u64 exec_ns;       /* the scheduler's sum_exec_runtime at `since` (excludes steal) */
    __u64 kdelay_ns;     /* the scheduler's sched_info.run_delay at `since` */
    __u32 migrations;
    __u32 pad;
    __u64 switches_in;
    __u64 preempted;
    __u64 wakeups;
};

struct fb_bpf_trans {    /* 48 bytes: the counters right after a change of state */
    __u64 t;
    __u64 on_ns;
    __u64 wait_ns;
    __u64 exec_ns;       /* sum_exec_runtime */
    __u64 kdelay_ns;     /* sched_info.run_delay; stale at a switch-in (see the reader) */
    __u32 slot;
    __u32 state;         /* the state entered at t */
};

/* The log is handed to CPUs in chunks of this many entries: one shared atomic a chunk,
 * not one a change of state (that cache line bounced between the CPUs on every switch).
 * Entries a CPU had not filled when the run ended stay zero (t == 0) and are skipped. */
#define FB_BPF_LOG_CHUNK 64

struct fb_bpf_cursor {   /* per CPU: the next free entry of its chunk, and the chunk's end */
    __u64 next;
    __u64 end;
};

struct fb_bpf_totals {
    __u64 log_used;      /* entries handed out in chunks; may exceed log_cap */
    __u64 log_dropped;
    __u32 slots_used;
    __u32 threads_dropped;
    __u64 locks_dropped;
    __u64 slots_missed;  /* a harness thread's task storage not had: that event is lost */
};

struct fb_bpf_lock_key {
    __u64 lock;
    __s32 stackid;       /* <0: no stack (off, or the stack map was full) */
    __u32 flags;         /* LCB_F_* of contention_begin */
    __u32 name_kind;
    __u32 pad;
};

struct fb_bpf_lock_val {
    __u64 count;
    __u64 wait_ns;
    __u64 max_ns;
};

struct fb_bpf_lock_name {
    char name[32];       /* "rq_lock[cpu N]" for CPU N's run-queue lock, else the slab
                          * cache the lock lives in (bpf_get_kmem_cache) */
};

struct fb_bpf_mm {
    __u64 acquisitions;
    __u64 wait_ns;
    __u64 max_ns;
    __u64 contended;     /* entered the rwsem slow path (a contention_begin inside) */
};

#endif
