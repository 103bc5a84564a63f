/* faultbench's in-kernel tracer (libbpf CO-RE; built by the install with clang).
 *
 * For the harness's own threads (tgid in `cfg`), aggregated in maps and read once a run:
 *  - per thread, the scheduler's counters: cumulative on-CPU and runnable-but-waiting ns,
 *    migrations, switches (`threads`, BPF_F_MMAPABLE: the harness maps it);
 *  - a log of every state change of those threads with the cumulative counters at that
 *    instant (`translog`, BPF_F_MMAPABLE), so a thread's exact on-CPU and waiting time
 *    up to any instant is one lookup: counter at the last change + (t - change) if the
 *    state since then was "on CPU" (or "waiting") -- counters, never a replayed stream;
 *  - lock contention per (lock, kernel stack, flags): count, total and max wait
 *    (lock:contention_begin/end, as `perf lock contention -b` keys it);
 *  - mmap_lock acquisitions by read/write, and of them those that waited: how many,
 *    total and max wait (from the lock's contention events).
 * Programs are tp_btf (BTF-typed raw tracepoints); nothing is pinned, so closing the
 * harness's fds (or its exit) detaches everything.
 *
 * Only the fields used are declared; CO-RE relocates them against the running kernel.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "fb_trace_shared.h"

struct rw_semaphore { long count; } __attribute__((preserve_access_index));
struct mm_struct { struct rw_semaphore mmap_lock; } __attribute__((preserve_access_index));
struct sched_entity { __u64 sum_exec_runtime; } __attribute__((preserve_access_index));
struct sched_info { unsigned long long run_delay; } __attribute__((preserve_access_index));
struct task_struct {
    int pid;
    int tgid;
    struct mm_struct *mm;
    struct sched_entity se;
    struct sched_info sched_info;
} __attribute__((preserve_access_index));
struct kmem_cache { const char *name; } __attribute__((preserve_access_index));
struct raw_spinlock { int pad; } __attribute__((preserve_access_index));
struct rq;
struct cfs_rq { struct rq *rq; } __attribute__((preserve_access_index));
struct rq {
    struct raw_spinlock __lock;
    struct cfs_rq cfs;
    int cpu;
} __attribute__((preserve_access_index));

extern struct kmem_cache *bpf_get_kmem_cache(__u64 addr) __ksym __weak;

#define LCB_F_WRITE (1U << 3)   /* include/trace/events/lock.h; a kernel ABI since 5.19 */

char LICENSE[] SEC("license") = "GPL";   /* bpf_get_stackid and tp_btf need GPL */

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct fb_bpf_cfg);
} cfg SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(map_flags, BPF_F_MMAPABLE);
    __uint(max_entries, FB_BPF_MAX_THREADS);
    __type(key, __u32);
    __type(value, struct fb_bpf_thread);
} threads SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(map_flags, BPF_F_MMAPABLE);
    __uint(max_entries, 1);   /* sized by the loader before load */
    __type(key, __u32);
    __type(value, struct fb_bpf_trans);
} translog SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct fb_bpf_cursor);
} cursor SEC(".maps");

/* a harness thread's slot in `threads` (+1; 0: none yet), kept on the task itself:
 * one pointer walk a lookup, where a hash keyed by tid cost a hashed bucket search on
 * every switch, wake-up and migration */
struct {
    __uint(type, BPF_MAP_TYPE_TASK_STORAGE);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, int);
    __type(value, __u32);
} slot_of SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct fb_bpf_totals);
} totals SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_STACK_TRACE);
    __uint(max_entries, FB_BPF_MAX_STACKS);
    __uint(key_size, sizeof(__u32));
    __uint(value_size, FB_BPF_STACK_DEPTH * sizeof(__u64));
} stacks SEC(".maps");

struct pending { __u64 t0; __u64 lock; __u32 flags; __s32 stackid; __u32 name_kind; __u32 pad; };

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, FB_BPF_MAX_THREADS);
    __type(key, __u32);     /* tid: one contention at a time per task (nested begins are kept as one) */
    __type(value, struct pending);
} contending SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, FB_BPF_MAX_LOCKS);
    __type(key, struct fb_bpf_lock_key);
    __type(value, struct fb_bpf_lock_val);
} locks SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, FB_BPF_MAX_LOCKS);
    __type(key, __u64);     /* lock address */
    __type(value, struct fb_bpf_lock_name);
} lock_names SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, FB_BPF_MAX_LOCKS);
    __type(key, __u64);     /* lock address no name was found for: not looked up again */
    __type(value, __u8);
} lock_unnamed SEC(".maps");

/* per CPU (the reader sums them): a shared counter's cache line would move between the
 * CPUs on every mmap_lock acquisition, several a fault */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 2);   /* 0: read, 1: write */
    __type(key, __u32);
    __type(value, struct fb_bpf_mm);
} mm_stats SEC(".maps");

static __always_inline struct fb_bpf_cfg *config(void)
{
    __u32 k = 0;
    return bpf_map_lookup_elem(&cfg, &k);
}

static __always_inline struct fb_bpf_totals *tot(void)
{
    __u32 k = 0;
    return bpf_map_lookup_elem(&totals, &k);
}

static __always_inline int ours(struct fb_bpf_cfg *c, int tgid)
{
    return c && c->tgid && (tgid == c->tgid || (c->tgid2 && tgid == c->tgid2));
}

/* the slot of a harness thread (its index in *idx), made on first sight */
static __always_inline struct fb_bpf_thread *slot(struct task_struct *task, __u32 *idx)
{
    __u32 *s = bpf_task_storage_get(&slot_of, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
    if (!s) {
        /* no memory for a new thread's storage, or the CPU's task-storage lock busy
         * when it was to be made: the event is lost, and counted (the split is then
         * withheld) */
        struct fb_bpf_totals *t = tot();
        if (t)
            __sync_fetch_and_add(&t->slots_missed, 1);
        return 0;
    }
    __u32 n = *s;
    if (!n) {
        struct fb_bpf_totals *t = tot();
        if (!t)
            return 0;
        n = __sync_fetch_and_add(&t->slots_used, 1);
        if (n >= FB_BPF_MAX_THREADS) {
            __sync_fetch_and_add(&t->threads_dropped, 1);
            return 0;
        }
        /* two CPUs can meet a new thread at once: the first one's slot is kept */
        __u32 seen = __sync_val_compare_and_swap(s, 0, n + 1);
        n = seen ? seen : n + 1;
    }
    *idx = n - 1;
    struct fb_bpf_thread *th = bpf_map_lookup_elem(&threads, idx);
    if (th && th->tid == 0)
        th->tid = task->pid;
    return th;
}

/* close the interval of the state the thread was in, then enter `state` at `now` */
/* Wall time on a CPU minus sum_exec_runtime is time the hypervisor took (steal): on
 * a guest like this host, ktime on a CPU is not CPU time. */
static __always_inline void transition(struct fb_bpf_thread *th, __u32 slotno, __u32 state, __u64 now,
                                       struct task_struct *task, __u32 flag)
{
    /* the scheduler's own counters: sum_exec_runtime is current here at a switch-out;
     * run_delay is current except at a switch-in (sched_info_arrive runs after the
     * tracepoint), which the reader takes from the thread's next entry */
    __u64 exec = task->se.sum_exec_runtime;
    th->exec_ns = exec;
    th->kdelay_ns = task->sched_info.run_delay;
    if (th->since && now > th->since) {
        if (th->state == FB_BPF_ON_CPU)
            th->on_ns += now - th->since;
        else if (th->state == FB_BPF_WAITING)
            th->wait_ns += now - th->since;
    }
    th->state = state;
    th->since = now;
    struct fb_bpf_totals *t = tot();
    struct fb_bpf_cfg *c = config();
    if (!t || !c)
        return;
    /* This CPU's cursor is changed by one program at a time: sched_switch runs with
     * interrupts off, and so do the wake-ups but one (a task waking itself: preemption
     * off only). An interrupt there can only run fb_wakeup again, which the kernel's
     * recursion guard skips (counted in the program's recursion_misses, not here). */
    __u32 zero = 0;
    struct fb_bpf_cursor *cur = bpf_map_lookup_elem(&cursor, &zero);
    if (!cur)
        return;
    if (cur->next >= cur->end) {
        __u64 base = __sync_fetch_and_add(&t->log_used, FB_BPF_LOG_CHUNK);
        if (base >= c->log_cap) {
            __sync_fetch_and_add(&t->log_dropped, 1);
            return;
        }
        cur->next = base;
        cur->end = base + FB_BPF_LOG_CHUNK < c->log_cap ? base + FB_BPF_LOG_CHUNK : c->log_cap;
    }
    __u32 k = (__u32)cur->next++;
    struct fb_bpf_trans *e = bpf_map_lookup_elem(&translog, &k);
    if (!e)
        return;
    e->t = now;
    e->on_ns = th->on_ns;
    e->wait_ns = th->wait_ns;
    e->exec_ns = exec;
    e->kdelay_ns = th->kdelay_ns;
    e->slot = slotno;
    e->state = state | flag;
}

/* The task pointers of these typed tracepoints are trusted BTF pointers: their fields
 * are read with plain loads (CO-RE relocated), not a probe-read helper call each. */
SEC("tp_btf/sched_switch")
int BPF_PROG(fb_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
             unsigned int prev_state)
{
    struct fb_bpf_cfg *c = config();
    if (!c || !c->tgid)
        return 0;
    __u64 now = 0;
    if (ours(c, prev->tgid)) {
        __u32 idx;
        struct fb_bpf_thread *th = slot(prev, &idx);
        if (th) {
            now = bpf_ktime_get_ns();
            /* still runnable when preempted (whatever its state word says: a task
             * preempted while going to sleep stays on the run queue) or TASK_RUNNING */
            __u32 st = (preempt || prev_state == 0) ? FB_BPF_WAITING : FB_BPF_ASLEEP;
            if (st == FB_BPF_WAITING)
                th->preempted++;   /* switched out still runnable: preempted or yielded */
            transition(th, idx, st, now, prev,
                       preempt && prev_state ? FB_BPF_SLEEPING_PREEMPTED : 0);
        }
    }
    if (ours(c, next->tgid)) {
        __u32 idx;
        struct fb_bpf_thread *th = slot(next, &idx);
        if (th) {
            if (!now)
                now = bpf_ktime_get_ns();
            th->switches_in++;
            transition(th, idx, FB_BPF_ON_CPU, now, next, 0);
        }
    }
    return 0;
}

static __always_inline int woken(struct task_struct *p)
{
    struct fb_bpf_cfg *c = config();
    if (!ours(c, p->tgid))
        return 0;
    __u32 idx;
    struct fb_bpf_thread *th = slot(p, &idx);
    /* a wakeup of a task that is on a CPU or already runnable changes nothing */
    if (th && th->state != FB_BPF_ON_CPU && th->state != FB_BPF_WAITING) {
        th->wakeups++;
        transition(th, idx, FB_BPF_WAITING, bpf_ktime_get_ns(), p, 0);
    }
    return 0;
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(fb_wakeup, struct task_struct *p) { return woken(p); }

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(fb_wakeup_new, struct task_struct *p) { return woken(p); }

SEC("tp_btf/sched_migrate_task")
int BPF_PROG(fb_migrate, struct task_struct *p, int dest_cpu)
{
    struct fb_bpf_cfg *c = config();
    if (!ours(c, p->tgid))
        return 0;
    __u32 idx;
    struct fb_bpf_thread *th = slot(p, &idx);
    if (th)
        th->migrations++;
    return 0;
}

/* The CPU whose run-queue lock is at `lock`, or -1. The per-CPU `runqueues` cannot be
 * named from BPF on a kernel without CONFIG_KALLSYMS_ALL (the verifier resolves a
 * typed __ksym through kallsyms, which then lists no data), so the lock is recognised
 * by its struct rq instead: with CONFIG_FAIR_GROUP_SCHED every rq's own cfs_rq points
 * back at it (rq->cfs.rq == rq), which memory around any other lock does not do.
 * Reads that fault return 0 (bpf_probe_read_kernel), so any address is safe to try.
 * Without the back pointer (no FAIR_GROUP_SCHED) nothing is named this way. */
static __always_inline int rq_lock_cpu(__u64 lock)
{
    if (!bpf_core_field_exists(struct cfs_rq, rq))
        return -1;
    struct rq *rq = (struct rq *)(lock - bpf_core_field_offset(struct rq, __lock));
    if ((__u64)BPF_CORE_READ(rq, cfs.rq) != (__u64)rq)
        return -1;
    int cpu = BPF_CORE_READ(rq, cpu);
    return cpu >= 0 && cpu < FB_BPF_RQ_CPUS ? cpu : -1;
}

/* "rq_lock[cpu N]" (N < 10000) */
static __always_inline void rq_lock_name(struct fb_bpf_lock_name *n, int cpu)
{
    __builtin_memcpy(n->name, "rq_lock[cpu ", 12);
    if (cpu >= 1000) {
        n->name[12] = '0' + cpu / 1000;
        n->name[13] = '0' + cpu / 100 % 10;
        n->name[14] = '0' + cpu / 10 % 10;
        n->name[15] = '0' + cpu % 10;
        n->name[16] = ']';
    } else if (cpu >= 100) {
        n->name[12] = '0' + cpu / 100;
        n->name[13] = '0' + cpu / 10 % 10;
        n->name[14] = '0' + cpu % 10;
        n->name[15] = ']';
    } else if (cpu >= 10) {
        n->name[12] = '0' + cpu / 10;
        n->name[13] = '0' + cpu % 10;
        n->name[14] = ']';
    } else {
        n->name[12] = '0' + cpu;
        n->name[13] = ']';
    }
}

/* a name for a lock seen for the first time: a CPU's run-queue lock, else the slab
 * cache it lives in; a lock with neither is remembered as unnamed */
static __always_inline void name_lock(__u64 lock)
{
    if (bpf_map_lookup_elem(&lock_names, &lock) || bpf_map_lookup_elem(&lock_unnamed, &lock))
        return;
    struct fb_bpf_lock_name n = {};
    int cpu = rq_lock_cpu(lock);
    if (cpu >= 0) {
        rq_lock_name(&n, cpu);
        bpf_map_update_elem(&lock_names, &lock, &n, BPF_NOEXIST);
        return;
    }
    if (bpf_get_kmem_cache) {
        struct kmem_cache *kc = bpf_get_kmem_cache(lock);
        if (kc) {
            bpf_probe_read_kernel_str(n.name, sizeof(n.name), BPF_CORE_READ(kc, name));
            bpf_map_update_elem(&lock_names, &lock, &n, BPF_NOEXIST);
            return;
        }
    }
    __u8 one = 1;
    bpf_map_update_elem(&lock_unnamed, &lock, &one, BPF_NOEXIST);
}

SEC("tp_btf/contention_begin")
int BPF_PROG(fb_contention_begin, void *lock, unsigned int flags)
{
    struct fb_bpf_cfg *c = config();
    __u64 pt = bpf_get_current_pid_tgid();
    if (!ours(c, (int)(pt >> 32)))
        return 0;
    __u32 tid = (__u32)pt;
    struct pending *open = bpf_map_lookup_elem(&contending, &tid);
    if (open) {
        /* nested: a mutex spinning, then sleeping, begins twice before its one end.
         * The first begin's time counts and the later flags are kept (MUTEX, not
         * MUTEX|SPIN), as the tracefs path does; a begin on another lock inside an
         * open contention (an interrupt's) is not counted. */
        if (open->lock == (__u64)lock)
            open->flags = flags;
        return 0;
    }
    struct pending p = {};
    p.lock = (__u64)lock;
    p.flags = flags;
    p.stackid = c->stacks ? bpf_get_stackid(ctx, &stacks, 0) : -1;
    struct task_struct *cur = (struct task_struct *)bpf_get_current_task_btf();
    struct mm_struct *mm = BPF_CORE_READ(cur, mm);
    if (mm && p.lock == (__u64)mm + bpf_core_field_offset(struct mm_struct, mmap_lock))
        p.name_kind = FB_BPF_NAME_MMAP_LOCK;
    else
        name_lock(p.lock);
    p.t0 = bpf_ktime_get_ns();   /* after the unwind: the wait is the lock's, not ours */
    bpf_map_update_elem(&contending, &tid, &p, BPF_ANY);
    return 0;
}

SEC("tp_btf/contention_end")
int BPF_PROG(fb_contention_end, void *lock, int ret)
{
    __u64 pt = bpf_get_current_pid_tgid();
    __u32 tid = (__u32)pt;
    struct pending *p = bpf_map_lookup_elem(&contending, &tid);
    if (!p)
        return 0;
    if (p->lock != (__u64)lock)
        return 0;   /* the end of a nested contention: the outer one is still open */
    __u64 now = bpf_ktime_get_ns();
    __u64 w = now > p->t0 ? now - p->t0 : 0;
    struct fb_bpf_lock_key k = {};
    k.lock = p->lock;
    k.stackid = p->stackid;
    k.flags = p->flags;
    k.name_kind = p->name_kind;
    bpf_map_delete_elem(&contending, &tid);
    struct fb_bpf_lock_val *v = bpf_map_lookup_elem(&locks, &k);
    if (!v) {
        struct fb_bpf_lock_val z = {};
        if (bpf_map_update_elem(&locks, &k, &z, BPF_NOEXIST) && bpf_map_lookup_elem(&locks, &k) == 0) {
            struct fb_bpf_totals *t = tot();
            if (t)
                __sync_fetch_and_add(&t->locks_dropped, 1);
            return 0;
        }
        v = bpf_map_lookup_elem(&locks, &k);
        if (!v)
            return 0;
    }
    __sync_fetch_and_add(&v->count, 1);
    __sync_fetch_and_add(&v->wait_ns, w);
    if (w > v->max_ns)
        v->max_ns = w;   /* racy max: a rare lost update under-reports the max only */
    if (k.name_kind == FB_BPF_NAME_MMAP_LOCK) {   /* an mmap_lock acquisition that waited */
        __u32 mk = (k.flags & LCB_F_WRITE) ? 1 : 0;
        struct fb_bpf_mm *s = bpf_map_lookup_elem(&mm_stats, &mk);
        if (s) {
            __sync_fetch_and_add(&s->contended, 1);
            __sync_fetch_and_add(&s->wait_ns, w);
            if (w > s->max_ns)
                s->max_ns = w;
        }
    }
    return 0;
}

/* mmap_lock: every acquisition counted here (one array add: the start_locking/acquired
 * pair timed with a per-task hash entry cost about 2 us a fault, more than the rest of
 * the tracer); the waits are the contended ones, taken in fb_contention_end from the
 * lock's own contention events (an uncontended acquisition does not wait). */
SEC("tp_btf/mmap_lock_acquire_returned")
int BPF_PROG(fb_mm_acquired, struct mm_struct *mm, bool write, bool success)
{
    struct fb_bpf_cfg *c = config();
    if (!success || !ours(c, (int)(bpf_get_current_pid_tgid() >> 32)))
        return 0;
    __u32 k = write ? 1 : 0;
    struct fb_bpf_mm *s = bpf_map_lookup_elem(&mm_stats, &k);
    if (s)
        __sync_fetch_and_add(&s->acquisitions, 1);
    return 0;
}
