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

/* `none` expects zero-filled pages; the corruption knobs prove that check works
 * by leaving non-zero content in every Nth page (its header, or its last byte) */
static int none_setup(struct fb_run *run, char *err, int errlen)
{
    (void)err; (void)errlen;
    if (run->cfg.corrupt_every)
        for (uint64_t p = 0; p < run->npages; p += run->cfg.corrupt_every)
            fb_fill_page(run, run->demand + p * FB_PAGE, p);
    /* a torn zero page: only its last bytes are not zero (only --verify full sees it) */
    if (run->cfg.corrupt_tail_every)
        for (uint64_t p = 0; p < run->npages; p += run->cfg.corrupt_tail_every)
            run->demand[p * FB_PAGE + FB_PAGE - 1] = 0xff;
    return 0;
}

const struct fb_mech_ops fb_mech_none = {
    .name = "none", .version = 1, .flags = FB_MF_ZERO_FILL, .setup = none_setup,
};
const struct fb_mech_ops fb_mech_prefault = {
    .name = "prefault", .version = 1, .flags = 0, .setup = prefault_setup,
};
