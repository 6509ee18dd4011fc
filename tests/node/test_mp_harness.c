/*
 * The multi-process harness (tests/common/mp.h) on its own, without cmojo:
 * children get exactly the fds they are given, in order, and nothing else;
 * a leaked fd fails the child; exit codes come back; a hung child is killed
 * and reaped at the timeout; an unreaped child or a leaked fd fails the
 * fixture. Every other multi-process test trusts these.
 */
#include "cmojo_test.h"
#include "mp.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define WAIT_MS 20000

/* Exits with the code given as its argument. */
static int role_exit_code(const int *fds, size_t n, const char *arg)
{
    (void)fds;
    (void)n;
    return atoi(arg);
}

/*
 * Writes "<index>:<st_ino of the fd>\n" for each of its fds to its first fd,
 * so the parent can tell every fd landed on the right number.
 */
static int role_report_fds(const int *fds, size_t n, const char *arg)
{
    char line[64];

    (void)arg;
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        CMOJO_MP_CHECK(fds[i] == CMOJO_MP_FIRST_FD + (int)i);
        CMOJO_MP_CHECK(fstat(fds[i], &st) == 0);
        int len = snprintf(line, sizeof(line), "%zu:%llu\n", i, (unsigned long long)st.st_ino);
        CMOJO_MP_CHECK(write(fds[0], line, (size_t)len) == len);
    }
    return 7;
}

static int role_sleep(const int *fds, size_t n, const char *arg)
{
    (void)fds;
    (void)n;
    (void)arg;
    for (int i = 0; i < 600; i++)
        cmojo_mp_sleep_ms(100);
    return 0;
}

/* Fails on its last check, three lines above ROLE_CHECK_FAILS_END. */
static int role_check_fails(const int *fds, size_t n, const char *arg)
{
    (void)fds;
    (void)n;
    (void)arg;
    CMOJO_MP_CHECK(1 + 1 == 2);
    CMOJO_MP_CHECK_RESULT(3, 4);
    return 0;
}
enum { ROLE_CHECK_FAILS_END = __LINE__ };
#define FAIL_LINE_IN_ROLE (ROLE_CHECK_FAILS_END - 3)

static void test_exit_code_comes_back(void **state)
{
    cmojo_mp_child child;
    int status = -1;

    (void)state;
    assert_int_equal(cmojo_mp_spawn("exit_code", NULL, 0, "42", &child), 0);
    assert_int_equal(cmojo_mp_live_children(), 1);
    assert_int_equal(cmojo_mp_wait(&child, WAIT_MS, &status), 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 42);
    assert_int_equal(child.pid, 0);
    assert_int_equal(cmojo_mp_live_children(), 0);

    assert_int_equal(cmojo_mp_spawn("exit_code", NULL, 0, "0", &child), 0);
    assert_true(cmojo_mp_wait_exit(&child, WAIT_MS, 0));
}

static void test_fds_arrive_in_order_and_nothing_else(void **state)
{
    int sv[2], p[2], q[2];
    struct stat st_q, st_p;
    char buf[256] = {0};
    cmojo_mp_child child;

    (void)state;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    assert_int_equal(pipe2(q, O_CLOEXEC), 0);
    assert_int_equal(fstat(p[0], &st_p), 0);
    assert_int_equal(fstat(q[0], &st_q), 0);

    /* Given in an order that makes a naive dup2 sequence clobber one fd. */
    int give[3] = {sv[1], q[1], p[1]};
    assert_int_equal(cmojo_mp_spawn("report_fds", give, 3, NULL, &child), 0);
    /* The parent's copies are untouched and still close-on-exec. */
    for (int i = 0; i < 3; i++)
        assert_int_equal(fcntl(give[i], F_GETFD), FD_CLOEXEC);
    close(sv[1]);
    close(p[1]);
    close(q[1]);
    assert_true(cmojo_mp_wait_exit(&child, WAIT_MS, 7));

    size_t got = 0;
    ssize_t r;
    while ((r = read(sv[0], buf + got, sizeof(buf) - 1 - got)) > 0)
        got += (size_t)r;
    assert_true(got > 0);
    char want[256];
    snprintf(want, sizeof(want), "1:%llu\n2:%llu\n", (unsigned long long)st_q.st_ino,
             (unsigned long long)st_p.st_ino);
    /* Line 0 is the socket itself; lines 1 and 2 must be q and p, in that order. */
    char *second = strchr(buf, '\n');
    assert_non_null(second);
    assert_string_equal(second + 1, want);
    close(sv[0]);
    close(p[0]);
    close(q[0]);
}

static void test_leaked_fd_fails_the_child(void **state)
{
    int p[2];
    cmojo_mp_child child;

    (void)state;
    assert_int_equal(pipe(p), 0); /* not close-on-exec: a leak into every child */
    assert_int_equal(cmojo_mp_spawn("exit_code", NULL, 0, "0", &child), 0);
    assert_true(cmojo_mp_wait_exit(&child, WAIT_MS, CMOJO_MP_EXIT_FD_LEAKED));
    close(p[0]);
    close(p[1]);
}

static void test_unknown_role(void **state)
{
    cmojo_mp_child child;

    (void)state;
    assert_int_equal(cmojo_mp_spawn("no_such_role", NULL, 0, NULL, &child), 0);
    assert_true(cmojo_mp_wait_exit(&child, WAIT_MS, CMOJO_MP_EXIT_UNKNOWN_ROLE));
}

static void test_check_macro_exit_code_names_the_line(void **state)
{
    cmojo_mp_child child;

    (void)state;
    assert_int_equal(cmojo_mp_spawn("check_fails", NULL, 0, NULL, &child), 0);
    assert_true(cmojo_mp_wait_exit(&child, WAIT_MS, 10 + FAIL_LINE_IN_ROLE % 100));
}

static void test_hung_child_is_killed_and_reaped_at_timeout(void **state)
{
    cmojo_mp_child child;
    int status = 0;
    char what[96];

    (void)state;
    assert_int_equal(cmojo_mp_spawn("sleep", NULL, 0, NULL, &child), 0);
    int64_t start = cmojo_mp_now_ms();
    assert_int_equal(cmojo_mp_wait(&child, 200, &status), -ETIMEDOUT);
    int64_t took = cmojo_mp_now_ms() - start;
    assert_true(took >= 200);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);
    assert_string_equal(cmojo_mp_describe_status(status, what, sizeof(what)),
                        "killed by signal 9 (Killed)");
    assert_int_equal(child.pid, 0);
    assert_int_equal(cmojo_mp_live_children(), 0);
    /* A reaped child cannot be waited for or signalled again. */
    assert_int_equal(cmojo_mp_wait(&child, 10, &status), -EINVAL);
    assert_int_equal(cmojo_mp_kill(&child, SIGKILL), -EINVAL);
}

static void test_kill_then_wait(void **state)
{
    cmojo_mp_child child;
    int status = 0;

    (void)state;
    assert_int_equal(cmojo_mp_spawn("sleep", NULL, 0, NULL, &child), 0);
    assert_int_equal(cmojo_mp_kill(&child, SIGKILL), 0);
    assert_int_equal(cmojo_mp_wait(&child, WAIT_MS, &status), 0);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);
    assert_false(cmojo_mp_wait_exit(&child, 10, 0)); /* already reaped */
}

static void test_many_children_at_once(void **state)
{
    cmojo_mp_child children[12];
    char code[8];

    (void)state;
    for (int i = 0; i < 12; i++) {
        snprintf(code, sizeof(code), "%d", 30 + i);
        assert_int_equal(cmojo_mp_spawn("exit_code", NULL, 0, code, &children[i]), 0);
    }
    assert_int_equal(cmojo_mp_live_children(), 12);
    for (int i = 11; i >= 0; i--)
        assert_true(cmojo_mp_wait_exit(&children[i], WAIT_MS, 30 + i));
    assert_int_equal(cmojo_mp_live_children(), 0);
}

static void test_teardown_fails_on_unreaped_child_and_reaps_it(void **state)
{
    cmojo_mp_child child;

    assert_int_equal(cmojo_mp_setup(state), 0);
    assert_int_equal(cmojo_mp_spawn("sleep", NULL, 0, NULL, &child), 0);
    assert_int_equal(cmojo_mp_teardown(state), -1);
    assert_int_equal(cmojo_mp_live_children(), 0);
    assert_int_equal(cmojo_mp_teardown(state), 0);
}

static void test_teardown_fails_on_fd_leak(void **state)
{
    int p[2];

    assert_int_equal(cmojo_mp_setup(state), 0);
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    assert_int_equal(cmojo_mp_teardown(state), -1);
    close(p[0]);
    close(p[1]);
    assert_int_equal(cmojo_mp_teardown(state), 0);
}

static void test_only_fds(void **state)
{
    int p[2];
    int fds[64];

    (void)state;
    int before = cmojo_mp_list_fds(fds, 64);
    assert_true(before >= 0 && before < 64);
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    assert_int_equal(cmojo_mp_list_fds(fds, 64), before + 2);
    int allowed[66];
    size_t n = 0;
    for (int i = 0; i < before + 2; i++)
        if (fds[i] > 2 && fds[i] != p[1])
            allowed[n++] = fds[i];
    assert_false(cmojo_mp_only_fds("test_only_fds (a leak is expected here)", allowed, n));
    allowed[n++] = p[1];
    assert_true(cmojo_mp_only_fds("test_only_fds", allowed, n));
    close(p[0]);
    close(p[1]);
}

static const cmojo_mp_role roles[] = {
    {"exit_code", role_exit_code},
    {"report_fds", role_report_fds},
    {"sleep", role_sleep},
    {"check_fails", role_check_fails},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    cmojo_mp_child_dispatch(argc, argv, roles);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_exit_code_comes_back, cmojo_mp_setup,
                                        cmojo_mp_teardown),
        cmocka_unit_test_setup_teardown(test_fds_arrive_in_order_and_nothing_else, cmojo_mp_setup,
                                        cmojo_mp_teardown),
        cmocka_unit_test_setup_teardown(test_leaked_fd_fails_the_child, cmojo_mp_setup,
                                        cmojo_mp_teardown),
        cmocka_unit_test_setup_teardown(test_unknown_role, cmojo_mp_setup, cmojo_mp_teardown),
        cmocka_unit_test_setup_teardown(test_check_macro_exit_code_names_the_line, cmojo_mp_setup,
                                        cmojo_mp_teardown),
        cmocka_unit_test_setup_teardown(test_hung_child_is_killed_and_reaped_at_timeout,
                                        cmojo_mp_setup, cmojo_mp_teardown),
        cmocka_unit_test_setup_teardown(test_kill_then_wait, cmojo_mp_setup, cmojo_mp_teardown),
        cmocka_unit_test_setup_teardown(test_many_children_at_once, cmojo_mp_setup,
                                        cmojo_mp_teardown),
        cmocka_unit_test(test_teardown_fails_on_unreaped_child_and_reaps_it),
        cmocka_unit_test(test_teardown_fails_on_fd_leak),
        cmocka_unit_test_setup_teardown(test_only_fds, cmojo_mp_setup, cmojo_mp_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
