/* userfaultfd helpers shared by the uffd, exits and async mechanisms: opening
 * one, asking the kernel's features, registering the demand region with one or
 * more of them. */
#include "fb_core.h"
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>

int fb_uffd_register_all(struct fb_run *run, int nuffds, uint64_t features, int nonblock,
                         char *err, int errlen)
{
    int minor = run->cfg.resolve == FB_RESOLVE_CONTINUE;
    if (nuffds < 1 || nuffds > FB_MAX_UFFDS) {
        fb_set_err(err, errlen, "userfaultfd count %d out of range 1..%d", nuffds, FB_MAX_UFFDS);
        return -1;
    }
    if (minor)
        features |= UFFD_FEATURE_MINOR_SHMEM;
    run->nuffds = nuffds;
    run->uffd_span = (run->demand_size / nuffds + FB_PAGE - 1) / FB_PAGE * FB_PAGE;
    for (int k = 0; k < nuffds; k++) {
        uint64_t start = (uint64_t)k * run->uffd_span;
        uint64_t len = run->uffd_span;
        if (start >= run->demand_size) {
            fb_set_err(err, errlen, "%d userfaultfds leave some empty", nuffds);
            return -1;
        }
        if (start + len > run->demand_size)
            len = run->demand_size - start;
        run->uffd[k] = fb_uffd_open(run, features, nonblock, err, errlen);
        if (run->uffd[k] < 0)
            return -1;
        struct uffdio_register reg = {
            .range = { .start = (uint64_t)(uintptr_t)(run->demand + start), .len = len },
            .mode = minor ? UFFDIO_REGISTER_MODE_MINOR : UFFDIO_REGISTER_MODE_MISSING,
        };
        if (ioctl(run->uffd[k], UFFDIO_REGISTER, &reg) < 0) {
            fb_set_err(err, errlen, "UFFDIO_REGISTER (%s): %s", minor ? "MINOR" : "MISSING",
                       strerror(errno));
            return -1;
        }
        uint64_t need = minor ? (1ULL << _UFFDIO_CONTINUE) : (1ULL << _UFFDIO_COPY);
        if (!(reg.ioctls & need)) {
            fb_set_err(err, errlen, "userfaultfd range lacks %s", minor ? "UFFDIO_CONTINUE" : "UFFDIO_COPY");
            return -1;
        }
    }
    return 0;
}

/* ---------- userfaultfd helpers ---------- */

int fb_uffd_open(struct fb_run *run, uint64_t features, int nonblock, char *err, int errlen)
{
    (void)run;
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | (nonblock ? O_NONBLOCK : 0));
    if (fd < 0) {
        fb_set_err(err, errlen, "userfaultfd(2): %s", strerror(errno));
        return -1;
    }
    struct uffdio_api api = { .api = UFFD_API, .features = features };
    if (ioctl(fd, UFFDIO_API, &api) < 0) {
        fb_set_err(err, errlen, "UFFDIO_API features 0x%llx: %s",
                   (unsigned long long)features, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int64_t fb_uffd_features(void)
{
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    struct uffdio_api api = { .api = UFFD_API, .features = 0 };
    int rc = ioctl(fd, UFFDIO_API, &api);
    int e = errno;
    close(fd);
    return rc < 0 ? -e : (int64_t)api.features;
}
