/*
 * Multi-process test harness: a test binary re-runs itself as a child process
 * in a named role, handing it chosen file descriptors (libuv's runner does the
 * same). Linked into every test binary (see cmojo_test.h for the rest).
 *
 * A test program using it starts main() with
 *
 *   static const cmojo_mp_role roles[] = {{"echo", role_echo}, {NULL, NULL}};
 *   int main(int argc, char **argv) {
 *       cmojo_mp_child_dispatch(argc, argv, roles);   // returns only in the parent
 *       ... cmocka_run_group_tests(...) ...
 *   }
 *
 * and spawns children with cmojo_mp_spawn(). A child's command line is
 *
 *   /proc/self/exe --mp-child <role> <arg> <fd>...
 *
 * where the fds are 3, 4, ... in the order given to cmojo_mp_spawn. Before the
 * role runs, the child checks that it holds exactly stdin/stdout/stderr and
 * those fds, so any descriptor the parent forgot to make close-on-exec (its
 * own or cmojo's) fails the child with CMOJO_MP_EXIT_FD_LEAKED.
 *
 * Every spawned child is tracked until it is reaped: cmojo_mp_wait() always
 * reaps (killing the child after the timeout), and the fixtures below fail a
 * test that leaves one unreaped (and reap it, so the next test starts clean).
 *
 * Threads: spawn, wait and kill from one thread at a time (the test's).
 * fork() happens with cmojo's IO thread running, so the child only does
 * async-signal-safe work between fork and exec; everything it needs is
 * prepared in the parent first.
 */
#ifndef CMOJO_TEST_MP_H_
#define CMOJO_TEST_MP_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "mojo/public/c/system/invitation.h"
#include "mojo/public/c/system/types.h"

/*
 * Exit codes the harness itself uses in a child. Role functions should use
 * other values (1..99 is a good range; see CMOJO_MP_CHECK for codes chosen
 * from the source line).
 */
#define CMOJO_MP_EXIT_BAD_ARGS 120     /* malformed --mp-child command line */
#define CMOJO_MP_EXIT_UNKNOWN_ROLE 121 /* no role of that name */
#define CMOJO_MP_EXIT_FD_LEAKED 122    /* an fd beyond stdio and the given ones */
#define CMOJO_MP_EXIT_FD_MISSING 123   /* a given fd is not open, or is close-on-exec */
#define CMOJO_MP_EXIT_EXEC_FAILED 124  /* between fork and exec (parent sees it) */

/* Most fds one child may be given. */
#define CMOJO_MP_MAX_FDS 16
/* Most children alive (spawned and not reaped) at once. */
#define CMOJO_MP_MAX_CHILDREN 32
/* The first fd number a child's given fds land on. */
#define CMOJO_MP_FIRST_FD 3

/*
 * A child role: runs in the child with its fds (fds[i] == CMOJO_MP_FIRST_FD +
 * i) and the extra argument given to cmojo_mp_spawn ("" if that was NULL).
 * Returns the child's exit code (0 = success).
 */
typedef int (*cmojo_mp_role_fn)(const int *fds, size_t num_fds, const char *arg);

typedef struct cmojo_mp_role {
    const char *name;
    cmojo_mp_role_fn fn;
} cmojo_mp_role;

/*
 * If argv is a --mp-child command line, runs that role from |roles| (ended by
 * an entry with a NULL name) and exits with its code; never returns then.
 * Otherwise (the parent: run the tests) marks every fd the process inherited
 * from its launcher, beyond stdio, close-on-exec, so that children get only
 * what they are given, and returns.
 */
void cmojo_mp_child_dispatch(int argc, char **argv, const cmojo_mp_role *roles);

/* True in a process started by cmojo_mp_child_dispatch. */
bool cmojo_mp_is_child(void);

typedef struct cmojo_mp_child {
    pid_t pid; /* 0 once reaped */
    char role[32];
} cmojo_mp_child;

/*
 * fork + exec of /proc/self/exe in |role| with fds[0..n) as the child's fds
 * 3.. (the parent's copies are untouched, still the parent's to close) and
 * |arg| (may be NULL; at most 4095 bytes). The child dies if the parent does
 * (PR_SET_PDEATHSIG). 0, or a negative errno (nothing spawned).
 */
int cmojo_mp_spawn(const char *role, const int *fds, size_t n, const char *arg,
                   cmojo_mp_child *child);

/*
 * Waits up to |timeout_ms| for the child to exit and reaps it. *exit_status
 * (may be NULL) gets the raw waitpid status. Returns 0 if it exited by
 * itself in time; -ETIMEDOUT if it had to be SIGKILLed (reaped all the
 * same, *exit_status says killed); another negative errno otherwise. Either
 * way the child is reaped when this returns (pid set to 0).
 */
int cmojo_mp_wait(cmojo_mp_child *child, int timeout_ms, int *exit_status);

/*
 * cmojo_mp_wait, then true iff the child exited by itself with code
 * |expected_code|; otherwise prints what happened to stderr.
 */
bool cmojo_mp_wait_exit(cmojo_mp_child *child, int timeout_ms, int expected_code);

/* Sends |sig| to a child not yet reaped. 0 or a negative errno. */
int cmojo_mp_kill(const cmojo_mp_child *child, int sig);

/* Describes a waitpid status ("exit code 3", "killed by signal 9") into buf. */
const char *cmojo_mp_describe_status(int status, char *buf, size_t size);

/* Children spawned and not yet reaped. */
size_t cmojo_mp_live_children(void);

/*
 * SIGKILLs and reaps every child not yet reaped; returns how many there were
 * (naming each on stderr).
 */
size_t cmojo_mp_reap_all(void);

/*
 * Fixtures: setup records the fd count; teardown fails the test if a child
 * was left unreaped (reaping it) or an fd leaked.
 *
 *   cmocka_unit_test_setup_teardown(test_x, cmojo_mp_setup, cmojo_mp_teardown)
 */
int cmojo_mp_setup(void **state);
int cmojo_mp_teardown(void **state);

/*
 * The same for tests that use cmojo: setup also calls MojoInitialize;
 * teardown also fails the test if handles, messages or ports are left once
 * things settle (polling up to a few seconds), then calls MojoShutdown before
 * the fd check.
 */
int cmojo_mp_core_setup(void **state);
int cmojo_mp_core_teardown(void **state);

/*
 * Lists the fds this process holds (entries of /proc/self/fd except the one
 * used to read it), sorted, into fds[0..cap); returns how many there are (may
 * exceed cap) or a negative errno.
 */
int cmojo_mp_list_fds(int *fds, int cap);

/*
 * True iff this process holds exactly stdin/stdout/stderr plus allowed[0..n);
 * otherwise prints every unexpected or missing fd (with what it points to)
 * to stderr, prefixed with |who|.
 */
bool cmojo_mp_only_fds(const char *who, const int *allowed, size_t n);

/* Monotonic milliseconds. */
int64_t cmojo_mp_now_ms(void);
void cmojo_mp_sleep_ms(int ms);

/*
 * Polls until core_debug_port_count() == ports and core_debug_handle_count()
 * == handles, at most timeout_ms. True if reached; else prints the counts
 * (prefixed with |who|) and returns false.
 */
bool cmojo_mp_wait_counts(const char *who, size_t ports, size_t handles, int timeout_ms);

/*
 * Polls until this process holds `expected` fds (cmojo_test_count_open_fds);
 * at the deadline prints how many it holds and returns false.
 */
bool cmojo_mp_wait_fd_count(int expected, int timeout_ms);

/*
 * For child roles: fail the child (print file:line, the condition and
 * errno-free context to stderr, then _exit) with a code derived from the line
 * (10 + line % 100, so distinct checks almost always give distinct codes;
 * the stderr line is exact). _exit, so a sanitizer's exit-time leak report
 * cannot replace the code.
 */
#define CMOJO_MP_CHECK(cond)                                                                       \
    do {                                                                                           \
        if (!(cond))                                                                               \
            cmojo_mp_child_fail(__FILE__, __LINE__, #cond);                                        \
    } while (0)

/* CMOJO_MP_CHECK for a MojoResult: prints both values when they differ. */
#define CMOJO_MP_CHECK_RESULT(expr, expected)                                                      \
    do {                                                                                           \
        unsigned long long got_ = (unsigned long long)(expr);                                      \
        unsigned long long want_ = (unsigned long long)(expected);                                 \
        if (got_ != want_)                                                                         \
            cmojo_mp_child_fail_values(__FILE__, __LINE__, #expr, got_, want_);                    \
    } while (0)

_Noreturn void cmojo_mp_child_fail(const char *file, int line, const char *what);
_Noreturn void cmojo_mp_child_fail_values(const char *file, int line, const char *what,
                                          unsigned long long got, unsigned long long want);

/* ------------------------------------------------------------------------
 * cmojo helpers, for the parent and for child roles alike. Each fails the
 * way CMOJO_MP_CHECK does: a cmocka failure in the parent, _exit in a child.
 * Every wait has a deadline (CMOJO_MP_IO_TIMEOUT_MS).
 */

/* Generous: sanitizer builds on a loaded 2-core machine are slow. */
#define CMOJO_MP_IO_TIMEOUT_MS 60000
#define CMOJO_MP_SETTLE_MS 20000
#define CMOJO_MP_CHILD_TIMEOUT_MS 120000

/* The body of every message the helpers send: 16 bytes (plus handles). */
typedef struct cmojo_mp_msg {
    uint32_t tag;
    uint32_t seq;
    uint64_t value;
} cmojo_mp_msg;

/* Writes a message {tag, seq, value} carrying handles[0..num_handles). */
void cmojo_mp_send(MojoHandle pipe, uint32_t tag, uint32_t seq, uint64_t value,
                   const MojoHandle *handles, uint32_t num_handles);

/*
 * Reads one message if there is one: OK (*out filled in), SHOULD_WAIT, or
 * FAILED_PRECONDITION (peer closed, nothing left). *num_handles: capacity in,
 * count out; NULL means the message must carry none.
 */
MojoResult cmojo_mp_try_recv(MojoHandle pipe, cmojo_mp_msg *out, MojoHandle *handles,
                             uint32_t *num_handles);

/* Waits for and reads one message (fails on timeout or peer closed). */
cmojo_mp_msg cmojo_mp_recv(MojoHandle pipe, MojoHandle *handles, uint32_t *num_handles);
/* The same, and the tag must be `tag`. */
cmojo_mp_msg cmojo_mp_recv_tag(MojoHandle pipe, uint32_t tag, MojoHandle *handles,
                               uint32_t *num_handles);

/* Waits for PEER_CLOSED; nothing may be left to read. */
void cmojo_mp_expect_peer_closed(MojoHandle pipe);
/* Waits for PEER_REMOTE. */
void cmojo_mp_expect_peer_remote(MojoHandle pipe);
void cmojo_mp_close_all(const MojoHandle *handles, size_t n);

/*
 * A ping-pong that shows a pipe (and the connection under it) still works:
 * cmojo_mp_ping sends `count` messages {ping_tag, i, round} and expects each
 * back as {ping_tag, i + 1, round}; on the other side cmojo_mp_echo_pings
 * answers every ping so until a message tagged done_tag arrives.
 */
void cmojo_mp_ping(MojoHandle pipe, uint32_t ping_tag, uint64_t round, uint32_t count);
void cmojo_mp_echo_pings(MojoHandle pipe, uint32_t ping_tag, uint32_t done_tag);

/*
 * Process error logs: cmojo_mp_invite passes cmojo_mp_on_process_error with
 * a log index as the error handler, so a test can see what each child's
 * connection was told.
 */
#define CMOJO_MP_MAX_LOGS 8
typedef struct cmojo_mp_log_state {
    int reports;
    int disconnected;   /* reports with MOJO_PROCESS_ERROR_FLAG_DISCONNECTED */
    int empty_messages; /* reports with no error_message */
    char last[256];     /* the last error_message, NUL-terminated */
} cmojo_mp_log_state;

void cmojo_mp_reset_logs(void);
void cmojo_mp_on_process_error(uintptr_t context, const struct MojoProcessErrorDetails *details);
cmojo_mp_log_state cmojo_mp_log(int index);
/* Polls until log `index` has a DISCONNECTED report. */
bool cmojo_mp_wait_disconnected(int index, int timeout_ms);

/*
 * Parent: spawns `role` (with `arg`) on one end of a new socketpair and sends
 * it an invitation carrying pipes named names[0..n), whose local ends go to
 * pipes[]; errors for it go to log `log_index`.
 */
void cmojo_mp_invite(const char *role, const char *arg, const char *const *names, size_t n,
                     MojoHandle *pipes, cmojo_mp_child *child, int log_index);

/* Child: MojoInitialize, accept the invitation on `fd`, extract the named pipes. */
void cmojo_mp_accept(int fd, const char *const *names, size_t n, MojoHandle *pipes);

/*
 * A witness: a well-behaved child run beside a hostile one, to show that the
 * parent keeps serving its other processes before, during and after the
 * attack. A program that uses it lists {CMOJO_MP_WITNESS_ROLE,
 * cmojo_mp_role_witness} in its role table. start invites the witness (its
 * connection's errors go to log `log_index`) and pings it (round 1); ping
 * pings it again (`round` comes back with every answer); finish pings it a
 * last time, checks that its connection had no error report, stops it,
 * reaps it and closes its pipe. Parent only; failures are cmocka failures.
 */
#define CMOJO_MP_WITNESS_ROLE "witness"
typedef struct cmojo_mp_witness {
    MojoHandle ctl;
    cmojo_mp_child child;
    int log_index;
} cmojo_mp_witness;

int cmojo_mp_role_witness(const int *fds, size_t num_fds, const char *arg);
void cmojo_mp_witness_start(cmojo_mp_witness *w, int log_index);
void cmojo_mp_witness_ping(cmojo_mp_witness *w, uint64_t round);
void cmojo_mp_witness_finish(cmojo_mp_witness *w, uint64_t round);

/*
 * Child, at the end: waits until it holds exactly handles[0..n) (n pipes:
 * n ports, proxies gone), closes them, waits for zero ports and handles,
 * MojoShutdown, and checks only stdio is left open. Returns 0.
 */
int cmojo_mp_child_finish(const char *who, const MojoHandle *handles, size_t n);

#endif /* CMOJO_TEST_MP_H_ */
