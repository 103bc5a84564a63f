/* VM and vCPU set-up: the mechanism table, KVM probes, the guest's page
 * tables, segments and registers, memory slots, and fb_run_create in named steps. */
#include "fb_core.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <linux/futex.h>
#include <limits.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define FB_MECH_ENTRY(sym) &fb_mech_##sym,
static const struct fb_mech_ops *const mech_table[] = { FB_MECH_REGISTRY(FB_MECH_ENTRY) };
#define FB_MECH_COUNT_ONE(sym) + 1
enum { FB_MECHS = 0 FB_MECH_REGISTRY(FB_MECH_COUNT_ONE) };
_Static_assert(sizeof(mech_table) / sizeof(mech_table[0]) == FB_MECHS,
               "the mechanism table and the registry disagree");

int fb_mech_id(const char *name)
{
    for (int i = 0; i < FB_MECHS; i++)
        if (strcmp(mech_table[i]->name, name) == 0)
            return i;
    return -1;
}

int fb_mech_flags(uint32_t mech)
{
    return mech < FB_MECHS ? (int)mech_table[mech]->flags : -1;
}

/* ---------- KVM probes ---------- */

int fb_kvm_check_extension(int cap)
{
    int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int r = ioctl(fd, KVM_CHECK_EXTENSION, cap);
    int e = errno;
    close(fd);
    return r < 0 ? -e : r;
}

/* Try a memslot with the given flag on a scratch VM: how a proposed uAPI such as
 * KVM_MEM_USERFAULT or KVM_MEM_EXIT_ON_MISSING is detected. */
int fb_kvm_memslot_flag_supported(uint32_t flag)
{
    int kfd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kfd < 0)
        return -errno;
    int vm = ioctl(kfd, KVM_CREATE_VM, 0);
    if (vm < 0) {
        int e = errno;
        close(kfd);
        return -e;
    }
    void *mem = mmap(NULL, 2 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct kvm_userspace_memory_region r = {
        .slot = 0, .flags = flag, .guest_phys_addr = 0, .memory_size = 2 << 20,
        .userspace_addr = (uint64_t)(uintptr_t)mem,
    };
    int rc = ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r);
    munmap(mem, 2 << 20);
    close(vm);
    close(kfd);
    return rc == 0 ? 1 : 0;
}

/* ---------- VM construction ---------- */

static int setup_cpuid(struct fb_run *run, int vcpu_fd, char *err, int errlen)
{
    static struct kvm_cpuid2 *cached;
    static int nent;
    if (!cached) {
        for (nent = 64; nent <= 4096; nent *= 2) {
            struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + nent * sizeof(struct kvm_cpuid_entry2));
            c->nent = nent;
            if (ioctl(run->kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0) {
                cached = c;
                break;
            }
            free(c);
            if (errno != E2BIG) {
                fb_set_err(err, errlen, "KVM_GET_SUPPORTED_CPUID: %s", strerror(errno));
                return -1;
            }
        }
        if (!cached) {
            fb_set_err(err, errlen, "KVM_GET_SUPPORTED_CPUID: too many entries");
            return -1;
        }
    }
    if (ioctl(vcpu_fd, KVM_SET_CPUID2, cached) < 0) {
        fb_set_err(err, errlen, "KVM_SET_CPUID2: %s", strerror(errno));
        return -1;
    }
    return 0;
}

static void build_page_tables(struct fb_run *run)
{
    uint64_t top = run->demand_gpa + run->demand_size;
    uint64_t n_pd = (top + (1ULL << 30) - 1) >> 30;
    uint64_t *pml4 = (uint64_t *)(run->sys_mem + FB_GPA_PML4);
    uint64_t *pdpt = (uint64_t *)(run->sys_mem + FB_GPA_PDPT);
    /* P|RW|US everywhere: the guest runs at CPL 3, the only mode that runs natively here */
    pml4[0] = FB_GPA_PDPT | 0x7;
    for (uint64_t i = 0; i < n_pd; i++) {
        uint64_t *pd = (uint64_t *)(run->sys_mem + FB_GPA_PD + i * FB_PAGE);
        pdpt[i] = (FB_GPA_PD + i * FB_PAGE) | 0x7;
        for (int j = 0; j < 512; j++)
            pd[j] = ((i << 30) + ((uint64_t)j << 21)) | 0x87;   /* 2 MiB page */
    }
}

static void seg(struct kvm_segment *s, uint16_t sel, uint8_t type, int code)
{
    memset(s, 0, sizeof(*s));
    s->base = 0;
    s->limit = 0xffffffff;
    s->selector = sel;
    s->type = type;
    s->present = 1;
    s->dpl = 3;
    s->s = 1;
    s->g = 1;
    s->l = code ? 1 : 0;
    s->db = code ? 0 : 1;
}

static int setup_vcpu(struct fb_run *run, struct fb_vcpu *v, char *err, int errlen)
{
    struct kvm_sregs sr;
    struct kvm_regs regs;
    uint64_t tpv = run->cfg.touches_per_vcpu;

    v->fd = ioctl(run->vm_fd, KVM_CREATE_VCPU, v->id);
    if (v->fd < 0) {
        fb_set_err(err, errlen, "KVM_CREATE_VCPU %d: %s", v->id, strerror(errno));
        return -1;
    }
    v->kr = mmap(NULL, run->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
    if (v->kr == MAP_FAILED) {
        v->kr = NULL;
        fb_set_err(err, errlen, "mmap kvm_run: %s", strerror(errno));
        return -1;
    }
    if (setup_cpuid(run, v->fd, err, errlen))
        return -1;
    if (ioctl(v->fd, KVM_GET_SREGS, &sr) < 0) {
        fb_set_err(err, errlen, "KVM_GET_SREGS: %s", strerror(errno));
        return -1;
    }
    seg(&sr.cs, 0x1b, 11, 1);
    seg(&sr.ds, 0x23, 3, 0);
    sr.es = sr.fs = sr.gs = sr.ss = sr.ds;
    memset(&sr.tr, 0, sizeof(sr.tr));
    sr.tr.selector = 0x28;
    sr.tr.type = 11;
    sr.tr.present = 1;
    sr.tr.limit = 0x67;
    sr.cr0 = 0x80050033;   /* PG|AM|WP|NE|ET|MP|PE */
    sr.cr3 = FB_GPA_PML4;
    sr.cr4 = 0x20 | 0x200 | 0x400;   /* PAE|OSFXSR|OSXMMEXCPT; TSD clear: rdtsc allowed at CPL 3 */
    sr.efer = 0x500;   /* LME|LMA */
    if (ioctl(v->fd, KVM_SET_SREGS, &sr) < 0) {
        fb_set_err(err, errlen, "KVM_SET_SREGS: %s", strerror(errno));
        return -1;
    }
    memset(&regs, 0, sizeof(regs));
    regs.rip = FB_GPA_CODE;
    regs.rflags = 0x3002;   /* IOPL 3: `out` at CPL 3 exits to us */
    regs.rsi = v->table_gpa;
    regs.rcx = tpv;
    regs.rdi = v->times_gpa;
    int zero_fill = (run->ops->flags & FB_MF_ZERO_FILL) != 0;   /* the kernel gives zeroed pages */
    regs.r8 = zero_fill ? 0 : run->cfg.seed;
    regs.r9 = zero_fill ? 0 : ~0ULL;
    regs.r10 = zero_fill ? 0 : FB_PATTERN_MUL;   /* --verify full: the pattern's step */
    regs.r12 = 0;
    regs.r13 = v->id;
    if (ioctl(v->fd, KVM_SET_REGS, &regs) < 0) {
        fb_set_err(err, errlen, "KVM_SET_REGS: %s", strerror(errno));
        return -1;
    }
    if (!run->tsc_khz) {
        long khz = ioctl(v->fd, KVM_GET_TSC_KHZ, 0);
        if (khz > 0)   /* the error knob lets tests prove the clock checks can fail */
            run->tsc_khz = (uint64_t)((double)khz * (1.0 + run->cfg.tsc_khz_error_ppm / 1e6));
    }
    return 0;
}

static int set_slot(struct fb_run *run, int slot, uint64_t gpa, void *hva, uint64_t size,
                    char *err, int errlen)
{
    struct kvm_userspace_memory_region r = {
        .slot = slot, .flags = 0, .guest_phys_addr = gpa, .memory_size = size,
        .userspace_addr = (uint64_t)(uintptr_t)hva,
    };
    if (ioctl(run->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0) {
        fb_set_err(err, errlen, "KVM_SET_USER_MEMORY_REGION slot %d: %s", slot, strerror(errno));
        return -1;
    }
    return 0;
}

static uint64_t round_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

/* ---------- fb_run_create, step by step ---------- */

static int validate_config(const struct fb_config *cfg, char *err, int errlen)
{
    if (cfg->mech >= FB_MECHS) {
        fb_set_err(err, errlen, "unknown mechanism %u", cfg->mech);
        return -1;
    }
    if (!cfg->vcpus || cfg->mem_per_vcpu == 0 || cfg->mem_per_vcpu % (2ULL << 20)) {
        fb_set_err(err, errlen, "vcpus must be >= 1 and mem_per_vcpu a multiple of 2 MiB");
        return -1;
    }
    if (cfg->guest_code_len == 0 || cfg->guest_code_len > FB_GPA_DATA - FB_GPA_CODE) {
        fb_set_err(err, errlen, "guest code size %llu out of range",
                   (unsigned long long)cfg->guest_code_len);
        return -1;
    }
    if (cfg->fault_around > FB_MAX_FAULT_AROUND) {
        fb_set_err(err, errlen, "fault-around %u above %d pages", cfg->fault_around, FB_MAX_FAULT_AROUND);
        return -1;
    }
    return 0;
}

/* the layout, the VM, the system slot and the demand-paged memory */
static int map_memory(struct fb_run *run, char *err, int errlen)
{
    const struct fb_config *cfg = &run->cfg;
    run->demand_size = cfg->demand_bytes ? cfg->demand_bytes : (uint64_t)cfg->vcpus * cfg->mem_per_vcpu;
    if (run->demand_size % (2ULL << 20)) {
        fb_set_err(err, errlen, "guest memory size must be a multiple of 2 MiB");
        return -1;
    }
    run->npages = run->demand_size / FB_PAGE;
    run->sys_size = round_up(FB_GPA_DATA + (uint64_t)cfg->vcpus * cfg->touches_per_vcpu * 24, 2ULL << 20);
    run->demand_gpa = round_up(run->sys_size, 1ULL << 30);
    if ((run->demand_gpa + run->demand_size) >> 30 > (FB_GPA_CODE - FB_GPA_PD) / FB_PAGE) {
        fb_set_err(err, errlen, "guest memory too large for the page-table area");
        return -1;
    }

    run->done_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    run->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    run->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (run->kvm_fd < 0) {
        fb_set_err(err, errlen, "/dev/kvm: %s", strerror(errno));
        return -1;
    }
    run->vm_fd = ioctl(run->kvm_fd, KVM_CREATE_VM, 0);
    if (run->vm_fd < 0) {
        fb_set_err(err, errlen, "KVM_CREATE_VM: %s", strerror(errno));
        return -1;
    }
    run->run_size = ioctl(run->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);

    run->sys_mem = mmap(NULL, run->sys_size, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (run->sys_mem == MAP_FAILED) {
        run->sys_mem = NULL;
        fb_set_err(err, errlen, "mmap system slot (%llu bytes): %s",
                   (unsigned long long)run->sys_size, strerror(errno));
        return -1;
    }
    if (cfg->resolve == FB_RESOLVE_CONTINUE) {
        run->memfd = memfd_create("faultbench-guest", MFD_CLOEXEC);
        if (run->memfd < 0 || ftruncate(run->memfd, run->demand_size) < 0) {
            fb_set_err(err, errlen, "memfd for guest memory: %s", strerror(errno));
            return -1;
        }
        run->demand = mmap(NULL, run->demand_size, PROT_READ | PROT_WRITE, MAP_SHARED, run->memfd, 0);
        run->alias = mmap(NULL, run->demand_size, PROT_READ | PROT_WRITE, MAP_SHARED, run->memfd, 0);
        if (run->demand == MAP_FAILED || run->alias == MAP_FAILED) {
            if (run->demand == MAP_FAILED) run->demand = NULL;
            if (run->alias == MAP_FAILED) run->alias = NULL;
            fb_set_err(err, errlen, "mmap shared guest memory: %s", strerror(errno));
            return -1;
        }
        /* MINOR faults only happen for pages already in the page cache: put them
         * there through the non-faulting mapping, as pre-copy would */
        if (madvise(run->alias, run->demand_size, MADV_POPULATE_WRITE) < 0) {
            fb_set_err(err, errlen, "populating shared guest memory: %s", strerror(errno));
            return -1;
        }
    } else {
        run->demand = mmap(NULL, run->demand_size, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (run->demand == MAP_FAILED) {
            run->demand = NULL;
            fb_set_err(err, errlen, "mmap guest memory (%llu bytes): %s",
                       (unsigned long long)run->demand_size, strerror(errno));
            return -1;
        }
        madvise(run->demand, run->demand_size, MADV_NOHUGEPAGE);   /* 4 KiB faults */
    }
    return 0;
}

/* every page starts out needing its content; precopy-stale marks clean ones */
static int init_page_states(struct fb_run *run, char *err, int errlen)
{
    const struct fb_config *cfg = &run->cfg;
    run->pstate = malloc(run->npages);
    run->page_installs = calloc(run->npages, sizeof(uint32_t));
    if (!run->pstate || !run->page_installs) {
        fb_set_err(err, errlen, "out of memory for page states");
        return -1;
    }
    memset(run->pstate, FB_PAGE_STALE, run->npages);
    if (!cfg->stale_map || !(run->ops->flags & FB_MF_DELIVERS))
        return 0;
    if (cfg->resolve != FB_RESOLVE_CONTINUE) {
        fb_set_err(err, errlen, "precopy-stale needs shared memory (resolve continue)");
        return -1;
    }
    run->precopy = 1;
    for (uint64_t p = 0; p < run->npages; p++)
        run->pstate[p] = cfg->stale_map[p] ? FB_PAGE_STALE : FB_PAGE_CLEAN;
    /* pre-copy left every page in the page cache: clean ones with the right
     * content, stale ones with an older version that must be fetched again */
    for (uint64_t p = 0; p < run->npages; p++) {
        uint64_t *w = (uint64_t *)(run->alias + p * FB_PAGE);
        fb_fill_page(run, run->alias + p * FB_PAGE, p);
        if (run->pstate[p] == FB_PAGE_STALE)
            w[1] = ~w[1];   /* an older version: its seed word is wrong */
    }
    return 0;
}

/* guest code, page tables, each vCPU's touch table, timing buffer and fault log */
static int build_vcpus(struct fb_run *run, uint64_t src_bytes, char *err, int errlen)
{
    const struct fb_config *cfg = &run->cfg;
    uint64_t tpv = cfg->touches_per_vcpu;
    memcpy(run->sys_mem + FB_GPA_CODE, cfg->guest_code, cfg->guest_code_len);
    build_page_tables(run);
    run->vcpus = calloc(cfg->vcpus, sizeof(struct fb_vcpu));
    run->tid_map = calloc(cfg->vcpus, sizeof(int64_t));
    if (!run->vcpus || !run->tid_map) {
        fb_set_err(err, errlen, "out of memory for %u vCPUs", cfg->vcpus);
        return -1;
    }
    for (uint32_t i = 0; i < cfg->vcpus; i++)
        run->vcpus[i].fd = -1;   /* before any failure: destroy closes what is >= 0 */
    for (uint32_t i = 0; i < cfg->vcpus; i++) {
        struct fb_vcpu *v = &run->vcpus[i];
        v->run = run;
        v->id = i;
        /* a vCPU faults at most once per page it touches first; a few spare
         * records for a fault reported twice */
        uint64_t firsts = 0;
        for (uint64_t t = 0; t < tpv; t++)
            firsts += (cfg->touches[i * tpv + t] & FB_TOUCH_FIRST) != 0;
        v->fault_log_cap = firsts + 16;
        v->fault_log = calloc(v->fault_log_cap, sizeof(struct fb_fault));
        v->src_page = aligned_alloc(FB_PAGE, src_bytes);
        if (!v->fault_log || !v->src_page) {
            fb_set_err(err, errlen, "out of memory for vCPU %u", i);
            return -1;
        }
        memset(v->src_page, 0, src_bytes);
        v->table_gpa = FB_GPA_DATA + (uint64_t)i * tpv * 8;
        v->times_gpa = FB_GPA_DATA + (uint64_t)cfg->vcpus * tpv * 8 + (uint64_t)i * tpv * 16;
        uint64_t *tab = (uint64_t *)(run->sys_mem + v->table_gpa);
        for (uint64_t t = 0; t < tpv; t++) {
            uint64_t e = cfg->touches[i * tpv + t];
            uint64_t off = e & ~(FB_PAGE - 1);
            if (off >= run->demand_size) {
                fb_set_err(err, errlen, "touch table entry %llu of vCPU %u outside guest memory",
                           (unsigned long long)t, i);
                return -1;
            }
            tab[t] = (run->demand_gpa + off) | (e & (FB_PAGE - 1));   /* tables hold offsets */
        }
    }
    if (set_slot(run, 0, 0, run->sys_mem, run->sys_size, err, errlen) ||
        set_slot(run, 1, run->demand_gpa, run->demand, run->demand_size, err, errlen))
        return -1;
    for (uint32_t i = 0; i < cfg->vcpus; i++)
        if (setup_vcpu(run, &run->vcpus[i], err, errlen))
            return -1;
    if (!run->tsc_khz) {
        fb_set_err(err, errlen, "KVM_GET_TSC_KHZ gave no TSC frequency");
        return -1;
    }
    return 0;
}

/* thread stats (one slot per vCPU, then the mechanism's readers) and the readers */
static int build_readers(struct fb_run *run, uint64_t src_bytes, char *err, int errlen)
{
    const struct fb_config *cfg = &run->cfg;
    unsigned flags = run->ops->flags;
    run->nreaders = flags & FB_MF_READERS_PER_UFFD ? (int)(cfg->uffds * cfg->readers)
                  : flags & FB_MF_RESOLVERS ? (int)cfg->readers : 0;
    run->nstats = cfg->vcpus + run->nreaders;
    run->stats = calloc(run->nstats, sizeof(struct fb_thread_stats));
    if (!run->stats) {
        fb_set_err(err, errlen, "out of memory for thread statistics");
        return -1;
    }
    for (uint32_t i = 0; i < cfg->vcpus; i++) {
        run->vcpus[i].ts = &run->stats[i];
        run->stats[i].role = FB_ROLE_VCPU;
        run->stats[i].index = i;
        run->stats[i].pinned_cpu = cfg->vcpu_cpu ? cfg->vcpu_cpu[i] : FB_CPU_FREE;
        run->stats[i].uffd_index = -1;
    }
    if (!run->nreaders)
        return 0;
    run->readers = calloc(run->nreaders, sizeof(struct fb_reader));
    if (!run->readers) {
        fb_set_err(err, errlen, "out of memory for %d readers", run->nreaders);
        return -1;
    }
    for (int i = 0; i < run->nreaders; i++) {
        struct fb_reader *r = &run->readers[i];
        r->run = run;
        r->index = i;
        r->epfd = -1;
        r->ts = &run->stats[cfg->vcpus + i];
        r->ts->role = flags & FB_MF_RESOLVERS ? FB_ROLE_RESOLVER : FB_ROLE_READER;
        r->ts->index = i;
        r->ts->pinned_cpu = (uint32_t)i < cfg->nreader_cpu ? cfg->reader_cpu[i] : FB_CPU_FREE;
        r->uffd_index = flags & FB_MF_READERS_PER_UFFD ? i / (int)cfg->readers : 0;
        r->ts->uffd_index = r->uffd_index;
        r->src_page = aligned_alloc(FB_PAGE, src_bytes);
        if (!r->src_page) {
            fb_set_err(err, errlen, "out of memory for reader %d", i);
            return -1;
        }
        memset(r->src_page, 0, src_bytes);
    }
    return 0;
}

struct fb_run *fb_run_create(const struct fb_config *cfg, char *err, int errlen)
{
    if (validate_config(cfg, err, errlen))
        return NULL;
    struct fb_run *run = calloc(1, sizeof(*run));
    if (!run) {
        fb_set_err(err, errlen, "out of memory for the run");
        return NULL;
    }
    run->cfg = *cfg;
    run->ops = mech_table[cfg->mech];
    run->kvm_fd = run->vm_fd = run->memfd = run->done_efd = run->stop_efd = -1;
    for (int i = 0; i < FB_MAX_UFFDS; i++)
        run->uffd[i] = -1;
    pthread_mutex_init(&run->err_lock, NULL);
    fb_install_signal_handler();

    uint64_t src_bytes = (cfg->fault_around ? cfg->fault_around : 1) * FB_PAGE;   /* COPY source */
    if (map_memory(run, err, errlen) || init_page_states(run, err, errlen) ||
        build_vcpus(run, src_bytes, err, errlen) || build_readers(run, src_bytes, err, errlen) ||
        (run->ops->setup && run->ops->setup(run, err, errlen))) {
        fb_run_destroy(run);   /* undoes whatever the steps did */
        return NULL;
    }
    return run;
}
