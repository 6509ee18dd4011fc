/*
 * plat_wakeup: a set before the wait makes the wait return at once; a wait
 * with a deadline and no set times out; a set from another thread wakes a
 * waiter that is asleep, and what the setter wrote before is visible; many
 * rounds of set/wait between two threads lose no wake-up.
 */
#include "cmojo_test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "platform/wakeup.h"

static struct timespec in_ms(long ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

static void test_set_before_wait_returns_at_once(void **state)
{
    (void)state;
    plat_wakeup w;
    plat_wakeup_init(&w);
    assert_false(plat_wakeup_is_set(&w));
    plat_wakeup_set(&w);
    plat_wakeup_set(&w); /* again: no harm */
    assert_true(plat_wakeup_is_set(&w));
    struct timespec past = in_ms(-1000);
    assert_true(plat_wakeup_wait(&w, &past));
    assert_true(plat_wakeup_wait(&w, NULL));
}

static void test_deadline_passes_without_a_set(void **state)
{
    (void)state;
    plat_wakeup w;
    plat_wakeup_init(&w);
    struct timespec soon = in_ms(20);
    assert_false(plat_wakeup_wait(&w, &soon));
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    assert_true(now.tv_sec > soon.tv_sec ||
                (now.tv_sec == soon.tv_sec && now.tv_nsec >= soon.tv_nsec));
    /* A set after a timed-out wait still counts for the next one. */
    plat_wakeup_set(&w);
    assert_true(plat_wakeup_wait(&w, NULL));
}

typedef struct setter {
    plat_wakeup *w;
    int *value;
} setter;

static void *set_later(void *arg)
{
    setter *s = arg;
    struct timespec ts = {0, 20 * 1000000L};
    nanosleep(&ts, NULL);
    *s->value = 42;
    plat_wakeup_set(s->w);
    return NULL;
}

static void test_set_from_another_thread_wakes_the_sleeper(void **state)
{
    (void)state;
    plat_wakeup w;
    plat_wakeup_init(&w);
    int value = 0;
    setter s = {&w, &value};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, set_later, &s), 0);
    struct timespec far = in_ms(30000);
    assert_true(plat_wakeup_wait(&w, &far));
    assert_int_equal(value, 42);
    pthread_join(t, NULL);
}

#define ROUNDS 20000

typedef struct ping {
    plat_wakeup to_b[ROUNDS];
    plat_wakeup to_a[ROUNDS];
    atomic_int seen;
} ping;

static void *pong_main(void *arg)
{
    ping *p = arg;
    for (int i = 0; i < ROUNDS; i++) {
        if (!plat_wakeup_wait(&p->to_b[i], NULL))
            return NULL;
        atomic_fetch_add(&p->seen, 1);
        plat_wakeup_set(&p->to_a[i]);
    }
    return NULL;
}

static void test_ping_pong_loses_no_wake_up(void **state)
{
    (void)state;
    ping *p = malloc(sizeof(*p));
    assert_non_null(p);
    for (int i = 0; i < ROUNDS; i++) {
        plat_wakeup_init(&p->to_b[i]);
        plat_wakeup_init(&p->to_a[i]);
    }
    atomic_init(&p->seen, 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, pong_main, p), 0);
    for (int i = 0; i < ROUNDS; i++) {
        plat_wakeup_set(&p->to_b[i]);
        struct timespec far = in_ms(30000);
        assert_true(plat_wakeup_wait(&p->to_a[i], &far));
        assert_int_equal(atomic_load(&p->seen), i + 1);
    }
    pthread_join(t, NULL);
    free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_before_wait_returns_at_once),
        cmocka_unit_test(test_deadline_passes_without_a_set),
        cmocka_unit_test(test_set_from_another_thread_wakes_the_sleeper),
        cmocka_unit_test(test_ping_pong_loses_no_wake_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
