/* Loader of fb_trace.bpf.o (libbpf): open, size, load, configure, attach; map the
 * counters and the transition log; read the lock maps once; close (which detaches
 * everything: nothing is pinned, so a crash detaches too). Built into the core
 * (bench/_build.py) where libbpf-dev and clang are present; fb_bpf_absent.c otherwise. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <linux/types.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "fb_trace_shared.h"
#include "fb_bpf_loader.h"

struct fb_bpf {
    struct bpf_object *obj;
    struct bpf_link *links[16];
    int nlinks;
    struct fb_bpf_thread *threads;   /* mmapped */
    size_t threads_len;
    struct fb_bpf_trans *log;        /* mmapped */
    size_t log_len;
    uint64_t log_cap;
    int stacks;
};

static void seterr(char *err, int errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int quiet(enum libbpf_print_level lvl, const char *fmt, va_list ap)
{
    (void)lvl; (void)fmt; (void)ap;
    return 0;
}

static void *map_mmap(struct bpf_object *obj, const char *name, size_t len, char *err, int errlen)
{
    struct bpf_map *m = bpf_object__find_map_by_name(obj, name);
    void *p = m ? mmap(NULL, len, PROT_READ, MAP_SHARED, bpf_map__fd(m), 0) : MAP_FAILED;
    if (p == MAP_FAILED) {
        seterr(err, errlen, "mmap of BPF map %s: %s", name, strerror(errno));
        return NULL;
    }
    return p;
}

static size_t page_round(size_t n)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    return (n + pg - 1) / pg * pg;
}

void fb_bpf_close(struct fb_bpf *b)
{
    if (!b)
        return;
    for (int i = 0; i < b->nlinks; i++)
        bpf_link__destroy(b->links[i]);
    if (b->threads)
        munmap(b->threads, b->threads_len);
    if (b->log)
        munmap(b->log, b->log_len);
    bpf_object__close(b->obj);
    free(b);
}

struct fb_bpf *fb_bpf_open(const char *path, int tgid, int tgid2, uint64_t log_cap, int stacks,
                           char *err, int errlen)
{
    libbpf_set_print(quiet);
    struct fb_bpf *b = calloc(1, sizeof(*b));
    if (!b) {
        seterr(err, errlen, "out of memory");
        return NULL;
    }
    b->obj = bpf_object__open_file(path, NULL);
    if (!b->obj || libbpf_get_error(b->obj)) {
        seterr(err, errlen, "cannot open BPF object %s: %s", path, strerror(errno));
        b->obj = NULL;
        free(b);
        return NULL;
    }
    struct bpf_map *log = bpf_object__find_map_by_name(b->obj, "translog");
    if (!log || bpf_map__set_max_entries(log, (uint32_t)log_cap)) {
        seterr(err, errlen, "cannot size the transition log to %llu entries", (unsigned long long)log_cap);
        goto fail;
    }
    b->log_cap = log_cap;
    b->stacks = stacks ? 1 : 0;
    if (bpf_object__load(b->obj)) {
        seterr(err, errlen, "BPF load refused (%s): the kernel cannot run the in-kernel tracer",
               strerror(errno));
        goto fail;
    }
    struct fb_bpf_cfg c = { .tgid = tgid, .tgid2 = tgid2, .log_cap = log_cap, .stacks = stacks ? 1 : 0 };
    __u32 k = 0;
    if (bpf_map_update_elem(bpf_map__fd(bpf_object__find_map_by_name(b->obj, "cfg")), &k, &c, BPF_ANY)) {
        seterr(err, errlen, "cannot write the BPF tracer's configuration: %s", strerror(errno));
        goto fail;
    }
    b->threads_len = page_round(sizeof(struct fb_bpf_thread) * FB_BPF_MAX_THREADS);
    b->log_len = page_round(sizeof(struct fb_bpf_trans) * log_cap);
    if (!(b->threads = map_mmap(b->obj, "threads", b->threads_len, err, errlen)) ||
        !(b->log = map_mmap(b->obj, "translog", b->log_len, err, errlen)))
        goto fail;
    struct bpf_program *p;
    bpf_object__for_each_program(p, b->obj) {
        if (b->nlinks == 16)
            break;
        struct bpf_link *l = bpf_program__attach(p);
        if (!l || libbpf_get_error(l)) {
            seterr(err, errlen, "cannot attach %s: %s", bpf_program__name(p), strerror(errno));
            goto fail;
        }
        b->links[b->nlinks++] = l;
    }
    return b;
fail:
    fb_bpf_close(b);
    return NULL;
}

int fb_bpf_built(char *why, int whylen)
{
    (void)why; (void)whylen;
    return 1;
}

/* which processes to record (a later second one: the network worker starts after
 * the tracer); both 0 stops recording, so the maps are read still */
int fb_bpf_configure(struct fb_bpf *b, int tgid, int tgid2)
{
    struct fb_bpf_cfg c = { .tgid = tgid, .tgid2 = tgid2, .log_cap = b->log_cap, .stacks = b->stacks };
    __u32 k = 0;
    return bpf_map_update_elem(bpf_map__fd(bpf_object__find_map_by_name(b->obj, "cfg")), &k, &c, BPF_ANY);
}

int fb_bpf_stop(struct fb_bpf *b)
{
    return fb_bpf_configure(b, 0, 0);
}

const void *fb_bpf_threads(struct fb_bpf *b) { return b->threads; }
const void *fb_bpf_log(struct fb_bpf *b) { return b->log; }

int fb_bpf_totals(struct fb_bpf *b, void *out)
{
    __u32 k = 0;
    return bpf_map_lookup_elem(bpf_map__fd(bpf_object__find_map_by_name(b->obj, "totals")), &k, out);
}

/* up to n (key, value) pairs of the lock map; returns how many */
int fb_bpf_locks(struct fb_bpf *b, void *keybuf, void *valbuf, int n)
{
    struct fb_bpf_lock_key *keys = keybuf;
    struct fb_bpf_lock_val *vals = valbuf;
    int fd = bpf_map__fd(bpf_object__find_map_by_name(b->obj, "locks"));
    struct fb_bpf_lock_key cur, next;
    int got = 0;
    void *prev = NULL;
    while (got < n && bpf_map_get_next_key(fd, prev, &next) == 0) {
        if (bpf_map_lookup_elem(fd, &next, &vals[got]) == 0)
            keys[got++] = next;
        cur = next;
        prev = &cur;
    }
    return got;
}

int fb_bpf_stack(struct fb_bpf *b, int32_t stackid, uint64_t *ips)
{
    int fd = bpf_map__fd(bpf_object__find_map_by_name(b->obj, "stacks"));
    return bpf_map_lookup_elem(fd, &stackid, ips);
}

int fb_bpf_lock_name(struct fb_bpf *b, uint64_t lock, char *name)
{
    int fd = bpf_map__fd(bpf_object__find_map_by_name(b->obj, "lock_names"));
    return bpf_map_lookup_elem(fd, &lock, name);
}

/* mmap_lock's counts over all CPUs (the map is per CPU): sums, and the largest max */
int fb_bpf_mm(struct fb_bpf *b, int write, void *out)
{
    __u32 k = write ? 1 : 0;
    int ncpu = libbpf_num_possible_cpus();
    if (ncpu <= 0)
        return ncpu ? ncpu : -EINVAL;
    struct fb_bpf_mm *per = calloc(ncpu, sizeof(*per));   /* 32 bytes: 8-aligned as the kernel lays them */
    if (!per)
        return -ENOMEM;
    int rc = bpf_map_lookup_elem(bpf_map__fd(bpf_object__find_map_by_name(b->obj, "mm_stats")), &k, per);
    struct fb_bpf_mm sum = {0};
    for (int i = 0; rc == 0 && i < ncpu; i++) {
        sum.acquisitions += per[i].acquisitions;
        sum.wait_ns += per[i].wait_ns;
        sum.contended += per[i].contended;
        if (per[i].max_ns > sum.max_ns)
            sum.max_ns = per[i].max_ns;
    }
    free(per);
    if (rc == 0)
        memcpy(out, &sum, sizeof(sum));
    return rc;
}

int fb_bpf_enable_stats(void)
{
    return bpf_enable_stats(BPF_STATS_RUN_TIME);
}

int fb_bpf_prog_stats(struct fb_bpf *b, uint64_t *run_ns, uint64_t *run_cnt)
{
    struct bpf_program *p;
    *run_ns = *run_cnt = 0;
    bpf_object__for_each_program(p, b->obj) {
        struct bpf_prog_info info;
        __u32 len = sizeof(info);
        memset(&info, 0, sizeof(info));
        if (bpf_obj_get_info_by_fd(bpf_program__fd(p), &info, &len))
            return -errno;
        *run_ns += info.run_time_ns;
        *run_cnt += info.run_cnt;
    }
    return 0;
}

const char *fb_bpf_prog_stat(struct fb_bpf *b, int i, uint64_t *run_ns, uint64_t *run_cnt)
{
    struct bpf_program *p;
    int k = 0;
    bpf_object__for_each_program(p, b->obj) {
        if (k++ != i)
            continue;
        struct bpf_prog_info info;
        __u32 len = sizeof(info);
        memset(&info, 0, sizeof(info));
        if (bpf_obj_get_info_by_fd(bpf_program__fd(p), &info, &len))
            return NULL;
        *run_ns = info.run_time_ns;
        *run_cnt = info.run_cnt;
        return bpf_program__name(p);
    }
    return NULL;
}

int fb_bpf_programs_named(const char *prefix)
{
    __u32 id = 0;
    int n = 0;
    size_t len = strlen(prefix);
    while (bpf_prog_get_next_id(id, &id) == 0) {
        int fd = bpf_prog_get_fd_by_id(id);
        if (fd < 0)
            continue;   /* freed meanwhile */
        struct bpf_prog_info info;
        __u32 ilen = sizeof(info);
        memset(&info, 0, sizeof(info));
        if (bpf_obj_get_info_by_fd(fd, &info, &ilen) == 0 && strncmp(info.name, prefix, len) == 0)
            n++;
        close(fd);
    }
    return n;
}
