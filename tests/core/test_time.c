/* MojoGetTimeTicksNow(): units, origin and monotonicity. */
#include "cmojo_test.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>

#include "mojo/public/c/system/functions.h"

static int64_t monotonic_usec(void)
{
    struct timespec ts;

    assert_int_equal(clock_gettime(CLOCK_MONOTONIC, &ts), 0);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void sleep_usec(int64_t usec)
{
    struct timespec left = {.tv_sec = usec / 1000000, .tv_nsec = (usec % 1000000) * 1000};

    while (nanosleep(&left, &left) != 0)
        assert_int_equal(errno, EINTR);
}

/* The value is CLOCK_MONOTONIC in microseconds: bracketed by two readings. */
static void test_ticks_are_monotonic_clock_in_microseconds(void **state)
{
    (void)state;
    int64_t before = monotonic_usec();
    MojoTimeTicks now = MojoGetTimeTicksNow();
    int64_t after = monotonic_usec();

    assert_true(now > 0);
    assert_true(before <= now);
    assert_true(now <= after);
}

static void test_ticks_never_go_backwards(void **state)
{
    (void)state;
    MojoTimeTicks prev = MojoGetTimeTicksNow();

    for (int i = 0; i < 200000; i++) {
        MojoTimeTicks now = MojoGetTimeTicksNow();
        assert_true(now >= prev);
        prev = now;
    }
}

/* A 20 ms sleep advances the clock by at least 20000 ticks, not 20 or 20e6. */
static void test_ticks_advance_by_elapsed_microseconds(void **state)
{
    (void)state;
    MojoTimeTicks start = MojoGetTimeTicksNow();

    sleep_usec(20000);
    MojoTimeTicks elapsed = MojoGetTimeTicksNow() - start;

    assert_true(elapsed >= 20000);
    assert_true(elapsed < 20000000); /* generous: a loaded CI machine */
}

#define CLOCK_THREADS 4

static void *read_clock_repeatedly(void *arg)
{
    (void)arg;
    MojoTimeTicks prev = MojoGetTimeTicksNow();

    for (int i = 0; i < 50000; i++) {
        MojoTimeTicks now = MojoGetTimeTicksNow();
        if (now < prev)
            return (void *)1;
        prev = now;
    }
    return NULL;
}

/* Callable from any thread at once; each thread sees its own readings rise. */
static void test_ticks_are_monotonic_on_every_thread(void **state)
{
    (void)state;
    pthread_t threads[CLOCK_THREADS];

    for (int i = 0; i < CLOCK_THREADS; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, read_clock_repeatedly, NULL), 0);
    for (int i = 0; i < CLOCK_THREADS; i++) {
        void *went_backwards = (void *)1;
        assert_int_equal(pthread_join(threads[i], &went_backwards), 0);
        assert_null(went_backwards);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ticks_are_monotonic_clock_in_microseconds),
        cmocka_unit_test(test_ticks_never_go_backwards),
        cmocka_unit_test(test_ticks_advance_by_elapsed_microseconds),
        cmocka_unit_test(test_ticks_are_monotonic_on_every_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
