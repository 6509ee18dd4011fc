/*
 * What the benchmark programs in bench/ share: failure reports, the clock,
 * command-line options, medians and ratios of runs, CPU pinning, and (for
 * bench_ipc and bench_data_pipe) the child process they measure against.
 *
 * Only code that means the same in every program lives here; what a program
 * measures, and how, stays in its own file. Everything here is for the
 * program's main thread unless it says otherwise, and any check that fails
 * aborts the program: a benchmark that got a wrong answer has measured
 * nothing.
 */
#ifndef CMOJO_BENCH_UTIL_H
#define CMOJO_BENCH_UTIL_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <unistd.h>

#include "mojo/public/c/system/types.h"

/* ---------------------------------------------------------------- failures */

/*
 * What a failure message names: the program ("bench_ipc"; main sets it
 * first), and in a two-process benchmark the process's role ("parent" or
 * "child"; NULL in a one-process one) and the case being run.
 */
/* Room for "case KIND SIZE B x COUNT" with every kind name and 64-bit count. */
#define BENCH_CASE_LEN 64
extern const char *bench_name;
extern const char *bench_role;
extern char bench_current_case[BENCH_CASE_LEN];

/* Sets bench_current_case to "case KIND SIZE B x COUNT". */
void bench_set_case(const char *kind, uint32_t size, uint64_t count);

/* Prints "NAME (ROLE, CASE): " (or "NAME: " without a role) on stderr. */
void bench_print_prefix(void);

/* The failure half of BENCH_CHECK and BENCH_MOJO: prints and aborts. */
__attribute__((noreturn, cold)) void bench_check_failed(const char *file, int line,
                                                        const char *what);
__attribute__((noreturn, cold)) void bench_mojo_failed(const char *file, int line, const char *call,
                                                       MojoResult rv);

/* Aborts with a message naming x when x is false. Callable from any thread. */
#define BENCH_CHECK(x)                                                                             \
    do {                                                                                           \
        if (!(x))                                                                                  \
            bench_check_failed(__FILE__, __LINE__, #x);                                            \
    } while (0)

/* Aborts with a message naming call when it returns anything but MOJO_RESULT_OK. */
#define BENCH_MOJO(call)                                                                           \
    do {                                                                                           \
        MojoResult bench_rv_ = (call);                                                             \
        if (bench_rv_ != MOJO_RESULT_OK)                                                           \
            bench_mojo_failed(__FILE__, __LINE__, #call, bench_rv_);                               \
    } while (0)

/* Tells the compiler p's memory is used, so the baselines are not optimised away. */
#define BENCH_ESCAPE(p) __asm__ __volatile__("" : : "g"(p) : "memory")

/* ------------------------------------------------------------ time, data */

/* CLOCK_MONOTONIC in nanoseconds. Callable from any thread. */
uint64_t bench_now_ns(void);

/* Fills buf with the payload pattern every program sends (byte i is i * 31 + 7). */
void bench_fill_pattern(void *buf, size_t len);

/* "8 B", "64 KB", "1 MB": size in the largest unit (of 1024) it is a multiple of. */
const char *bench_size_label(uint32_t size, char *buf, size_t len);

/* --------------------------------------------------------------- options */

/* Timed runs per measurement at most; the median of an odd number of runs is a real run. */
#define BENCH_MAX_RUNS 31u

/* One command-line option: a flag, or one followed by a number in [min, max]. */
typedef struct bench_option {
    const char *name; /* "--runs"; NULL ends a table */
    bool *given;      /* set to true when the option is present (may be NULL with value) */
    uint64_t *value;  /* NULL: a flag; else where the number goes */
    uint64_t min, max;
} bench_option;

/*
 * Arguments no table entry takes (--single KIND SIZE ...): how many of
 * argv[i..] it took (at least 1), or 0 when argv[i] is not its own or its
 * values are bad.
 */
typedef int (*bench_other_fn)(int argc, char **argv, int i);

/*
 * Parses argv[1..] by opts (then other, which may be NULL; --help and -h
 * are understood too). Returns -1 when the program should go on, or the
 * status main should return: 0 after --help (usage on stdout), 2 after a
 * bad argument (said on stderr, with usage).
 */
int bench_parse_args(int argc, char **argv, const bench_option *opts, bench_other_fn other,
                     void (*usage)(FILE *f, const char *argv0));

/* A decimal number in [min, max] (no sign, nothing after it); *out untouched on failure. */
bool bench_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* ------------------------------------------------------------- statistics */

/*
 * The median of runs samples (runs odd, at most BENCH_MAX_RUNS; samples
 * left as they are) and, unless best is NULL, the smallest.
 */
uint64_t bench_median_u64(const uint64_t *samples, unsigned runs, uint64_t *best);

/*
 * The median of runs per-run ratios subject/baseline, with the smallest in
 * *lo and the largest in *hi. Sorts ratios.
 */
double bench_median_ratio(double *ratios, unsigned runs, double *lo, double *hi);

/* ----------------------------------------------------------------- CPUs */

/* The n-th CPU this thread may run on (counting from 0; the last one if there are fewer). */
int bench_allowed_cpu(int n);

/* Pins this thread (and so every thread and process started from it later) to cpu. */
void bench_pin_to_cpu(int cpu);

/* ------------------------------------------------ raw sockets (inline: hot) */

/* Writes all len bytes to fd (a closed peer is a failure). Callable from any thread. */
static inline void bench_write_full(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        BENCH_CHECK(n > 0);
        p += n;
        len -= (size_t)n;
    }
}

/* Reads exactly len bytes from fd (a closed peer is a failure). Callable from any thread. */
static inline void bench_read_full(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        BENCH_CHECK(n > 0); /* 0: the peer died */
        p += n;
        len -= (size_t)n;
    }
}

/* ------------------------------------------------- the two-process benches */

/*
 * The parent's side of a child process started by bench_spawn_child: the
 * child runs this program again and accepts an invitation carrying one
 * message pipe, "boot", for commands; raw_fd is a plain socketpair between
 * the two for the baselines.
 */
typedef struct bench_child {
    pid_t pid;
    MojoHandle boot;
    int raw_fd;
} bench_child;

/*
 * Whether argv is a child's command line, "PROG child BOOT_FD RAW_FD" and
 * then n_extra arguments of the program's own (argv[4..]). If so, sets the
 * role to "child" and the two descriptors.
 */
bool bench_is_child(int argc, char **argv, int n_extra, int *boot_fd, int *raw_fd);

/*
 * In the child (after MojoInitialize): accepts the parent's invitation on
 * boot_fd and returns the "boot" pipe. The child dies with its parent, and
 * a failed connection to the parent is reported on stderr.
 */
MojoHandle bench_accept_parent(int boot_fd);

/*
 * In the parent (after MojoInitialize): starts this program as the child,
 * with extra (NULL-terminated, at most 4; may be NULL) after its
 * descriptors, and sends it the invitation. Unless bench_stop_child has
 * been called, a failed connection to the child is reported on stderr.
 */
void bench_spawn_child(bench_child *ch, const char *const *extra);

/*
 * Sends quit (len bytes, no handle) on the boot pipe, waits for the child to
 * exit, and closes boot and raw_fd. False (and a message) when the child did
 * not exit with status 0.
 */
bool bench_stop_child(bench_child *ch, const void *quit, uint32_t len);

/*
 * Writes a message of len bytes from src and, unless h is MOJO_HANDLE_INVALID,
 * handle h (which the message then owns). Callable from any thread.
 */
void bench_write_msg(MojoHandle pipe, const void *src, uint32_t len, MojoHandle h);

/* Whether bench_marker makes its system call (for --single under strace). */
extern bool bench_markers;

/* When bench_markers is set, calls getppid(): a marker strace scripts look for. */
void bench_marker(void);

#endif /* CMOJO_BENCH_UTIL_H */
