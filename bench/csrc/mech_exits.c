/* Memory-fault exits: KVM_RUN returns to the vCPU thread instead of sleeping
 * (UFFD_FEATURE_SIGBUS gives -EFAULT on this kernel); the vCPU thread fetches,
 * installs with DONTWAKE (nobody sleeps on the queue) and re-enters. The core
 * finds the address (kvm_run.memory_fault where the kernel fills it, else the
 * guest's address register). */
#include "fb_core.h"

static int exits_setup(struct fb_run *run, char *err, int errlen)
{
    return fb_uffd_register_all(run, run->cfg.uffds, UFFD_FEATURE_SIGBUS, 1, err, errlen);
}

static int exits_on_fault(struct fb_run *run, struct fb_vcpu *v, uint64_t gpa, struct fb_fault *f)
{
    return fb_resolve_page(run, v->ts, v->src_page, gpa, 1, f) < 0 ? -1 : 0;
}

const struct fb_mech_ops fb_mech_exits = {
    .name = "exits",
    .version = 1,
    .flags = FB_MF_USES_UFFD | FB_MF_DELIVERS | FB_MF_ON_VCPU,
    .setup = exits_setup,
    .on_fault = exits_on_fault,
};
