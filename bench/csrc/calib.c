/* Host calibration kernels for the fingerprint: futex wake between two threads
 * and memory copy bandwidth. The KVM and userfaultfd parts of the fingerprint
 * run through the core's own run API (bench/nightly/fingerprint.py), so they
 * time exactly the paths the benchmark times. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "fb_calib_api.h"

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static long futex(_Atomic uint32_t *word, int op, uint32_t val)
{
    return syscall(SYS_futex, (uint32_t *)word, op, val, NULL, NULL, 0);
}

/* The turn counter is even when it is the timing thread's turn, odd for the
 * partner's. A thread whose turn it is not sleeps in FUTEX_WAIT (no spinning:
 * the point is the kernel's wake-up path, not a cache-line ping-pong). */
struct futex_pair {
    _Atomic uint32_t turn;
    uint64_t handoffs;          /* the partner's share: one per round trip */
};

static void wait_for_parity(_Atomic uint32_t *turn, uint32_t parity)
{
    for (;;) {
        uint32_t seen = atomic_load_explicit(turn, memory_order_acquire);
        if ((seen & 1u) == parity)
            return;
        futex(turn, FUTEX_WAIT_PRIVATE, seen);   /* EAGAIN if it moved meanwhile */
    }
}

static void hand_over(_Atomic uint32_t *turn)
{
    atomic_fetch_add_explicit(turn, 1, memory_order_release);
    futex(turn, FUTEX_WAKE_PRIVATE, 1);
}

static void *futex_partner(void *arg)
{
    struct futex_pair *pair = arg;
    for (uint64_t i = 0; i < pair->handoffs; i++) {
        wait_for_parity(&pair->turn, 1);
        hand_over(&pair->turn);
    }
    return NULL;
}

int fb_calib_futex(uint32_t round_trips, uint32_t batches, uint64_t *batch_ns,
                   char *err, int errlen)
{
    if (round_trips == 0 || batches == 0) {
        snprintf(err, errlen, "futex calibration needs at least one round trip and one batch");
        return -1;
    }
    struct futex_pair pair = { .handoffs = (uint64_t)round_trips * batches };
    atomic_init(&pair.turn, 0);
    pthread_t partner;
    int rc = pthread_create(&partner, NULL, futex_partner, &pair);
    if (rc) {
        snprintf(err, errlen, "futex calibration: pthread_create: %s", strerror(rc));
        return -1;
    }
    for (uint32_t b = 0; b < batches; b++) {
        uint64_t start = now_ns();
        for (uint32_t i = 0; i < round_trips; i++) {
            hand_over(&pair.turn);
            wait_for_parity(&pair.turn, 0);
        }
        batch_ns[b] = now_ns() - start;
    }
    pthread_join(partner, NULL);
    return 0;
}

int fb_calib_memcpy(uint64_t bytes, uint32_t batches, uint64_t *batch_ns,
                    char *err, int errlen)
{
    if (bytes == 0 || batches == 0) {
        snprintf(err, errlen, "memcpy calibration needs a size and at least one batch");
        return -1;
    }
    uint8_t *src = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (src == MAP_FAILED) {
        snprintf(err, errlen, "memcpy calibration: mmap %llu bytes: %s",
                 (unsigned long long)bytes, strerror(errno));
        return -1;
    }
    uint8_t *dst = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (dst == MAP_FAILED) {
        snprintf(err, errlen, "memcpy calibration: mmap %llu bytes: %s",
                 (unsigned long long)bytes, strerror(errno));
        munmap(src, bytes);
        return -1;
    }
    /* written, not just mapped: every page is a real private page before timing */
    memset(src, 0x5a, bytes);
    memset(dst, 0xa5, bytes);
    volatile uint8_t sink = 0;
    for (uint32_t b = 0; b < batches; b++) {
        src[(b * 4096u) % bytes] = (uint8_t)b;   /* the copy cannot be elided */
        uint64_t start = now_ns();
        memcpy(dst, src, bytes);
        batch_ns[b] = now_ns() - start;
        sink ^= dst[(b * 4096u) % bytes];
    }
    (void)sink;
    munmap(src, bytes);
    munmap(dst, bytes);
    return 0;
}

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int fb_calib_spin(uint64_t iterations, uint32_t batches, uint64_t *wall_ns,
                  uint64_t *cpu_ns, char *err, int errlen)
{
    if (iterations == 0 || batches == 0) {
        snprintf(err, errlen, "spin calibration needs iterations and at least one batch");
        return -1;
    }
    volatile uint64_t sink;
    for (uint32_t b = 0; b < batches; b++) {
        uint64_t x = 88172645463325252ull + b;
        uint64_t wall0 = now_ns(), cpu0 = thread_cpu_ns();
        for (uint64_t i = 0; i < iterations; i++) {   /* a dependency chain: no vectorizing */
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        cpu_ns[b] = thread_cpu_ns() - cpu0;
        wall_ns[b] = now_ns() - wall0;
        sink = x;
    }
    (void)sink;
    return 0;
}

int fb_probe_syscalls(uint32_t calls, uint32_t batches, uint64_t *batch_ns,
                      char *err, int errlen)
{
    if (calls == 0 || batches == 0) {
        snprintf(err, errlen, "syscall probe needs calls and at least one batch");
        return -1;
    }
    for (uint32_t b = 0; b < batches; b++) {
        uint64_t start = now_ns();
        for (uint32_t i = 0; i < calls; i++)
            syscall(SYS_getppid);   /* raw syscall: glibc may not cache it, but be sure */
        batch_ns[b] = now_ns() - start;
    }
    return 0;
}
