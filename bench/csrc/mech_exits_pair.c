/* A mechanism kept for the tests (tests/test_extending.py), proving that a
 * mechanism is one C file, one Python file and one registry line on each side:
 * memory-fault exits, where each fault also installs the page after it. */
#include "fb_core.h"

static int pair_setup(struct fb_run *run, char *err, int errlen)
{
    return fb_uffd_register_all(run, run->cfg.uffds, UFFD_FEATURE_SIGBUS, 1, err, errlen);
}

static int pair_on_fault(struct fb_run *run, struct fb_vcpu *v, uint64_t gpa, struct fb_fault *f)
{
    if (fb_resolve_page(run, v->ts, v->src_page, gpa, 1, f) < 0)
        return -1;
    uint64_t next = (gpa & ~(FB_PAGE - 1)) + FB_PAGE;
    if (next - run->demand_gpa >= run->demand_size)
        return 0;
    struct fb_fault extra = { .page = (next - run->demand_gpa) / FB_PAGE };   /* not the vCPU's fault */
    return fb_resolve_page(run, v->ts, v->src_page, next, 1, &extra) < 0 ? -1 : 0;
}

const struct fb_mech_ops fb_mech_exits_pair = {
    .name = "exits_pair",
    .version = 1,
    .flags = FB_MF_USES_UFFD | FB_MF_DELIVERS | FB_MF_ON_VCPU,
    .setup = pair_setup,
    .on_fault = pair_on_fault,
};
