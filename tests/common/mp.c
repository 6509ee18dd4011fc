/* Multi-process test harness; see mp.h. */
#include "mp.h"

#include "cmojo_test.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cmojo/wait.h"
#include "core/core.h"
#include "mojo/public/c/system/core.h"
#include "mojo/public/c/system/invitation.h"

extern char **environ;

#define CHILD_FLAG "--mp-child"
#define MAX_ARG_BYTES 4095u
/* How long the core fixture lets cross-process closes settle before judging. */
#define SETTLE_TIMEOUT_MS 10000

/* Children spawned and not yet reaped, so none outlives its test. */
static struct {
    pid_t pid;
    char role[32];
} live[CMOJO_MP_MAX_CHILDREN];

static bool in_child;

static void untrack(pid_t pid)
{
    for (size_t i = 0; i < CMOJO_MP_MAX_CHILDREN; i++) {
        if (live[i].pid == pid) {
            live[i].pid = 0;
            return;
        }
    }
}

int64_t cmojo_mp_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void cmojo_mp_sleep_ms(int ms)
{
    struct timespec left = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

    while (nanosleep(&left, &left) != 0 && errno == EINTR)
        ;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;

    return (x > y) - (x < y);
}

int cmojo_mp_list_fds(int *fds, int cap)
{
    DIR *dir = opendir("/proc/self/fd");
    struct dirent *entry;
    int count = 0;

    if (dir == NULL)
        return errno > 0 ? -errno : -EIO;
    int self = dirfd(dir);
    while ((entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] == '.')
            continue;
        int fd = atoi(entry->d_name);
        if (fd == self)
            continue;
        if (count < cap)
            fds[count] = fd;
        count++;
    }
    closedir(dir);
    qsort(fds, (size_t)(count < cap ? count : cap), sizeof(int), cmp_int);
    return count;
}

static void describe_fd(int fd, char *buf, size_t size)
{
    char path[64];

    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    ssize_t len = readlink(path, buf, size - 1);
    if (len < 0)
        len = 0;
    buf[len] = '\0';
}

/* 0 if exactly stdio + allowed are open; else one of the CMOJO_MP_EXIT_FD_* codes. */
static int check_fds(const char *who, const int *allowed, size_t n)
{
    int fds[512];
    int count = cmojo_mp_list_fds(fds, 512);
    int code = 0;
    char what[256];

    if (count < 0 || count > 512) {
        fprintf(stderr, "%s: cannot list fds (%d)\n", who, count);
        return CMOJO_MP_EXIT_FD_LEAKED;
    }
    for (int i = 0; i < count; i++) {
        bool ok = fds[i] <= 2;
        for (size_t j = 0; j < n && !ok; j++)
            ok = fds[i] == allowed[j];
        if (!ok) {
            describe_fd(fds[i], what, sizeof(what));
            fprintf(stderr, "%s: unexpected fd %d open (%s)\n", who, fds[i], what);
            code = CMOJO_MP_EXIT_FD_LEAKED;
        }
    }
    for (size_t j = 0; j < n; j++) {
        bool found = false;
        for (int i = 0; i < count && !found; i++)
            found = fds[i] == allowed[j];
        if (!found) {
            fprintf(stderr, "%s: expected fd %d is not open\n", who, allowed[j]);
            if (code == 0)
                code = CMOJO_MP_EXIT_FD_MISSING;
        }
    }
    return code;
}

bool cmojo_mp_only_fds(const char *who, const int *allowed, size_t n)
{
    return check_fds(who, allowed, n) == 0;
}

bool cmojo_mp_is_child(void)
{
    return in_child;
}

void cmojo_mp_child_dispatch(int argc, char **argv, const cmojo_mp_role *roles)
{
    int fds[CMOJO_MP_MAX_FDS];
    size_t n = 0;
    char who[64];

    if (argc < 2 || strcmp(argv[1], CHILD_FLAG) != 0) {
        /*
         * The parent: fds it inherited from whoever launched it (a shell's or
         * CI runner's leftovers) are not the test's to hand on, so children
         * must not get them either.
         */
        int open_fds[256];
        int count = cmojo_mp_list_fds(open_fds, 256);
        for (int i = 0; i < count && i < 256; i++)
            if (open_fds[i] > 2)
                fcntl(open_fds[i], F_SETFD, fcntl(open_fds[i], F_GETFD) | FD_CLOEXEC);
        return;
    }
    in_child = true;
    if (argc < 4 || argc - 4 > CMOJO_MP_MAX_FDS) {
        fprintf(stderr, "mp child: bad command line (%d args)\n", argc);
        exit(CMOJO_MP_EXIT_BAD_ARGS);
    }
    const char *role = argv[2];
    const char *arg = argv[3];
    for (int i = 4; i < argc; i++) {
        char *end = NULL;
        long fd = strtol(argv[i], &end, 10);
        if (*end != '\0' || fd != CMOJO_MP_FIRST_FD + (long)n) {
            fprintf(stderr, "mp child %s: bad fd argument '%s'\n", role, argv[i]);
            exit(CMOJO_MP_EXIT_BAD_ARGS);
        }
        fds[n++] = (int)fd;
    }
    snprintf(who, sizeof(who), "mp child %s (pid %d)", role, (int)getpid());
    int code = check_fds(who, fds, n);
    if (code != 0)
        exit(code);
    for (size_t i = 0; i < n; i++) {
        /* Inherited across exec, so not close-on-exec: the role may rely on that. */
        if (fcntl(fds[i], F_GETFD) != 0) {
            fprintf(stderr, "%s: fd %d has flags %d\n", who, fds[i], fcntl(fds[i], F_GETFD));
            exit(CMOJO_MP_EXIT_FD_MISSING);
        }
    }
    for (const cmojo_mp_role *r = roles; r != NULL && r->name != NULL; r++) {
        if (strcmp(r->name, role) == 0) {
            code = r->fn(fds, n, arg);
            fflush(stdout);
            fflush(stderr);
            exit(code);
        }
    }
    fprintf(stderr, "mp child: unknown role '%s'\n", role);
    exit(CMOJO_MP_EXIT_UNKNOWN_ROLE);
}

int cmojo_mp_spawn(const char *role, const int *fds, size_t n, const char *arg,
                   cmojo_mp_child *child)
{
    char fdnum[CMOJO_MP_MAX_FDS][12];
    char *child_argv[4 + CMOJO_MP_MAX_FDS + 1];
    sigset_t all_unblocked;
    size_t slot;

    if (role == NULL || child == NULL || strlen(role) >= sizeof(child->role) ||
        n > CMOJO_MP_MAX_FDS || (n > 0 && fds == NULL))
        return -EINVAL;
    if (arg == NULL)
        arg = "";
    if (strlen(arg) > MAX_ARG_BYTES)
        return -E2BIG;
    for (size_t i = 0; i < n; i++)
        if (fds[i] < 0 || fcntl(fds[i], F_GETFD) < 0)
            return -EBADF;
    for (slot = 0; slot < CMOJO_MP_MAX_CHILDREN && live[slot].pid != 0; slot++)
        ;
    if (slot == CMOJO_MP_MAX_CHILDREN)
        return -EAGAIN;

    /* Everything the child needs is built here: after fork only syscalls. */
    child_argv[0] = (char *)"/proc/self/exe";
    child_argv[1] = (char *)CHILD_FLAG;
    child_argv[2] = (char *)role;
    child_argv[3] = (char *)arg;
    for (size_t i = 0; i < n; i++) {
        snprintf(fdnum[i], sizeof(fdnum[i]), "%d", CMOJO_MP_FIRST_FD + (int)i);
        child_argv[4 + i] = fdnum[i];
    }
    child_argv[4 + n] = NULL;
    sigemptyset(&all_unblocked);
    pid_t parent = getpid();

    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        int moved[CMOJO_MP_MAX_FDS];

        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(CMOJO_MP_EXIT_EXEC_FAILED);
        sigprocmask(SIG_SETMASK, &all_unblocked, NULL);
        /*
         * First move every fd above the target range (close-on-exec), so that
         * placing one cannot clobber another, then dup2 each onto its number:
         * dup2 clears close-on-exec on the new fd only, in this process only.
         */
        for (size_t i = 0; i < n; i++) {
            moved[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, CMOJO_MP_FIRST_FD + (int)n);
            if (moved[i] < 0)
                _exit(CMOJO_MP_EXIT_EXEC_FAILED);
        }
        for (size_t i = 0; i < n; i++) {
            if (dup2(moved[i], CMOJO_MP_FIRST_FD + (int)i) < 0)
                _exit(CMOJO_MP_EXIT_EXEC_FAILED);
            close(moved[i]);
        }
        execve(child_argv[0], child_argv, environ);
        _exit(CMOJO_MP_EXIT_EXEC_FAILED);
    }
    live[slot].pid = pid;
    snprintf(live[slot].role, sizeof(live[slot].role), "%s", role);
    child->pid = pid;
    snprintf(child->role, sizeof(child->role), "%s", role);
    return 0;
}

int cmojo_mp_wait(cmojo_mp_child *child, int timeout_ms, int *exit_status)
{
    int64_t deadline = cmojo_mp_now_ms() + timeout_ms;
    int status = 0;
    int rv = 0;

    if (child == NULL || child->pid <= 0)
        return -EINVAL;
    for (;;) {
        pid_t got = waitpid(child->pid, &status, WNOHANG);
        if (got == child->pid)
            break;
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            rv = -errno;
            untrack(child->pid);
            child->pid = 0;
            return rv;
        }
        if (cmojo_mp_now_ms() >= deadline) {
            fprintf(stderr, "mp: child %s (pid %d) still running after %d ms: SIGKILL\n",
                    child->role, (int)child->pid, timeout_ms);
            kill(child->pid, SIGKILL);
            while ((got = waitpid(child->pid, &status, 0)) < 0 && errno == EINTR)
                ;
            rv = got == child->pid ? -ETIMEDOUT : -errno;
            break;
        }
        cmojo_mp_sleep_ms(1);
    }
    untrack(child->pid);
    child->pid = 0;
    if (exit_status != NULL)
        *exit_status = status;
    return rv;
}

const char *cmojo_mp_describe_status(int status, char *buf, size_t size)
{
    if (WIFEXITED(status))
        snprintf(buf, size, "exit code %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, size, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(buf, size, "status 0x%x", (unsigned)status);
    return buf;
}

bool cmojo_mp_wait_exit(cmojo_mp_child *child, int timeout_ms, int expected_code)
{
    char role[sizeof(child->role)];
    char what[96];
    int status = 0;
    pid_t pid = child->pid;

    memcpy(role, child->role, sizeof(role));
    int rv = cmojo_mp_wait(child, timeout_ms, &status);
    if (rv == -ETIMEDOUT) {
        fprintf(stderr, "mp: child %s (pid %d) timed out after %d ms (killed)\n", role, (int)pid,
                timeout_ms);
        return false;
    }
    if (rv != 0) {
        fprintf(stderr, "mp: waiting for child %s (pid %d): %s\n", role, (int)pid, strerror(-rv));
        return false;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != expected_code) {
        fprintf(stderr, "mp: child %s (pid %d): %s, expected exit code %d\n", role, (int)pid,
                cmojo_mp_describe_status(status, what, sizeof(what)), expected_code);
        return false;
    }
    return true;
}

int cmojo_mp_kill(const cmojo_mp_child *child, int sig)
{
    if (child == NULL || child->pid <= 0)
        return -EINVAL;
    return kill(child->pid, sig) == 0 ? 0 : -errno;
}

size_t cmojo_mp_live_children(void)
{
    size_t count = 0;

    for (size_t i = 0; i < CMOJO_MP_MAX_CHILDREN; i++)
        count += live[i].pid != 0;
    return count;
}

size_t cmojo_mp_reap_all(void)
{
    size_t count = 0;

    for (size_t i = 0; i < CMOJO_MP_MAX_CHILDREN; i++) {
        pid_t pid = live[i].pid;
        int status;

        if (pid == 0)
            continue;
        fprintf(stderr, "mp: child %s (pid %d) was left unreaped: SIGKILL\n", live[i].role,
                (int)pid);
        kill(pid, SIGKILL);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        live[i].pid = 0;
        count++;
    }
    return count;
}

_Noreturn void cmojo_mp_child_fail(const char *file, int line, const char *what)
{
    fprintf(stderr, "[mp %s pid %d] %s:%d: check failed: %s\n", in_child ? "child" : "parent",
            (int)getpid(), file, line, what);
    if (!in_child) {
        fail_msg("%s:%d: %s", file, line, what);
        abort();
    }
    _exit(10 + line % 100);
}

_Noreturn void cmojo_mp_child_fail_values(const char *file, int line, const char *what,
                                          unsigned long long got, unsigned long long want)
{
    fprintf(stderr, "[mp %s pid %d] %s:%d: %s is %llu, expected %llu\n",
            in_child ? "child" : "parent", (int)getpid(), file, line, what, got, want);
    if (!in_child) {
        fail_msg("%s:%d: %s", file, line, what);
        abort();
    }
    _exit(10 + line % 100);
}

bool cmojo_mp_wait_counts(const char *who, size_t ports, size_t handles, int timeout_ms)
{
    int64_t deadline = cmojo_mp_now_ms() + timeout_ms;
    size_t p, h;

    for (;;) {
        p = core_debug_port_count();
        h = core_debug_handle_count();
        if (p == ports && h == handles)
            return true;
        if (cmojo_mp_now_ms() >= deadline)
            break;
        cmojo_mp_sleep_ms(1);
    }
    fprintf(stderr, "%s: after %d ms: %zu ports (expected %zu), %zu handles (expected %zu)\n", who,
            timeout_ms, p, ports, h, handles);
    return false;
}

bool cmojo_mp_wait_fd_count(int expected, int timeout_ms)
{
    int64_t deadline = cmojo_mp_now_ms() + timeout_ms;
    int now;

    while ((now = cmojo_test_count_open_fds()) != expected) {
        if (cmojo_mp_now_ms() >= deadline) {
            fprintf(stderr, "[mp pid %d] holds %d fds, expected %d\n", (int)getpid(), now,
                    expected);
            return false;
        }
        cmojo_mp_sleep_ms(2);
    }
    return true;
}

static int fd_baseline = -1;

int cmojo_mp_setup(void **state)
{
    (void)state;
    fd_baseline = cmojo_test_count_open_fds();
    if (fd_baseline < 0) {
        fprintf(stderr, "cmojo_mp_setup: cannot count fds\n");
        return -1;
    }
    return 0;
}

static int check_fd_baseline(void)
{
    int now = cmojo_test_count_open_fds();

    if (now != fd_baseline) {
        int fds[512];
        int count = cmojo_mp_list_fds(fds, 512);
        char what[256];

        fprintf(stderr, "fd leak: %d fds open before the test, %d after:\n", fd_baseline, now);
        for (int i = 0; i < count && i < 512; i++) {
            describe_fd(fds[i], what, sizeof(what));
            fprintf(stderr, "  fd %d -> %s\n", fds[i], what);
        }
        return -1;
    }
    return 0;
}

int cmojo_mp_teardown(void **state)
{
    int failed = 0;

    (void)state;
    if (cmojo_mp_reap_all() != 0)
        failed = 1;
    if (check_fd_baseline() != 0)
        failed = 1;
    return failed ? -1 : 0;
}

int cmojo_mp_core_setup(void **state)
{
    if (cmojo_mp_setup(state) != 0)
        return -1;
    MojoResult rv = MojoInitialize(NULL);
    if (rv != MOJO_RESULT_OK) {
        fprintf(stderr, "setup: MojoInitialize(NULL) = %u\n", (unsigned)rv);
        return -1;
    }
    return 0;
}

int cmojo_mp_core_teardown(void **state)
{
    int failed = 0;

    (void)state;
    if (cmojo_mp_reap_all() != 0)
        failed = 1;
    if (!cmojo_mp_wait_counts("teardown", 0, 0, SETTLE_TIMEOUT_MS))
        failed = 1;
    size_t messages = core_debug_message_count();
    if (messages != 0) {
        fprintf(stderr, "teardown: %zu message objects still alive\n", messages);
        failed = 1;
    }
    MojoResult rv = MojoShutdown(NULL);
    if (rv != MOJO_RESULT_OK) {
        fprintf(stderr, "teardown: MojoShutdown(NULL) = %u\n", (unsigned)rv);
        failed = 1;
    }
    if (check_fd_baseline() != 0)
        failed = 1;
    return failed ? -1 : 0;
}

/* ------------------------------------------------------------------------ */
/* cmojo helpers for both sides of a multi-process test.                    */

/*
 * Every CMOJO_MP_LARGE_EVERY-th sequence number (from CMOJO_MP_LARGE_FIRST)
 * sends CMOJO_MP_LARGE_SIZE bytes: the body, then a pattern the receiver
 * checks. So messages big enough to leave from their own memory (and to be
 * held for an introduction) travel in every test among the small ones.
 */
#define CMOJO_MP_LARGE_EVERY 16u
#define CMOJO_MP_LARGE_FIRST 5u
#define CMOJO_MP_LARGE_SIZE 3000u

static uint32_t mp_body_size(uint32_t seq)
{
    return seq % CMOJO_MP_LARGE_EVERY == CMOJO_MP_LARGE_FIRST ? CMOJO_MP_LARGE_SIZE
                                                              : (uint32_t)sizeof(cmojo_mp_msg);
}

static uint8_t mp_pad_byte(uint32_t seq, size_t j)
{
    return (uint8_t)(seq * 7u + j);
}

void cmojo_mp_send(MojoHandle pipe, uint32_t tag, uint32_t seq, uint64_t value,
                   const MojoHandle *handles, uint32_t num_handles)
{
    struct MojoAppendMessageDataOptions commit = {sizeof(commit),
                                                  MOJO_APPEND_MESSAGE_DATA_FLAG_COMMIT_SIZE};
    MojoMessageHandle m = MOJO_MESSAGE_HANDLE_INVALID;
    void *buf = NULL;
    cmojo_mp_msg body = {tag, seq, value};
    uint32_t size = mp_body_size(seq);

    CMOJO_MP_CHECK_RESULT(MojoCreateMessage(NULL, &m), MOJO_RESULT_OK);
    CMOJO_MP_CHECK_RESULT(MojoAppendMessageData(m, size, handles, num_handles, &commit, &buf, NULL),
                          MOJO_RESULT_OK);
    memcpy(buf, &body, sizeof(body));
    for (size_t j = sizeof(body); j < size; j++)
        ((uint8_t *)buf)[j] = mp_pad_byte(seq, j);
    CMOJO_MP_CHECK_RESULT(MojoWriteMessage(pipe, m, NULL), MOJO_RESULT_OK);
}

MojoResult cmojo_mp_try_recv(MojoHandle pipe, cmojo_mp_msg *out, MojoHandle *handles,
                             uint32_t *num_handles)
{
    MojoMessageHandle m = MOJO_MESSAGE_HANDLE_INVALID;
    void *buf = NULL;
    uint32_t len = 0;
    uint32_t n = num_handles != NULL ? *num_handles : 0;

    MojoResult r = MojoReadMessage(pipe, NULL, &m);
    if (r != MOJO_RESULT_OK)
        return r;
    CMOJO_MP_CHECK_RESULT(MojoGetMessageData(m, NULL, &buf, &len, handles, &n), MOJO_RESULT_OK);
    CMOJO_MP_CHECK(len >= sizeof(cmojo_mp_msg));
    memcpy(out, buf, sizeof(cmojo_mp_msg));
    CMOJO_MP_CHECK_RESULT(len, mp_body_size(out->seq));
    for (size_t j = sizeof(cmojo_mp_msg); j < len; j++)
        CMOJO_MP_CHECK_RESULT(((const uint8_t *)buf)[j], mp_pad_byte(out->seq, j));
    if (num_handles != NULL)
        *num_handles = n;
    else
        CMOJO_MP_CHECK_RESULT(n, 0);
    CMOJO_MP_CHECK_RESULT(MojoDestroyMessage(m), MOJO_RESULT_OK);
    return MOJO_RESULT_OK;
}

cmojo_mp_msg cmojo_mp_recv(MojoHandle pipe, MojoHandle *handles, uint32_t *num_handles)
{
    struct MojoHandleSignalsState st;
    cmojo_mp_msg out;

    CMOJO_MP_CHECK_RESULT(MojoWait(pipe, MOJO_HANDLE_SIGNAL_READABLE,
                                   (MojoDeadline)CMOJO_MP_IO_TIMEOUT_MS * 1000, &st),
                          MOJO_RESULT_OK);
    CMOJO_MP_CHECK_RESULT(cmojo_mp_try_recv(pipe, &out, handles, num_handles), MOJO_RESULT_OK);
    return out;
}

cmojo_mp_msg cmojo_mp_recv_tag(MojoHandle pipe, uint32_t tag, MojoHandle *handles,
                               uint32_t *num_handles)
{
    cmojo_mp_msg m = cmojo_mp_recv(pipe, handles, num_handles);

    CMOJO_MP_CHECK_RESULT(m.tag, tag);
    return m;
}

void cmojo_mp_expect_peer_closed(MojoHandle pipe)
{
    struct MojoHandleSignalsState st;
    MojoMessageHandle m = MOJO_MESSAGE_HANDLE_INVALID;

    CMOJO_MP_CHECK_RESULT(MojoWait(pipe, MOJO_HANDLE_SIGNAL_PEER_CLOSED,
                                   (MojoDeadline)CMOJO_MP_IO_TIMEOUT_MS * 1000, &st),
                          MOJO_RESULT_OK);
    CMOJO_MP_CHECK((st.satisfied_signals & MOJO_HANDLE_SIGNAL_READABLE) == 0);
    CMOJO_MP_CHECK_RESULT(MojoReadMessage(pipe, NULL, &m), MOJO_RESULT_FAILED_PRECONDITION);
}

void cmojo_mp_expect_peer_remote(MojoHandle pipe)
{
    struct MojoHandleSignalsState st;

    CMOJO_MP_CHECK_RESULT(MojoWait(pipe, MOJO_HANDLE_SIGNAL_PEER_REMOTE,
                                   (MojoDeadline)CMOJO_MP_IO_TIMEOUT_MS * 1000, &st),
                          MOJO_RESULT_OK);
    CMOJO_MP_CHECK(st.satisfied_signals & MOJO_HANDLE_SIGNAL_PEER_REMOTE);
}

void cmojo_mp_close_all(const MojoHandle *handles, size_t n)
{
    for (size_t i = 0; i < n; i++)
        CMOJO_MP_CHECK_RESULT(MojoClose(handles[i]), MOJO_RESULT_OK);
}

void cmojo_mp_ping(MojoHandle pipe, uint32_t ping_tag, uint64_t round, uint32_t count)
{
    for (uint32_t i = 0; i < count; i++) {
        cmojo_mp_send(pipe, ping_tag, i, round, NULL, 0);
        cmojo_mp_msg m = cmojo_mp_recv_tag(pipe, ping_tag, NULL, NULL);
        CMOJO_MP_CHECK_RESULT(m.seq, i + 1);
        CMOJO_MP_CHECK_RESULT(m.value, round);
    }
}

void cmojo_mp_echo_pings(MojoHandle pipe, uint32_t ping_tag, uint32_t done_tag)
{
    for (;;) {
        cmojo_mp_msg m = cmojo_mp_recv(pipe, NULL, NULL);
        if (m.tag == done_tag)
            break;
        CMOJO_MP_CHECK_RESULT(m.tag, ping_tag);
        cmojo_mp_send(pipe, ping_tag, m.seq + 1, m.value, NULL, 0);
    }
}

/* One lock for every log: reports are rare and the handler runs on any thread. */
static pthread_mutex_t logs_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    int reports;
    int disconnected;
    int empty_messages;
    char last[256];
} logs[CMOJO_MP_MAX_LOGS];

void cmojo_mp_reset_logs(void)
{
    pthread_mutex_lock(&logs_mu);
    memset(logs, 0, sizeof(logs));
    pthread_mutex_unlock(&logs_mu);
}

void cmojo_mp_on_process_error(uintptr_t context, const struct MojoProcessErrorDetails *details)
{
    if (context >= CMOJO_MP_MAX_LOGS)
        abort();
    pthread_mutex_lock(&logs_mu);
    logs[context].reports++;
    if (details->flags & MOJO_PROCESS_ERROR_FLAG_DISCONNECTED)
        logs[context].disconnected++;
    if (details->error_message_length == 0 || details->error_message == NULL) {
        logs[context].empty_messages++;
    } else {
        size_t n = details->error_message_length;
        if (n >= sizeof(logs[context].last))
            n = sizeof(logs[context].last) - 1;
        memcpy(logs[context].last, details->error_message, n);
        logs[context].last[n] = '\0';
    }
    pthread_mutex_unlock(&logs_mu);
}

cmojo_mp_log_state cmojo_mp_log(int index)
{
    cmojo_mp_log_state s;

    pthread_mutex_lock(&logs_mu);
    s.reports = logs[index].reports;
    s.disconnected = logs[index].disconnected;
    s.empty_messages = logs[index].empty_messages;
    memcpy(s.last, logs[index].last, sizeof(s.last));
    pthread_mutex_unlock(&logs_mu);
    return s;
}

bool cmojo_mp_wait_disconnected(int index, int timeout_ms)
{
    int64_t deadline = cmojo_mp_now_ms() + timeout_ms;

    for (;;) {
        if (cmojo_mp_log(index).disconnected > 0)
            return true;
        if (cmojo_mp_now_ms() >= deadline) {
            fprintf(stderr, "mp: no DISCONNECTED report in log %d after %d ms\n", index,
                    timeout_ms);
            return false;
        }
        cmojo_mp_sleep_ms(2);
    }
}

void cmojo_mp_invite(const char *role, const char *arg, const char *const *names, size_t n,
                     MojoHandle *pipes, cmojo_mp_child *child, int log_index)
{
    int sv[2];
    MojoHandle invitation = MOJO_HANDLE_INVALID;

    CMOJO_MP_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    CMOJO_MP_CHECK_RESULT(MojoCreateInvitation(NULL, &invitation), MOJO_RESULT_OK);
    for (size_t i = 0; i < n; i++)
        CMOJO_MP_CHECK_RESULT(MojoAttachMessagePipeToInvitation(invitation, names[i],
                                                                (uint32_t)strlen(names[i]), NULL,
                                                                &pipes[i]),
                              MOJO_RESULT_OK);
    CMOJO_MP_CHECK(cmojo_mp_spawn(role, &sv[1], 1, arg, child) == 0);
    close(sv[1]);

    struct MojoPlatformHandle transport = {
        sizeof(transport), MOJO_PLATFORM_HANDLE_TYPE_FILE_DESCRIPTOR, (uint64_t)sv[0]};
    struct MojoInvitationTransportEndpoint endpoint = {
        sizeof(endpoint), MOJO_INVITATION_TRANSPORT_TYPE_CHANNEL, 1, &transport};
    struct MojoPlatformProcessHandle process = {sizeof(process), (uint64_t)child->pid};
    CMOJO_MP_CHECK_RESULT(MojoSendInvitation(invitation, &process, &endpoint,
                                             cmojo_mp_on_process_error, (uintptr_t)log_index, NULL),
                          MOJO_RESULT_OK);
}

/* In a child: any connection error is worth a line on stderr when a test fails. */
static void child_default_error(const struct MojoProcessErrorDetails *details)
{
    fprintf(stderr, "[mp child pid %d] process error%s: %.*s\n", (int)getpid(),
            details->flags & MOJO_PROCESS_ERROR_FLAG_DISCONNECTED ? " (disconnected)" : "",
            (int)details->error_message_length,
            details->error_message != NULL ? details->error_message : "");
}

void cmojo_mp_accept(int fd, const char *const *names, size_t n, MojoHandle *pipes)
{
    MojoHandle invitation = MOJO_HANDLE_INVALID;
    struct MojoPlatformHandle transport = {sizeof(transport),
                                           MOJO_PLATFORM_HANDLE_TYPE_FILE_DESCRIPTOR, (uint64_t)fd};
    struct MojoInvitationTransportEndpoint endpoint = {
        sizeof(endpoint), MOJO_INVITATION_TRANSPORT_TYPE_CHANNEL, 1, &transport};

    CMOJO_MP_CHECK_RESULT(MojoInitialize(NULL), MOJO_RESULT_OK);
    CMOJO_MP_CHECK_RESULT(MojoSetDefaultProcessErrorHandler(child_default_error, NULL),
                          MOJO_RESULT_OK);
    CMOJO_MP_CHECK_RESULT(MojoAcceptInvitation(&endpoint, NULL, &invitation), MOJO_RESULT_OK);
    for (size_t i = 0; i < n; i++)
        CMOJO_MP_CHECK_RESULT(MojoExtractMessagePipeFromInvitation(invitation, names[i],
                                                                   (uint32_t)strlen(names[i]), NULL,
                                                                   &pipes[i]),
                              MOJO_RESULT_OK);
    CMOJO_MP_CHECK_RESULT(MojoClose(invitation), MOJO_RESULT_OK);
}

int cmojo_mp_child_finish(const char *who, const MojoHandle *handles, size_t n)
{
    CMOJO_MP_CHECK(cmojo_mp_wait_counts(who, n, n, CMOJO_MP_SETTLE_MS));
    cmojo_mp_close_all(handles, n);
    CMOJO_MP_CHECK(cmojo_mp_wait_counts(who, 0, 0, CMOJO_MP_SETTLE_MS));
    CMOJO_MP_CHECK_RESULT(core_debug_message_count(), 0);
    CMOJO_MP_CHECK_RESULT(MojoShutdown(NULL), MOJO_RESULT_OK);
    CMOJO_MP_CHECK(cmojo_mp_only_fds(who, NULL, 0));
    return 0;
}

/* ------------------------------------------------------------ the witness */

enum { WITNESS_PING = 0x77740001, WITNESS_DONE };
#define WITNESS_PINGS 20

static const char *const witness_pipe[] = {"witness"};

int cmojo_mp_role_witness(const int *fds, size_t num_fds, const char *arg)
{
    MojoHandle ctl;

    (void)num_fds;
    (void)arg;
    cmojo_mp_accept(fds[0], witness_pipe, 1, &ctl);
    cmojo_mp_echo_pings(ctl, WITNESS_PING, WITNESS_DONE);
    return cmojo_mp_child_finish("witness", &ctl, 1);
}

void cmojo_mp_witness_start(cmojo_mp_witness *w, int log_index)
{
    w->log_index = log_index;
    cmojo_mp_invite(CMOJO_MP_WITNESS_ROLE, NULL, witness_pipe, 1, &w->ctl, &w->child, log_index);
    cmojo_mp_witness_ping(w, 1);
}

void cmojo_mp_witness_ping(cmojo_mp_witness *w, uint64_t round)
{
    cmojo_mp_ping(w->ctl, WITNESS_PING, round, WITNESS_PINGS);
}

void cmojo_mp_witness_finish(cmojo_mp_witness *w, uint64_t round)
{
    cmojo_mp_witness_ping(w, round);
    CMOJO_MP_CHECK_RESULT(cmojo_mp_log(w->log_index).reports, 0);
    cmojo_mp_send(w->ctl, WITNESS_DONE, 0, 0, NULL, 0);
    CMOJO_MP_CHECK(cmojo_mp_wait_exit(&w->child, CMOJO_MP_CHILD_TIMEOUT_MS, 0));
    cmojo_mp_expect_peer_closed(w->ctl);
    CMOJO_MP_CHECK_RESULT(MojoClose(w->ctl), MOJO_RESULT_OK);
}
