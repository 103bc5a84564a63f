/* Baselines: `none` (no userfaultfd: the kernel zero-fills, the floor of the
 * fault path) and `prefault` (every page present before the guest starts: the
 * guest loop alone). */
#include "fb_core.h"
#include <string.h>

static int prefault_setup(struct fb_run *run, char *err, int errlen)
{
    (void)err; (void)errlen;
    /* writing each page's content populates it, so the guest never faults */
    for (uint64_t off = 0; off < run->demand_size; off += FB_PAGE) {
        uint64_t hdr[2] = { run->demand_gpa + off, fb_page_seed(run, off / FB_PAGE) };
        memcpy(run->demand + off, hdr, sizeof(hdr));
    }
    run->pages_installed = run->npages;
    for (uint64_t p = 0; p < run->npages; p++)
        run->page_installs[p] = 1;
    return 0;
}

const struct fb_mech_ops fb_mech_none = { .name = "none" };
const struct fb_mech_ops fb_mech_prefault = { .name = "prefault", .setup = prefault_setup };
