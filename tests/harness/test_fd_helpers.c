/* The shared fd-leak helpers must see fds come and go, or no test can trust them. */
#include "cmojo_test.h"

#include <unistd.h>

static void test_count_follows_open_and_close(void **state)
{
    (void)state;
    int fds[2];
    int before = cmojo_test_count_open_fds();

    assert_true(before >= 0);
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(cmojo_test_count_open_fds(), before + 2);
    close(fds[0]);
    close(fds[1]);
    assert_int_equal(cmojo_test_count_open_fds(), before);
}

static void test_teardown_fails_on_a_leak_and_passes_without(void **state)
{
    int fds[2];

    assert_int_equal(cmojo_test_fd_setup(state), 0);
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(cmojo_test_fd_teardown(state), -1);
    close(fds[0]);
    close(fds[1]);
    assert_int_equal(cmojo_test_fd_teardown(state), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_count_follows_open_and_close),
        cmocka_unit_test(test_teardown_fails_on_a_leak_and_passes_without),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
