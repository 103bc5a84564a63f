/* Host calibration: the C half of the host fingerprint (bench/nightly/fingerprint.py).
 *
 * Read twice, like fb_api.h: by the C compiler and by cffi's cdef parser, so it
 * holds only plain declarations and integer #defines. Bump FB_CALIB_VERSION when
 * a declaration changes; the Python side checks it at import.
 */
#define FB_CALIB_VERSION 1

/* Two threads hand a turn back and forth through one futex word: each hand-off
 * is a FUTEX_WAKE of a thread sleeping in FUTEX_WAIT. batch_ns[i] gets the
 * CLOCK_MONOTONIC time of `round_trips` round trips (two wakes each).
 * 0 on success, -1 with err filled. */
int fb_calib_futex(uint32_t round_trips, uint32_t batches, uint64_t *batch_ns,
                   char *err, int errlen);

/* memcpy between two `bytes`-long buffers, both written before timing starts
 * (no page faults in the timed part). batch_ns[i] gets the time of one copy. */
int fb_calib_memcpy(uint64_t bytes, uint32_t batches, uint64_t *batch_ns,
                    char *err, int errlen);

/* A fixed amount of integer work (`iterations` steps of a xorshift generator),
 * timed twice: wall_ns[i] on CLOCK_MONOTONIC, cpu_ns[i] on the thread's own CPU
 * clock. cpu/wall is the share of a CPU the thread got; cpu alone is the speed
 * of the core. */
int fb_calib_spin(uint64_t iterations, uint32_t batches, uint64_t *wall_ns,
                  uint64_t *cpu_ns, char *err, int errlen);

/* The CPU-state probe (bench/cpustate.py): `calls` getppid system calls, timed on
 * CLOCK_MONOTONIC, `batches` times; batch_ns[i] gets each batch's time. On this
 * machine kind a CPU whose hypervisor-side core is contended runs kernel-heavy
 * code about 1.3x slower while a register-only loop barely moves, so this probe
 * (kernel entry and exit, no fault path) sees the state and the spin loop does not.
 * FB_PROBE_VERSION changes when this declaration does; bench/native.py checks it. */
#define FB_PROBE_VERSION 1
int fb_probe_syscalls(uint32_t calls, uint32_t batches, uint64_t *batch_ns,
                      char *err, int errlen);
