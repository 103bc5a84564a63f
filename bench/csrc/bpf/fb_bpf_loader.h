#ifndef FB_BPF_LOADER_H
#define FB_BPF_LOADER_H
#include <stdint.h>
struct fb_bpf;
struct fb_bpf *fb_bpf_open(const char *path, int tgid, int tgid2, uint64_t log_cap, int stacks,
                           char *err, int errlen);
int fb_bpf_stop(struct fb_bpf *b);
void fb_bpf_close(struct fb_bpf *b);
const struct fb_bpf_thread *fb_bpf_threads(struct fb_bpf *b);
const struct fb_bpf_trans *fb_bpf_log(struct fb_bpf *b);
int fb_bpf_totals(struct fb_bpf *b, struct fb_bpf_totals *out);
int fb_bpf_locks(struct fb_bpf *b, struct fb_bpf_lock_key *keys, struct fb_bpf_lock_val *vals, int n);
int fb_bpf_stack(struct fb_bpf *b, int32_t stackid, uint64_t *ips);
int fb_bpf_lock_name(struct fb_bpf *b, uint64_t lock, char *name);
int fb_bpf_mm(struct fb_bpf *b, int write, struct fb_bpf_mm *out);
#endif
