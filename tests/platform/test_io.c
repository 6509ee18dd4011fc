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
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
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

static pid_t current_tid(void)
{
    return (pid_t)syscall(SYS_gettid);
}

/*
 * Whether thread tid of this process is asleep inside epoll_wait: the kernel
 * names the system call of a task only while it is blocked in one (else
 * /proc says "running"), and a thread blocked in epoll_wait is on the epoll
 * set's queue of waiters.
 */
static bool blocked_in_epoll(pid_t tid)
{
    char path[64];
    long nr = -1;
    snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", (int)tid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    int got = fscanf(f, "%ld", &nr);
    fclose(f);
    if (got != 1)
        return false;
#ifdef SYS_epoll_pwait2
    if (nr == SYS_epoll_pwait2)
        return true;
#endif
#ifdef SYS_epoll_wait
    if (nr == SYS_epoll_wait)
        return true;
#endif
    return nr == SYS_epoll_pwait;
}

/* Waits (up to 10 s) until thread tid is blocked in epoll_wait; whether it is. */
static bool wait_blocked_in_epoll(pid_t tid)
{
    for (int ms = 0; ms < 10000; ms++) {
        if (blocked_in_epoll(tid))
            return true;
        sleep_ms(1);
    }
    return false;
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

typedef struct tid_task {
    event done;
    pid_t tid;
} tid_task;

static void record_tid_task(void *arg)
{
    tid_task *t = arg;
    t->tid = current_tid();
    event_signal(&t->done);
}

/*
 * Returns once the IO thread is asleep in epoll_wait with nothing to do, so
 * that a guest polling from now on entered epoll_wait after it.
 */
static void wait_io_thread_in_epoll(plat_io *io)
{
    tid_task t;
    event_init(&t.done);
    assert_int_equal(plat_io_post(io, record_tid_task, &t), 0);
    assert_true(event_wait(&t.done));
    event_destroy(&t.done);
    assert_true(wait_blocked_in_epoll(t.tid));
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
    int drain;                 /* read what is ready */
    int remove_self;           /* plat_io_remove from inside the callback */
    int sleep_ms;              /* stay in the callback this long */
    int no_again;              /* return false even when not drained */
    atomic_bool on_loop;       /* plat_io_on_thread was true in the last call */
    _Atomic(pthread_t) thread; /* the thread of the last call */
    plat_wakeup *wake;         /* set (and the guest kicked) by each call, if not NULL */
    plat_io *io;
    atomic_int running; /* inside the callback now */
    atomic_int done;    /* callbacks that returned */
    event fired;
} watch_state;

/* Asks to be called again unless it drained the fd, as a level-triggered watch would be. */
static bool watch_cb(void *ctx, uint32_t events)
{
    watch_state *s = ctx;
    atomic_store(&s->running, 1);
    atomic_fetch_add(&s->calls, 1);
    atomic_store(&s->last_events, events);
    atomic_fetch_or(&s->all_events, events);
    atomic_store(&s->on_loop, plat_io_on_thread(s->io));
    atomic_store(&s->thread, pthread_self());
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
    if (s->wake)
        plat_wakeup_set(s->wake); /* its waiter is the one running this: no kick needed */
    event_signal(&s->fired);
    atomic_store(&s->running, 0);
    atomic_fetch_add(&s->done, 1);
    return !s->drain && !s->no_again;
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
    /* The callback asks to be called again: it keeps firing while writable. */
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

/*
 * A loop watching the read end of a pipe with watch_cb, set up as the tests
 * of the edge-triggered calls and of guests need it.
 */
typedef struct watched_pipe {
    plat_io *io;
    int p[2];
    watch_state s;
} watched_pipe;

static void watched_pipe_open(watched_pipe *wp, int drain, int no_again, int callback_ms)
{
    assert_int_equal(plat_io_start(&wp->io), 0);
    assert_int_equal(pipe(wp->p), 0);
    watch_state_init(&wp->s, wp->p[0]);
    wp->s.drain = drain;
    wp->s.no_again = no_again;
    wp->s.sleep_ms = callback_ms;
    wp->s.io = wp->io;
    assert_int_equal(plat_io_add(wp->io, wp->p[0], PLAT_IO_READABLE, watch_cb, &wp->s, &wp->s.w),
                     0);
}

static void watched_pipe_close(watched_pipe *wp)
{
    plat_io_remove(wp->s.w);
    close(wp->p[0]);
    close(wp->p[1]);
    event_destroy(&wp->s.fired);
    plat_io_stop(wp->io);
}

/* Edge-triggered unless asked: a callback that leaves data and says so is not called again until
 * more arrives. */
static void test_callback_decides_whether_to_be_called_again(void **state)
{
    (void)state;
    watched_pipe wp;
    watched_pipe_open(&wp, 0, 1, 0);
    plat_io *io = wp.io;
    int *p = wp.p;
    watch_state *s = &wp.s;
    assert_int_equal(write(p[1], "x", 1), 1);
    assert_true(event_wait(&s->fired));
    assert_true(atomic_load(&s->on_loop));
    for (int i = 0; i < 3; i++)
        sync_io(io);
    assert_int_equal(atomic_load(&s->calls), 1); /* still readable, but it said no */
    assert_int_equal(write(p[1], "y", 1), 1);
    for (int i = 0; i < 200 && atomic_load(&s->calls) < 2; i++)
        sleep_ms(5);
    assert_int_equal(atomic_load(&s->calls), 2);
    watched_pipe_close(&wp);
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

static bool victim_cb(void *ctx, uint32_t events)
{
    (void)ctx;
    (void)events;
    atomic_fetch_add(&victim_calls, 1);
    return true; /* never drained */
}

static bool killer_cb(void *ctx, uint32_t events)
{
    pair_state *ps = ctx;
    (void)events;
    if (atomic_fetch_add(&ps->killer_calls, 1) == 0) {
        plat_io_remove(ps->victim);
        ps->victim = NULL;
    }
    return true; /* never drained */
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

/* A task that keeps re-posting itself gets one run per loop turn, so watches still fire. */
typedef struct repost_state {
    plat_io *io;
    atomic_int stop;
    atomic_int runs;
    event finished;
} repost_state;

static void repost_task(void *arg)
{
    repost_state *r = arg;
    if (atomic_fetch_add(&r->runs, 1) >= 1000000 || atomic_load(&r->stop)) {
        event_signal(&r->finished);
        return;
    }
    if (plat_io_post(r->io, repost_task, r) != 0)
        abort();
}

static bool stop_reposting_cb(void *ctx, uint32_t events)
{
    (void)events;
    repost_state *r = ctx;
    atomic_store(&r->stop, 1);
    return false;
}

static void test_reposting_task_does_not_starve_watches(void **state)
{
    (void)state;
    plat_io *io;
    int p[2];
    plat_io_watch *w;
    repost_state r;
    memset(&r, 0, sizeof(r));
    event_init(&r.finished);
    assert_int_equal(plat_io_start(&io), 0);
    r.io = io;
    assert_int_equal(pipe(p), 0);
    assert_int_equal(plat_io_add(io, p[0], PLAT_IO_READABLE, stop_reposting_cb, &r, &w), 0);
    assert_int_equal(plat_io_post(io, repost_task, &r), 0);
    assert_int_equal(write(p[1], "x", 1), 1);
    assert_true(event_wait(&r.finished));
    assert_int_equal(atomic_load(&r.stop), 1);
    assert_true(atomic_load(&r.runs) < 1000000);
    plat_io_remove(w);
    close(p[0]);
    close(p[1]);
    plat_io_stop(io);
    event_destroy(&r.finished);
}

/* ------------------------------------------------------------- guests */

/* Polls as the guest until wake is set; false if 10 s passed first. */
static bool guest_wait(plat_io *io, plat_wakeup *wake)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += 10;
    while (!plat_wakeup_is_set(wake))
        if (!plat_io_guest_poll(io, wake, &until))
            return false;
    return true;
}

typedef struct script {
    plat_io *io;
    plat_wakeup *wake;
    pid_t guest_tid;   /* the guest: everything starts once it is in epoll_wait */
    int write_fd;      /* >= 0: write a byte here first */
    int task_ms;       /* > 0: then post a task that keeps the loop busy this long, */
    watch_state *busy; /* once this watch's callback runs (if not NULL) */
    int kick_ms;       /* then (after the task), this much later, set wake and kick the guest */
    atomic_int task_ran_on_loop;
    atomic_bool task_done;
    atomic_bool late; /* something it waited for did not happen within 10 s */
} script;

static void busy_task(void *arg)
{
    script *sc = arg;
    atomic_store(&sc->task_ran_on_loop, plat_io_on_thread(sc->io));
    sleep_ms(sc->task_ms);
    atomic_store(&sc->task_done, true);
}

static void *script_main(void *arg)
{
    script *sc = arg;
    if (!wait_blocked_in_epoll(sc->guest_tid))
        atomic_store(&sc->late, true);
    /*
     * Not a synchronisation: a loop that left epoll_wait and came back
     * meanwhile (it must not) would now be the waiter woken, and fail the test.
     */
    sleep_ms(20);
    if (sc->write_fd >= 0 && write(sc->write_fd, "x", 1) != 1)
        abort();
    if (sc->task_ms > 0) {
        int ms = 0;
        while (sc->busy != NULL && !atomic_load(&sc->busy->running) && ms++ < 10000)
            sleep_ms(1);
        if (plat_io_post(sc->io, busy_task, sc) != 0)
            abort();
        while (!atomic_load(&sc->task_done) && ms++ < 20000)
            sleep_ms(1);
        if (!atomic_load(&sc->task_done))
            atomic_store(&sc->late, true);
    }
    for (int ms = 0; ms < sc->kick_ms && !plat_wakeup_is_set(sc->wake); ms++)
        sleep_ms(1);
    plat_wakeup_set(sc->wake);
    plat_io_guest_wake(sc->io);
    return NULL;
}

static atomic_int begin_in_loop;

static void begin_task(void *arg)
{
    atomic_store(&begin_in_loop, plat_io_guest_begin(arg) ? 1 : -1);
}

/* One guest at a time, never the loop itself; the role is free again after end. */
static void test_guest_role_is_exclusive(void **state)
{
    (void)state;
    plat_io *io;
    assert_int_equal(plat_io_start(&io), 0);
    assert_true(plat_io_guest_begin(io));
    assert_false(plat_io_guest_begin(io));
    plat_io_guest_end(io);

    atomic_store(&begin_in_loop, 0);
    assert_int_equal(plat_io_post(io, begin_task, io), 0);
    sync_io(io);
    assert_int_equal(atomic_load(&begin_in_loop), -1);

    assert_true(plat_io_guest_begin(io));
    plat_io_guest_end(io);
    plat_io_stop(io);
}

/* A kick from another thread ends the guest's wait; a deadline ends it too. */
static void test_guest_is_kicked_or_times_out(void **state)
{
    (void)state;
    plat_io *io;
    assert_int_equal(plat_io_start(&io), 0);
    plat_wakeup wake;
    plat_wakeup_init(&wake);
    script sc = {
        .io = io, .wake = &wake, .guest_tid = current_tid(), .write_fd = -1, .kick_ms = 20};
    pthread_t t;
    assert_true(plat_io_guest_begin(io));
    assert_int_equal(pthread_create(&t, NULL, script_main, &sc), 0);
    assert_true(guest_wait(io, &wake));
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_false(atomic_load(&sc.late));

    plat_wakeup never;
    plat_wakeup_init(&never);
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += 50 * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    bool in_time = true;
    int polls = 0;
    while (in_time && polls++ < 1000)
        in_time = plat_io_guest_poll(io, &never, &until);
    assert_false(in_time);
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    assert_true(now.tv_sec > until.tv_sec ||
                (now.tv_sec == until.tv_sec && now.tv_nsec >= until.tv_nsec));
    plat_io_guest_end(io);
    plat_io_stop(io);
}

/*
 * Data arriving while the guest waits is read by the guest, on its own
 * thread, inside the loop: it entered epoll_wait after the IO thread.
 */
static void test_guest_runs_callbacks_on_its_thread(void **state)
{
    (void)state;
    watched_pipe wp;
    watched_pipe_open(&wp, 1, 0, 0);
    plat_io *io = wp.io;
    int *p = wp.p;
    watch_state *s = &wp.s;

    plat_wakeup wake; /* outlives every round: the callback may still hold it */
    for (int round = 1; round <= 5; round++) {
        wait_io_thread_in_epoll(io);
        plat_wakeup_init(&wake);
        s->wake = &wake;
        script sc = {
            .io = io, .wake = &wake, .guest_tid = current_tid(), .write_fd = p[1], .kick_ms = 5000};
        pthread_t t;
        assert_true(plat_io_guest_begin(io));
        assert_int_equal(pthread_create(&t, NULL, script_main, &sc), 0);
        assert_true(guest_wait(io, &wake)); /* the callback set it, long before the kick */
        plat_io_guest_end(io);
        assert_false(atomic_load(&sc.late));
        assert_int_equal(atomic_load(&s->calls), round);
        assert_true(atomic_load(&s->on_loop));
        assert_true(pthread_equal(atomic_load(&s->thread), pthread_self()));
        assert_int_equal(pthread_join(t, NULL), 0);
    }
    watched_pipe_close(&wp);
}

/*
 * A task wakes the IO thread while the guest is busy in a callback. Whether
 * the IO thread then keeps out of epoll for the guest or comes back after
 * it (and takes the guest's kick, which it must pass on), the kick reaches
 * the guest.
 */
static void test_kick_taken_by_io_thread_reaches_guest(void **state)
{
    (void)state;
    watched_pipe wp;
    watched_pipe_open(&wp, 1, 0, 100);
    plat_io *io = wp.io;
    int *p = wp.p;
    watch_state *s = &wp.s;
    wait_io_thread_in_epoll(io);

    plat_wakeup wake;
    plat_wakeup_init(&wake);
    script sc = {.io = io,
                 .wake = &wake,
                 .guest_tid = current_tid(),
                 .write_fd = p[1],
                 .task_ms = 150,
                 .busy = s,
                 .kick_ms = 300};
    pthread_t t;
    assert_true(plat_io_guest_begin(io));
    assert_int_equal(pthread_create(&t, NULL, script_main, &sc), 0);
    assert_true(guest_wait(io, &wake));
    plat_io_guest_end(io);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_false(atomic_load(&sc.late));
    assert_int_equal(atomic_load(&s->calls), 1);
    assert_true(pthread_equal(atomic_load(&s->thread), pthread_self()));
    assert_int_equal(atomic_load(&sc.task_ran_on_loop), 1);

    watched_pipe_close(&wp);
}

/*
 * Between a guest's waits the IO thread keeps out of epoll, so events wait
 * for the guest; when no guest comes back, the IO thread takes them: nothing
 * waits for a guest that is gone.
 */
static void test_events_after_the_guest_left_reach_the_io_thread(void **state)
{
    (void)state;
    watched_pipe wp;
    watched_pipe_open(&wp, 1, 0, 0);
    plat_io *io = wp.io;
    int *p = wp.p;
    watch_state *s = &wp.s;

    for (int round = 1; round <= 3; round++) {
        /* A guest session during which the IO thread ran a task, so it now keeps out of epoll. */
        assert_true(plat_io_guest_begin(io));
        sync_io(io);
        plat_io_guest_end(io);
        assert_int_equal(write(p[1], "x", 1), 1);
        for (int ms = 0; ms < 10000 && atomic_load(&s->done) < round; ms++)
            sleep_ms(1);
        assert_int_equal(atomic_load(&s->calls), round);
        assert_false(pthread_equal(atomic_load(&s->thread), pthread_self()));
        assert_true(atomic_load(&s->on_loop));
    }
    watched_pipe_close(&wp);
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
        cmocka_unit_test_setup_teardown(test_reposting_task_does_not_starve_watches,
                                        cmojo_test_fd_setup, cmojo_test_fd_teardown),
        cmocka_unit_test_setup_teardown(test_stop_runs_pending_tasks, cmojo_test_fd_setup,
                                        cmojo_test_fd_teardown),
        cmocka_unit_test_setup_teardown(test_callback_decides_whether_to_be_called_again,
                                        cmojo_test_fd_setup, cmojo_test_fd_teardown),
        cmocka_unit_test_setup_teardown(test_guest_role_is_exclusive, cmojo_test_fd_setup,
                                        cmojo_test_fd_teardown),
        cmocka_unit_test_setup_teardown(test_guest_is_kicked_or_times_out, cmojo_test_fd_setup,
                                        cmojo_test_fd_teardown),
        cmocka_unit_test_setup_teardown(test_guest_runs_callbacks_on_its_thread,
                                        cmojo_test_fd_setup, cmojo_test_fd_teardown),
        cmocka_unit_test_setup_teardown(test_kick_taken_by_io_thread_reaches_guest,
                                        cmojo_test_fd_setup, cmojo_test_fd_teardown),
        cmocka_unit_test_setup_teardown(test_events_after_the_guest_left_reach_the_io_thread,
                                        cmojo_test_fd_setup, cmojo_test_fd_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
