/* The core built without libbpf (bench/_build.py could not find or install clang and
 * libbpf-dev): the loader's entry points say so, and the runner falls back to the
 * tracefs text path, recording which tracer produced its data and why. */
#include <stdio.h>
#include "fb_bpf_loader.h"

#ifndef FB_BPF_MISSING
#define FB_BPF_MISSING "built without libbpf"
#endif

int fb_bpf_built(char *why, int whylen)
{
    snprintf(why, whylen, "%s", FB_BPF_MISSING);
    return 0;
}

struct fb_bpf *fb_bpf_open(const char *path, int tgid, int tgid2, uint64_t log_cap, int stacks,
                           char *err, int errlen)
{
    (void)path; (void)tgid; (void)tgid2; (void)log_cap; (void)stacks;
    snprintf(err, errlen, "%s", FB_BPF_MISSING);
    return NULL;
}

/* the rest is unreachable without a tracer from fb_bpf_open */
int fb_bpf_configure(struct fb_bpf *b, int tgid, int tgid2) { (void)b; (void)tgid; (void)tgid2; return -1; }
int fb_bpf_stop(struct fb_bpf *b) { (void)b; return -1; }
void fb_bpf_close(struct fb_bpf *b) { (void)b; }
const void *fb_bpf_threads(struct fb_bpf *b) { (void)b; return NULL; }
const void *fb_bpf_log(struct fb_bpf *b) { (void)b; return NULL; }
int fb_bpf_totals(struct fb_bpf *b, void *out) { (void)b; (void)out; return -1; }
int fb_bpf_locks(struct fb_bpf *b, void *k, void *v, int n) { (void)b; (void)k; (void)v; (void)n; return 0; }
int fb_bpf_stack(struct fb_bpf *b, int32_t id, uint64_t *ips) { (void)b; (void)id; (void)ips; return -1; }
int fb_bpf_lock_name(struct fb_bpf *b, uint64_t l, char *n) { (void)b; (void)l; (void)n; return -1; }
int fb_bpf_mm(struct fb_bpf *b, int w, void *out) { (void)b; (void)w; (void)out; return -1; }
int fb_bpf_enable_stats(void) { return -1; }
int fb_bpf_prog_stats(struct fb_bpf *b, uint64_t *ns, uint64_t *cnt) { (void)b; *ns = *cnt = 0; return -1; }
const char *fb_bpf_prog_stat(struct fb_bpf *b, int i, uint64_t *ns, uint64_t *cnt) { (void)b; (void)i; *ns = *cnt = 0; return NULL; }
int fb_bpf_programs_named(const char *prefix) { (void)prefix; return 0; }
