/* See bench_util.h. */
#include "bench_util.h"

#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "mojo/public/c/system/core.h"

/* ---------------------------------------------------------------- failures */

const char *bench_name = "bench";
const char *bench_role;
char bench_current_case[BENCH_CASE_LEN] = "setup";

void bench_set_case(const char *kind, uint32_t size, uint64_t count)
{
    snprintf(bench_current_case, sizeof(bench_current_case), "case %s %" PRIu32 " B x %" PRIu64,
             kind, size, count);
}

void bench_print_prefix(void)
{
    if (bench_role)
        fprintf(stderr, "%s (%s, %s): ", bench_name, bench_role, bench_current_case);
    else
        fprintf(stderr, "%s: ", bench_name);
}

void bench_check_failed(const char *file, int line, const char *what)
{
    bench_print_prefix();
    fprintf(stderr, "%s:%d: check failed: %s\n", file, line, what);
    abort();
}

void bench_mojo_failed(const char *file, int line, const char *call, MojoResult rv)
{
    bench_print_prefix();
    fprintf(stderr, "%s:%d: %s returned %u\n", file, line, call, (unsigned)rv);
    abort();
}

/* ------------------------------------------------------------ time, data */

uint64_t bench_now_ns(void)
{
    struct timespec ts;
    BENCH_CHECK(clock_gettime(CLOCK_MONOTONIC, &ts) == 0);
    return (uint64_t)ts.tv_sec * UINT64_C(1000000000) + (uint64_t)ts.tv_nsec;
}

void bench_fill_pattern(void *buf, size_t len)
{
    uint8_t *p = buf;
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)(i * 31 + 7);
}

const char *bench_size_label(uint32_t size, char *buf, size_t len)
{
    if (size >= 1024 * 1024)
        snprintf(buf, len, "%" PRIu32 " MB", size / (1024 * 1024));
    else if (size >= 1024)
        snprintf(buf, len, "%" PRIu32 " KB", size / 1024);
    else
        snprintf(buf, len, "%" PRIu32 " B", size);
    return buf;
}

/* --------------------------------------------------------------- options */

bool bench_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    if (!s || !*s || *s == '-')
        return false;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

/* How many of argv[i..] the table takes (0: none of its options, or a bad value). */
static int take_option(int argc, char **argv, int i, const bench_option *opts)
{
    for (const bench_option *o = opts; o->name; o++) {
        if (strcmp(argv[i], o->name) != 0)
            continue;
        if (o->value &&
            !bench_parse_u64(i + 1 < argc ? argv[i + 1] : NULL, o->min, o->max, o->value))
            return 0;
        if (o->given)
            *o->given = true;
        return o->value ? 2 : 1;
    }
    return 0;
}

int bench_parse_args(int argc, char **argv, const bench_option *opts, bench_other_fn other,
                     void (*usage)(FILE *f, const char *argv0))
{
    for (int i = 1; i < argc;) {
        const char *arg = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        int took = take_option(argc, argv, i, opts);
        if (!took && other)
            took = other(argc, argv, i);
        if (took) {
            i += took;
        } else if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            usage(stdout, argv[0]);
            return 0;
        } else {
            fprintf(stderr, "%s: bad argument '%s'%s\n", argv[0], arg,
                    val && arg[0] == '-' && arg[1] == '-' ? " (or its value)" : "");
            usage(stderr, argv[0]);
            return 2;
        }
    }
    return -1;
}

/* ------------------------------------------------------------- statistics */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

uint64_t bench_median_u64(const uint64_t *samples, unsigned runs, uint64_t *best)
{
    uint64_t sorted[BENCH_MAX_RUNS];
    BENCH_CHECK(runs >= 1 && runs <= BENCH_MAX_RUNS);
    memcpy(sorted, samples, runs * sizeof(sorted[0]));
    qsort(sorted, runs, sizeof(sorted[0]), cmp_u64);
    if (best)
        *best = sorted[0];
    return sorted[runs / 2];
}

double bench_median_ratio(double *ratios, unsigned runs, double *lo, double *hi)
{
    BENCH_CHECK(runs >= 1);
    qsort(ratios, runs, sizeof(ratios[0]), cmp_double);
    *lo = ratios[0];
    *hi = ratios[runs - 1];
    return ratios[runs / 2];
}

/* ----------------------------------------------------------------- CPUs */

int bench_allowed_cpu(int n)
{
    cpu_set_t set;
    BENCH_CHECK(sched_getaffinity(0, sizeof(set), &set) == 0);
    int found = -1;
    for (int cpu = 0, seen = 0; cpu < CPU_SETSIZE && seen <= n; cpu++)
        if (CPU_ISSET(cpu, &set)) {
            found = cpu;
            seen++;
        }
    BENCH_CHECK(found >= 0);
    return found;
}

void bench_pin_to_cpu(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    BENCH_CHECK(sched_setaffinity(0, sizeof(set), &set) == 0);
}

/* ------------------------------------------------- the two-process benches */

/* Arguments of the child's command line the program adds after its descriptors. */
#define BENCH_CHILD_MAX_EXTRA 4

static const struct MojoAppendMessageDataOptions g_commit = {
    sizeof(struct MojoAppendMessageDataOptions), MOJO_APPEND_MESSAGE_DATA_FLAG_COMMIT_SIZE};

/* Set once the child has been told to quit: its disconnection is expected then. */
static volatile sig_atomic_t g_stopping;

bool bench_is_child(int argc, char **argv, int n_extra, int *boot_fd, int *raw_fd)
{
    uint64_t fds[2];
    if (argc != 4 + n_extra || strcmp(argv[1], "child") != 0 ||
        !bench_parse_u64(argv[2], 0, INT32_MAX, &fds[0]) ||
        !bench_parse_u64(argv[3], 0, INT32_MAX, &fds[1]))
        return false;
    bench_role = "child";
    *boot_fd = (int)fds[0];
    *raw_fd = (int)fds[1];
    return true;
}

/* Says why a connection to the other process failed, which no MojoResult explains. */
static void print_connection_error(const char *to, const struct MojoProcessErrorDetails *details)
{
    bench_print_prefix();
    fprintf(stderr, "connection to the %s: %.*s%s\n", to, (int)details->error_message_length,
            details->error_message ? details->error_message : "",
            (details->flags & MOJO_PROCESS_ERROR_FLAG_DISCONNECTED) ? " (disconnected)" : "");
}

/* In the child: malformed input from the parent, or its disconnection. */
static void inviter_error_handler(const struct MojoProcessErrorDetails *details)
{
    print_connection_error("parent", details);
}

MojoHandle bench_accept_parent(int boot_fd)
{
    /* An orphaned child has nobody to serve. */
    BENCH_CHECK(prctl(PR_SET_PDEATHSIG, SIGKILL) == 0);
    BENCH_MOJO(MojoSetDefaultProcessErrorHandler(inviter_error_handler, NULL));
    struct MojoPlatformHandle ph = {sizeof(ph), MOJO_PLATFORM_HANDLE_TYPE_FILE_DESCRIPTOR,
                                    (uint64_t)boot_fd};
    struct MojoInvitationTransportEndpoint ep = {sizeof(ep), MOJO_INVITATION_TRANSPORT_TYPE_CHANNEL,
                                                 1, &ph};
    MojoHandle inv, boot;
    BENCH_MOJO(MojoAcceptInvitation(&ep, NULL, &inv));
    BENCH_MOJO(MojoExtractMessagePipeFromInvitation(inv, "boot", 4, NULL, &boot));
    BENCH_MOJO(MojoClose(inv));
    return boot;
}

/* In the parent: the child's connection failed (unless it was told to quit). */
static void child_error_handler(uintptr_t context, const struct MojoProcessErrorDetails *details)
{
    (void)context;
    if (g_stopping && (details->flags & MOJO_PROCESS_ERROR_FLAG_DISCONNECTED))
        return;
    print_connection_error("child", details);
}

void bench_spawn_child(bench_child *ch, const char *const *extra)
{
    size_t n_extra = 0;
    while (extra && extra[n_extra])
        n_extra++;
    BENCH_CHECK(n_extra <= BENCH_CHILD_MAX_EXTRA);
    int boot[2], raw[2];
    BENCH_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, boot) == 0);
    BENCH_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, raw) == 0);
    fflush(NULL);
    pid_t pid = fork();
    BENCH_CHECK(pid >= 0);
    if (pid == 0) {
        /* Copies without CLOEXEC survive the exec. */
        int b = fcntl(boot[1], F_DUPFD, 3), r = fcntl(raw[1], F_DUPFD, 3);
        char barg[16], rarg[16];
        snprintf(barg, sizeof(barg), "%d", b);
        snprintf(rarg, sizeof(rarg), "%d", r);
        char *args[4 + BENCH_CHILD_MAX_EXTRA + 1] = {(char *)bench_name, "child", barg, rarg};
        for (size_t i = 0; i < n_extra; i++)
            args[4 + i] = (char *)extra[i];
        /* Under valgrind /proc/self/exe is the tool: BENCH_CHILD_EXE names the binary. */
        const char *exe = getenv("BENCH_CHILD_EXE");
        if (b >= 0 && r >= 0)
            execv(exe ? exe : "/proc/self/exe", args);
        _exit(127);
    }
    close(boot[1]);
    close(raw[1]);
    MojoHandle inv;
    BENCH_MOJO(MojoCreateInvitation(NULL, &inv));
    BENCH_MOJO(MojoAttachMessagePipeToInvitation(inv, "boot", 4, NULL, &ch->boot));
    struct MojoPlatformHandle ph = {sizeof(ph), MOJO_PLATFORM_HANDLE_TYPE_FILE_DESCRIPTOR,
                                    (uint64_t)boot[0]};
    struct MojoInvitationTransportEndpoint ep = {sizeof(ep), MOJO_INVITATION_TRANSPORT_TYPE_CHANNEL,
                                                 1, &ph};
    struct MojoPlatformProcessHandle proc = {sizeof(proc), (uint64_t)pid};
    BENCH_MOJO(MojoSendInvitation(inv, &proc, &ep, child_error_handler, 0, NULL));
    ch->pid = pid;
    ch->raw_fd = raw[0];
}

bool bench_stop_child(bench_child *ch, const void *quit, uint32_t len)
{
    g_stopping = 1;
    bench_write_msg(ch->boot, quit, len, MOJO_HANDLE_INVALID);
    int status = 0;
    pid_t got;
    while ((got = waitpid(ch->pid, &status, 0)) < 0 && errno == EINTR) {
    }
    BENCH_MOJO(MojoClose(ch->boot));
    close(ch->raw_fd);
    if (got != ch->pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "%s: child %d failed (status 0x%x)\n", bench_name, (int)ch->pid, status);
        return false;
    }
    return true;
}

void bench_write_msg(MojoHandle pipe, const void *src, uint32_t len, MojoHandle h)
{
    MojoMessageHandle m;
    void *buf = NULL;
    uint32_t nh = h == MOJO_HANDLE_INVALID ? 0 : 1;
    BENCH_MOJO(MojoCreateMessage(NULL, &m));
    BENCH_MOJO(MojoAppendMessageData(m, len, nh ? &h : NULL, nh, &g_commit, &buf, NULL));
    memcpy(buf, src, len);
    BENCH_MOJO(MojoWriteMessage(pipe, m, NULL));
}

bool bench_markers;

void bench_marker(void)
{
    if (bench_markers)
        (void)syscall(SYS_getppid);
}
