/* plat_random_bytes(): fills every byte, retries EINTR and short reads, reports errors. */
#include "cmojo_test.h"

#include <errno.h>
#include <string.h>

#include "platform/random.h"

/* Scripted stand-in for getrandom(2), installed through plat_random_getrandom. */
static struct {
    int calls;
    int eintr_first;   /* fail this many calls with EINTR before succeeding */
    size_t max_chunk;  /* 0: fill all that is asked */
    int fail_errno;    /* nonzero: every call fails with this errno */
    int fail_no_errno; /* every call fails with errno left at 0 */
    int return_zero;   /* every call returns 0 */
    int return_extra;  /* every call claims one byte more than asked */
    unsigned next_byte;
    unsigned bad_flags;
} fake;

static ssize_t fake_getrandom(void *buf, size_t len, unsigned int flags)
{
    unsigned char *out = buf;

    fake.calls++;
    fake.bad_flags |= flags;
    if (fake.calls <= fake.eintr_first) {
        errno = EINTR;
        return -1;
    }
    if (fake.fail_errno != 0) {
        errno = fake.fail_errno;
        return -1;
    }
    if (fake.fail_no_errno) {
        errno = 0;
        return -1;
    }
    if (fake.return_zero)
        return 0;
    if (fake.return_extra)
        return (ssize_t)len + 1;
    if (fake.max_chunk != 0 && len > fake.max_chunk)
        len = fake.max_chunk;
    for (size_t i = 0; i < len; i++)
        out[i] = (unsigned char)fake.next_byte++;
    return (ssize_t)len;
}

static ssize_t (*real_getrandom)(void *, size_t, unsigned int);

static int setup(void **state)
{
    memset(&fake, 0, sizeof(fake));
    real_getrandom = plat_random_getrandom;
    return cmojo_test_fd_setup(state);
}

static int teardown(void **state)
{
    plat_random_getrandom = real_getrandom;
    return cmojo_test_fd_teardown(state);
}

static void test_real_getrandom_fills_every_byte(void **state)
{
    (void)state;
    static unsigned char a[4096], b[4096];
    size_t unchanged = 0;

    memset(a, 0, sizeof(a));
    assert_int_equal(plat_random_bytes(a, sizeof(a)), 0);
    assert_int_equal(plat_random_bytes(b, sizeof(b)), 0);
    for (size_t i = 0; i < sizeof(a); i++)
        unchanged += a[i] == 0;
    /* About 16 of 4096 random bytes are zero; 64 would be a 1e-14 event. */
    assert_true(unchanged < 64);
    assert_memory_not_equal(a, b, sizeof(a));
}

static void test_zero_length_succeeds_without_a_syscall(void **state)
{
    (void)state;
    plat_random_getrandom = fake_getrandom;

    assert_int_equal(plat_random_bytes(NULL, 0), 0);
    assert_int_equal(fake.calls, 0);
}

static void test_eintr_is_retried(void **state)
{
    (void)state;
    unsigned char buf[32];
    plat_random_getrandom = fake_getrandom;
    fake.eintr_first = 3;

    assert_int_equal(plat_random_bytes(buf, sizeof(buf)), 0);
    assert_int_equal(fake.calls, 4);
    for (size_t i = 0; i < sizeof(buf); i++)
        assert_int_equal(buf[i], i);
    assert_int_equal(fake.bad_flags, 0);
}

/* Short reads continue where the last one stopped, until the buffer is full. */
static void test_short_reads_are_completed_in_order(void **state)
{
    (void)state;
    unsigned char buf[100];
    plat_random_getrandom = fake_getrandom;
    fake.max_chunk = 7;

    assert_int_equal(plat_random_bytes(buf, sizeof(buf)), 0);
    assert_int_equal(fake.calls, 15); /* ceil(100 / 7) */
    for (size_t i = 0; i < sizeof(buf); i++)
        assert_int_equal(buf[i], i);
}

static void test_failure_returns_negative_errno(void **state)
{
    (void)state;
    unsigned char buf[16];
    plat_random_getrandom = fake_getrandom;

    fake.fail_errno = ENOSYS;
    assert_int_equal(plat_random_bytes(buf, sizeof(buf)), -ENOSYS);
    assert_int_equal(fake.calls, 1);

    fake.fail_errno = 0;
    fake.fail_no_errno = 1;
    assert_int_equal(plat_random_bytes(buf, sizeof(buf)), -EIO);
}

/* A zero count would spin forever and an oversized one overran the buffer. */
static void test_impossible_counts_are_errors(void **state)
{
    (void)state;
    unsigned char buf[16];
    plat_random_getrandom = fake_getrandom;

    fake.return_zero = 1;
    assert_int_equal(plat_random_bytes(buf, sizeof(buf)), -EIO);
    assert_int_equal(fake.calls, 1);

    fake.return_zero = 0;
    fake.return_extra = 1;
    assert_int_equal(plat_random_bytes(buf, sizeof(buf)), -EIO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_real_getrandom_fills_every_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zero_length_succeeds_without_a_syscall, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_eintr_is_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_short_reads_are_completed_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failure_returns_negative_errno, setup, teardown),
        cmocka_unit_test_setup_teardown(test_impossible_counts_are_errors, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
