/* The in-kernel tracer's loader (fb_bpf_loader.c), as the core exports it to Python
 * through cffi (this file is also cffi's cdef: plain C types only; the buffers are the
 * layouts of fb_trace_shared.h, read in Python as numpy dtypes). */
#ifndef FB_BPF_LOADER_H
#define FB_BPF_LOADER_H
#include <stdint.h>
struct fb_bpf;
/* 1: this build links libbpf and can load the tracer; 0: it cannot, and `why` says why */
int fb_bpf_built(char *why, int whylen);
struct fb_bpf *fb_bpf_open(const char *path, int tgid, int tgid2, uint64_t log_cap, int stacks,
                           char *err, int errlen);
int fb_bpf_configure(struct fb_bpf *b, int tgid, int tgid2);   /* 0 and 0: stop recording */
int fb_bpf_stop(struct fb_bpf *b);
void fb_bpf_close(struct fb_bpf *b);
const void *fb_bpf_threads(struct fb_bpf *b);   /* struct fb_bpf_thread[FB_BPF_MAX_THREADS] */
const void *fb_bpf_log(struct fb_bpf *b);       /* struct fb_bpf_trans[log_cap] */
int fb_bpf_totals(struct fb_bpf *b, void *out);  /* struct fb_bpf_totals */
int fb_bpf_locks(struct fb_bpf *b, void *keys, void *vals, int n);
int fb_bpf_stack(struct fb_bpf *b, int32_t stackid, uint64_t *ips);
int fb_bpf_lock_name(struct fb_bpf *b, uint64_t lock, char *name);
int fb_bpf_mm(struct fb_bpf *b, int write, void *out);   /* struct fb_bpf_mm */
/* the kernel's run-time statistics of BPF programs, on while the returned fd is open
 * (BPF_ENABLE_STATS: closing it, or the process's exit, turns them off again) */
int fb_bpf_enable_stats(void);
/* the tracer's programs together: ns run and times run (while stats are on) */
int fb_bpf_prog_stats(struct fb_bpf *b, uint64_t *run_ns, uint64_t *run_cnt);
/* the same for program i (0..): its name, or NULL past the last */
const char *fb_bpf_prog_stat(struct fb_bpf *b, int i, uint64_t *run_ns, uint64_t *run_cnt);
/* how many BPF programs loaded in the kernel (anyone's) have a name starting with
 * `prefix`: what a test counts to see that nothing of the tracer was left behind */
int fb_bpf_programs_named(const char *prefix);
#endif
