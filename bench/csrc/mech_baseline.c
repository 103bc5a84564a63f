/* Baselines: `none` (no userfaultfd: the kernel zero-fills, the floor of the
 * fault path) and `prefault` (every page present before the guest starts: the
 * guest loop alone). */
#include "fb_core.h"
#include <string.h>

static int prefault_setup(struct fb_run *run, char *err, int errlen)
{
    (void)err; (void)errlen;
    /* writing each page's content populates it, so the guest never faults */
    for (uint64_t p = 0; p < run->npages; p++)
        fb_fill_page(run, run->demand + p * FB_PAGE, p);
    run->pages_installed = run->npages;
    for (uint64_t p = 0; p < run->npages; p++)
        run->page_installs[p] = 1;
    return 0;
}

/* `none` expects zero-filled pages; the corruption knob proves that check works
 * by leaving non-zero content (this page's header) in every Nth page */
static int none_setup(struct fb_run *run, char *err, int errlen)
{
    (void)err; (void)errlen;
    if (run->cfg.corrupt_every)
        for (uint64_t p = 0; p < run->npages; p += run->cfg.corrupt_every)
            fb_fill_page(run, run->demand + p * FB_PAGE, p);
    return 0;
}

const struct fb_mech_ops fb_mech_none = { .name = "none", .setup = none_setup };
const struct fb_mech_ops fb_mech_prefault = { .name = "prefault", .setup = prefault_setup };
