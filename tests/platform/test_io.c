/*
 * plat_io: watches fire while their fd is ready, remove is final (also from
 * inside the callback and while the callback runs on the IO thread), tasks
 * run in posting order, stop runs what was posted.
 */
#include "cmojo_test.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "platform/io.h"

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* A one-shot event a test thread can wait for (with a generous timeout). */
typedef struct event {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int set;
} event;

static void event_init(event *e)
{
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cond, NULL);
    e->set = 0;
}

static void event_destroy(event *e)
{
    pthread_cond_destroy(&e->cond);
    pthread_mutex_destroy(&e->mu);
}

static void event_signal(event *e)
{
    pthread_mutex_lock(&e->mu);
    e->set = 1;
    pthread_cond_broadcast(&e->cond);
    pthread_mutex_unlock(&e->mu);
}

/* 1 when signalled, 0 after 10 s. */
static int event_wait(event *e)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    pthread_mutex_lock(&e->mu);
    while (!e->set) {
        if (pthread_cond_timedwait(&e->cond, &e->mu, &deadline) == ETIMEDOUT)
            break;
    }
    int set = e->set;
    pthread_mutex_unlock(&e->mu);
    return set;
}

static void signal_task(void *arg)
{
    event_signal(arg);
}

/* Returns once the IO thread has run a task posted now (so finished a loop turn). */
static void sync_io(plat_io *io)
{
    event e;
    event_init(&e);
    assert_int_equal(plat_io_post(io, signal_task, &e), 0);
    assert_true(event_wait(&e));
    event_destroy(&e);
}

static void test_start_stop(void **state)
{
    (void)state;
    plat_io *io = NULL;
    assert_int_equal(plat_io_start(&io), 0);
    assert_non_null(io);
    assert_false(plat_io_on_thread(io));
    plat_io_stop(io);
    plat_io_stop(NULL);
}

static atomic_int on_thread_seen;

static void on_thread_task(void *arg)
{
    atomic_store(&on_thread_seen, plat_io_on_thread(arg) ? 1 : -1);
}

static void test_on_thread_is_true_only_on_the_io_thread(void **state)
{
    (void)state;
    plat_io *io, *other;
    assert_int_equal(plat_io_start(&io), 0);
    assert_int_equal(plat_io_start(&other), 0);
    atomic_store(&on_thread_seen, 0);
    assert_int_equal(plat_io_post(io, on_thread_task, io), 0);
    sync_io(io);
    assert_int_equal(atomic_load(&on_thread_seen), 1);
    /* Another loop's thread is not this one's. */
    assert_int_equal(plat_io_post(other, on_thread_task, io), 0);
    sync_io(other);
    assert_int_equal(atomic_load(&on_thread_seen), -1);
    plat_io_stop(other);
    plat_io_stop(io);
}

typedef struct watch_state {
    plat_io_watch *w;
    int fd;
    atomic_int calls;
    atomic_uint last_events;
    atomic_uint all_events;
    int drain;          /* read what is ready */
    int remove_self;    /* plat_io_remove from inside the callback */
    int sleep_ms;       /* stay in the callback this long */
    atomic_int running; /* inside the callback now */
    atomic_int done;    /* callbacks that returned */
    event fired;
} watch_state;

static void watch_cb(void *ctx, uint32_t events)
{
    watch_state *s = ctx;
    atomic_store(&s->running, 1);
    atomic_fetch_add(&s->calls, 1);
    atomic_store(&s->last_events, events);
    atomic_fetch_or(&s->all_events, events);
    if (s->drain) {
        char buf[64];
        (void)read(s->fd, buf, sizeof(buf));
    }
    if (s->sleep_ms > 0)
        sleep_ms(s->sleep_ms);
    if (s->remove_self) {
        plat_io_remove(s->w);
        s->w = NULL;
    }
    event_signal(&s->fired);
    atomic_store(&s->running, 0);
    atomic_fetch_add(&s->done, 1);
}

static void watch_state_init(watch_state *s, int fd)
{
    memset(s, 0, sizeof(*s));
    s->fd = fd;
    event_init(&s->fired);
}

static void test_add_modify_remove(void **state)
{
    (void)state;
    plat_io *io;
    int p[2];
    watch_state s;
    assert_int_equal(plat_io_start(&io), 0);
    assert_int_equal(pipe(p), 0);
    watch_state_init(&s, p[0]);
    s.drain = 1;

    assert_int_equal(plat_io_add(io, p[0], PLAT_IO_READABLE, watch_cb, &s, &s.w), 0);
    sync_io(io);
    sync_io(io);
    assert_int_equal(atomic_load(&s.calls), 0); /* nothing to read yet */

    assert_int_equal(write(p[1], "x", 1), 1);
    assert_true(event_wait(&s.fired));
    assert_int_equal(atomic_load(&s.last_events), PLAT_IO_READABLE);
    sync_io(io);
    sync_io(io);
    /* Drained: no further call. */
    assert_int_equal(atomic_load(&s.calls), 1);

    /* The write end is always writable: watching for that fires at once. */
    watch_state ws;
    watch_state_init(&ws, p[1]);
    assert_int_equal(plat_io_add(io, p[1], 0, watch_cb, &ws, &ws.w), 0);
    sync_io(io);
    sync_io(io);
    assert_int_equal(atomic_load(&ws.calls), 0);
    assert_int_equal(plat_io_modify(ws.w, PLAT_IO_WRITABLE), 0);
    assert_true(event_wait(&ws.fired));
    assert_int_equal(atomic_load(&ws.last_events) & PLAT_IO_WRITABLE, PLAT_IO_WRITABLE);
    /* Level-triggered: it keeps firing while writable. */
    int before = atomic_load(&ws.calls);
    sync_io(io);
    sync_io(io);
    assert_true(atomic_load(&ws.calls) > before);
    assert_int_equal(plat_io_modify(ws.w, 0), 0);
    sync_io(io);
    before = atomic_load(&ws.calls);
    sync_io(io);
    sync_io(io);
    assert_int_equal(atomic_load(&ws.calls), before);

    plat_io_remove(ws.w);
    plat_io_remove(s.w);
    /* Removed: data arriving now calls nobody. */
    assert_int_equal(write(p[1], "y", 1), 1);
    sync_io(io);
    sync_io(io);
    assert_int_equal(atomic_load(&s.calls), 1);

    close(p[0]);
    close(p[1]);
    event_destroy(&s.fired);
    event_destroy(&ws.fired);
    plat_io_stop(io);
}

static void test_add_bad_fd_fails(void **state)
{
    (void)state;
    plat_io *io;
    plat_io_watch *w = NULL;
    watch_state s;
    watch_state_init(&s, -1);
    assert_int_equal(plat_io_start(&io), 0);
    assert_int_equal(plat_io_add(io, -1, PLAT_IO_READABLE, watch_cb, &s, &w), -EBADF);
    int p[2];
    assert_int_equal(pipe(p), 0);
    close(p[1]);
    int closed = p[1];
    assert_int_equal(plat_io_add(io, closed, PLAT_IO_READABLE, watch_cb, &s, &w), -EBADF);
    assert_null(w);
    close(p[0]);
    event_destroy(&s.fired);
    plat_io_stop(io);
}

static void test_hangup_is_reported(void **state)
{
    (void)state;
    plat_io *io;
    int p[2];
    watch_state s;
    assert_int_equal(plat_io_start(&io), 0);
    assert_int_equal(pipe(p), 0);
    watch_state_init(&s, p[0]);
    s.remove_self = 1;
    assert_int_equal(plat_io_add(io, p[0], PLAT_IO_READABLE, watch_cb, &s, &s.w), 0);
    close(p[1]);
    assert_true(event_wait(&s.fired));
    assert_true(atomic_load(&s.last_events) & PLAT_IO_HANGUP);
    close(p[0]);
    event_destroy(&s.fired);
    plat_io_stop(io);
}

/* The fd stays ready, so only the removal stops the calls. */
static void test_remove_from_inside_callback(void **state)
{
    (void)state;
    plat_io *io;
    int p[2];
    watch_state s;
    assert_int_equal(plat_io_start(&io), 0);
    assert_int_equal(pipe(p), 0);
    watch_state_init(&s, p[0]);
    s.remove_self = 1;
    assert_int_equal(write(p[1], "x", 1), 1);
    assert_int_equal(plat_io_add(io, p[0], PLAT_IO_READABLE, watch_cb, &s, &s.w), 0);
    assert_true(event_wait(&s.fired));
    for (int i = 0; i < 5; i++)
        sync_io(io);
    assert_int_equal(atomic_load(&s.calls), 1);
    close(p[0]);
    close(p[1]);
    event_destroy(&s.fired);
    plat_io_stop(io);
}

/* Another watch's callback removes this one, which is ready in the same batch. */
typedef struct pair_state {
    plat_io_watch *victim;
    atomic_int killer_calls;
} pair_state;

static atomic_int victim_calls;

static void victim_cb(void *ctx, uint32_t events)
{
    (void)ctx;
    (void)events;
    atomic_fetch_add(&victim_calls, 1);
}

static void killer_cb(void *ctx, uint32_t events)
{
    pair_state *ps = ctx;
    (void)events;
    if (atomic_fetch_add(&ps->killer_calls, 1) == 0) {
        plat_io_remove(ps->victim);
        ps->victim = NULL;
    }
}

typedef struct gate {
    event held;
    event go;
} gate;

/* Keeps the IO thread busy until the test says go. */
static void gate_task(void *arg)
{
    gate *g = arg;
    event_signal(&g->held);
    (void)event_wait(&g->go);
}

static void test_remove_other_watch_from_callback(void **state)
{
    (void)state;
    plat_io *io;
    int a[2], b[2];
    pair_state ps = {0};
    plat_io_watch *killer;
    assert_int_equal(plat_io_start(&io), 0);
    assert_int_equal(pipe(a), 0);
    assert_int_equal(pipe(b), 0);
    atomic_store(&victim_calls, 0);
    /* Both ready before either is added, so one batch usually holds both. */
    assert_int_equal(write(a[1], "x", 1), 1);
    assert_int_equal(write(b[1], "x", 1), 1);
    gate g;
    event_init(&g.held);
    event_init(&g.go);
    /* Hold the IO thread while both are added, so they land in one epoll batch. */
    assert_int_equal(plat_io_post(io, gate_task, &g), 0);
    assert_true(event_wait(&g.held));
    assert_int_equal(plat_io_add(io, b[0], PLAT_IO_READABLE, victim_cb, NULL, &ps.victim), 0);
    assert_int_equal(plat_io_add(io, a[0], PLAT_IO_READABLE, killer_cb, &ps, &killer), 0);
    event_signal(&g.go);
    for (int i = 0; i < 5; i++)
        sync_io(io);
    assert_true(atomic_load(&ps.killer_calls) >= 1);
    int victim_after = atomic_load(&victim_calls);
    for (int i = 0; i < 5; i++)
        sync_io(io);
    /* At most the call before the removal; none after. */
    assert_true(victim_after <= 1);
    assert_int_equal(atomic_load(&victim_calls), victim_after);
    plat_io_remove(killer);
    close(a[0]);
    close(a[1]);
    close(b[0]);
    close(b[1]);
    event_destroy(&g.held);
    event_destroy(&g.go);
    plat_io_stop(io);
}

/*
 * A callback that is running on the IO thread while another thread removes
 * its watch: remove returns only after the callback returned, and no call
 * starts afterwards.
 */
static void test_remove_waits_for_running_callback(void **state)
{
    (void)state;
    plat_io *io;
    assert_int_equal(plat_io_start(&io), 0);
    for (int round = 0; round < 20; round++) {
        int p[2];
        watch_state s;
        assert_int_equal(pipe(p), 0);
        watch_state_init(&s, p[0]);
        s.sleep_ms = round % 2 == 0 ? 20 : 0;
        assert_int_equal(write(p[1], "x", 1), 1); /* never drained: fires every turn */
        assert_int_equal(plat_io_add(io, p[0], PLAT_IO_READABLE, watch_cb, &s, &s.w), 0);
        if (s.sleep_ms > 0) {
            while (!atomic_load(&s.running))
                sleep_ms(1);
        } else {
            assert_true(event_wait(&s.fired));
        }
        plat_io_remove(s.w);
        assert_int_equal(atomic_load(&s.running), 0);
        int calls = atomic_load(&s.calls);
        assert_int_equal(atomic_load(&s.done), calls);
        sync_io(io);
        sync_io(io);
        assert_int_equal(atomic_load(&s.calls), calls);
        /* The fd may be closed now, and the memory the callback used freed. */
        close(p[0]);
        close(p[1]);
        event_destroy(&s.fired);
    }
    plat_io_stop(io);
}

#define ORDER_THREADS 4
#define ORDER_TASKS 2000

typedef struct order_state {
    pthread_mutex_t mu;
    int next[ORDER_THREADS];
    atomic_int bad;
    atomic_int ran;
} order_state;

typedef struct order_task {
    order_state *s;
    int thread;
    int seq;
} order_task;

static order_task order_tasks[ORDER_THREADS][ORDER_TASKS];

static void order_run(void *arg)
{
    order_task *t = arg;
    /* Only the IO thread runs tasks; the lock is for TSan's sake of the checker. */
    pthread_mutex_lock(&t->s->mu);
    if (t->s->next[t->thread] != t->seq)
        atomic_fetch_add(&t->s->bad, 1);
    t->s->next[t->thread] = t->seq + 1;
    pthread_mutex_unlock(&t->s->mu);
    atomic_fetch_add(&t->s->ran, 1);
}

typedef struct poster {
    plat_io *io;
    int thread;
} poster;

static void *poster_main(void *arg)
{
    poster *p = arg;
    for (int i = 0; i < ORDER_TASKS; i++) {
        if (plat_io_post(p->io, order_run, &order_tasks[p->thread][i]) != 0)
            abort();
    }
    return NULL;
}

static void test_post_keeps_order_per_poster(void **state)
{
    (void)state;
    plat_io *io;
    order_state s;
    memset(&s, 0, sizeof(s));
    pthread_mutex_init(&s.mu, NULL);
    assert_int_equal(plat_io_start(&io), 0);
    pthread_t threads[ORDER_THREADS];
    poster posters[ORDER_THREADS];
    for (int t = 0; t < ORDER_THREADS; t++) {
        for (int i = 0; i < ORDER_TASKS; i++)
            order_tasks[t][i] = (order_task){.s = &s, .thread = t, .seq = i};
        posters[t] = (poster){.io = io, .thread = t};
        assert_int_equal(pthread_create(&threads[t], NULL, poster_main, &posters[t]), 0);
    }
    for (int t = 0; t < ORDER_THREADS; t++)
        pthread_join(threads[t], NULL);
    sync_io(io);
    assert_int_equal(atomic_load(&s.ran), ORDER_THREADS * ORDER_TASKS);
    assert_int_equal(atomic_load(&s.bad), 0);
    for (int t = 0; t < ORDER_THREADS; t++)
        assert_int_equal(s.next[t], ORDER_TASKS);
    plat_io_stop(io);
    pthread_mutex_destroy(&s.mu);
}

static atomic_int stop_ran;
static atomic_int stop_on_thread;

static void slow_task(void *arg)
{
    (void)arg;
    sleep_ms(50);
    atomic_fetch_add(&stop_ran, 1);
}

static void count_task(void *arg)
{
    if (plat_io_on_thread(arg))
        atomic_fetch_add(&stop_on_thread, 1);
    atomic_fetch_add(&stop_ran, 1);
}

static void test_stop_runs_pending_tasks(void **state)
{
    (void)state;
    plat_io *io;
    assert_int_equal(plat_io_start(&io), 0);
    atomic_store(&stop_ran, 0);
    atomic_store(&stop_on_thread, 0);
    assert_int_equal(plat_io_post(io, slow_task, NULL), 0);
    for (int i = 0; i < 100; i++)
        assert_int_equal(plat_io_post(io, count_task, io), 0);
    plat_io_stop(io);
    assert_int_equal(atomic_load(&stop_ran), 101);
    assert_int_equal(atomic_load(&stop_on_thread), 100);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_start_stop, cmojo_test_fd_setup,
                                        cmojo_test_fd_teardown),
        cmocka_unit_test_setup_teardown(test_on_thread_is_true_only_on_the_io_thread,
                                        cmojo_test_fd_setup, cmojo_test_fd_teardown),
        cmocka_unit_test_setup_teardown(test_add_modify_remove, cmojo_test_fd_setup,
                                        cmojo_test_fd_teardown),
        cmocka_unit_test_setup_teardown(test_add_bad_fd_fails, cmojo_test_fd_setup,
                                        cmojo_test_fd_teardown),
        cmocka_unit_test_setup_teardown(test_hangup_is_reported, cmojo_test_fd_setup,
                                        cmojo_test_fd_teardown),
        cmocka_unit_test_setup_teardown(test_remove_from_inside_callback, cmojo_test_fd_setup,
                                        cmojo_test_fd_teardown),
        cmocka_unit_test_setup_teardown(test_remove_other_watch_from_callback, cmojo_test_fd_setup,
                                        cmojo_test_fd_teardown),
        cmocka_unit_test_setup_teardown(test_remove_waits_for_running_callback, cmojo_test_fd_setup,
                                        cmojo_test_fd_teardown),
        cmocka_unit_test_setup_teardown(test_post_keeps_order_per_poster, cmojo_test_fd_setup,
                                        cmojo_test_fd_teardown),
        cmocka_unit_test_setup_teardown(test_stop_runs_pending_tasks, cmojo_test_fd_setup,
                                        cmojo_test_fd_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
